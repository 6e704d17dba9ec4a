"""Workers and leases: claiming, parking without threads, takeover after a crash, no double execution."""

from __future__ import annotations

import asyncio
import os
import sqlite3
import threading
import time
from collections import Counter
from pathlib import Path

from corral.durable import FakeClock, RunCancelled, RunContext, RunStatus, Runtime, SqliteJournal, Worker
from corral.durable._runtime import _HOST, holder_is_dead
from corral.durable.testing import crash_flow, make_counter

EXECUTED: Counter[tuple[str, int]] = Counter()
_LOCK = threading.Lock()


def _mark(run_id: str, i: int) -> int:
    time.sleep(0.0005)  # long enough that both worker threads get runs
    with _LOCK:
        EXECUTED[(run_id, i)] += 1
    return i


async def counted(ctx: RunContext, n: int) -> int:
    total = 0
    for i in range(n):
        total += await ctx.step("mark", _mark, ctx.run_id, i)
        await asyncio.sleep(0)  # let other runs interleave
    return total


async def approve(ctx: RunContext, what: str) -> str:
    decision = await ctx.wait("approval")
    await ctx.sleep(60)
    return f"{what}: {decision}"


async def test_worker_runs_pending_signalled_and_due_runs(tmp_path: Path) -> None:
    clock = FakeClock()
    rt = Runtime(SqliteJournal(tmp_path / "j.sqlite"), clock=clock)
    ids = [rt.start(approve, f"deploy {i}") for i in range(3)]
    worker = Worker(rt)
    assert await worker.run_until_idle() == 3
    assert {rt.get_run(i).status for i in ids} == {RunStatus.WAITING}
    rt.send_signal(ids[0], "approval", "yes")
    assert await worker.run_until_idle() == 1
    assert rt.get_run(ids[0]).status is RunStatus.WAITING and rt.get_run(ids[0]).waiting_for is None
    clock.advance(60)
    assert await worker.run_until_idle() == 1
    assert rt.result(ids[0]) == "deploy 0: yes"
    assert {rt.get_run(i).status for i in ids[1:]} == {RunStatus.WAITING}
    rt.close()


async def test_expired_lease_is_taken_over(tmp_path: Path) -> None:
    clock = FakeClock()
    journal = SqliteJournal(tmp_path / "j.sqlite")
    rt = Runtime(journal, clock=clock, lease_seconds=30)
    run_id = rt.start(counted, 3)
    # A worker on another machine claims the run and dies: its lease stays until it expires.
    assert journal.claim(worker_id="far-away:1:dead", now=clock.time(), lease_seconds=30, limit=5)
    worker = Worker(rt)
    assert await worker.run_until_idle() == 0
    clock.advance(31)
    assert await worker.run_until_idle() == 1
    assert rt.result(run_id) == 3
    rt.close()


def _dead_pid() -> int:
    pid = os.fork()
    if pid == 0:
        os._exit(0)
    os.waitpid(pid, 0)
    return pid


async def test_dead_local_worker_is_recovered_at_once(tmp_path: Path) -> None:
    pid = _dead_pid()
    dead = f"{_HOST}:{pid}:abcdef"
    assert holder_is_dead(dead)
    assert not holder_is_dead(f"{_HOST}:{os.getpid()}:abcdef")
    assert not holder_is_dead("other-host:1:abcdef")
    journal = SqliteJournal(tmp_path / "j.sqlite")
    rt = Runtime(journal)
    run_id = rt.start(counted, 2)
    journal.claim(worker_id=dead, now=rt.clock.time(), lease_seconds=3600, run_id=run_id)
    assert await Worker(rt).run_until_idle() == 1  # no waiting for the hour-long lease
    assert rt.result(run_id) == 1
    # rt.resume takes over from a dead local holder too.
    other = rt.start(counted, 2)
    journal.claim(worker_id=dead, now=rt.clock.time(), lease_seconds=3600, run_id=other)
    assert await rt.resume(other) == 1
    rt.close()


def test_two_worker_threads_never_execute_a_run_twice(tmp_path: Path) -> None:
    path = tmp_path / "j.sqlite"
    starter = Runtime(SqliteJournal(path))
    ids = [starter.start(counted, 5) for _ in range(40)]
    EXECUTED.clear()
    workers: list[Worker] = []

    def serve() -> None:
        rt = Runtime(SqliteJournal(path))
        worker = Worker(rt, concurrency=4)
        workers.append(worker)
        asyncio.run(worker.run_until_idle())
        rt.close()

    threads = [threading.Thread(target=serve) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert all(starter.result(i) == 10 for i in ids)
    assert len(EXECUTED) == 40 * 5
    assert set(EXECUTED.values()) == {1}, "a step ran twice"
    assert sum(w.executed for w in workers) == 40 and all(w.executed > 0 for w in workers)
    starter.close()


async def test_parked_runs_hold_no_thread_and_resume_on_signal(tmp_path: Path) -> None:
    rt = Runtime(SqliteJournal(tmp_path / "j.sqlite"))
    threads_before = threading.active_count()
    ids = [rt.start(approve, f"item {i}") for i in range(500)]
    worker = Worker(rt, concurrency=64)
    assert await worker.run_until_idle() == 500
    assert len(rt.list_runs(status=RunStatus.WAITING, limit=1000)) == 500
    assert threading.active_count() == threads_before
    assert len(asyncio.all_tasks()) == 1  # only this test's task: parked runs are rows, not coroutines
    for i in ids:
        rt.send_signal(i, "approval", "ok")
    assert await worker.run_until_idle() == 500
    assert len(rt.list_runs(status=RunStatus.WAITING, limit=1000)) == 500  # now sleeping 60 s each
    rt.clock = FakeClock(rt.clock.time() + 61)
    assert await worker.run_until_idle() == 500
    assert rt.result(ids[7]) == "item 7: ok"
    rt.close()


async def test_serve_until_stopped(tmp_path: Path) -> None:
    rt = Runtime(SqliteJournal(tmp_path / "j.sqlite"))
    worker = Worker(rt, poll_interval=0.01)
    task = asyncio.create_task(worker.serve())
    run_id = rt.start(approve, "x")
    for _ in range(200):
        await asyncio.sleep(0.01)
        if rt.get_run(run_id).status is RunStatus.WAITING:
            break
    rt.send_signal(run_id, "approval", 1)
    for _ in range(200):
        await asyncio.sleep(0.01)
        if rt.get_run(run_id).wake_at is not None:
            break
    assert rt.get_run(run_id).status is RunStatus.WAITING
    worker.stop()
    await asyncio.wait_for(task, 5)


async def square(ctx: RunContext, x: int) -> int:
    return await ctx.step("square", lambda: x * x)


async def broken_child(ctx: RunContext) -> None:
    await ctx.step("explode", _explode)


def _explode() -> None:
    raise ArithmeticError("child blew up")


async def fan_out(ctx: RunContext, xs: list[int]) -> dict[str, object]:
    ids = [await ctx.spawn(square, x) for x in xs]
    results = [await ctx.join(i) for i in ids]
    bad = await ctx.spawn(broken_child, run_id=f"{ctx.run_id}/bad")
    try:
        await ctx.join(bad)
    except ArithmeticError as exc:
        error = str(exc)
    waits = await ctx.spawn(approve, "never")
    rt_cancel_marker = await ctx.step("cancel-child", lambda: waits)
    try:
        await ctx.join(rt_cancel_marker)
    except RunCancelled:
        cancelled = True
    return {"ids": ids, "results": results, "error": error, "cancelled": cancelled}


async def test_spawn_and_join_child_runs(tmp_path: Path) -> None:
    rt = Runtime(SqliteJournal(tmp_path / "j.sqlite"))
    parent = rt.start(fan_out, [2, 3], run_id="parent")
    worker = Worker(rt)
    await worker.run_until_idle()
    # The third child waits for an approval that never comes: cancelling it wakes the parent.
    child = "parent.6"
    assert rt.get_run(child).status is RunStatus.WAITING
    rt.cancel(child)
    await worker.run_until_idle()
    assert rt.result(parent) == {
        "ids": ["parent.0", "parent.1"],
        "results": [4, 9],
        "error": "child blew up",
        "cancelled": True,
    }
    # Each child ran once and was started once, although the parent replayed several times.
    assert [r.run_id for r in rt.list_runs(limit=10)][::-1] == [
        "parent",
        "parent.0",
        "parent.1",
        "parent/bad",
        "parent.6",
    ]
    rt.close()


def test_two_worker_processes_never_execute_a_run_twice(tmp_path: Path) -> None:
    journal_path, counter_path = tmp_path / "j.sqlite", str(tmp_path / "counter.sqlite")
    make_counter(counter_path)
    starter = Runtime(SqliteJournal(journal_path))
    ids = [starter.start(crash_flow, 10, counter_path) for _ in range(60)]
    starter.close()
    pids = []
    for _ in range(2):
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                rt = Runtime(SqliteJournal(journal_path))
                asyncio.run(Worker(rt, concurrency=4).run_until_idle())
                code = 0
            finally:
                os._exit(code)
        pids.append(pid)
    for pid in pids:
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
    rt = Runtime(SqliteJournal(journal_path))
    assert all(rt.result(i) == sum(range(20)) for i in ids)
    rt.close()
    conn = sqlite3.connect(counter_path)
    per_step = conn.execute(
        "SELECT count(*), count(DISTINCT run_id || '/' || position) FROM executions"
    ).fetchone()
    assert per_step == (60 * 20, 60 * 20), "a step was executed twice"
    assert conn.execute("SELECT n FROM counter").fetchone() == (600,)
    conn.close()
