"""Supervised processes: messaging, OTP restart strategies and types, intensity and escalation, links and
monitors, and resumption of a killed child from its journal."""

from __future__ import annotations

import asyncio
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from corral._errors import UsageError
from corral.agents import (
    CallTimeout,
    Child,
    Message,
    NoProcess,
    ProcessContext,
    ProcessInfo,
    Stop,
    Supervisor,
    System,
)
from corral.durable import FakeClock, MemoryJournal, SqliteJournal

EFFECTS: Counter[str] = Counter()
GATE: dict[str, asyncio.Event] = {}


@pytest.fixture(autouse=True)
def _reset() -> None:
    EFFECTS.clear()
    GATE.clear()


async def echo(ctx: ProcessContext, state: Any, msg: Message) -> Any:
    if msg.kind == "call":
        ctx.reply(msg, msg.body)
    return (state or []) + [msg.body]


async def crasher(ctx: ProcessContext, state: Any, msg: Message) -> Any:
    if msg.body == "crash":
        raise RuntimeError("asked to crash")
    if msg.body == "stop":
        return Stop("normal", state)
    if msg.kind == "call":
        ctx.reply(msg, msg.body)
    return state


async def model_then_tool(ctx: ProcessContext, state: Any, msg: Message) -> Any:
    """A conversation turn: a model call, then a tool call that can hang (the test kills it there)."""

    def model() -> str:
        EFFECTS["model"] += 1
        return f"plan for {msg.body}"

    async def tool(plan: str) -> str:
        EFFECTS["tool"] += 1
        if "tool started" in GATE:
            GATE["tool started"].set()
        gate = GATE.get("tool")
        if gate is not None:
            await gate.wait()
        return f"result of {plan}"

    plan = await ctx.run.step("model", model)
    result = await ctx.run.step("tool", tool, plan)
    if msg.kind == "call":
        ctx.reply(msg, result)
    return (state or 0) + 1


BEHAVIOURS = {"echo": echo, "crasher": crasher, "turn": model_then_tool}


def names(tree: list[ProcessInfo]) -> dict[str, ProcessInfo]:
    out: dict[str, ProcessInfo] = {}
    for node in tree:
        out[node.name] = node
        out.update(names(list(node.children)))
    return out


async def started(tree: Supervisor, journal: Any = None, clock: FakeClock | None = None) -> System:
    system = System(journal or MemoryJournal(), BEHAVIOURS, clock=clock)
    await system.start(tree)
    return system


async def test_call_send_and_order() -> None:
    system = await started(Supervisor("root", [Child("e", "echo")]))
    assert await system.call("e", {"q": 1}, timeout=5) == {"q": 1}
    for i in range(20):
        await system.send("e", i)
    await system.idle()
    assert system.state("e") == [{"q": 1}, *range(20)]
    with pytest.raises(NoProcess):
        await system.send("nobody", 1)
    await system.close()


async def test_call_times_out_when_nobody_replies() -> None:
    async def silent(ctx: ProcessContext, state: Any, msg: Message) -> Any:
        return state

    system = System(MemoryJournal(), {"silent": silent})
    await system.start(Supervisor("root", [Child("s", "silent")]))
    with pytest.raises(CallTimeout):
        await system.call("s", "hello", timeout=0.05)
    await system.close()


async def test_killed_mid_step_resumes_without_repeating_the_model_call() -> None:
    GATE["tool"] = asyncio.Event()
    GATE["tool started"] = asyncio.Event()
    system = await started(Supervisor("root", [Child("w", "turn")], intensity=3))
    answer = asyncio.create_task(system.call("w", "q1", timeout=10))
    await GATE["tool started"].wait()
    system.kill("w")  # in the middle of the tool call
    GATE["tool"].set()
    assert await answer == "result of plan for q1"
    await system.idle()
    assert EFFECTS["model"] == 1  # completed before the kill: replayed, not repeated
    assert EFFECTS["tool"] == 2  # in flight at the kill: run again (at-least-once for that one step)
    info = names(system.tree())["w"]
    assert (info.restarts, info.reason, info.mailbox) == (1, "killed", 0)
    assert system.state("w") == 1  # the message was handled once
    await system.close()


async def test_crash_in_a_step_retries_that_step_only() -> None:
    attempts: Counter[str] = Counter()

    async def flaky(ctx: ProcessContext, state: Any, msg: Message) -> Any:
        def first() -> int:
            attempts["first"] += 1
            return 1

        def second() -> int:
            attempts["second"] += 1
            if attempts["second"] == 1:
                raise ConnectionError("provider outage")
            return 2

        total = await ctx.run.step("first", first) + await ctx.run.step("second", second)
        ctx.reply(msg, total)
        return total

    system = System(MemoryJournal(), {"flaky": flaky})
    await system.start(Supervisor("root", [Child("f", "flaky")], intensity=2))
    assert await system.call("f", None, timeout=5) == 3
    assert attempts == Counter({"first": 1, "second": 2})
    assert names(system.tree())["f"].reason == "ConnectionError: provider outage"
    await system.close()


@pytest.mark.parametrize(
    ("strategy", "restarted"),
    [("one_for_one", {"b"}), ("one_for_all", {"a", "b", "c"}), ("rest_for_one", {"b", "c"})],
)
async def test_strategies(strategy: Any, restarted: set[str]) -> None:
    tree = Supervisor("root", [Child(n, "crasher") for n in "abc"], strategy=strategy, intensity=5)
    system = await started(tree)
    system.kill("b")
    await system.idle()
    nodes = names(system.tree())
    assert {n for n in "abc" if nodes[n].restarts == 1} == restarted
    assert {n for n in "abc" if nodes[n].restarts == 0} == set("abc") - restarted
    assert all(nodes[n].status == "idle" for n in "abc")
    assert [await system.call(n, "ping", timeout=5) for n in "abc"] == ["ping"] * 3
    await system.close()


async def test_restart_types() -> None:
    tree = Supervisor(
        "root",
        [
            Child("perm", "crasher"),
            Child("trans", "crasher", restart="transient"),
            Child("temp", "crasher", restart="temporary"),
            Child("trans2", "crasher", restart="transient"),
        ],
        intensity=10,
    )
    system = await started(tree)
    await system.send("perm", "stop")  # permanent: restarted even after a normal exit
    await system.send("trans", "stop")  # transient, normal exit: stays down
    await system.send("temp", "crash")  # temporary: never restarted
    await system.idle()
    nodes = names(system.tree())
    assert nodes["perm"].restarts == 1 and nodes["perm"].status == "idle"
    assert (nodes["trans"].status, nodes["trans"].reason) == ("exited", "normal")
    assert (nodes["temp"].status, nodes["temp"].restarts) == ("exited", 0)
    with pytest.raises(NoProcess):
        await system.send("temp", "x")
    await system.close()


async def test_transient_child_is_restarted_after_a_crash() -> None:
    async def once(ctx: ProcessContext, state: Any, msg: Message) -> Any:
        EFFECTS["once"] += 1
        if EFFECTS["once"] == 1:
            raise ValueError("first time")
        return "ok"

    system = System(MemoryJournal(), {"once": once})
    await system.start(Supervisor("root", [Child("t", "once", restart="transient")]))
    await system.send("t", 1)
    await system.idle()
    assert (names(system.tree())["t"].restarts, system.state("t")) == (1, "ok")
    await system.close()


async def test_intensity_escalates_to_the_parent_and_stops_the_system() -> None:
    clock = FakeClock()
    team = Supervisor("team", [Child("w", "crasher")], intensity=1, period=60)
    system = await started(
        Supervisor("root", [team, Child("other", "echo")], intensity=1, period=60), clock=clock
    )
    await system.send("w", "crash")  # crashes on every restart: the message stays at the head
    stopped = system.stopped
    assert stopped is not None
    reason = await asyncio.wait_for(stopped, 5)
    assert "reached_max_restart_intensity" in reason and "team" in reason
    nodes = names(system.tree())
    assert nodes["team"].restarts == 1  # root restarted team once, then gave up itself
    assert "reached_max_restart_intensity" in (nodes["team"].reason or "")
    assert nodes["root"].status == "exited"
    await system.close()


async def test_intensity_counts_only_restarts_within_the_period() -> None:
    clock = FakeClock()
    system = await started(Supervisor("root", [Child("w", "crasher")], intensity=1, period=10), clock=clock)
    for _ in range(3):
        # A crash after the message is taken out of the way: handle "crash" via a kill instead.
        system.kill("w", "boom")
        clock.advance(11)
        await system.idle()
    stopped = system.stopped
    assert stopped is not None and not stopped.done()
    assert names(system.tree())["w"].restarts == 3
    system.kill("w", "boom")
    system.kill("w", "boom")
    assert stopped.done() and "reached_max_restart_intensity" in stopped.result()
    await system.close()


async def test_links_propagate_abnormal_exits_and_monitors_get_down() -> None:
    async def watcher(ctx: ProcessContext, state: Any, msg: Message) -> Any:
        if msg.kind == "down":
            return (state or []) + [[msg.sender, msg.body]]
        if msg.body == "watch":
            ctx.monitor("a")
            ctx.monitor("ghost")
        return state

    system = System(MemoryJournal(), {"crasher": crasher, "watcher": watcher})
    await system.start(Supervisor("root", [Child("w", "watcher")]))
    await system.spawn("a", "crasher")
    await system.spawn("b", "crasher")
    await system.spawn("c", "crasher")
    await system.link("a", "b")
    await system.send("w", "watch")
    await system.idle()
    await system.send("a", "crash")
    await system.idle()
    nodes = names(system.tree())
    assert (nodes["a"].status, nodes["b"].status, nodes["c"].status) == ("exited", "exited", "idle")
    assert nodes["b"].reason == "RuntimeError: asked to crash"  # the linked exit carries the reason
    assert system.state("w") == [["ghost", "noproc"], ["a", "RuntimeError: asked to crash"]]
    await system.close()


async def test_a_normal_exit_does_not_take_links_down() -> None:
    system = System(MemoryJournal(), {"crasher": crasher})
    await system.start(Supervisor("root", []))
    await system.spawn("a", "crasher")
    await system.spawn("b", "crasher")
    await system.link("a", "b")
    await system.send("a", "stop")
    await system.idle()
    nodes = names(system.tree())
    assert (nodes["a"].status, nodes["b"].status) == ("exited", "idle")
    await system.close()


async def test_request_reply_and_handoff_between_processes() -> None:
    async def front(ctx: ProcessContext, state: Any, msg: Message) -> Any:
        if msg.kind == "call" and msg.body["topic"] == "billing":
            ctx.handoff("billing", msg, {"conversation": [msg.body["text"]], "from": ctx.name})
            return state
        if msg.kind == "call":
            ctx.request("billing", "status?")  # a process never blocks: the reply is a later message
            return {"waiting": msg.reply_to is not None}
        if msg.kind == "reply":
            return {"got": msg.body}
        return state

    async def billing(ctx: ProcessContext, state: Any, msg: Message) -> Any:
        if msg.kind == "call":
            body = msg.body
            answer = "ok" if body == "status?" else f"billing took over: {body['conversation'][0]}"
            ctx.reply(msg, answer)
        return state

    system = System(MemoryJournal(), {"front": front, "billing": billing})
    await system.start(Supervisor("root", [Child("front", "front"), Child("billing", "billing")]))
    text = await system.call("front", {"topic": "billing", "text": "refund please"}, timeout=5)
    assert text == "billing took over: refund please"
    call = asyncio.create_task(system.call("front", {"topic": "other"}, timeout=0.2))
    with pytest.raises(CallTimeout):
        await call  # front asked billing instead of answering
    await system.idle()
    assert system.state("front") == {"got": "ok"}
    await system.close()


async def test_a_resumed_tree_keeps_state_restarts_and_queued_messages(tmp_path: Path) -> None:
    path = tmp_path / "j.db"
    tree = Supervisor("root", [Child("e", "echo"), Child("c", "crasher")], intensity=5)
    system = await started(tree, SqliteJournal(path))
    for i in range(5):
        await system.send("e", i)
    await system.idle()
    system.kill("c")
    await system.close()
    again = await started(tree, SqliteJournal(path))
    assert again.state("e") == [0, 1, 2, 3, 4]
    assert names(again.tree())["c"].restarts == 1
    assert await again.call("e", "more", timeout=5) == "more"
    await again.close()


async def test_supervisor_specs_are_checked() -> None:
    with pytest.raises(UsageError):
        Supervisor("root", [Child("a", "echo"), Child("a", "echo")])
    with pytest.raises(UsageError):
        Supervisor("root", [], strategy="one_for_some")  # type: ignore[arg-type]
    with pytest.raises(UsageError):
        Child("$ext", "echo")
    system = System(MemoryJournal(), BEHAVIOURS)
    with pytest.raises(UsageError, match="no behaviour"):
        await system.start(Supervisor("root", [Child("x", "missing")]))
    await system.close()


async def test_a_state_or_message_that_is_not_json_crashes_the_handler_not_the_system() -> None:
    async def bad(ctx: ProcessContext, state: Any, msg: Message) -> Any:
        if msg.body == "bad state":
            return object()
        if msg.body == "bad send":
            ctx.send("e", object())
        return state

    system = System(MemoryJournal(), {"bad": bad, "echo": echo})
    await system.start(Supervisor("root", [Child("b", "bad", restart="temporary"), Child("e", "echo")]))
    await system.send("b", "bad send")
    await system.idle()
    node = names(system.tree())["b"]
    assert node.status == "exited" and "PydanticSerializationError" in (node.reason or "")
    assert system.state("e") is None  # nothing was sent
    assert await system.call("e", "still fine", timeout=5) == "still fine"
    await system.close()


async def test_a_linked_child_spawned_by_a_handler_takes_its_supervised_parent_down() -> None:
    async def parent(ctx: ProcessContext, state: Any, msg: Message) -> Any:
        if msg.body == "spawn":
            ctx.spawn("helper", "crasher", link=True)
        return state

    system = System(MemoryJournal(), {"parent": parent, "crasher": crasher})
    await system.start(Supervisor("root", [Child("p", "parent")], intensity=5))
    await system.send("p", "spawn")
    await system.idle()
    assert names(system.tree()).get("p") is not None and "helper" in names(system.tree())
    await system.send("helper", "crash")
    await system.idle()
    nodes = names(system.tree())
    assert nodes["helper"].status == "exited"
    assert (nodes["p"].restarts, nodes["p"].reason) == (1, "RuntimeError: asked to crash")
    assert nodes["p"].status == "idle"
    await system.close()


async def test_one_runner_per_journal(tmp_path: Path) -> None:
    tree = Supervisor("root", [Child("e", "echo")])
    first = await started(tree, SqliteJournal(tmp_path / "j.db"))
    second = System(SqliteJournal(tmp_path / "j.db"), BEHAVIOURS)
    with pytest.raises(UsageError, match="one runner at a time"):
        await second.start(tree)
    await first.close()
    await second.start(tree)  # the first gave its ownership up
    assert await second.call("e", "hi", timeout=5) == "hi"
    await second.close()
