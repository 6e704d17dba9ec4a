"""Cancellation within one step, takeover within a second, and fenced writes by lease generation."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from corral.apps.cli import app
from corral.durable import (
    FakeClock,
    Journal,
    LeaseLost,
    RunContext,
    RunStatus,
    Runtime,
    SqliteJournal,
    StepStatus,
    Worker,
)

from . import _proc_flows

CHILD = Path(_proc_flows.__file__)


def _child(journal: Path, flow: str, run_id: str, *args: int) -> subprocess.Popen[str]:
    env = {**os.environ, "CORRAL_TEST_CHILD": "1"}
    return subprocess.Popen(
        [sys.executable, str(CHILD), str(journal), flow, run_id, *map(str, args)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )


def _wait_for(predicate, timeout: float, what: str) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.01)


@pytest.mark.slow
def test_cancel_stops_the_executing_process_at_its_next_step(tmp_path: Path) -> None:
    path = tmp_path / "j.sqlite"
    SqliteJournal(path).close()
    child = _child(path, "many_steps", "long", 20_000)  # ~20 s of 1 ms steps if nothing stops it
    watcher = SqliteJournal(path)
    try:
        _wait_for(lambda: len(watcher.load_steps("long")) >= 50, 30, "the child's first steps")
        before = time.time()
        result = CliRunner().invoke(app, ["runs", "cancel", "long", "--journal", str(path)])
        cancelled_at = time.time()
        assert result.exit_code == 0 and "cancelled" in result.output, result.output
        out, err = child.communicate(timeout=10)
        exited = time.time()
        steps = watcher.load_steps("long")
    finally:
        if child.poll() is None:
            child.kill()
            child.communicate()
        watcher.close()
    assert out.startswith("RunCancelled"), (out, err)
    last = max(s.ended_at or s.started_at for s in steps)
    print(f"last step {last - before:+.3f} s, exit {exited - before:.3f} s after `runs cancel` began")
    # The time from `runs cancel` to the last recorded step: nothing is recorded after the cancellation.
    assert last <= cancelled_at, f"a step was recorded {last - before:.3f} s after `runs cancel` began"
    assert exited - before < 2.0, f"the process went on for {exited - before:.2f} s after the cancellation"


@pytest.mark.slow
def test_a_worker_on_the_same_host_takes_over_a_killed_run_within_a_second(tmp_path: Path) -> None:
    path = tmp_path / "j.sqlite"
    SqliteJournal(path).close()
    child = _child(path, "two_steps", "orphan")
    rt = Runtime(SqliteJournal(path))  # lease 30 s: expiry cannot be what frees the run
    worker = Worker(rt, poll_interval=0.5)
    loop = asyncio.new_event_loop()
    serving = threading.Thread(target=loop.run_until_complete, args=(worker.serve(),), daemon=True)
    watcher = SqliteJournal(path)
    try:
        serving.start()

        def blocked() -> bool:
            run = watcher.get_run("orphan")
            return (
                run is not None and run.status is RunStatus.RUNNING and len(watcher.load_steps("orphan")) == 1
            )

        _wait_for(blocked, 30, "the child to block in its second step")
        time.sleep(0.3)  # the child is inside `block` now
        os.kill(child.pid, signal.SIGKILL)
        killed = time.time()
        child.communicate(timeout=10)
        _wait_for(lambda: rt.get_run("orphan").status is RunStatus.COMPLETED, 10, "the takeover")
        taken_over = watcher.load_steps("orphan")[1].started_at
    finally:
        loop.call_soon_threadsafe(worker.stop)
        serving.join(timeout=10)
        loop.close()
        watcher.close()
        rt.close()
        if child.poll() is None:
            child.kill()
            child.communicate()
    print(f"takeover {taken_over - killed:.3f} s after the SIGKILL")  # shown with `pytest -s`
    assert rt_result_done_by_worker(path)
    assert taken_over - killed < 1.0, (
        f"the worker took the run over {taken_over - killed:.2f} s after the kill"
    )


def rt_result_done_by_worker(path: Path) -> bool:
    rt = Runtime(SqliteJournal(path))
    try:
        return str(rt.result("orphan")) == f"done by {os.getpid()}"
    finally:
        rt.close()


async def test_a_stale_lease_holder_is_fenced_and_the_new_holder_goes_on(journal: Journal) -> None:
    """A blocks in a step past its lease, B takes over: A's late write is refused, B completes."""
    clock = FakeClock()
    a = Runtime(journal, clock=clock, lease_seconds=100, worker_id="host:1:a")
    b = Runtime(journal, clock=clock, lease_seconds=100, worker_id="host:2:b")
    release_a = asyncio.Event()
    release_b = asyncio.Event()
    entered = {"a": asyncio.Event(), "b": asyncio.Event()}

    async def slow(who: str) -> str:
        entered[who].set()
        await (release_a if who == "a" else release_b).wait()
        return who

    current = ["a"]  # which execution calls the step (the run's input is the same for both)

    async def flow(ctx: RunContext) -> str:
        first = await ctx.step("slow", slow, current[0])
        await ctx.step("after", lambda: "after")
        return first

    a.register(flow)
    b.register(flow)
    task_a = asyncio.create_task(a.run(flow, run_id="fenced"))
    await asyncio.wait_for(entered["a"].wait(), 10)
    clock.advance(250)  # A's lease (100 s) expired while it was blocked in its step
    current[0] = "b"
    task_b = asyncio.create_task(b.resume("fenced"))
    await asyncio.wait_for(entered["b"].wait(), 10)
    release_a.set()  # A's step returns after B took over: its result must be refused
    with pytest.raises(LeaseLost):
        await task_a
    release_b.set()
    assert await task_b == "b", "the current holder goes on and completes"
    steps = journal.load_steps("fenced")
    assert [(s.name, s.status, s.value) for s in steps] == [
        ("slow", StepStatus.OK, '"b"'),
        ("after", StepStatus.OK, '"after"'),
    ]
    assert journal.get_run("fenced").status is RunStatus.COMPLETED  # type: ignore[union-attr]


async def test_a_worker_does_not_count_a_cancelled_run_as_failed(journal: Journal) -> None:
    rt = Runtime(journal)
    failures: list[tuple[str, Exception]] = []

    async def cancels_itself(ctx: RunContext) -> int:
        await ctx.step("work", lambda: 1)
        rt.cancel(ctx.run_id)  # as `corral runs cancel` would, from outside
        return int(await ctx.step("more", lambda: 2))

    rt.register(cancels_itself)
    rt.start(cancels_itself, run_id="c")
    worker = Worker(rt, on_failure=lambda run_id, exc: failures.append((run_id, exc)))
    assert await worker.run_until_idle() == 1
    assert worker.failed == 0 and failures == []
    assert rt.get_run("c").status is RunStatus.CANCELLED
    assert [s.name for s in rt.steps("c")] == ["work"], "nothing recorded after the cancellation"
