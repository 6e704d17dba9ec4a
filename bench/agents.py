"""Durable mailboxes under load: many agents exchanging many messages in one process, beside an in-memory
``asyncio.Queue`` baseline from the same run.

Each agent forwards what it receives to another agent (a fixed pseudo-random route) until the message has
made its number of hops: AGENTS chains of HOPS messages, AGENTS × HOPS deliveries in all. Durable: a
``corral.agents.System`` on a SQLite journal (WAL, synchronous=NORMAL); every delivery is consumed and its
handler's result recorded in the journal (group commit). Baseline: one task per agent reading its own
``asyncio.Queue`` — same routes, nothing stored.

Figures: messages/s (median of REPEATS runs), delivery latency p50/p99 (send to the start of the handler,
all deliveries of the median run) and memory per idle agent (``tracemalloc``: a system with IDLE idle
agents started, divided by IDLE; the baseline's idle agent is a task awaiting its queue).

Usage: ``python bench/agents.py [AGENTS HOPS]`` (default: 1000 100, i.e. 100,000 messages).
"""

from __future__ import annotations

import asyncio
import gc
import os
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path
from typing import Any

from corral.agents import Child, Message, ProcessContext, Supervisor, System
from corral.durable import SqliteJournal

REPEATS = 3
IDLE = 10_000


def route(agent: int, hop: int, agents: int) -> int:
    """The next agent of a chain: deterministic, spread over all agents."""
    return (agent * 7919 + hop * 104729 + 1) % agents


async def forward(ctx: ProcessContext, state: Any, msg: Message) -> Any:
    hop, limit = msg.body
    if hop + 1 < limit:
        me = int(ctx.name[1:])
        ctx.send(f"a{route(me, hop, AGENTS_SEEN[0])}", [hop + 1, limit])
    return (state or 0) + 1


AGENTS_SEEN = [0]


async def durable_run(path: Path, agents: int, hops: int) -> tuple[float, list[float]]:
    AGENTS_SEEN[0] = agents
    latencies: list[float] = []
    clock = time.time

    def delivered(msg: Message) -> None:
        latencies.append(clock() - msg.sent_at)

    journal = SqliteJournal(path)
    system = System(journal, {"forward": forward}, on_deliver=delivered)
    tree = Supervisor("root", [Child(f"a{i}", "forward", 0) for i in range(agents)])
    await system.start(tree)
    started = time.perf_counter()
    await asyncio.gather(*(system.send(f"a{i}", [0, hops]) for i in range(agents)))  # one commit
    await system.idle(poll=0.001)
    elapsed = time.perf_counter() - started
    total = sum(system.state(f"a{i}") for i in range(agents))
    assert total == agents * hops, (total, agents * hops)
    await system.close()
    journal.close()
    return agents * hops / elapsed, latencies


async def queue_run(agents: int, hops: int) -> tuple[float, list[float]]:
    queues: list[asyncio.Queue[tuple[int, int, float]]] = [asyncio.Queue() for _ in range(agents)]
    latencies: list[float] = []
    done = asyncio.Event()
    remaining = [agents * hops]

    async def agent(me: int) -> None:
        queue = queues[me]
        while True:
            hop, limit, sent_at = await queue.get()
            latencies.append(time.time() - sent_at)
            remaining[0] -= 1
            if hop + 1 < limit:
                queues[route(me, hop, agents)].put_nowait((hop + 1, limit, time.time()))
            if remaining[0] == 0:
                done.set()

    tasks = [asyncio.create_task(agent(i)) for i in range(agents)]
    started = time.perf_counter()
    for i in range(agents):
        queues[i].put_nowait((0, hops, time.time()))
    await done.wait()
    elapsed = time.perf_counter() - started
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    return agents * hops / elapsed, latencies


async def idle_memory_durable(path: Path) -> float:
    async def noop(ctx: ProcessContext, state: Any, msg: Message) -> Any:
        return state

    journal = SqliteJournal(path)
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.take_snapshot()
    system = System(journal, {"noop": noop})
    await system.start(Supervisor("root", [Child(f"i{i}", "noop") for i in range(IDLE)]))
    await system.idle()
    gc.collect()
    after = tracemalloc.take_snapshot()
    tracemalloc.stop()
    grown = sum(s.size_diff for s in after.compare_to(before, "filename"))
    await system.close()
    journal.close()
    return grown / IDLE


async def idle_memory_queue() -> float:
    async def agent(queue: asyncio.Queue[Any]) -> None:
        while True:
            await queue.get()

    gc.collect()
    tracemalloc.start()
    before = tracemalloc.take_snapshot()
    queues: list[asyncio.Queue[Any]] = [asyncio.Queue() for _ in range(IDLE)]
    tasks = [asyncio.create_task(agent(q)) for q in queues]
    await asyncio.sleep(0.05)
    gc.collect()
    after = tracemalloc.take_snapshot()
    tracemalloc.stop()
    grown = sum(s.size_diff for s in after.compare_to(before, "filename"))
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    return grown / IDLE


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def main(agents: int, hops: int) -> None:
    print(f"load average: {os.getloadavg()[0]:.2f}   cores: {os.cpu_count()}")
    print(f"{agents} agents, {agents * hops:,} messages, median of {REPEATS} runs\n")
    with tempfile.TemporaryDirectory() as tmp:
        durable = [await durable_run(Path(tmp) / f"d{i}.db", agents, hops) for i in range(REPEATS)]
        queue = [await queue_run(agents, hops) for _ in range(REPEATS)]
        mem_durable = await idle_memory_durable(Path(tmp) / "idle.db")
        mem_queue = await idle_memory_queue()
    rows = []
    for name, runs, mem in (
        ("corral durable mailbox", durable, mem_durable),
        ("asyncio.Queue", queue, mem_queue),
    ):
        runs = sorted(runs, key=lambda r: r[0])
        rate, lat = runs[len(runs) // 2]
        rows.append((name, rate, [r for r, _ in runs], pct(lat, 0.5), pct(lat, 0.99), mem))
    print(f"{'':24} {'msg/s (median)':>15} {'runs':>28} {'p50 ms':>8} {'p99 ms':>8} {'B/idle agent':>13}")
    for name, rate, rates, p50, p99, mem in rows:
        runs_text = " ".join(f"{r:,.0f}" for r in rates)
        print(f"{name:24} {rate:15,.0f} {runs_text:>28} {p50 * 1e3:8.2f} {p99 * 1e3:8.2f} {mem:13,.0f}")
    print(f"\ndurable / in-memory throughput: {rows[0][1] / rows[1][1]:.2f}")
    print("targets: >= 20,000 durable messages/s on 2 cores; <= 10 KiB (10,240 B) per idle agent")


if __name__ == "__main__":
    a, h = (int(sys.argv[1]), int(sys.argv[2])) if len(sys.argv) > 2 else (1000, 100)
    asyncio.run(main(a, h))
