"""Property: under random sends, crashes of handlers, kills of processes and deaths of the whole host,
every message is handled exactly once and each receiver sees each sender's messages in the order sent."""

from __future__ import annotations

import asyncio
import uuid
from collections import defaultdict
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from corral.agents import Child, Message, ProcessContext, Supervisor, System
from corral.durable import Journal, MemoryJournal, SqliteJournal

NAMES = ["p0", "p1", "p2"]
CRASH_ONCE: set[tuple[int, int]] = set()
CRASHED: set[tuple[int, int]] = set()


async def relay(ctx: ProcessContext, state: Any, msg: Message) -> Any:
    """Record what arrived (sender, seq, origin, hop) and pass the message on along its route."""
    body = msg.body
    key = (body["o"], body["h"])
    if key in CRASH_ONCE and key not in CRASHED:
        CRASHED.add(key)
        raise RuntimeError(f"crash while handling {key}")
    await asyncio.sleep(0)  # a point where a kill can land mid-handling
    if body["route"]:
        ctx.send(body["route"][0], {"o": body["o"], "h": body["h"] + 1, "route": body["route"][1:]})
    return [*(state or []), [msg.sender, msg.seq, body["o"], body["h"]]]


TREE = Supervisor("root", [Child(n, "relay") for n in NAMES], intensity=100_000, period=1)

op = st.one_of(
    st.tuples(st.just("send"), st.sampled_from(NAMES), st.lists(st.sampled_from(NAMES), max_size=4)),
    st.tuples(st.just("kill"), st.sampled_from(NAMES)),
    st.tuples(st.just("host_dies")),
    st.tuples(st.just("settle")),
)


async def scenario(journal: Journal, ops: list[tuple[Any, ...]], crash_at: set[tuple[int, int]]) -> None:
    CRASH_ONCE.clear()
    CRASHED.clear()
    CRASH_ONCE.update(crash_at)
    system = System(journal, {"relay": relay})
    await system.start(TREE)
    expected: set[tuple[int, int]] = set()
    origin = 0
    for step in ops:
        if step[0] == "send":
            route = list(step[2])
            await system.send(step[1], {"o": origin, "h": 0, "route": route})
            expected.update((origin, h) for h in range(len(route) + 1))
            origin += 1
        elif step[0] == "kill":
            system.kill(step[1], "killed by the test")
        elif step[0] == "host_dies":
            await system.close(flush=False)
            system = System(journal, {"relay": relay})
            await system.start(TREE)
        else:
            await system.idle()
        await asyncio.sleep(0)
    await system.idle()
    received: list[list[Any]] = [entry for n in NAMES for entry in (system.state(n) or [])]
    delivered = [(o, h) for _, _, o, h in received]
    assert sorted(delivered) == sorted(expected), received  # exactly once: nothing lost, nothing twice
    for name in NAMES:
        by_sender: dict[str, list[int]] = defaultdict(list)
        for sender, seq, _, _ in system.state(name) or []:
            by_sender[sender].append(seq)
        for sender, seqs in by_sender.items():
            assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs), (name, sender, seqs)
            if sender != "$ext":
                assert seqs == list(range(len(seqs))), (name, sender, seqs)  # no gap: nothing dropped
    await system.close()


crashes = st.sets(st.tuples(st.integers(0, 12), st.integers(0, 4)), max_size=6)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ops=st.lists(op, max_size=25), crash_at=crashes)
def test_exactly_once_in_sender_order(ops: list[tuple[Any, ...]], crash_at: set[tuple[int, int]]) -> None:
    asyncio.run(scenario(MemoryJournal(), ops, crash_at))


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(ops=st.lists(op, max_size=15), crash_at=crashes)
def test_exactly_once_on_sqlite(
    tmp_path: Path, ops: list[tuple[Any, ...]], crash_at: set[tuple[int, int]]
) -> None:
    journal = SqliteJournal(tmp_path / f"{uuid.uuid4().hex}.db")
    try:
        asyncio.run(scenario(journal, ops, crash_at))
    finally:
        journal.close()
