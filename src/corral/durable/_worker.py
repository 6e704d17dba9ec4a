"""Workers: claim runnable runs with a lease, execute them, and take over runs whose worker died."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

from corral.durable._journal import RunRecord, RunStatus
from corral.durable._runtime import Runtime, holder_is_dead, new_worker_id
from corral.durable.errors import JournalError, LeaseLost, RunCancelled, RunSuspended

log = logging.getLogger("corral.durable")


class Worker:
    """Executes runnable runs from the runtime's journal: pending runs, parked runs whose signal arrived or
    whose
    timer is due, and running runs whose lease expired (their worker died).

    Several workers (threads or processes, each with its own ``Runtime``/journal connection) may serve one
    journal: a claim is one ``BEGIN IMMEDIATE`` transaction, so no run executes twice at once.
    """

    def __init__(
        self,
        runtime: Runtime,
        *,
        concurrency: int = 16,
        poll_interval: float = 0.5,
        worker_id: str | None = None,
        on_failure: Callable[[str, Exception], None] | None = None,
    ) -> None:
        self.runtime = runtime
        self.concurrency = concurrency
        self.poll_interval = poll_interval
        self.worker_id = worker_id or new_worker_id()
        self.executed = 0
        self.failed = 0
        #: Called with the run id and the error of every execution that ended in an error (the run failed,
        #: or the journal failed under it), so that a caller can say why.
        self.on_failure = on_failure
        self._stop = asyncio.Event()

    def recover(self) -> int:
        """Take over runs whose lease is held by a process of this host that no longer exists. Returns how
        many
        were made claimable at once (runs of dead workers elsewhere wait for their lease to expire)."""
        freed = 0
        try:
            running = self.runtime.list_runs(status=RunStatus.RUNNING, limit=100_000)
        except JournalError as exc:
            log.warning("worker %s could not look for runs of dead workers: %s", self.worker_id, exc)
            return 0
        for run in running:
            if run.worker_id and holder_is_dead(run.worker_id):
                self.runtime.journal.release(
                    run.run_id, worker_id=run.worker_id, now=self.runtime.clock.time()
                )
                freed += 1
        return freed

    async def _execute(self, run: RunRecord) -> None:
        rt = self.runtime
        try:
            await rt._execute(run, rt._resolve(run), self.worker_id, fresh=False)
            self.executed += 1
        except RunSuspended:
            self.executed += 1
        except RunCancelled:  # cancelled from outside while it ran: what was asked for, not a failure
            self.executed += 1
            log.info("run %s stopped: it was cancelled", run.run_id)
        except LeaseLost as exc:  # another worker executes the run now; this execution's end is not the run's
            self.executed += 1
            log.warning("run %s: %s", run.run_id, exc)
        except Exception as exc:  # a failed run is recorded (or left for a later resume); the worker goes on
            self.executed += 1
            self.failed += 1
            log.info("run %s ended with %s: %s", run.run_id, type(exc).__name__, exc)
            if self.on_failure is not None:
                self.on_failure(run.run_id, exc)

    async def run_until_idle(self) -> int:
        """Execute runnable runs until none is left; return how many executions ran."""
        self.recover()
        start = self.executed
        while True:
            claimed = self.runtime.journal.claim(
                worker_id=self.worker_id,
                now=self.runtime.clock.time(),
                lease_seconds=self.runtime.lease_seconds,
                limit=self.concurrency,
            )
            if not claimed:
                return self.executed - start
            await asyncio.gather(*(self._execute(run) for run in claimed))

    async def serve(self) -> None:
        """Execute runs as they become runnable until ``stop()`` is called.

        Every ``poll_interval`` (at most every quarter second) it also looks for runs held by processes of
        this host that died, and takes them over at once rather than when their lease expires.
        """
        self._stop.clear()
        running: set[asyncio.Task[None]] = set()
        loop = asyncio.get_running_loop()
        recover_every = min(self.poll_interval, 0.25)
        next_recover = 0.0
        while not self._stop.is_set():
            if loop.time() >= next_recover:
                self.recover()
                next_recover = loop.time() + recover_every
            free = self.concurrency - len(running)
            claimed = []
            if free > 0:
                try:
                    claimed = self.runtime.journal.claim(
                        worker_id=self.worker_id,
                        now=self.runtime.clock.time(),
                        lease_seconds=self.runtime.lease_seconds,
                        limit=free,
                    )
                except JournalError as exc:  # e.g. locked for longer than the busy timeout: try again later
                    log.warning("worker %s could not claim runs: %s", self.worker_id, exc)
            for run in claimed:
                task = asyncio.create_task(self._execute(run))
                running.add(task)
                task.add_done_callback(running.discard)
            if not claimed:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stop.wait(), recover_every)
            else:
                await asyncio.sleep(0)
        if running:
            await asyncio.gather(*running, return_exceptions=True)

    def stop(self) -> None:
        """Ask ``serve`` to return after the runs it is executing."""
        self._stop.set()
