"""Errors of the durable layer.

Exception tree::

    corral.CorralError
    ├── corral.UsageError
    │   ├── NotSerializable         a step's result (or a run's input/result) is not JSON or a pydantic model
    │   ├── FunctionNotFound        a run's function cannot be imported again from its ``module:qualname``
    │   └── RunExists               a run id given to ``start`` is taken by a run of another function
    └── DurableError
        ├── RunNotFound             no run has this id in the journal
        ├── DeterminismError        the code asks for a different step (name or arguments) than the one
        │                           recorded at a position
        ├── StepError               a recorded step failure whose exception type cannot be rebuilt
        ├── WaitTimeout             ``ctx.wait`` reached its timeout without a signal
        ├── RunSuspended            ``Runtime.run``/``resume`` returned control: the run is parked (waiting)
        ├── RunCancelled            the run was cancelled
        ├── LeaseLost               another worker took the run over (this worker's lease had expired)
        ├── RunBusy                 another worker holds a live lease on the run
        └── JournalError            the journal itself failed
            ├── JournalCorrupt      not a database, truncated, failed ``PRAGMA quick_check``, a row that does
            │                       not match its checksum, a damaged WAL, lost step rows
            ├── JournalTooNew       written by a newer corral (schema version above ours)
            └── JournalFull         the disk (or ``max_page_count``) is full; nothing half-written

    BaseException
    └── RunInterrupt                unwinds a run's coroutine; user code's ``except Exception`` cannot catch
    it
        ├── Park                    the run waits for a signal or a timer
        └── Cancel                  the run was cancelled, or its lease was lost, while it ran

Messages name the run, the step and what to do.
"""

from __future__ import annotations

from pathlib import Path

from corral._errors import CorralError, UsageError


class DurableError(CorralError):
    """Base of the durable layer's run-time errors."""


class NotSerializable(UsageError):
    """A value that must be journaled is neither JSON-serialisable nor a pydantic model."""


class FunctionNotFound(UsageError):
    """A run's function cannot be found again from the import path stored in its run row."""


class RunExists(UsageError):
    """A run id is already used by a run of a different function."""


class RunNotFound(DurableError):
    """No run with this id exists in the journal."""

    def __init__(self, run_id: str) -> None:
        super().__init__(f"no run with id {run_id!r} in the journal; list runs with `corral runs list`")
        self.run_id = run_id


class DeterminismError(DurableError):
    """The run function asked for another step than the one recorded at this position (code changed)."""

    def __init__(
        self, run_id: str, position: int, recorded: str, asked: str, *, arguments: bool = False
    ) -> None:
        if arguments:
            what = (
                f"the journal recorded step {recorded!r} here with other arguments than the code now "
                f"passes. If the change is deliberate (e.g. a reworded prompt), pass "
                f"`check_args=False` to that `ctx.step` to replay it by name only; otherwise"
            )
        else:
            what = f"the journal recorded step {recorded!r} here but the code now asks for {asked!r}. "
            what += "The run function changed under a running run;"
        super().__init__(
            f"run {run_id!r}, step {position}: {what} finish or cancel old runs before "
            f"changing the order of steps, or start new runs under a new function name "
            f"(see docs/durability.md, 'Changing code under running runs')."
        )
        self.arguments = arguments
        self.run_id = run_id
        self.position = position
        self.recorded = recorded
        self.asked = asked


class StepError(DurableError):
    """A step failed; raised on replay when the original exception type cannot be rebuilt."""

    def __init__(self, message: str, *, run_id: str = "", position: int = -1, error_type: str = "") -> None:
        super().__init__(message)
        self.run_id = run_id
        self.position = position
        self.error_type = error_type


class WaitTimeout(DurableError):
    """``ctx.wait(name, timeout=...)`` reached its timeout before the signal arrived."""


class RunSuspended(DurableError):
    """The run is parked in the journal (``ctx.wait``/``ctx.sleep``); it resumes when its signal or timer is
    due.

    Attributes: ``run_id``, ``reason`` (``"signal"`` or ``"timer"``), ``signal`` (name waited for, or None),
    ``wake_at`` (epoch seconds of the timer, or None).
    """

    def __init__(self, run_id: str, reason: str, signal: str | None, wake_at: float | None) -> None:
        what = f"signal {signal!r}" if signal else "its timer"
        super().__init__(
            f"run {run_id!r} is waiting for {what}; send it with `corral signal {run_id} NAME [JSON]` "
            f"or let a worker (`corral worker`) resume it when due"
            if signal
            else f"run {run_id!r} is waiting for {what}; a worker (`corral worker`) resumes it when due"
        )
        self.run_id = run_id
        self.reason = reason
        self.signal = signal
        self.wake_at = wake_at


class RunCancelled(DurableError):
    """The run was cancelled (``Runtime.cancel``)."""

    def __init__(self, run_id: str) -> None:
        super().__init__(f"run {run_id!r} was cancelled")
        self.run_id = run_id


class LeaseLost(DurableError):
    """This worker's lease on a run expired and another worker took the run over; this execution stopped."""


class RunBusy(DurableError):
    """Another worker holds a live lease on the run, so it cannot be executed here now."""

    def __init__(self, run_id: str, holder: str) -> None:
        super().__init__(
            f"run {run_id!r} is being executed by worker {holder!r}; wait for it, or for its lease to expire "
            f"if that worker died"
        )
        self.run_id = run_id
        self.holder = holder


class JournalError(DurableError):
    """The journal (storage) failed."""


class JournalCorrupt(JournalError):
    """The journal file is corrupt or truncated, or a row does not match its checksum.

    ``run_id`` and ``position`` name the damaged run and step when the damage is in one (else None).
    """

    def __init__(
        self, path: Path | str, detail: str, *, run_id: str | None = None, position: int | None = None
    ) -> None:
        super().__init__(
            f"the journal {path} is corrupt ({detail}). Stop all corral processes, keep a copy of the file, "
            f"then try `sqlite3 {path} .recover > dump.sql` or move it aside to start a new journal"
        )
        self.path = path
        self.detail = detail
        self.run_id = run_id
        self.position = position


class JournalTooNew(JournalError):
    """The journal was written by a newer version of corral."""


class JournalFull(JournalError):
    """The disk holding the journal is full. The failed write was rolled back; the journal is consistent."""


class RunInterrupt(BaseException):
    """Unwinds a run's coroutine. A ``BaseException`` so that ``except Exception`` in user code cannot
    swallow it.

    Never catch it in run code; if you must (``except BaseException``), re-raise it.
    """


class Park(RunInterrupt):
    """The run parks: it waits for a signal or a timer, holding no thread and no process."""

    def __init__(self, reason: str, signal: str | None, wake_at: float | None) -> None:
        super().__init__(reason, signal, wake_at)
        self.reason = reason
        self.signal = signal
        self.wake_at = wake_at


class Cancel(RunInterrupt):
    """The run was cancelled (or this worker lost its lease) while it executed."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason
