"""The agent loop with a scripted model: every path of the loop, each guard with its reason."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Sequence
from typing import Any

import pytest
from pydantic import BaseModel

import corral.agents
from corral.agents import (
    Agent,
    AgentConfigError,
    AgentNotFound,
    ApprovalDecided,
    CorrectionSent,
    GuardTripped,
    ModelResponded,
    RunFinished,
    RunStarted,
    RunSummary,
    ToolCalled,
    ToolOutcome,
    ToolReturned,
    event_adapter,
    run_agent,
)
from corral.durable import FakeClock, MemoryJournal, RunContext, Runtime, Worker
from corral.guards import ApprovalDecision, ApprovalRequest, Guards, approve_all, deny_all
from corral.models import (
    AssistantMessage,
    Message,
    ModelResponse,
    ScriptedModel,
    ToolCall,
    ToolDefinition,
    ToolResultMessage,
    Usage,
    UserMessage,
)
from corral.models.errors import ProviderServerError
from corral.tools import ToolContext, tool


def test_public_names_are_sorted_and_exported() -> None:
    assert corral.agents.__all__ == sorted(corral.agents.__all__)
    for name in corral.agents.__all__:
        assert hasattr(corral.agents, name)


calls: list[tuple[str, Any]] = []


@tool
def add(a: int, b: int) -> int:
    """Add two integers."""
    calls.append(("add", (a, b)))
    return a + b


@tool
def divide(a: float, b: float) -> float:
    """Divide a by b."""
    calls.append(("divide", (a, b)))
    return a / b


@pytest.fixture(autouse=True)
def _reset_calls() -> None:
    calls.clear()


@pytest.fixture
def rt() -> Runtime:
    return Runtime(MemoryJournal())


def tool_results(messages: Sequence[Message]) -> list[ToolResultMessage]:
    return [m for m in messages if isinstance(m, ToolResultMessage)]


def last_feedback(model: ScriptedModel) -> Message:
    return model.calls[-1].messages[-1]


async def test_success_with_a_tool_call(rt: Runtime) -> None:
    model = ScriptedModel([("add", {"a": 2, "b": 3}), "2 + 3 = 5"])
    seen: list[object] = []
    agent = Agent(model, tools=[add], instructions="Use the tools.", on_event=seen.append)
    result = await agent.run("What is 2 + 3?", runtime=rt, run_id="ok-1")
    assert (result.output, result.status, result.reason) == ("2 + 3 = 5", "completed", "completed")
    assert (result.turns, result.tool_calls, result.run_id) == (2, 1, "ok-1")
    assert calls == [("add", (2, 3))]
    # The model saw the system instructions, the prompt, its call and the tool's result.
    second = model.calls[1].messages
    assert second[0].content == "Use the tools."  # type: ignore[union-attr]
    assert tool_results(second)[0].content == "5" and not tool_results(second)[0].is_error
    assert model.calls[0].tools[0].name == "add"
    # Events, in order, delivered live and kept in the result.
    kinds = [type(e) for e in result.events]
    assert kinds == [RunStarted, ModelResponded, ToolCalled, ToolReturned, ModelResponded, RunFinished]
    assert seen == result.events
    assert result.usage.requests == 2 and result.usage.total_tokens > 0
    # Each effect is one journaled step: the run clock (once, at the start), the model, the tool. Later
    # turns read the time from the last step's journaled end: no extra row per turn.
    assert [s.name for s in rt.steps("ok-1")] == [
        "now",
        "model:scripted",
        "tool:add",
        "model:scripted",
    ]
    tool_step = rt.steps("ok-1")[2]
    assert ToolOutcome.model_validate_json(tool_step.value or "").content == "5"


async def test_events_round_trip_through_json(rt: Runtime) -> None:
    agent = Agent(ScriptedModel([("add", {"a": 1, "b": 1}), "2"]), tools=[add])
    result = await agent.run("1+1", runtime=rt)
    lines = [e.model_dump_json() for e in result.events]
    assert [event_adapter.validate_json(line) for line in lines] == result.events
    assert json.loads(lines[2])["arguments"] == {"a": 1, "b": 1}


async def test_a_tool_that_raises_is_feedback_and_the_model_recovers(rt: Runtime) -> None:
    model = ScriptedModel([("divide", {"a": 1, "b": 0}), ("divide", {"a": 1, "b": 4}), "0.25"])
    result = await Agent(model, tools=[divide]).run("1/0, then 1/4", runtime=rt)
    assert result.output == "0.25" and result.reason == "completed"
    feedback = model.calls[1].messages[-1]
    assert isinstance(feedback, ToolResultMessage) and feedback.is_error
    assert "ZeroDivisionError: float division by zero" in feedback.content
    returned = [e for e in result.events if isinstance(e, ToolReturned)]
    assert [e.error_kind for e in returned] == ["raised", None]


async def test_bad_arguments_are_fed_back_with_the_schema_and_the_tool_is_not_called(rt: Runtime) -> None:
    model = ScriptedModel([("add", {"a": "two", "b": 3}), ("add", {"a": 2, "b": 3}), "5"])
    result = await Agent(model, tools=[add]).run("2+3", runtime=rt)
    assert result.output == "5"
    assert calls == [("add", (2, 3))]
    feedback = model.calls[1].messages[-1]
    assert isinstance(feedback, ToolResultMessage) and feedback.is_error
    assert "- a: Input should be a valid integer" in feedback.content
    assert '"required": ["a", "b"]' in feedback.content
    corrections = [e for e in result.events if isinstance(e, CorrectionSent)]
    assert [c.kind for c in corrections] == ["invalid_arguments"]


async def test_malformed_json_arguments_are_quoted_back(rt: Runtime) -> None:
    model = ScriptedModel([("add", '{"a": 2, "b": 3'), ("add", {"a": 2, "b": 3}), "5"])
    result = await Agent(model, tools=[add]).run("2+3", runtime=rt)
    assert result.output == "5"
    feedback = model.calls[1].messages[-1]
    assert isinstance(feedback, ToolResultMessage)
    assert "must be a JSON object" in feedback.content and 'You wrote: {"a": 2, "b": 3' in feedback.content


async def test_an_unknown_tool_is_fed_back_with_the_tools_offered(rt: Runtime) -> None:
    model = ScriptedModel([("multiply", {"a": 2, "b": 3}), ("add", {"a": 2, "b": 3}), "5"])
    result = await Agent(model, tools=[add, divide]).run("2*3", runtime=rt)
    assert result.output == "5"
    feedback = model.calls[1].messages[-1]
    assert isinstance(feedback, ToolResultMessage) and feedback.is_error
    assert "no tool named 'multiply'" in feedback.content and "add, divide" in feedback.content


class Weather(BaseModel):
    city: str
    celsius: float


async def test_invalid_final_output_then_a_valid_one(rt: Runtime) -> None:
    model = ScriptedModel(['{"city": "Oslo"}', '```json\n{"city": "Oslo", "celsius": "12.5"}\n```'])
    agent = Agent(model, output_type=Weather)
    result = await agent.run("Weather in Oslo?", runtime=rt)
    assert result.output == Weather(city="Oslo", celsius=12.5)
    assert model.calls[0].output_schema is not None
    assert model.calls[0].output_schema.json_schema["required"] == ["city", "celsius"]
    feedback = model.calls[1].messages[-1]
    assert isinstance(feedback, UserMessage)
    assert (
        "celsius: Field required" in feedback.content
        and '"required": ["city", "celsius"]' in feedback.content
    )


async def test_an_empty_reply_is_corrected(rt: Runtime) -> None:
    model = ScriptedModel(["", "Here it is."])
    result = await Agent(model).run("Say something", runtime=rt)
    assert result.output == "Here it is."
    assert "neither text nor a tool call" in last_feedback(model).content  # type: ignore[union-attr]


async def test_structured_outputs_other_than_models(rt: Runtime) -> None:
    agent = Agent(ScriptedModel(["[1, 2, 3]"]), output_type=list[int])
    result = await agent.run("numbers", runtime=rt)
    assert result.output == [1, 2, 3]


def test_two_tools_with_one_name_are_refused() -> None:
    with pytest.raises(AgentConfigError, match="two tools are named 'add'"):
        Agent(ScriptedModel([]), tools=[add, tool(name="add")(divide.fn)])


# -- guards ------------------------------------------------------------------------------------------


def counting(name: str = "add") -> Any:
    """A script that calls ``name`` with new arguments each turn, forever."""

    def script(messages: Sequence[Message], tools: Sequence[ToolDefinition]) -> object:
        n = len(tool_results(messages))
        return (name, {"a": n, "b": 1})

    return script


async def test_max_steps(rt: Runtime) -> None:
    result = await Agent(ScriptedModel(counting()), tools=[add], guards=Guards(max_steps=4)).run(
        "go", runtime=rt
    )
    assert (result.status, result.reason, result.turns) == ("stopped", "max_steps", 4)
    assert isinstance(result.events[-2], GuardTripped) and result.events[-2].reason == "max_steps"
    assert result.output is None


async def test_token_budget(rt: Runtime) -> None:
    def script(messages: Sequence[Message], tools: Sequence[ToolDefinition]) -> object:
        n = len(tool_results(messages))
        return ModelResponse(
            message=AssistantMessage(
                tool_calls=[ToolCall(id=f"c{n}", name="add", arguments={"a": n, "b": 0})]
            ),
            usage=Usage(requests=1, input_tokens=70, output_tokens=30),
        )

    agent = Agent(ScriptedModel(script), tools=[add], guards=Guards(max_tokens=350))
    result = await agent.run("go", runtime=rt)
    assert (result.reason, result.turns, result.usage.total_tokens) == ("token_budget", 4, 400)


async def test_cost_budget(rt: Runtime) -> None:
    def script(messages: Sequence[Message], tools: Sequence[ToolDefinition]) -> object:
        n = len(tool_results(messages))
        return ModelResponse(
            message=AssistantMessage.model_validate(
                {"tool_calls": [{"id": f"c{n}", "name": "add", "arguments": {"a": n, "b": 0}}]}
            ),
            usage=Usage(requests=1, input_tokens=10, output_tokens=10, cost_usd=0.01),
        )

    agent = Agent(ScriptedModel(script), tools=[add], guards=Guards(max_cost_usd=0.025))
    result = await agent.run("go", runtime=rt)
    assert result.reason == "cost_budget" and result.turns == 3
    assert result.usage.cost_usd == pytest.approx(0.03)


async def test_time_budget_uses_the_run_clock() -> None:
    clock = FakeClock()
    rt = Runtime(MemoryJournal(), clock=clock, lease_seconds=86_400)

    def script(messages: Sequence[Message], tools: Sequence[ToolDefinition]) -> object:
        clock.advance(40)  # each model call takes 40 s of run time
        return counting()(messages, tools)

    agent = Agent(ScriptedModel(script), tools=[add], guards=Guards(max_wall_s=100))
    result = await agent.run("go", runtime=rt)
    assert (result.reason, result.turns) == ("time_budget", 3)
    assert "120.0 s" in result.detail and result.elapsed_s == 120


async def test_loop_detection(rt: Runtime) -> None:
    model = ScriptedModel([("add", {"a": 1, "b": 1})] * 5)
    result = await Agent(model, tools=[add], guards=Guards(max_identical_calls=3)).run("go", runtime=rt)
    assert result.reason == "loop_detected"
    assert len(calls) == 2  # the third identical call is not made


async def test_repeated_error(rt: Runtime) -> None:
    def script(messages: Sequence[Message], tools: Sequence[ToolDefinition]) -> object:
        return ("divide", {"a": len(messages), "b": 0})  # new arguments, same error

    agent = Agent(ScriptedModel(script), tools=[divide], guards=Guards(max_same_error=3, breaker_threshold=9))
    result = await agent.run("go", runtime=rt)
    assert result.reason == "repeated_error" and len(calls) == 3
    assert "ZeroDivisionError" in result.detail


async def test_circuit_breaker(rt: Runtime) -> None:
    @tool
    def flaky(a: int, b: int) -> str:
        raise ConnectionError(f"connection {a} refused")

    agent = Agent(ScriptedModel(counting("flaky")), tools=[flaky], guards=Guards(breaker_threshold=3))
    result = await agent.run("go", runtime=rt)
    assert (result.reason, result.tool_calls) == ("circuit_open", 3)
    assert "'flaky' failed 3 times in a row" in result.detail


async def test_a_hung_tool_times_out_and_the_timeout_guard_trips(rt: Runtime) -> None:
    release = threading.Event()

    @tool
    def hang(a: int, b: int) -> str:
        release.wait(30)
        return "late"

    guards = Guards(tool_timeout_s=0.1, max_tool_timeouts=2)
    result = await Agent(ScriptedModel(counting("hang")), tools=[hang], guards=guards).run("go", runtime=rt)
    release.set()
    assert (result.reason, result.tool_calls) == ("tool_timeout", 2)
    returned = [e for e in result.events if isinstance(e, ToolReturned)]
    assert returned[0].error_kind == "timeout" and "did not finish within 0.1 s" in returned[0].content


async def test_retries_are_bounded(rt: Runtime) -> None:
    model = ScriptedModel(["not json"] * 10)
    agent = Agent(model, output_type=Weather, guards=Guards(max_retries=2, max_same_error=99))
    result = await agent.run("weather", runtime=rt)
    assert (result.reason, result.turns) == ("retries_exhausted", 3)


async def test_model_error_ends_the_run_as_failed(rt: Runtime) -> None:
    def script(messages: Sequence[Message], tools: Sequence[ToolDefinition]) -> object:
        raise ProviderServerError("503 from the provider", model="scripted", status=503)

    result = await Agent(ScriptedModel(script)).run("go", runtime=rt)
    assert (result.status, result.reason) == ("failed", "model_error")
    assert "503 from the provider" in result.detail


# -- approvals, side effects, embedding ------------------------------------------------------------


@tool(needs_approval=True)
def drop_table(name: str) -> str:
    """Drop a table."""
    calls.append(("drop_table", name))
    return f"dropped {name}"


async def test_an_approved_call_runs_and_the_decision_is_journaled(rt: Runtime) -> None:
    asked: list[ApprovalRequest] = []

    async def approver(request: ApprovalRequest) -> ApprovalDecision:
        asked.append(request)
        return approve_all(request)

    model = ScriptedModel([("drop_table", {"name": "tmp"}), "done"])
    result = await Agent(model, tools=[drop_table], approver=approver).run(
        "drop tmp", runtime=rt, run_id="ap"
    )
    assert result.output == "done" and calls == [("drop_table", "tmp")]
    assert asked[0].tool == "drop_table" and asked[0].arguments == {"name": "tmp"}
    assert "approval:drop_table" in [s.name for s in rt.steps("ap")]
    assert [e.approved for e in result.events if isinstance(e, ApprovalDecided)] == [True]


async def test_a_refused_call_is_feedback_or_ends_the_run(rt: Runtime) -> None:
    model = ScriptedModel([("drop_table", {"name": "tmp"}), "I did not drop it."])
    result = await Agent(model, tools=[drop_table], approver=deny_all).run("drop tmp", runtime=rt)
    assert result.output == "I did not drop it." and calls == []
    feedback = last_feedback(model)
    assert isinstance(feedback, ToolResultMessage) and "was not approved" in feedback.content

    model = ScriptedModel([("drop_table", {"name": "tmp"}), "unused"])
    guards = Guards(stop_on_denial=True)
    result = await Agent(model, tools=[drop_table], approver=deny_all, guards=guards).run("x", runtime=rt)
    assert result.reason == "approval_denied" and calls == []


async def test_by_default_a_call_that_needs_approval_parks_the_run(rt: Runtime) -> None:
    # Without an in-process approver the run waits for a human durably (see tests/agents/test_approvals.py).
    from corral.durable import RunSuspended

    model = ScriptedModel([("drop_table", {"name": "tmp"}), "ok"])
    with pytest.raises(RunSuspended) as parked:
        await Agent(model, tools=[drop_table]).run("drop tmp", runtime=rt)
    assert calls == [] and (parked.value.signal or "").startswith("approval:")


async def test_a_side_effect_tool_gets_a_stable_key_and_a_keyed_step(rt: Runtime) -> None:
    keys: list[str] = []

    @tool(side_effects=True)
    def send(text: str, idempotency_key: str) -> str:
        keys.append(idempotency_key)
        return "sent"

    model = ScriptedModel([("send", {"text": "hi"}), "sent it"])
    await Agent(model, tools=[send]).run("send hi", runtime=rt, run_id="se")
    step = next(s for s in rt.steps("se") if s.name == "tool:send")
    assert keys == ["se/1/call_0_0"] and step.key == "se/1/call_0_0"


async def test_the_agent_can_join_an_existing_run(rt: Runtime) -> None:
    agent = Agent(ScriptedModel([("add", {"a": 1, "b": 2}), "3"]), tools=[add])

    async def workflow(ctx: RunContext, question: str) -> str:
        before = await ctx.step("prepare", lambda: "ready")
        result = await agent.run(question, ctx=ctx)
        return f"{before}:{result.output}"

    assert await rt.run(workflow, "1+2", run_id="wf") == "ready:3"
    names = [s.name for s in rt.steps("wf")]
    assert names[:3] == ["prepare", "now", "model:scripted"] and names[-1] == "agent:finish"
    assert '"reason":"completed"' in (rt.steps("wf")[-1].value or "")

    async def implicit(ctx: RunContext, question: str) -> str:
        result = await agent.run(question)  # no ctx: joins the run it is called in
        return str(result.output)

    agent.model = ScriptedModel([("add", {"a": 1, "b": 2}), "3"])
    assert await rt.run(implicit, "1+2", run_id="wf2") == "3"
    assert "tool:add" in [s.name for s in rt.steps("wf2")]


async def test_a_finished_run_is_not_run_again(rt: Runtime) -> None:
    model = ScriptedModel([("add", {"a": 1, "b": 2}), "3"])
    agent = Agent(model, tools=[add], output_type=str)
    first = await agent.run("1+2", runtime=rt, run_id="once")
    again = await agent.run("1+2", runtime=rt, run_id="once")
    assert (again.output, again.reason, again.usage) == (first.output, first.reason, first.usage)
    assert model.call_count == 2 and len(calls) == 1


async def test_a_resumed_run_replays_recorded_steps_without_calling_anything() -> None:
    class Crash(BaseException):
        pass

    journal = MemoryJournal()
    crash = True

    @tool
    async def fragile(a: int, b: int) -> int:
        calls.append(("fragile", a))
        if crash and a == 1:
            raise Crash
        return a

    model = ScriptedModel(counting("fragile"))
    agent = Agent(model, tools=[fragile], guards=Guards(max_steps=3))
    with pytest.raises(Crash):
        await agent.run("go", runtime=Runtime(journal), run_id="crashy")
    crash = False
    result = await agent.run("go", runtime=Runtime(journal), run_id="crashy")
    assert result.reason == "max_steps" and result.turns == 3
    # The tool call that completed before the crash is not made again; the one it crashed in is.
    assert calls == [("fragile", 0), ("fragile", 1), ("fragile", 1), ("fragile", 2)]
    assert model.call_count == 3  # two before the crash, one after; the recorded ones are replayed
    # The replay re-emits the whole run's events: the same as a run without a crash, timings aside.
    uninterrupted = await Agent(
        ScriptedModel(counting("fragile")), tools=[fragile], guards=Guards(max_steps=3)
    ).run("go", runtime=Runtime(MemoryJournal()), run_id="crashy")
    untimed = {"at", "duration_s"}
    assert [e.model_dump(exclude=untimed) for e in result.events] == [
        e.model_dump(exclude=untimed) for e in uninterrupted.events
    ]


async def test_the_time_budget_is_kept_across_a_resume() -> None:
    class Crash(BaseException):
        pass

    clock = FakeClock()
    journal = MemoryJournal()
    crash = True

    @tool
    async def slow(a: int, b: int) -> int:
        if crash and a == 1:
            raise Crash
        return a

    def script(messages: Sequence[Message], tools: Sequence[ToolDefinition]) -> object:
        clock.advance(30)
        return counting("slow")(messages, tools)

    agent = Agent(ScriptedModel(script), tools=[slow], guards=Guards(max_wall_s=100))
    with pytest.raises(Crash):
        await agent.run("go", runtime=Runtime(journal, clock=clock, lease_seconds=86_400), run_id="budget")
    clock.advance(50)  # the run was down for 50 s
    crash = False
    result = await agent.run(
        "go", runtime=Runtime(journal, clock=clock, lease_seconds=86_400), run_id="budget"
    )
    # Started at 0; turn 1 at 0, turn 2 at 30, crash; resumed at 110 >= 100: the old budget, not a new one.
    assert (result.reason, result.turns) == ("time_budget", 2)


def test_run_sync_works_in_scripts_and_refuses_inside_a_loop() -> None:
    agent = Agent(ScriptedModel(["hi"]))
    assert agent.run_sync("hello", runtime=Runtime(MemoryJournal())).output == "hi"

    async def inside() -> None:
        agent.run_sync("hello", runtime=Runtime(MemoryJournal()))

    with pytest.raises(corral.UsageError, match=r"await agent\.run"):
        asyncio.run(inside())


async def test_tools_receive_their_context(rt: Runtime) -> None:
    seen: list[ToolContext] = []

    @tool
    def whoami(ctx: ToolContext) -> str:
        seen.append(ctx)
        return ctx.run_id

    await Agent(ScriptedModel([("whoami", {}), "ok"]), tools=[whoami]).run("?", runtime=rt, run_id="me")
    assert (
        seen[0].run_id == "me"
        and seen[0].tool_name == "whoami"
        and seen[0].idempotency_key == "me/1/call_0_0"
    )


async def test_long_tool_output_is_cut(rt: Runtime) -> None:
    @tool
    def dump() -> str:
        return "x" * 5000

    model = ScriptedModel([("dump", {}), "ok"])
    await Agent(model, tools=[dump], guards=Guards(max_tool_output_chars=100)).run("?", runtime=rt)
    content = last_feedback(model).content  # type: ignore[union-attr]
    assert content.startswith("x" * 100) and "5000 characters in all" in content and len(content) < 200


async def test_a_failing_event_callback_does_not_fail_the_run(
    rt: Runtime, caplog: pytest.LogCaptureFixture
) -> None:
    seen: list[str] = []

    def broken(event: object) -> None:
        seen.append(type(event).__name__)
        raise RuntimeError("display crashed")

    result = await Agent(ScriptedModel([("add", {"a": 1, "b": 2}), "3"]), tools=[add], on_event=broken).run(
        "1+2", runtime=rt
    )
    assert result.output == "3" and len(result.events) == 6
    assert seen == ["RunStarted"]  # called once, then dropped
    assert "on_event callback" in caplog.text and "display crashed" in caplog.text


# -- tool calls of one turn ----------------------------------------------------------------------------


@tool
async def nap(seconds: float, label: str) -> str:
    """Sleep, then say which call this was."""
    await asyncio.sleep(seconds)
    calls.append(("nap", label))
    return label


def two_naps(first: float, second: float) -> ScriptedModel:
    return ScriptedModel(
        [[("nap", {"seconds": first, "label": "A"}), ("nap", {"seconds": second, "label": "B"})], "both done"]
    )


async def test_calls_of_one_turn_run_side_by_side_and_are_recorded_in_call_order(rt: Runtime) -> None:
    model = two_naps(0.4, 0.05)
    started = asyncio.get_running_loop().time()
    result = await Agent(model, tools=[nap]).run("nap twice", runtime=rt, run_id="par")
    took = asyncio.get_running_loop().time() - started
    assert result.output == "both done" and took < 0.7
    assert calls == [("nap", "B"), ("nap", "A")]  # B finished first...
    assert [m.content for m in tool_results(model.calls[1].messages)] == ["A", "B"]  # ...recorded in order
    # Journal positions follow the call order too, so a replay matches each record to its call.
    steps = [s for s in rt.steps("par") if s.name == "tool:nap"]
    assert [ToolOutcome.model_validate_json(s.value or "").content for s in steps] == ["A", "B"]
    assert steps[0].position < steps[1].position


async def test_calls_of_one_turn_can_run_one_after_another(rt: Runtime) -> None:
    started = asyncio.get_running_loop().time()
    result = await Agent(two_naps(0.3, 0.05), tools=[nap], parallel_tool_calls=False).run("nap", runtime=rt)
    assert result.output == "both done"
    assert calls == [("nap", "A"), ("nap", "B")]
    assert asyncio.get_running_loop().time() - started >= 0.35


async def test_a_crash_during_parallel_calls_resumes_without_repeating_the_finished_one() -> None:
    class Crash(BaseException):
        pass

    journal = MemoryJournal()
    crash = True

    @tool
    async def job(label: str) -> str:
        calls.append(("job", label))
        if label == "slow":
            await asyncio.sleep(0.05)
            if crash:
                raise Crash
        return label

    model = ScriptedModel(
        lambda messages, tools: (
            "done"
            if tool_results(messages)
            else [
                ("job", {"label": "fast"}),
                ("job", {"label": "slow"}),
            ]
        )
    )
    agent = Agent(model, tools=[job])
    with pytest.raises(Crash):
        await agent.run("go", runtime=Runtime(journal), run_id="par-crash")
    crash = False
    result = await agent.run("go", runtime=Runtime(journal), run_id="par-crash")
    assert result.output == "done" and result.tool_calls == 2
    assert calls == [("job", "fast"), ("job", "slow"), ("job", "slow")]


async def test_a_named_agents_runs_can_be_queued_and_executed_by_a_worker(rt: Runtime) -> None:
    seen: list[object] = []
    model = ScriptedModel([("add", {"a": 1, "b": 2}), "3"])
    agent = Agent(model, tools=[add], name="calc-test", on_event=seen.append)
    run_id = rt.start(run_agent, "calc-test", "1+2")
    assert await Worker(rt).run_until_idle() == 1
    summary = rt.outcome(rt.get_run(run_id))
    assert isinstance(summary, RunSummary) and (summary.output, summary.reason) == ("3", "completed")
    assert calls == [("add", (1, 2))] and isinstance(seen[-1], RunFinished)
    # The agent's own API sees the same run.
    result = await agent.run("1+2", runtime=rt, run_id=run_id)
    assert (result.output, result.turns) == ("3", 2) and model.call_count == 2


async def test_a_run_of_an_agent_this_process_has_not_built_is_refused(rt: Runtime) -> None:
    with pytest.raises(AgentNotFound, match="'nobody'"):
        await rt.run(run_agent, "nobody", "hello")
