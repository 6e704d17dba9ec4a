"""The step API, replay, parking, errors — on both journals (the ``rt`` fixture is parametrized)."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pydantic
import pytest
import stamina

import corral.durable
from corral import CorralError, UsageError
from corral.durable import (
    DeterminismError,
    FakeClock,
    FunctionNotFound,
    MemoryJournal,
    NotSerializable,
    RetryPolicy,
    RunCancelled,
    RunContext,
    RunExists,
    RunNotFound,
    RunStatus,
    RunSuspended,
    Runtime,
    SqliteJournal,
    StepError,
    StepStatus,
    WaitTimeout,
    current_step,
)


class Reply(pydantic.BaseModel):
    text: str
    score: float


def make_reply(text: str) -> Reply:
    return Reply(text=text, score=0.5)


class Crash(BaseException):
    """Simulates the process dying inside a step: nothing after it is recorded."""


def test_public_names_are_sorted_and_exist() -> None:
    names = corral.durable.__all__
    assert names == sorted(names, key=lambda n: (not n.isupper(), n)) or names == sorted(names)
    for name in names:
        assert hasattr(corral.durable, name), name


async def test_step_runs_once_and_replay_returns_the_record(rt: Runtime) -> None:
    calls: list[str] = []

    def model(q: str) -> dict[str, Any]:
        calls.append(q)
        return {"answer": q.upper(), "n": (1, 2)}

    async def flow(ctx: RunContext, q: str) -> Any:
        a = await ctx.step("model", model, q)
        if len(calls) == 1 and ctx.position == 1 and not replayed:
            raise Crash
        return a

    replayed = False
    with pytest.raises(Crash):
        await rt.run(flow, "hi", run_id="r1")
    assert calls == ["hi"]
    assert rt.get_run("r1").status is RunStatus.RUNNING
    replayed = True
    # A new runtime on the same journal (as after a restart) resumes; the step is not called again.
    rt2 = Runtime(rt.journal, clock=rt.clock)
    rt2.register(flow)
    assert await rt2.resume("r1") == {"answer": "HI", "n": [1, 2]}
    assert calls == ["hi"]
    assert rt2.get_run("r1").status is RunStatus.COMPLETED
    assert [s.name for s in rt2.steps("r1")] == ["model"]


async def test_first_run_sees_what_replay_sees(rt: Runtime) -> None:
    async def flow(ctx: RunContext) -> Any:
        value = await ctx.step("tuple", lambda: (1, {2: "x"}))
        return value

    assert await rt.run(flow, run_id="t") == [1, {"2": "x"}]
    assert await rt.run(flow, run_id="t") == [1, {"2": "x"}]


async def test_async_and_sync_steps(rt: Runtime) -> None:
    async def fetch(n: int) -> int:
        await asyncio.sleep(0)
        return n * 2

    async def flow(ctx: RunContext) -> int:
        return await ctx.step("async", fetch, 4) + await ctx.step("sync", lambda x: x + 1, 1)

    assert await rt.run(flow) == 10


async def test_pydantic_results_are_rebuilt(rt: Runtime) -> None:
    seen: list[Any] = []

    async def flow(ctx: RunContext) -> Reply:
        r = await ctx.step("typed", make_reply, "a")
        r2 = await ctx.step("returns", lambda: Reply(text="b", score=1), returns=Reply)
        seen.extend([r, r2])
        return r

    first = await rt.run(flow, run_id="p")
    assert first == Reply(text="a", score=0.5)
    # Replay of a completed run and re-execution of the steps both give models back.
    rt.journal.create_run(
        corral.durable.RunRecord("p2", "x:y", '{"args":[],"kwargs":{}}', RunStatus.PENDING, 0.0, 0.0)
    )
    assert rt.result("p") == Reply(text="a", score=0.5)
    assert all(isinstance(x, Reply) for x in seen)
    steps = rt.steps("p")
    assert steps[0].value_type is not None and steps[0].value_type.endswith(":Reply")


async def test_replay_rebuilds_models_inside_a_resumed_run(rt: Runtime) -> None:
    crash = [True]

    async def flow(ctx: RunContext) -> str:
        r = await ctx.step("typed", make_reply, "z")
        if crash[0]:
            crash[0] = False
            raise Crash
        assert isinstance(r, Reply)
        return r.text

    with pytest.raises(Crash):
        await rt.run(flow, run_id="m")
    assert await rt.resume("m") == "z"


async def test_now_uuid_random_are_recorded(rt: Runtime, clock: FakeClock) -> None:
    first: dict[str, Any] = {}
    crash = [True]

    async def flow(ctx: RunContext) -> list[Any]:
        values = [ctx.now(), ctx.uuid(), ctx.random()]
        first.setdefault("v", values)
        if crash[0]:
            crash[0] = False
            raise Crash
        return [v.isoformat() if isinstance(v, datetime) else v for v in values]

    with pytest.raises(Crash):
        await rt.run(flow, run_id="n")
    clock.advance(500)
    out = await rt.resume("n")
    now, uid, rnd = first["v"]
    assert out == [now.isoformat(), uid, rnd]
    assert now == datetime.fromtimestamp(1_700_000_000.0, UTC)
    assert len(uid) == 36 and 0 <= rnd < 1


async def test_keyed_step_writes_intent_and_reruns_with_the_same_key(rt: Runtime) -> None:
    keys: list[str | None] = []
    die = [True]

    def charge(amount: int) -> str:
        info = current_step()
        assert info is not None
        keys.append(info.key)
        if die[0]:
            die[0] = False
            raise Crash  # the process dies during the call: intent written, no result
        return f"charged {amount}"

    async def flow(ctx: RunContext) -> str:
        return await ctx.step("tool:charge", charge, 5, key=f"{ctx.run_id}/charge")

    with pytest.raises(Crash):
        await rt.run(flow, run_id="k")
    (intent,) = rt.steps("k")
    assert intent.status is StepStatus.INTENT and intent.key == "k/charge"
    assert await rt.resume("k") == "charged 5"
    assert keys == ["k/charge", "k/charge"]
    (done,) = rt.steps("k")
    assert done.status is StepStatus.OK and done.key == "k/charge"


async def test_determinism_error_names_run_position_and_names(rt: Runtime) -> None:
    crash = [True]

    async def v1(ctx: RunContext) -> None:
        await ctx.step("model", lambda: 1)
        await ctx.step("tool:search", lambda: 2)
        if crash[0]:
            raise Crash

    with pytest.raises(Crash):
        await rt.run(v1, run_id="d")

    async def v2(ctx: RunContext) -> None:
        await ctx.step("model", lambda: 1)
        # User code swallowing the error must not hide the divergence.
        with contextlib.suppress(Exception):
            await ctx.step("tool:fetch", lambda: 2)
        await ctx.step("more", lambda: 3)

    # Same function path, new body: code changed under a running run.
    v2.__qualname__ = v1.__qualname__
    rt2 = Runtime(rt.journal, clock=rt.clock)
    rt2.register(v2)
    with pytest.raises(DeterminismError) as info:
        await rt2.resume("d")
    msg = str(info.value)
    assert "'d'" in msg and "step 1" in msg and "'tool:search'" in msg and "'tool:fetch'" in msg
    assert info.value.position == 1
    assert rt2.get_run("d").status is RunStatus.FAILED


async def test_failed_step_is_recorded_and_replays_the_same_error(rt: Runtime) -> None:
    calls = [0]

    def boom() -> None:
        calls[0] += 1
        raise KeyError("missing thing")

    async def flow(ctx: RunContext) -> str:
        try:
            await ctx.step("boom", boom)
        except KeyError as exc:
            caught = repr(exc)
        if calls[0] == 1 and not done:
            raise Crash
        return caught

    done = False
    with pytest.raises(Crash):
        await rt.run(flow, run_id="f")
    (step,) = rt.steps("f")
    assert step.status is StepStatus.ERROR and "KeyError" in (step.value or "")
    done = True
    assert await rt.resume("f") == repr(KeyError("missing thing"))
    assert calls[0] == 1


class OddError(Exception):
    def __init__(self, a: int, b: object) -> None:
        super().__init__(f"odd {a}")
        self.b = b


async def test_unrebuildable_error_becomes_step_error(rt: Runtime) -> None:
    async def flow(ctx: RunContext) -> None:
        await ctx.step("odd", lambda: (_ for _ in ()).throw(OddError(1, object())))

    with pytest.raises(OddError):
        await rt.run(flow, run_id="o")
    with pytest.raises(StepError, match=r"OddError: odd 1") as info:
        rt.result("o")
    assert info.value.error_type.endswith(":OddError")


async def test_run_failure_raises_original_then_recorded(rt: Runtime) -> None:
    async def flow(ctx: RunContext) -> None:
        await ctx.step("ok", lambda: 1)
        raise ValueError("bad input 7")

    with pytest.raises(ValueError, match="bad input 7"):
        await rt.run(flow, run_id="v")
    assert rt.get_run("v").status is RunStatus.FAILED
    with pytest.raises(ValueError, match="bad input 7"):
        await rt.run(flow, run_id="v")


async def test_unserialisable_result_is_a_clear_error_and_consistent(rt: Runtime) -> None:
    async def flow(ctx: RunContext) -> None:
        await ctx.step("model", lambda: 1)
        await ctx.step("handle", lambda: threading.Lock())

    with pytest.raises(NotSerializable, match=r"step 1 \('handle'\).*_thread.lock") as info:
        await rt.run(flow, run_id="u")
    assert isinstance(info.value, UsageError) and isinstance(info.value, CorralError)
    steps = rt.steps("u")
    assert [s.status for s in steps] == [StepStatus.OK, StepStatus.ERROR]
    assert rt.get_run("u").status is RunStatus.FAILED
    with pytest.raises(NotSerializable):
        rt.result("u")


async def test_unserialisable_run_arguments_and_results(rt: Runtime) -> None:
    async def flow(ctx: RunContext, x: Any) -> Any:
        return x

    with pytest.raises(NotSerializable, match="arguments"):
        await rt.run(flow, object())

    async def returns_set(ctx: RunContext) -> Any:
        return {1, 2}

    with pytest.raises(NotSerializable, match="result"):
        await rt.run(returns_set, run_id="s")
    assert rt.get_run("s").status is RunStatus.FAILED


async def test_retry_policy_retries_before_recording(rt: Runtime) -> None:
    attempts = [0]

    def flaky() -> str:
        attempts[0] += 1
        if attempts[0] < 3:
            raise ConnectionError("try again")
        return "ok"

    async def flow(ctx: RunContext) -> str:
        return await ctx.step("flaky", flaky, retry=RetryPolicy(on=ConnectionError, attempts=3))

    with stamina.set_testing(True, attempts=10, cap=True):  # no backoff waits; the policy's 3 attempts stand
        assert await rt.run(flow) == "ok"
    assert attempts[0] == 3


async def test_retry_policy_gives_up_and_records(rt: Runtime) -> None:
    calls_down[0] = 0

    async def flow(ctx: RunContext) -> str:
        return await ctx.step("down", _always_down, retry=RetryPolicy(on=ConnectionError, attempts=2))

    with stamina.set_testing(True, attempts=10, cap=True), pytest.raises(ConnectionError, match="down"):
        await rt.run(flow, run_id="g")
    assert rt.steps("g")[0].status is StepStatus.ERROR
    assert calls_down[0] == 2


calls_down = [0]


def _always_down() -> None:
    calls_down[0] += 1
    raise ConnectionError("down")


async def test_wait_parks_until_signal(rt: Runtime) -> None:
    async def approval(ctx: RunContext, what: str) -> dict[str, Any]:
        await ctx.step("plan", lambda: what)
        decision = await ctx.wait("approval")
        return {"what": what, "decision": decision}

    with pytest.raises(RunSuspended) as info:
        await rt.run(approval, "deploy", run_id="a")
    assert info.value.run_id == "a" and info.value.signal == "approval"
    run = rt.get_run("a")
    assert run.status is RunStatus.WAITING and run.waiting_for == "approval" and run.worker_id is None
    rt.send_signal("a", "approval", {"ok": True})
    assert rt.get_run("a").status is RunStatus.PENDING
    assert await rt.resume("a") == {"what": "deploy", "decision": {"ok": True}}


async def test_signal_sent_before_the_wait_is_taken(rt: Runtime) -> None:
    async def flow(ctx: RunContext) -> Any:
        return await ctx.wait("go", returns=Reply)

    rt.start(flow, run_id="early")
    rt.send_signal("early", "go", Reply(text="t", score=2))
    assert await rt.resume("early") == Reply(text="t", score=2)


async def test_wait_timeout_is_recorded(rt: Runtime, clock: FakeClock) -> None:
    async def flow(ctx: RunContext) -> str:
        try:
            await ctx.wait("approval", timeout=3600)
        except WaitTimeout:
            return "timed out"
        return "approved"

    with pytest.raises(RunSuspended) as info:
        await rt.run(flow, run_id="w")
    assert info.value.wake_at == clock.time() + 3600
    clock.advance(1800)
    with pytest.raises(RunSuspended):
        await rt.resume("w")  # not due yet: parks again, same deadline
    assert rt.get_run("w").wake_at == clock.time() + 1800
    clock.advance(1800)
    assert await rt.resume("w") == "timed out"
    rt.send_signal("w", "approval", True)  # too late: the timeout is recorded
    assert rt.result("w") == "timed out"


async def test_sleep_is_a_durable_timer(rt: Runtime, clock: FakeClock) -> None:
    async def flow(ctx: RunContext) -> str:
        await ctx.sleep(3600)
        await ctx.sleep(0)
        return "woke"

    with pytest.raises(RunSuspended) as info:
        await rt.run(flow, run_id="s")
    assert info.value.reason == "timer" and info.value.wake_at == clock.time() + 3600
    clock.advance(3599)
    with pytest.raises(RunSuspended):
        await rt.resume("s")
    clock.advance(1)
    assert await rt.resume("s") == "woke"


async def test_parking_cannot_be_swallowed_by_except_exception(rt: Runtime) -> None:
    async def flow(ctx: RunContext) -> str:
        try:
            await ctx.wait("x")
        except Exception:
            return "swallowed"
        return "signalled"

    with pytest.raises(RunSuspended):
        await rt.run(flow, run_id="b")
    rt.send_signal("b", "x")
    assert await rt.resume("b") == "signalled"


async def test_cancel_a_parked_run(rt: Runtime) -> None:
    async def flow(ctx: RunContext) -> None:
        await ctx.wait("never")

    with pytest.raises(RunSuspended):
        await rt.run(flow, run_id="c")
    assert rt.cancel("c").status is RunStatus.CANCELLED
    with pytest.raises(RunCancelled, match="'c'"):
        await rt.resume("c")
    rt.send_signal("c", "never")
    assert rt.get_run("c").status is RunStatus.CANCELLED


async def test_cancel_an_executing_run_stops_it_at_the_next_step(rt: Runtime) -> None:
    reached: list[int] = []

    async def flow(ctx: RunContext) -> None:
        for i in range(10):
            reached.append(i)
            await ctx.step("s", lambda: None)
            if i == 2:
                rt.cancel(ctx.run_id)

    with pytest.raises(RunCancelled):
        await rt.run(flow, run_id="x")
    assert reached == [0, 1, 2, 3]
    assert rt.get_run("x").status is RunStatus.CANCELLED


async def test_unknown_run_and_unknown_function(rt: Runtime) -> None:
    with pytest.raises(RunNotFound, match="'nope'"):
        rt.get_run("nope")
    with pytest.raises(RunNotFound):
        rt.send_signal("nope", "x")
    with pytest.raises(RunNotFound):
        await rt.resume("nope")
    with pytest.raises(RunNotFound):
        rt.cancel("nope")
    rt.journal.create_run(
        corral.durable.RunRecord(
            "lost", "gone.module:flow", '{"args":[],"kwargs":{}}', RunStatus.PENDING, 0.0, 0.0
        )
    )
    with pytest.raises(FunctionNotFound, match=r"'lost'.*gone\.module:flow"):
        await rt.resume("lost")


async def test_run_id_taken_by_another_function(rt: Runtime) -> None:
    async def one(ctx: RunContext) -> int:
        return 1

    async def two(ctx: RunContext) -> int:
        return 2

    assert await rt.run(one, run_id="same") == 1
    assert rt.start(one, run_id="same") == "same"
    with pytest.raises(RunExists, match="'same'"):
        await rt.run(two, run_id="same")


def test_run_sync_and_sync_function_rejected(tmp_path: Path) -> None:
    rt = Runtime(SqliteJournal(tmp_path / "j.sqlite"))

    async def flow(ctx: RunContext, a: int, *, b: int) -> int:
        return await ctx.step("add", lambda: a + b)

    assert rt.run_sync(flow, 1, b=2) == 3

    def not_async(ctx: RunContext) -> int:
        return 1

    with pytest.raises(UsageError, match="not an async function"):
        rt.run_sync(not_async)  # type: ignore[arg-type]
    rt.close()


async def test_default_runtime_uses_the_configured_journal(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CORRAL_JOURNAL", str(tmp_path / "configured.sqlite"))
    rt = Runtime()
    assert isinstance(rt.journal, SqliteJournal) and rt.journal.path == tmp_path / "configured.sqlite"
    rt.close()


async def test_lost_lease_stops_the_execution(tmp_path: Path) -> None:
    clock = FakeClock()
    journal = MemoryJournal()
    rt = Runtime(journal, clock=clock, lease_seconds=10)
    other = Runtime(journal, clock=clock, lease_seconds=10)
    gate = asyncio.Event()
    executed: list[str] = []

    executions = [0]

    async def slow(ctx: RunContext) -> str:
        executions[0] += 1
        await ctx.step("first", lambda: executed.append("first"))
        if executions[0] == 1:
            await gate.wait()
        await ctx.step("second", lambda: executed.append("second by " + ctx.run_id))
        return "done"

    other.register(slow)
    task = asyncio.create_task(rt.run(slow, run_id="l"))
    await asyncio.sleep(0.01)
    clock.advance(11)  # rt's lease expired without renewal (its renewer runs in real time, every 3.3 s)
    assert await other.resume("l") == "done"
    gate.set()
    with pytest.raises(corral.durable.LeaseLost):
        await task
    assert executed == ["first", "second by l"]


async def test_run_that_now_ends_before_its_recorded_steps_is_a_determinism_error(rt: Runtime) -> None:
    crash = [True]

    async def v1(ctx: RunContext) -> str:
        await ctx.step("a", lambda: 1)
        if crash[0]:
            raise Crash
        await ctx.step("b", lambda: 2)
        return "v1"

    with pytest.raises(Crash):
        await rt.run(v1, run_id="short")

    async def v2(ctx: RunContext) -> str:
        return "v2 skips every step"

    v2.__qualname__ = v1.__qualname__
    rt2 = Runtime(rt.journal, clock=rt.clock)
    rt2.register(v2)
    with pytest.raises(
        DeterminismError, match=r"step 0: the journal recorded step 'a' here but the code now asks"
    ):
        await rt2.resume("short")


async def test_concurrent_steps_in_one_run_replay(rt: Runtime) -> None:
    calls: list[str] = []
    crash = [True]

    async def slow(name: str, delay: float) -> str:
        calls.append(name)
        await asyncio.sleep(delay)
        return name.upper()

    async def parallel(ctx: RunContext) -> list[str]:
        results = await asyncio.gather(
            ctx.step("tool:a", slow, "a", 0.02),
            ctx.step("tool:b", slow, "b", 0.0),
            ctx.step("tool:c", slow, "c", 0.01),
        )
        if crash[0]:
            crash[0] = False
            raise Crash
        return list(results)

    with pytest.raises(Crash):
        await rt.run(parallel, run_id="par")
    assert [s.name for s in rt.steps("par")] == ["tool:a", "tool:b", "tool:c"]
    assert await rt.resume("par") == ["A", "B", "C"]
    assert sorted(calls) == ["a", "b", "c"]


async def _echo(ctx: RunContext, value: int) -> int:
    return value


def test_a_run_id_taken_with_other_arguments_is_refused() -> None:
    rt = Runtime(MemoryJournal())
    assert rt.run_sync(_echo, 1, run_id="same") == 1
    assert rt.run_sync(_echo, 1, run_id="same") == 1  # same arguments: the recorded outcome
    with pytest.raises(RunExists, match="other arguments"):
        rt.run_sync(_echo, 2, run_id="same")
