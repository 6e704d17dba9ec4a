"""The journal seam: the records it stores, the small interface every backend implements, and an in-memory
one.

A backend stores runs, steps (one row per step, a delta), signals, timers and leases. The runtime never reads
the
whole history per step: it loads a run's steps once when it (re)starts executing it and then only appends.
"""

from __future__ import annotations

import threading
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, replace
from enum import StrEnum

from corral.durable.errors import JournalCorrupt, RunNotFound


class RunStatus(StrEnum):
    """Lifecycle of a run. ``completed``, ``failed`` and ``cancelled`` are final."""

    PENDING = "pending"
    RUNNING = "running"
    WAITING = "waiting"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def is_final(self) -> bool:
        """True for completed, failed and cancelled."""
        return self in _FINAL


_FINAL = frozenset({RunStatus.COMPLETED, RunStatus.FAILED, RunStatus.CANCELLED})


class StepStatus(StrEnum):
    """State of a step row. ``intent`` is written before a keyed step runs; ``waiting`` by a parked
    wait/sleep."""

    INTENT = "intent"
    OK = "ok"
    ERROR = "error"
    WAITING = "waiting"


@dataclass(frozen=True, slots=True)
class RunRecord:
    """One run as the journal stores it. ``input`` and ``output`` are JSON text."""

    run_id: str
    function: str
    input: str
    status: RunStatus
    created_at: float
    updated_at: float
    output: str | None = None
    output_type: str | None = None
    waiting_for: str | None = None
    wake_at: float | None = None
    worker_id: str | None = None
    lease_expires_at: float | None = None
    #: The lease generation (fencing token): raised by every claim, so a write made under an older claim is
    #: refused even when the same worker id made both.
    generation: int = 0


@dataclass(frozen=True, slots=True)
class StepRecord:
    """One step row. ``value`` is JSON text: the result (ok), the error (error) or the wait's state
    (waiting)."""

    run_id: str
    position: int
    name: str
    status: StepStatus
    value: str | None = None
    value_type: str | None = None
    key: str | None = None
    started_at: float = 0.0
    ended_at: float | None = None
    #: A fingerprint of the step's arguments (``ctx.step``), compared on replay; None when not recorded.
    args_hash: int | None = None

    @property
    def duration(self) -> float | None:
        """Seconds between start and end, when the step ended."""
        return None if self.ended_at is None else self.ended_at - self.started_at


class Journal(ABC):
    """Storage of runs, steps, signals, timers and leases. Implementations: ``MemoryJournal``,
    ``SqliteJournal``.

    Every method is one atomic operation. ``corral.durable.testing.check_journal`` is the conformance suite.
    """

    # -- runs ------------------------------------------------------------------------------------------------
    @abstractmethod
    def create_run(self, run: RunRecord, *, lease_seconds: float | None = None) -> bool:
        """Insert ``run``; False (and no change) if its id exists. With ``lease_seconds`` the creator holds a
        lease
        (``run.worker_id``) from ``run.created_at``."""

    @abstractmethod
    def get_run(self, run_id: str) -> RunRecord | None:
        """The run, or None."""

    @abstractmethod
    def list_runs(
        self, *, statuses: Sequence[RunStatus] | None = None, limit: int = 100, offset: int = 0
    ) -> list[RunRecord]:
        """Runs, newest first, optionally only those in ``statuses``."""

    @abstractmethod
    def finish_run(
        self,
        run_id: str,
        status: RunStatus,
        output: str | None,
        output_type: str | None,
        *,
        worker_id: str,
        now: float,
        generation: int | None = None,
    ) -> bool:
        """Set a final status and output, drop lease and timer. False if the run is not ``running`` under
        ``worker_id`` (cancelled meanwhile, or taken over) or, with ``generation``, under that claim."""

    @abstractmethod
    def park_run(
        self,
        run_id: str,
        *,
        signal: str | None,
        wake_at: float | None,
        worker_id: str,
        now: float,
        generation: int | None = None,
    ) -> RunStatus | None:
        """Release the lease and park the run: ``waiting`` (with a timer at ``wake_at``), or straight back to
        ``pending`` if the awaited signal already arrived or the timer is already due. None if not held
        (with ``generation``: not held under that claim)."""

    @abstractmethod
    def cancel_run(self, run_id: str, *, now: float) -> RunRecord:
        """Mark a non-final run cancelled (a worker executing it stops at its next step). Raises
        RunNotFound."""

    @abstractmethod
    def release(self, run_id: str, *, worker_id: str, now: float) -> None:
        """Drop ``worker_id``'s lease so another worker may claim the run at once (status stays as it is)."""

    # -- steps -----------------------------------------------------------------------------------------------
    @abstractmethod
    def load_steps(self, run_id: str) -> list[StepRecord]:
        """All step rows of a run, by position."""

    @abstractmethod
    def write_step(self, step: StepRecord, *, generation: int | None = None) -> bool:
        """Insert a step row, or replace one whose status is ``intent`` or ``waiting``. False if a final row
        (``ok``/``error``) already holds that position: another execution got there first.

        With ``generation`` the write is fenced: also False (nothing written) unless the run is ``running``
        under the claim of that generation, so a cancelled run or a stale lease holder records nothing."""

    # -- signals ---------------------------------------------------------------------------------------------
    @abstractmethod
    def send_signal(self, run_id: str, name: str, payload: str, *, now: float) -> None:
        """Queue a signal; a run waiting for ``name`` becomes ``pending``. Raises RunNotFound."""

    @abstractmethod
    def consume_signal(
        self, run_id: str, name: str, step: StepRecord, *, generation: int | None = None
    ) -> StepRecord | None:
        """Atomically take the oldest unconsumed signal ``name`` and write ``step`` with its payload as value.
        None if there is none (or, with ``generation``, if the run is not running under that claim)."""

    # -- leases ----------------------------------------------------------------------------------------------
    @abstractmethod
    def claim(
        self,
        *,
        worker_id: str,
        now: float,
        lease_seconds: float,
        limit: int = 1,
        run_id: str | None = None,
        steal_from: str | None = None,
    ) -> list[RunRecord]:
        """Atomically lease runnable runs (pending; waiting with a due timer; running with an expired lease)
        and mark them running, each under a new lease ``generation`` (one more than the run's last). With
        ``run_id``: that run if it is not final and no live lease by another worker holds it (waiting runs
        included: the caller replays them). A lease held by ``steal_from`` (a worker known to be dead) counts
        as expired."""

    @abstractmethod
    def renew(self, *, worker_id: str, run_ids: Sequence[str], now: float, lease_seconds: float) -> set[str]:
        """Extend leases; the ids still held by ``worker_id`` and still running (not cancelled)."""

    def verify(self, run_id: str | None = None) -> list[JournalCorrupt]:
        """Check stored data (one run, or all): every damage found, or an empty list. Backends that keep
        checksums verify them here; the default reads every run and its steps, which verifies them on read."""
        found: list[JournalCorrupt] = []
        if run_id is not None:
            runs: list[str] = [run_id]
        else:
            try:
                runs = [r.run_id for r in self.list_runs(limit=2**62)]
            except JournalCorrupt as exc:
                return [exc]
        for rid in runs:
            try:
                if self.get_run(rid) is None:
                    raise RunNotFound(rid)
                self.load_steps(rid)
            except JournalCorrupt as exc:
                found.append(exc)
        return found

    def close(self) -> None:  # noqa: B027 - optional for backends without resources
        """Release resources."""


class MemoryJournal(Journal):
    """A journal in a dict: fast tests and examples. Thread-safe; gone when the process ends."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._runs: dict[str, RunRecord] = {}
        self._steps: dict[str, dict[int, StepRecord]] = {}
        self._signals: dict[str, list[tuple[str, str]]] = {}

    def create_run(self, run: RunRecord, *, lease_seconds: float | None = None) -> bool:
        with self._lock:
            if run.run_id in self._runs:
                return False
            if lease_seconds is not None:
                run = replace(run, lease_expires_at=run.created_at + lease_seconds)
            else:
                run = replace(run, worker_id=None, lease_expires_at=None, generation=0)
            self._runs[run.run_id] = run
            return True

    def get_run(self, run_id: str) -> RunRecord | None:
        with self._lock:
            return self._runs.get(run_id)

    def list_runs(
        self, *, statuses: Sequence[RunStatus] | None = None, limit: int = 100, offset: int = 0
    ) -> list[RunRecord]:
        with self._lock:
            runs = [r for r in self._runs.values() if statuses is None or r.status in statuses]
        runs.sort(key=lambda r: (r.created_at, r.run_id), reverse=True)
        return runs[offset : offset + limit]

    def _held(self, run_id: str, worker_id: str | None, generation: int | None = None) -> RunRecord | None:
        run = self._runs.get(run_id)
        if run is None or run.status != RunStatus.RUNNING:
            return None
        if worker_id is not None and run.worker_id != worker_id:
            return None
        if generation is not None and run.generation != generation:
            return None
        return run

    def finish_run(
        self,
        run_id: str,
        status: RunStatus,
        output: str | None,
        output_type: str | None,
        *,
        worker_id: str,
        now: float,
        generation: int | None = None,
    ) -> bool:
        with self._lock:
            run = self._held(run_id, worker_id, generation)
            if run is None:
                return False
            self._runs[run_id] = replace(
                run,
                status=status,
                output=output,
                output_type=output_type,
                updated_at=now,
                waiting_for=None,
                wake_at=None,
                worker_id=None,
                lease_expires_at=None,
            )
            return True

    def park_run(
        self,
        run_id: str,
        *,
        signal: str | None,
        wake_at: float | None,
        worker_id: str,
        now: float,
        generation: int | None = None,
    ) -> RunStatus | None:
        with self._lock:
            run = self._held(run_id, worker_id, generation)
            if run is None:
                return None
            ready = (signal is not None and any(n == signal for n, _ in self._signals.get(run_id, ()))) or (
                wake_at is not None and wake_at <= now
            )
            status = RunStatus.PENDING if ready else RunStatus.WAITING
            self._runs[run_id] = replace(
                run,
                status=status,
                waiting_for=signal,
                wake_at=wake_at,
                updated_at=now,
                worker_id=None,
                lease_expires_at=None,
            )
            return status

    def cancel_run(self, run_id: str, *, now: float) -> RunRecord:
        with self._lock:
            run = self._runs.get(run_id)
            if run is None:
                raise RunNotFound(run_id)
            if not run.status.is_final:
                # The lease stays so the executing worker learns of the cancellation when it renews.
                run = replace(run, status=RunStatus.CANCELLED, updated_at=now, waiting_for=None, wake_at=None)
                self._runs[run_id] = run
            return run

    def release(self, run_id: str, *, worker_id: str, now: float) -> None:
        with self._lock:
            run = self._runs.get(run_id)
            if run is not None and run.worker_id == worker_id:
                self._runs[run_id] = replace(run, worker_id=None, lease_expires_at=None, updated_at=now)

    def load_steps(self, run_id: str) -> list[StepRecord]:
        with self._lock:
            steps = self._steps.get(run_id, {})
            return [steps[p] for p in sorted(steps)]

    def write_step(self, step: StepRecord, *, generation: int | None = None) -> bool:
        with self._lock:
            if generation is not None and self._held(step.run_id, None, generation) is None:
                return False
            steps = self._steps.setdefault(step.run_id, {})
            old = steps.get(step.position)
            if old is not None and old.status in (StepStatus.OK, StepStatus.ERROR):
                return False
            steps[step.position] = step
            return True

    def send_signal(self, run_id: str, name: str, payload: str, *, now: float) -> None:
        with self._lock:
            run = self._runs.get(run_id)
            if run is None:
                raise RunNotFound(run_id)
            self._signals.setdefault(run_id, []).append((name, payload))
            if run.status == RunStatus.WAITING and run.waiting_for == name:
                self._runs[run_id] = replace(run, status=RunStatus.PENDING, updated_at=now)

    def consume_signal(
        self, run_id: str, name: str, step: StepRecord, *, generation: int | None = None
    ) -> StepRecord | None:
        with self._lock:
            if generation is not None and self._held(run_id, None, generation) is None:
                return None
            queue = self._signals.get(run_id, [])
            for i, (n, payload) in enumerate(queue):
                if n == name:
                    steps = self._steps.setdefault(run_id, {})
                    old = steps.get(step.position)
                    if old is not None and old.status in (StepStatus.OK, StepStatus.ERROR):
                        return None
                    del queue[i]
                    step = replace(step, value=payload)
                    steps[step.position] = step
                    return step
            return None

    def _runnable(self, run: RunRecord, now: float) -> bool:
        expired = run.worker_id is None or (run.lease_expires_at or 0.0) <= now
        if run.status in (RunStatus.PENDING, RunStatus.RUNNING):
            return expired
        if run.status == RunStatus.WAITING:
            return run.wake_at is not None and run.wake_at <= now
        return False

    def claim(
        self,
        *,
        worker_id: str,
        now: float,
        lease_seconds: float,
        limit: int = 1,
        run_id: str | None = None,
        steal_from: str | None = None,
    ) -> list[RunRecord]:
        with self._lock:
            if run_id is not None:
                run = self._runs.get(run_id)
                if run is None or run.status.is_final:
                    return []
                if run.worker_id not in (None, worker_id, steal_from) and (run.lease_expires_at or 0.0) > now:
                    return []
                candidates = [run]
            else:
                candidates = sorted(
                    (r for r in self._runs.values() if self._runnable(r, now)), key=lambda r: r.updated_at
                )[:limit]
            claimed = []
            for run in candidates:
                run = replace(
                    run,
                    status=RunStatus.RUNNING,
                    worker_id=worker_id,
                    lease_expires_at=now + lease_seconds,
                    updated_at=now,
                    generation=run.generation + 1,
                )
                self._runs[run.run_id] = run
                claimed.append(run)
            return claimed

    def renew(self, *, worker_id: str, run_ids: Sequence[str], now: float, lease_seconds: float) -> set[str]:
        held = set()
        with self._lock:
            for run_id in run_ids:
                run = self._runs.get(run_id)
                if run is not None and run.worker_id == worker_id and run.status == RunStatus.RUNNING:
                    self._runs[run_id] = replace(run, lease_expires_at=now + lease_seconds)
                    held.add(run_id)
        return held
