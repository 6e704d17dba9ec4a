"""The run context: the only way run code touches the world, so that every effect is journaled.

Each call (``step``, ``now``, ``uuid``, ``random``, ``sleep``, ``wait``) takes the next position. On replay
the
record at that position answers; the first position without a record executes for real.
"""

from __future__ import annotations

import inspect
import random as _random
import typing
import uuid as _uuid
from collections.abc import Awaitable, Callable, Sequence
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, TypeVar, overload

import pydantic
import stamina

from corral._errors import UsageError
from corral.durable import _serde
from corral.durable._journal import StepRecord, StepStatus
from corral.durable.errors import (
    Cancel,
    DeterminismError,
    JournalError,
    NotSerializable,
    Park,
    RunCancelled,
    RunInterrupt,
    WaitTimeout,
)

if TYPE_CHECKING:
    from corral.durable._clock import Clock
    from corral.durable._journal import Journal

T = TypeVar("T")

_OK = StepStatus.OK
_ERROR = StepStatus.ERROR
_INTENT = StepStatus.INTENT
_WAITING = StepStatus.WAITING
# Results that are certainly not awaitable: skips ``inspect.isawaitable`` on the hot path.
_PLAIN = frozenset({dict, list, str, int, float, bool, type(None), tuple})


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Retries of a step's function before its failure is recorded (backoff by ``stamina``).

    ``on``: the exception types that are retried (others fail the step at once). ``attempts`` counts the first
    call. Only the final outcome is journaled; every attempt of a keyed step uses the same key.
    """

    on: type[Exception] | tuple[type[Exception], ...] = Exception
    attempts: int = 3
    wait_initial: float = 0.1
    wait_max: float = 5.0
    timeout: float | None = 45.0


@dataclass(frozen=True, slots=True)
class StepInfo:
    """What a step's function can learn about the step executing it (``current_step()``)."""

    run_id: str
    position: int
    name: str
    key: str | None


_current_step: ContextVar[StepInfo | None] = ContextVar("corral_current_step", default=None)
_current_context: ContextVar[RunContext | None] = ContextVar("corral_current_context", default=None)


def current_step() -> StepInfo | None:
    """The step whose function is executing now (its idempotency key, for tools that honour one), or None."""
    return _current_step.get()


def current_context() -> RunContext | None:
    """The run context of the run executing in this task, or None outside runs."""
    return _current_context.get()


def _model_annotation(fn: Callable[..., Any]) -> type[pydantic.BaseModel] | None:
    try:
        hint = typing.get_type_hints(fn).get("return")
    except Exception:
        return None
    if isinstance(hint, type) and issubclass(hint, pydantic.BaseModel):
        return hint
    return None


class RunContext:
    """Handed to a run function as its first argument. Every effect of the run goes through it.

    Run code between steps must be deterministic: take time, ids and randomness from ``now()``, ``uuid()`` and
    ``random()``, and do I/O only inside ``step``.
    """

    __slots__ = (
        "_clock",
        "_generation",
        "_interrupt",
        "_journal",
        "_last_ended",
        "_position",
        "_records",
        "_start_child",
        "broken",
        "journal_failure",
        "lease_expires_at",
        "run_id",
    )

    def __init__(
        self,
        run_id: str,
        journal: Journal,
        clock: Clock,
        records: list[StepRecord],
        *,
        lease_expires_at: float = float("inf"),
        start_child: Callable[[str, str, Callable[..., Any], Sequence[Any], dict[str, Any]], str]
        | None = None,
        generation: int | None = None,
    ) -> None:
        self.run_id = run_id
        # The lease generation this execution holds: every write is fenced by it, so once the run is
        # cancelled or taken over, the next write is refused and this execution stops.
        self._generation = generation
        self._start_child = start_child
        #: When this process's lease on the run ends unless renewed. Past it, the run stops itself before its
        #: next step, because another worker may have taken it over (self-fencing, no journal read needed).
        self.lease_expires_at = lease_expires_at
        self._journal = journal
        self._clock = clock
        self._records: dict[int, StepRecord] = {r.position: r for r in records}
        self._position = 0
        # When the last step this execution replayed or wrote ended: journaled already, so free to read.
        self._last_ended: float | None = None
        self._interrupt: RunInterrupt | None = None
        #: A DeterminismError raised here; the run fails with it even if run code caught it.
        self.broken: DeterminismError | None = None
        #: A journal failure (disk full, corruption) met here; every later call re-raises it, so run code that
        #: catches it cannot go on with steps the journal did not record.
        self.journal_failure: JournalError | None = None

    @property
    def position(self) -> int:
        """The position the next step will take."""
        return self._position

    def unreplayed(self) -> StepRecord | None:
        """The first recorded step the run function never asked for (it returned early: the code changed)."""
        return self._records[min(self._records)] if self._records else None

    def interrupt(self, exc: RunInterrupt) -> None:
        """Make the run's next context call raise ``exc`` (cancellation, lost lease)."""
        self._interrupt = exc

    # -- plumbing --------------------------------------------------------------------------------------------
    def _next(self, name: str) -> tuple[int, StepRecord | None]:
        if self._interrupt is not None:
            raise self._interrupt
        if self.broken is not None:
            raise self.broken
        if self.journal_failure is not None:
            raise self.journal_failure
        if self._clock.time() >= self.lease_expires_at:
            self._interrupt = Cancel("lease expired")
            raise self._interrupt
        position = self._position
        self._position = position + 1
        record = self._records.pop(position, None)
        if record is not None and record.name != name:
            self.broken = DeterminismError(self.run_id, position, record.name, name)
            raise self.broken
        if record is not None and record.ended_at is not None:
            self._last_ended = record.ended_at
        return position, record

    def _write(self, step: StepRecord) -> None:
        try:
            if self._generation is None:
                written = self._journal.write_step(step)
            else:
                written = self._journal.write_step(step, generation=self._generation)
        except JournalError as exc:
            self.journal_failure = exc
            raise
        if not written:
            # A final row already holds this position, or the fence refused the write: the run was cancelled
            # or another worker took it over.
            self._interrupt = Cancel("lease lost")
            raise self._interrupt
        if step.ended_at is not None:
            self._last_ended = step.ended_at

    def _fail(
        self,
        position: int,
        name: str,
        key: str | None,
        started: float,
        exc: BaseException,
        args_hash: int | None = None,
    ) -> None:
        self._write(
            StepRecord(
                self.run_id,
                position,
                name,
                _ERROR,
                _serde.encode_error(exc),
                None,
                key,
                started,
                self._clock.time(),
                args_hash,
            )
        )

    # -- steps -----------------------------------------------------------------------------------------------
    @overload
    async def step(
        self,
        name: str,
        fn: Callable[..., Awaitable[T]],
        *args: Any,
        key: str | None = None,
        returns: type[T] | None = None,
        retry: RetryPolicy | None = None,
        check_args: bool = True,
        **kwargs: Any,
    ) -> T: ...

    @overload
    async def step(
        self,
        name: str,
        fn: Callable[..., T],
        *args: Any,
        key: str | None = None,
        returns: type[T] | None = None,
        retry: RetryPolicy | None = None,
        check_args: bool = True,
        **kwargs: Any,
    ) -> T: ...

    async def step(
        self,
        name: str,
        fn: Callable[..., Any],
        *args: Any,
        key: str | None = None,
        returns: type[Any] | None = None,
        retry: RetryPolicy | None = None,
        check_args: bool = True,
        **kwargs: Any,
    ) -> Any:
        """Run ``fn(*args, **kwargs)`` (sync or async) once and journal its result; on replay return the
        record.

        ``key``: an idempotency key. An intent row is written before the call, so if the process dies during
        the call the step runs again on resume *with the same key* (``current_step().key``); a tool that
        honours
        the key then takes effect exactly once. Without a key a step is one journal write (its result).
        ``returns``: the pydantic model class to rebuild on replay (default: ``fn``'s return annotation, else
        the recorded class). ``retry``: a ``RetryPolicy`` applied before a failure is recorded.
        ``check_args``: a replay compares the step's name and a fingerprint of its arguments with the record
        (``DeterminismError`` if either differs); ``False`` accepts a deliberate change of the arguments.

        A result that is neither JSON nor a pydantic model fails the step with ``NotSerializable``. A failure
        is
        recorded, and a replay raises the same exception type with the same message (``StepError`` if the type
        cannot be rebuilt).
        """
        args_hash = _serde.fingerprint(args, kwargs) if check_args else None
        position, record = self._next(name)
        if record is not None:
            if args_hash is not None and record.args_hash is not None and record.args_hash != args_hash:
                self.broken = DeterminismError(self.run_id, position, name, name, arguments=True)
                raise self.broken
            status = record.status
            if status is _OK:
                if record.value_type is None:
                    return _serde.loads(record.value) if record.value is not None else None
                return _serde.decode(record.value, record.value_type, returns or _model_annotation(fn))
            if status is _ERROR:
                raise _serde.decode_error(
                    record.value, run_id=self.run_id, position=position, where=f"step {position} ({name!r})"
                )
            # An intent without a result: the process died during the call. Run it again, same key.
            key = record.key if record.key is not None else key
        clock = self._clock
        started = clock.time()
        if key is not None:
            self._write(
                StepRecord(self.run_id, position, name, _INTENT, None, None, key, started, None, args_hash)
            )
        token = _current_step.set(StepInfo(self.run_id, position, name, key))
        try:
            if retry is None:
                result = fn(*args, **kwargs)
                if type(result) not in _PLAIN and inspect.isawaitable(result):
                    result = await result
            else:
                result = await self._retrying(retry, fn, args, kwargs)
        except Exception as exc:
            self._fail(position, name, key, started, exc, args_hash)
            raise
        finally:
            _current_step.reset(token)
        try:
            text, value_type, value = _serde.encode(
                result, lambda: f"run {self.run_id!r}, step {position} ({name!r})"
            )
        except NotSerializable as exc:
            self._fail(position, name, key, started, exc, args_hash)
            raise
        self._write(
            StepRecord(
                self.run_id, position, name, _OK, text, value_type, key, started, clock.time(), args_hash
            )
        )
        return value

    @staticmethod
    async def _retrying(
        policy: RetryPolicy, fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> Any:
        async for attempt in stamina.retry_context(
            on=policy.on,
            attempts=policy.attempts,
            timeout=policy.timeout,
            wait_initial=policy.wait_initial,
            wait_max=policy.wait_max,
        ):
            with attempt:
                result = fn(*args, **kwargs)
                if inspect.isawaitable(result):
                    result = await result
                return result
        raise AssertionError("unreachable: stamina re-raises the last failure")  # pragma: no cover

    def _recorded_value(self, name: str) -> tuple[int, StepRecord | None]:
        position, record = self._next(name)
        if record is not None and record.status is not _OK:
            self.broken = DeterminismError(self.run_id, position, f"{record.name} ({record.status})", name)
            raise self.broken
        return position, record

    def _record_value(self, position: int, name: str, value: Any) -> None:
        now = self._clock.time()
        self._write(StepRecord(self.run_id, position, name, _OK, _serde.dumps(value), None, None, now, now))

    def last_step_ended(self) -> datetime | None:
        """When the run's latest step ended (aware, UTC), or ``None`` before its first step ended.

        A deterministic clock that costs no journal write: the time is the one already stored with that
        step, so a replay sees the same value. Use it where "about now" is enough and a step just ended (the
        agent loop's time budget); use :meth:`now` for the exact current time.

        >>> import asyncio
        >>> from corral.durable import MemoryJournal, Runtime
        >>> async def flow(ctx):
        ...     before = ctx.last_step_ended()
        ...     await ctx.step("work", lambda: 1)
        ...     return before is None and ctx.last_step_ended() is not None
        >>> Runtime(MemoryJournal()).run_sync(flow)
        True
        """
        return None if self._last_ended is None else datetime.fromtimestamp(self._last_ended, UTC)

    def now(self) -> datetime:
        """The current time (aware, UTC), recorded: a replay sees the same value."""
        position, record = self._recorded_value("now")
        if record is not None:
            return datetime.fromtimestamp(float(_serde.loads(record.value or "0")), UTC)
        value = self._clock.time()
        self._record_value(position, "now", value)
        return datetime.fromtimestamp(value, UTC)

    def uuid(self) -> str:
        """A random UUID4 as text, recorded."""
        position, record = self._recorded_value("uuid")
        if record is not None:
            return str(_serde.loads(record.value or '""'))
        value = str(_uuid.uuid4())
        self._record_value(position, "uuid", value)
        return value

    def random(self) -> float:
        """A random float in [0, 1), recorded."""
        position, record = self._recorded_value("random")
        if record is not None:
            return float(_serde.loads(record.value or "0"))
        value = _random.random()
        self._record_value(position, "random", value)
        return value

    # -- child runs -------------------------------------------------------------------------------------
    async def spawn(
        self, fn: Callable[..., Awaitable[Any]], *args: Any, run_id: str | None = None, **kwargs: Any
    ) -> str:
        """Start a child run of ``fn(ctx, *args, **kwargs)`` (recorded: a replay does not start it again) and
        return its id (default ``<this run id>.<position>``). A worker, or ``Runtime.resume``, executes it;
        ``join`` waits for it."""
        if self._start_child is None:
            raise UsageError(f"run {self.run_id!r}: this context cannot start child runs (no runtime)")
        child_id = run_id or f"{self.run_id}.{self._position}"
        start = self._start_child
        parent = self.run_id
        return await self.step(
            f"spawn:{fn.__module__}:{fn.__qualname__}", lambda: start(parent, child_id, fn, args, kwargs)
        )

    async def join(
        self,
        child_id: str,
        *,
        timeout: float | None = None,  # noqa: ASYNC109 - a durable deadline, as in ``wait``
        returns: type[Any] | None = None,
    ) -> Any:
        """Wait (parked, like ``wait``) until the child run ends; return its result, or raise its error
        (``RunCancelled`` if it was cancelled). ``timeout`` as in ``wait``."""
        outcome = await self.wait(f"child:{child_id}", timeout=timeout)
        status = outcome["status"]
        if status == "completed":
            return _serde.decode(outcome["output"], outcome["output_type"], returns)
        if status == "cancelled":
            raise RunCancelled(child_id)
        raise _serde.decode_error(
            outcome["output"], run_id=child_id, position=-1, where=f"child run {child_id!r}"
        )

    # -- parking ---------------------------------------------------------------------------------------------
    async def sleep(self, seconds: float) -> None:
        """A durable timer: the run parks (no thread, no process) until ``seconds`` from the first time it
        got here.

        If the time is already due when the run gets here (e.g. on replay), it returns at once.
        """
        position, record = self._next("sleep")
        if record is not None and record.status is _OK:
            return
        now = self._clock.time()
        if record is not None:
            wake_at = float(_serde.loads(record.value or "{}")["wake_at"])
        else:
            wake_at = now + seconds
            if wake_at > now:
                self._write(
                    StepRecord(
                        self.run_id,
                        position,
                        "sleep",
                        _WAITING,
                        _serde.dumps({"wake_at": wake_at}),
                        None,
                        None,
                        now,
                    )
                )
        if now >= wake_at:
            self._write(StepRecord(self.run_id, position, "sleep", _OK, "null", None, None, now, now))
            return
        raise Park("timer", None, wake_at)

    # ASYNC109: ``timeout`` is a durable deadline recorded in the journal, not an asyncio timeout.
    async def wait(
        self,
        signal: str,
        *,
        timeout: float | None = None,  # noqa: ASYNC109
        returns: type[Any] | None = None,
    ) -> Any:
        """Wait for ``send_signal(run_id, signal, payload)`` and return the payload (a pydantic model if
        ``returns`` is one). Signals queue: one sent before the wait is taken by it.

        While nothing has arrived the run parks: it holds no thread and no process until the signal (or the
        timeout) makes it runnable again. After ``timeout`` seconds without the signal, raises ``WaitTimeout``
        (recorded, so a replay raises it too).
        """
        name = f"wait:{signal}"
        position, record = self._next(name)
        if record is not None:
            if record.status is _OK:
                return _serde.decode(record.value, None, returns)
            if record.status is _ERROR:
                raise _serde.decode_error(
                    record.value, run_id=self.run_id, position=position, where=f"wait for {signal!r}"
                )
        now = self._clock.time()
        step = StepRecord(self.run_id, position, name, _OK, None, None, None, now, now)
        try:
            if self._generation is None:
                taken = self._journal.consume_signal(self.run_id, signal, step)
            else:
                taken = self._journal.consume_signal(self.run_id, signal, step, generation=self._generation)
        except JournalError as exc:
            self.journal_failure = exc
            raise
        if taken is not None:
            return _serde.decode(taken.value, None, returns)
        if record is not None:
            deadline = _serde.loads(record.value or "{}").get("deadline")
        else:
            deadline = None if timeout is None else now + timeout
            self._write(
                StepRecord(
                    self.run_id,
                    position,
                    name,
                    _WAITING,
                    _serde.dumps({"deadline": deadline}),
                    None,
                    None,
                    now,
                )
            )
        if deadline is not None and now >= deadline:
            timed_out = WaitTimeout(
                f"run {self.run_id!r}: no signal {signal!r} arrived before the wait's deadline "
                f"(timeout {timeout if timeout is not None else '?'} s)"
            )
            self._fail(position, name, None, now, timed_out)
            raise timed_out
        raise Park("signal", signal, deadline)
