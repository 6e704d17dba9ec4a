"""Runs parked on approvals: threads, memory, and the time to park, decide and finish, in one process.

N agent runs (default 10,000) each ask to write (SQL that deletes) under a policy that asks before writes,
on a SQLite journal (WAL, synchronous=NORMAL). Each run parks on its approval; then every request is
approved through :class:`corral.guards.Approvals`, and one worker finishes the runs. Printed:

- threads (``threading.active_count()`` and the kernel's count for the process) before, with N parked, and
  after; resident memory before and with N parked (``VmRSS``), and per parked run;
- park: median and p95 of one run from start to parked (a model turn, the request, the wait);
- decide: median and p95 of one ``approve`` (ledger compare-and-set + the run's signal); list: one listing
  of every pending request;
- finish: a worker running all N approved runs to completion, per run.

Beside it, the same run the way approvals worked before durable approvals (``anchor``): an in-process
approver that blocks until a human answers, in ``asyncio.to_thread`` as the agent runs it. K runs
(default 200) wait for their answer at once; their threads are counted while they wait.

Usage: ``python bench/approvals.py [--runs N] [--anchor-runs K]``.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import statistics
import tempfile
import threading
import time
from collections.abc import Sequence
from pathlib import Path

from corral.agents import Agent
from corral.durable import RunSuspended, Runtime, SqliteJournal, Worker
from corral.guards import ApprovalDecision, ApprovalPolicy, ApprovalRequest, Approvals, sql_writes
from corral.models import AssistantMessage, Message, Model, ModelResponse, ToolCall, ToolResultMessage
from corral.tools import tool


@tool
async def run_sql(sql: str) -> str:
    """Run SQL (async: a sync tool would run in a thread and blur the thread counts)."""
    return "1 row changed"


class WriteThenAnswer(Model):
    """Asks for one write, then answers: a model that costs nothing, so the figures are corral's."""

    name = "bench"

    async def request(self, messages: Sequence[Message], **options: object) -> ModelResponse:
        if any(isinstance(m, ToolResultMessage) for m in messages):
            return ModelResponse(message=AssistantMessage(content="done"))
        call = ToolCall(id="c1", name="run_sql", arguments={"sql": "DELETE FROM users WHERE id = 1"})
        return ModelResponse(message=AssistantMessage(tool_calls=[call]))


def kernel_threads() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("Threads:"):
            return int(line.split()[1])
    return -1


def rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return -1.0


def ms(values: list[float]) -> str:
    ordered = sorted(values)
    p95 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.95))]
    return f"median {statistics.median(ordered) * 1000:.3f} ms, p95 {p95 * 1000:.3f} ms"


async def durable(n: int, directory: Path) -> None:
    rt = Runtime(SqliteJournal(directory / "journal.sqlite", check=False))
    agent = Agent(
        WriteThenAnswer(),
        tools=[run_sql],
        approvals=[ApprovalPolicy(tools="run_sql", ask=sql_writes())],
        name="bench-approvals",
    )
    gc.collect()
    threads0, kthreads0, rss0 = threading.active_count(), kernel_threads(), rss_mib()
    park: list[float] = []
    for i in range(n):
        started = time.perf_counter()
        try:
            await agent.run("remove user 1", runtime=rt, run_id=f"r{i}")
        except RunSuspended:
            park.append(time.perf_counter() - started)
        else:
            raise AssertionError("the run did not park")
        # Let the loop turn, as a server's does: the runtime cancels its lease renewer when a run parks,
        # and a cancelled task (with the context it copied) is freed only when the loop runs it.
        await asyncio.sleep(0)
    gc.collect()
    threads1, kthreads1, rss1 = threading.active_count(), kernel_threads(), rss_mib()
    approvals = Approvals(rt)
    started = time.perf_counter()
    pending = approvals.list(limit=n + 1)
    list_s = time.perf_counter() - started
    assert len(pending) == n, len(pending)
    decide: list[float] = []
    for record in pending:
        started = time.perf_counter()
        approvals.approve(record.id, by="bench")
        decide.append(time.perf_counter() - started)
    worker = Worker(rt, concurrency=64)
    started = time.perf_counter()
    finished = await worker.run_until_idle()
    finish_s = time.perf_counter() - started
    assert finished == n and worker.failed == 0, (finished, worker.failed)
    threads2, kthreads2 = threading.active_count(), kernel_threads()
    rt.close()
    print(f"corral durable approvals, {n} runs (SQLite, synchronous=NORMAL)")
    print(
        f"  threads (python/kernel): before {threads0}/{kthreads0}, {n} parked {threads1}/{kthreads1}, "
        f"after {threads2}/{kthreads2}"
    )
    per_run = (rss1 - rss0) * 1024 / n
    print(
        f"  memory: RSS before {rss0:.1f} MiB, {n} parked {rss1:.1f} MiB ({per_run:.2f} KiB per parked run)"
    )
    print(f"  park (start to parked): {ms(park)}")
    print(f"  decide (approve):       {ms(decide)}")
    print(f"  list {n} pending:       {list_s * 1000:.1f} ms")
    print(
        f"  finish (worker, {n} approved runs): {finish_s / n * 1000:.3f} ms per run, {finish_s:.1f} s in all"
    )


async def anchor(k: int, directory: Path) -> None:
    release = threading.Event()
    asked = threading.Semaphore(0)

    def human(request: ApprovalRequest) -> ApprovalDecision:
        asked.release()
        release.wait()
        return ApprovalDecision(approved=True, reason="ok", by="human")

    rt = Runtime(SqliteJournal(directory / "anchor.sqlite", check=False))
    agent = Agent(
        WriteThenAnswer(),
        tools=[run_sql],
        approvals=[ApprovalPolicy(tools="run_sql", ask=sql_writes())],
        approver=human,
    )
    gc.collect()
    threads0, rss0 = threading.active_count(), rss_mib()
    tasks = [asyncio.ensure_future(agent.run("remove user 1", runtime=rt, run_id=f"a{i}")) for i in range(k)]
    await asyncio.sleep(0.5)  # let every run reach its approval (or the queue for a thread)
    waiting = 0
    while asked.acquire(blocking=False):
        waiting += 1
    threads1, kthreads1, rss1 = threading.active_count(), kernel_threads(), rss_mib()
    release.set()
    started = time.perf_counter()
    results = await asyncio.gather(*tasks)
    assert all(r.reason == "completed" for r in results)
    rt.close()
    print(f"anchor: in-process blocking approver (the way before), {k} runs waiting at once")
    print(f"  threads (python/kernel): before {threads0}, waiting {threads1}/{kthreads1}")
    print(f"  asked a human: {waiting} of {k} (the rest queue for a thread of the default executor)")
    print(f"  memory: RSS +{rss1 - rss0:.1f} MiB; a restart loses every waiting approval")
    print(f"  finish after the answer: {(time.perf_counter() - started) * 1000:.0f} ms for {k}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=10_000)
    parser.add_argument("--anchor-runs", type=int, default=200)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        asyncio.run(durable(args.runs, Path(tmp)))
        asyncio.run(anchor(args.anchor_runs, Path(tmp)))


if __name__ == "__main__":
    main()
