"""The runtime: starts, executes, parks, resumes and inspects runs stored in a journal."""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import inspect
import os
import socket
import uuid
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Concatenate, ParamSpec, TypeVar

from corral._errors import UsageError
from corral.durable import _serde
from corral.durable._clock import Clock, SystemClock
from corral.durable._context import RunContext, _current_context
from corral.durable._journal import Journal, RunRecord, RunStatus, StepRecord
from corral.durable._tracing import traced_from_env
from corral.durable.errors import (
    Cancel,
    DeterminismError,
    FunctionNotFound,
    JournalCorrupt,
    JournalError,
    LeaseLost,
    NotSerializable,
    Park,
    RunBusy,
    RunCancelled,
    RunExists,
    RunNotFound,
    RunSuspended,
)

if TYPE_CHECKING:
    from corral.durable._sqlite import SqliteJournal

P = ParamSpec("P")
T = TypeVar("T")
RunFunction = Callable[Concatenate[RunContext, P], Awaitable[T]]

_HOST = socket.gethostname()


def new_worker_id() -> str:
    """``host:pid:random`` — the host and pid let a restarted process see that a lease holder died."""
    return f"{_HOST}:{os.getpid()}:{uuid.uuid4().hex[:6]}"


def holder_is_dead(worker_id: str | None) -> bool:
    """True if ``worker_id`` names a process on this host that no longer exists."""
    if not worker_id:
        return False
    parts = worker_id.split(":")
    if len(parts) != 3 or parts[0] != _HOST or not parts[1].isdigit():
        return False
    pid = int(parts[1])
    if pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    # A zombie (killed child not yet reaped by its parent) holds no lease either.
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "Z"
    except (OSError, IndexError):
        return False


def function_path(fn: Callable[..., Any]) -> str:
    """The ``module:qualname`` a run row stores to find its function again."""
    return f"{fn.__module__}:{fn.__qualname__}"


class Runtime:
    """Executes run functions durably against a journal.

    ``journal``: a ``Journal`` (default: ``SqliteJournal`` at ``corral._config.journal_path()``); when the
    environment configures an OTLP endpoint (``OTEL_EXPORTER_OTLP_ENDPOINT``) it is wrapped in a
    ``TracingJournal``, so the runs are traced.
    ``clock``: where time comes from (inject ``FakeClock`` in tests). ``lease_seconds``: how long a run stays
    reserved for the process executing it without a renewal; a crashed process's runs are taken over after it
    (at once when the dead process was on this host).
    """

    def __init__(
        self,
        journal: Journal | None = None,
        *,
        clock: Clock | None = None,
        lease_seconds: float = 30.0,
        worker_id: str | None = None,
    ) -> None:
        if journal is None:
            from corral._config import journal_path
            from corral.durable._sqlite import SqliteJournal

            journal = SqliteJournal(journal_path())
        self.journal = traced_from_env(journal)  # the journal itself unless an OTLP endpoint is set
        self.clock: Clock = clock or SystemClock()
        self.lease_seconds = lease_seconds
        self.worker_id = worker_id or new_worker_id()
        self._functions: dict[str, Callable[..., Any]] = {}
        self._active: dict[str, tuple[RunContext, str]] = {}
        self._renewer: asyncio.Task[None] | None = None

    @classmethod
    def open(cls, path: str | os.PathLike[str], **options: Any) -> Runtime:
        """A runtime on the SQLite journal at ``path`` (``synchronous=`` is passed to ``SqliteJournal``: by
        default the journal's stored mode)."""
        from corral.durable._sqlite import SqliteJournal

        sync = options.pop("synchronous", None)
        journal: SqliteJournal = SqliteJournal(Path(path), synchronous=sync)
        return cls(journal, **options)

    def close(self) -> None:
        """Close the journal."""
        self.journal.close()

    # -- functions -------------------------------------------------------------------------------------------
    def register(self, fn: Callable[P, Awaitable[T]]) -> Callable[P, Awaitable[T]]:
        """Make ``fn`` findable by its path without importing it (e.g. functions defined inside tests)."""
        self._functions[function_path(fn)] = fn
        return fn

    def _resolve(self, run: RunRecord) -> Callable[..., Awaitable[Any]]:
        fn = self._functions.get(run.function)
        if fn is None:
            try:
                fn = _serde.import_path(run.function)
            except Exception as exc:
                raise FunctionNotFound(
                    f"run {run.run_id!r}: its function {run.function!r} cannot be imported ({exc}). Make the "
                    f"module importable (same name as when the run started), or call "
                    f"Runtime.register(fn) first"
                ) from exc
            if not callable(fn):
                raise FunctionNotFound(f"run {run.run_id!r}: {run.function!r} is not a function")
            self._functions[run.function] = fn
        return fn

    @staticmethod
    def _check_function(fn: Callable[..., Any]) -> None:
        if not inspect.iscoroutinefunction(fn):
            raise UsageError(
                f"{function_path(fn)} is not an async function: a run function is `async def f(ctx, ...)`"
            )

    # -- starting --------------------------------------------------------------------------------------------
    def _new_record(
        self,
        fn: Callable[..., Any],
        args: Sequence[Any],
        kwargs: dict[str, Any],
        run_id: str | None,
        status: RunStatus,
        parent: str | None = None,
    ) -> RunRecord:
        self._check_function(fn)
        path = function_path(fn)
        self._functions[path] = fn
        data: dict[str, Any] = {"args": list(args), "kwargs": kwargs}
        if parent is not None:
            data["parent"] = parent
        try:
            text = _serde.dumps(data)
        except (TypeError, ValueError) as exc:
            raise NotSerializable(
                f"the arguments of a run of {path} must be JSON-serialisable (they are journaled): {exc}"
            ) from exc
        now = self.clock.time()
        return RunRecord(
            run_id=run_id or uuid.uuid4().hex[:16],
            function=path,
            input=text,
            status=status,
            created_at=now,
            updated_at=now,
            worker_id=self.worker_id if status is RunStatus.RUNNING else None,
            lease_expires_at=now + self.lease_seconds if status is RunStatus.RUNNING else None,
            generation=1 if status is RunStatus.RUNNING else 0,
        )

    def start(self, fn: RunFunction[P, Any], *args: Any, run_id: str | None = None, **kwargs: Any) -> str:
        """Record a pending run of ``fn(ctx, *args, **kwargs)`` for a worker (or ``resume``); return its id.

        With an existing ``run_id`` of the same function, nothing changes (idempotent start).
        """
        record = self._new_record(fn, args, kwargs, run_id, RunStatus.PENDING)
        if not self.journal.create_run(record):
            self._same_function(record)
        return record.run_id

    def _start_child(
        self, parent: str, run_id: str, fn: Callable[..., Any], args: Sequence[Any], kwargs: dict[str, Any]
    ) -> str:
        record = self._new_record(fn, args, kwargs, run_id, RunStatus.PENDING, parent=parent)
        if not self.journal.create_run(record):
            self._same_function(record)
        return record.run_id

    def _notify_parent(
        self, run: RunRecord, status: RunStatus, output: str | None, output_type: str | None
    ) -> None:
        """Tell a child's parent (``ctx.join``) how the child ended. Sent *before* the child's final status is
        written: if the process dies in between, the child runs again and sends the same payload again, which
        is harmless (``join`` takes one), whereas the other order could lose the notification."""
        parent = _serde.loads(run.input).get("parent")
        if parent is None:
            return
        payload = _serde.dumps({"status": status.value, "output": output, "output_type": output_type})
        with contextlib.suppress(RunNotFound):
            self.journal.send_signal(parent, f"child:{run.run_id}", payload, now=self.clock.time())

    def _same_function(self, record: RunRecord) -> RunRecord:
        existing = self.journal.get_run(record.run_id)
        if existing is None:  # deleted meanwhile: nothing sensible to do
            raise RunNotFound(record.run_id)
        if existing.function != record.function:
            raise RunExists(
                f"run id {record.run_id!r} is taken by a run of {existing.function}, not {record.function}; "
                f"choose another run id"
            )
        if existing.input != record.input:
            # Resuming would silently return (or continue) the recorded run, whose arguments differ.
            raise RunExists(
                f"run id {record.run_id!r} is taken by a run of {existing.function} with other arguments "
                f"(recorded {_shorten(existing.input)}, given {_shorten(record.input)}); resume it with "
                f"the same arguments or `rt.resume(run_id)`, or choose another run id"
            )
        return existing

    async def run(self, fn: RunFunction[P, T], *args: Any, run_id: str | None = None, **kwargs: Any) -> T:
        """Start ``fn(ctx, *args, **kwargs)`` (or, if ``run_id`` exists, resume it) and execute it here until
        it
        completes (its result), fails (the exception), or parks (``RunSuspended``)."""
        record = self._new_record(fn, args, kwargs, run_id, RunStatus.RUNNING)
        if self.journal.create_run(record, lease_seconds=self.lease_seconds):
            result: T = await self._execute(record, fn, self.worker_id, fresh=True)
            return result
        self._same_function(record)
        resumed: T = await self.resume(record.run_id)
        return resumed

    def run_sync(self, fn: RunFunction[P, T], *args: Any, run_id: str | None = None, **kwargs: Any) -> T:
        """``run`` for plain scripts: runs its own event loop."""
        return asyncio.run(self.run(fn, *args, run_id=run_id, **kwargs))

    async def resume(self, run_id: str) -> Any:
        """Execute a run that is not final (replaying its journal), or return/raise the outcome of a final
        one."""
        run = self.get_run(run_id)
        if run.status.is_final:
            return self.outcome(run)
        steal = run.worker_id if holder_is_dead(run.worker_id) else None
        claimed = self.journal.claim(
            worker_id=self.worker_id,
            now=self.clock.time(),
            lease_seconds=self.lease_seconds,
            run_id=run_id,
            steal_from=steal,
        )
        if not claimed:
            run = self.get_run(run_id)
            if run.status.is_final:
                return self.outcome(run)
            raise RunBusy(run_id, run.worker_id or "?")
        return await self._execute(claimed[0], self._resolve(claimed[0]), self.worker_id, fresh=False)

    def outcome(self, run: RunRecord) -> Any:
        """The result of a completed run; raises its error if it failed, ``RunCancelled`` if cancelled,
        ``RunSuspended`` if it waits, ``RunBusy`` if it is running."""
        if run.status is RunStatus.COMPLETED:
            returns = None
            if run.output_type is not None:
                with contextlib.suppress(FunctionNotFound):
                    returns = _return_model(self._resolve(run))
            return _serde.decode(run.output, run.output_type, returns)
        if run.status is RunStatus.FAILED:
            raise _serde.decode_error(run.output, run_id=run.run_id, position=-1, where=f"run {run.run_id!r}")
        if run.status is RunStatus.CANCELLED:
            raise RunCancelled(run.run_id)
        if run.status is RunStatus.WAITING:
            raise RunSuspended(
                run.run_id, "signal" if run.waiting_for else "timer", run.waiting_for, run.wake_at
            )
        raise RunBusy(run.run_id, run.worker_id or "no worker yet")

    # -- executing -------------------------------------------------------------------------------------------
    async def _execute(self, run: RunRecord, fn: Callable[..., Any], worker_id: str, *, fresh: bool) -> Any:
        journal = self.journal
        run_id = run.run_id
        lease_end = run.lease_expires_at or self.clock.time() + self.lease_seconds
        # Generation 0: a backend that keeps no lease generations; its writes go unfenced.
        generation = run.generation or None
        try:
            records = [] if fresh else journal.load_steps(run_id)
        except JournalError as exc:
            self._journal_failed(run, exc, worker_id)
            raise
        ctx = RunContext(
            run_id,
            journal,
            self.clock,
            records,
            lease_expires_at=lease_end,
            start_child=self._start_child,
            generation=generation,
        )
        data = _serde.loads(run.input)
        self._active[run_id] = (ctx, worker_id)
        self._ensure_renewer()
        token = _current_context.set(ctx)
        try:
            try:
                result = await fn(ctx, *data["args"], **data["kwargs"])
            finally:
                _current_context.reset(token)
                self._active.pop(run_id, None)
                if not self._active and self._renewer is not None:
                    # Nothing left to renew: do not leave a sleeping task behind on the loop.
                    self._renewer.cancel()
                    self._renewer = None
        except Park as park:
            status = journal.park_run(
                run_id,
                signal=park.signal,
                wake_at=park.wake_at,
                worker_id=worker_id,
                now=self.clock.time(),
                **({} if generation is None else {"generation": generation}),
            )
            if status is None:
                raise self._lost(run_id) from None
            raise RunSuspended(run_id, park.reason, park.signal, park.wake_at) from None
        except Cancel:
            raise self._lost(run_id) from None
        except JournalError as exc:
            self._journal_failed(run, exc, worker_id)
            raise
        except (LeaseLost, RunCancelled):
            self._release_quietly(run_id, worker_id)
            raise
        except Exception as exc:
            if ctx.journal_failure is not None:
                # The journal failed under this run (even if run code caught it): leave the run as it is, to
                # be resumed once the journal works again (a damaged journal fails the run, see below).
                self._journal_failed(run, ctx.journal_failure, worker_id)
                raise ctx.journal_failure from (None if exc is ctx.journal_failure else exc)
            error: BaseException = ctx.broken or exc
            self._finish(run, RunStatus.FAILED, _serde.encode_error(error), None, worker_id)
            if error is exc:
                raise
            raise error from exc
        except BaseException:
            # asyncio cancellation, KeyboardInterrupt, SystemExit: not the run's fault; let another worker
            # (or a
            # later resume) take it at once.
            self._release_quietly(run_id, worker_id)
            raise
        if ctx.journal_failure is not None:
            self._journal_failed(run, ctx.journal_failure, worker_id)
            raise ctx.journal_failure
        left = ctx.unreplayed()
        if ctx.broken is None and left is not None:
            ctx.broken = DeterminismError(run_id, left.position, left.name, "the end of the run")
        if ctx.broken is not None:
            self._finish(run, RunStatus.FAILED, _serde.encode_error(ctx.broken), None, worker_id)
            raise ctx.broken
        try:
            text, value_type, value = _serde.encode(result, f"run {run_id!r} (the result of {run.function})")
        except NotSerializable as exc:
            self._finish(run, RunStatus.FAILED, _serde.encode_error(exc), None, worker_id)
            raise
        self._finish(run, RunStatus.COMPLETED, text, value_type, worker_id)
        return value

    def _finish(
        self, run: RunRecord, status: RunStatus, output: str, output_type: str | None, worker_id: str
    ) -> None:
        self._notify_parent(run, status, output, output_type)
        fence = {} if not run.generation else {"generation": run.generation}
        if not self.journal.finish_run(
            run.run_id, status, output, output_type, worker_id=worker_id, now=self.clock.time(), **fence
        ):
            raise self._lost(run.run_id)

    def _journal_failed(self, run: RunRecord, exc: JournalError, worker_id: str) -> None:
        """A damaged journal fails the run, with the damage as its error (resuming cannot repair it); any
        other journal failure (disk full, locked) leaves it to be resumed once the journal works again."""
        if not isinstance(exc, JournalCorrupt):
            self._release_quietly(run.run_id, worker_id)
            return
        try:
            self._finish(run, RunStatus.FAILED, _serde.encode_error(exc), None, worker_id)
        except (JournalError, LeaseLost, RunCancelled):
            self._release_quietly(run.run_id, worker_id)

    def _lost(self, run_id: str) -> RunCancelled | LeaseLost:
        run = self.journal.get_run(run_id)
        if run is not None and run.status is RunStatus.CANCELLED:
            return RunCancelled(run_id)
        return LeaseLost(
            f"run {run_id!r}: this process's lease expired and another worker took the run over; this "
            f"execution "
            f"stopped (its journaled steps are kept)"
        )

    def _release_quietly(self, run_id: str, worker_id: str) -> None:
        with contextlib.suppress(JournalError):
            self.journal.release(run_id, worker_id=worker_id, now=self.clock.time())

    def _ensure_renewer(self) -> None:
        if self._renewer is None or self._renewer.done():
            # An empty context: the renewer serves every run of this runtime, so it must not keep the
            # context variables (and through them the events and state) of whichever run started it.
            self._renewer = asyncio.get_running_loop().create_task(
                self._renew_loop(), name="corral-lease-renewer", context=contextvars.Context()
            )

    async def _renew_loop(self) -> None:
        """Renew the leases of runs executing in this runtime every third of the lease; interrupt lost
        ones."""
        period = max(self.lease_seconds / 3, 0.01)
        while self._active:
            await asyncio.sleep(period)
            by_worker: dict[str, list[str]] = {}
            for run_id, (_, worker_id) in list(self._active.items()):
                by_worker.setdefault(worker_id, []).append(run_id)
            for worker_id, run_ids in by_worker.items():
                now = self.clock.time()
                try:
                    held = self.journal.renew(
                        worker_id=worker_id,
                        run_ids=run_ids,
                        now=now,
                        lease_seconds=self.lease_seconds,
                    )
                except JournalError:
                    continue  # try again next period; the lease has two more periods to go
                renewed_until = now + self.lease_seconds
                for run_id in run_ids:
                    entry = self._active.get(run_id)
                    if entry is None:
                        continue
                    if run_id in held:
                        entry[0].lease_expires_at = renewed_until
                    else:
                        entry[0].interrupt(Cancel("lease lost or run cancelled"))

    # -- control and inspection ------------------------------------------------------------------------------
    def cancel(self, run_id: str) -> RunRecord:
        """Cancel a run that is not final. A parked run stops at once; an executing one at its next step."""
        before = self.get_run(run_id)
        record = self.journal.cancel_run(run_id, now=self.clock.time())
        if not before.status.is_final and record.status is RunStatus.CANCELLED:
            self._notify_parent(record, RunStatus.CANCELLED, None, None)
        entry = self._active.get(run_id)
        if entry is not None:
            entry[0].interrupt(Cancel("cancelled"))
        return record

    def send_signal(self, run_id: str, name: str, payload: Any = None) -> None:
        """Send signal ``name`` with a JSON payload (or pydantic model) to a run; a run waiting for it wakes
        up."""
        text, _, _ = _serde.encode(payload, f"the payload of signal {name!r} for run {run_id!r}")
        self.journal.send_signal(run_id, name, text, now=self.clock.time())

    def get_run(self, run_id: str) -> RunRecord:
        """The run's record; ``RunNotFound`` if there is none."""
        run = self.journal.get_run(run_id)
        if run is None:
            raise RunNotFound(run_id)
        return run

    def list_runs(
        self, *, status: RunStatus | Sequence[RunStatus] | None = None, limit: int = 100, offset: int = 0
    ) -> list[RunRecord]:
        """Runs, newest first, optionally filtered by status."""
        statuses = [status] if isinstance(status, RunStatus) else status
        return self.journal.list_runs(statuses=statuses, limit=limit, offset=offset)

    def steps(self, run_id: str) -> list[StepRecord]:
        """The run's step rows by position; ``RunNotFound`` if there is no such run."""
        self.get_run(run_id)
        return self.journal.load_steps(run_id)

    def result(self, run_id: str) -> Any:
        """The outcome of the run now (see ``outcome``)."""
        return self.outcome(self.get_run(run_id))


def _return_model(fn: Callable[..., Any]) -> Any:
    from corral.durable._context import _model_annotation

    return _model_annotation(fn)


def _shorten(text: str, limit: int = 120) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"
