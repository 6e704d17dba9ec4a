"""Property: any sequence of steps, crashes and resumes gives the result of the uninterrupted run."""

from __future__ import annotations

import asyncio
import itertools
import uuid
from collections import Counter
from pathlib import Path
from typing import Any, ClassVar

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from corral.durable import FakeClock, Journal, MemoryJournal, RunContext, RunSuspended, Runtime, SqliteJournal


class Crash(BaseException):
    """The process dies here."""


class State:
    crash_inside: ClassVar[set[int]] = (
        set()
    )  # op indexes whose step function dies after its effect, first time
    crash_after: ClassVar[set[int]] = set()  # op indexes after which the run code dies, the first time
    crashed: ClassVar[set[tuple[str, int]]] = set()
    effects: ClassVar[Counter[int]] = Counter()
    first_seen: ClassVar[dict[int, Any]] = {}


def effect(i: int, value: int) -> int:
    State.effects[i] += 1
    if i in State.crash_inside and ("inside", i) not in State.crashed:
        State.crashed.add(("inside", i))
        raise Crash
    return value * 2


def failing(i: int, message: str) -> None:
    State.effects[i] += 1
    raise ValueError(f"failed {i}: {message}")


async def program(ctx: RunContext, ops: list[list[Any]]) -> list[Any]:
    out: list[Any] = []
    for i, (kind, arg) in enumerate(ops):
        if kind == "step":
            out.append(await ctx.step(f"step{i}", effect, i, arg))
        elif kind == "keyed":
            out.append(await ctx.step(f"keyed{i}", effect, i, arg, key=f"{ctx.run_id}/{i}"))
        elif kind == "fail":
            try:
                await ctx.step(f"fail{i}", failing, i, arg)
            except ValueError as exc:
                out.append(str(exc))
        elif kind == "now":
            out.append(ctx.now().timestamp())
        elif kind in ("uuid", "random"):
            value = ctx.uuid() if kind == "uuid" else ctx.random()
            State.first_seen.setdefault(i, value)
            out.append(value)
        elif kind == "sleep":
            await ctx.sleep(arg)
            out.append("slept")
        elif kind == "wait":
            out.append(await ctx.wait(arg))
        if i in State.crash_after and ("after", i) not in State.crashed:
            State.crashed.add(("after", i))
            raise Crash
    return out


OPS = st.one_of(
    st.tuples(st.just("step"), st.integers(-5, 5)),
    st.tuples(st.just("keyed"), st.integers(-5, 5)),
    st.tuples(st.just("fail"), st.text("abc", max_size=3)),
    st.tuples(st.sampled_from(["now", "uuid", "random"]), st.none()),
    st.tuples(st.just("sleep"), st.integers(1, 1000)),
    st.tuples(st.just("wait"), st.sampled_from(["approval", "input"])),
).map(list)


def drive(
    journal: Journal, ops: list[list[Any]], crash_inside: set[int], crash_after: set[int]
) -> tuple[Any, int]:
    """Run to completion, restarting (a new Runtime on the same journal) after each crash and delivering each
    signal and timer the run parks on. Returns the result and the number of crashes."""
    State.crash_inside, State.crash_after = crash_inside, crash_after
    State.crashed, State.effects, State.first_seen = set(), Counter(), {}
    clock = FakeClock()
    crashes = 0
    for attempt in itertools.count():
        assert attempt < 100, "did not converge"
        rt = Runtime(journal, clock=clock)
        rt.register(program)
        try:
            return asyncio.run(rt.run(program, ops, run_id="p")), crashes
        except Crash:
            crashes += 1
        except RunSuspended as parked:
            if parked.signal is not None:
                rt.send_signal("p", parked.signal, f"payload for {parked.signal}")
            else:
                assert parked.wake_at is not None
                clock.advance(parked.wake_at - clock.time())
    raise AssertionError("unreachable")


def _normalise(result: list[Any], ops: list[list[Any]]) -> list[Any]:
    return ["<random>" if op[0] in ("uuid", "random") else v for v, op in zip(result, ops, strict=True)]


def check(make: Any, ops: list[list[Any]], crash_inside: set[int], crash_after: set[int]) -> None:
    expected, _ = drive(make(), ops, set(), set())
    expected_effects = Counter(State.effects)
    result, crashes = drive(make(), ops, crash_inside, crash_after)
    assert _normalise(result, ops) == _normalise(expected, ops)
    for i, first in State.first_seen.items():  # recorded randomness: what the code saw first, it sees forever
        assert result[i] == first
    for i, (kind, _) in enumerate(ops):
        died_inside = ("inside", i) in State.crashed
        # A step runs once; it runs again only if the process died inside it before its result was journaled.
        assert State.effects[i] == expected_effects[i] + (1 if died_inside else 0), (i, kind)
    assert crashes == len(State.crashed)


CRASHES = st.sets(st.integers(0, 11), max_size=4)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ops=st.lists(OPS, max_size=12), crash_inside=CRASHES, crash_after=CRASHES)
def test_crashes_and_resumes_equal_the_uninterrupted_run(
    ops: list[list[Any]], crash_inside: set[int], crash_after: set[int]
) -> None:
    check(MemoryJournal, ops, crash_inside, crash_after)


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(ops=st.lists(OPS, max_size=10), crash_inside=CRASHES, crash_after=CRASHES)
def test_the_same_on_sqlite(
    tmp_path: Path, ops: list[list[Any]], crash_inside: set[int], crash_after: set[int]
) -> None:
    counter = itertools.count()

    def make() -> Journal:
        # tmp_path is shared by every example: a fresh name per journal, never one a past example used.
        return SqliteJournal(tmp_path / f"{uuid.uuid4().hex}-{next(counter)}.sqlite")

    check(make, ops, crash_inside, crash_after)
