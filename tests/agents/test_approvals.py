"""The agent loop with approval policies and judges: read freely, park before a write, go on after a
human's decision; a judge's fail goes back for revision, then fails or escalates."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import pytest

from corral.agents import Agent, ApprovalDecided, CorrectionSent, ToolCalled
from corral.durable import FakeClock, MemoryJournal, RunStatus, RunSuspended, Runtime
from corral.guards import (
    ApprovalPolicy,
    Approvals,
    Guards,
    Judging,
    LLMJudge,
    Validator,
    approve_all,
    sql_writes,
)
from corral.models import Message, ScriptedModel, ToolDefinition, ToolResultMessage, UserMessage
from corral.tools import tool

rows: list[str] = ["ada", "bob"]
writes: list[str] = []


@pytest.fixture(autouse=True)
def _reset() -> None:
    rows[:] = ["ada", "bob"]
    writes.clear()


@tool
def run_sql(sql: str) -> str:
    """Run SQL on the users table."""
    if sql.lower().startswith("select"):
        return json.dumps(rows)
    writes.append(sql)
    return "1 row changed"


READ_FREELY = [ApprovalPolicy(tools="run_sql", ask=sql_writes())]


def last_tool_result(messages: Sequence[Message]) -> str:
    found = [m.content for m in messages if isinstance(m, ToolResultMessage)]
    return found[-1] if found else ""


def script(*calls: str) -> Any:
    """Call run_sql with each SQL in turn, then answer with the last tool result."""

    def reply(messages: Sequence[Message], tools: Sequence[ToolDefinition]) -> object:
        done = sum(isinstance(m, ToolResultMessage) for m in messages)
        if done < len(calls):
            return ("run_sql", {"sql": calls[done]})
        return f"done: {last_tool_result(messages)}"

    return reply


@pytest.fixture
def rt() -> Runtime:
    return Runtime(MemoryJournal(), clock=FakeClock())


async def test_reads_run_freely_writes_park(rt: Runtime) -> None:
    agent = Agent(
        ScriptedModel(script("SELECT name FROM users", "DELETE FROM users")),
        tools=[run_sql],
        approvals=READ_FREELY,
    )
    with pytest.raises(RunSuspended):
        await agent.run("remove everyone", runtime=rt, run_id="w1")
    (request,) = Approvals(rt).list()
    assert (request.action, request.arguments, request.why) == (
        "run_sql",
        {"sql": "DELETE FROM users"},
        "SQL that writes: DELETE",
    )
    assert writes == [] and rt.get_run("w1").status is RunStatus.WAITING


async def test_approved_write_runs_once(rt: Runtime) -> None:
    agent = Agent(ScriptedModel(script("DELETE FROM users")), tools=[run_sql], approvals=READ_FREELY)
    with pytest.raises(RunSuspended):
        await agent.run("remove everyone", runtime=rt, run_id="w1")
    (request,) = Approvals(rt).list()
    Approvals(rt).approve(request.id, by="ada")
    events: list[object] = []
    result = await agent.run("remove everyone", runtime=rt, run_id="w1", on_event=events.append)
    assert (result.output, result.reason) == ("done: 1 row changed", "completed")
    assert writes == ["DELETE FROM users"]
    decided = [e for e in events if isinstance(e, ApprovalDecided)]
    assert [(e.approved, e.by) for e in decided] == [(True, "ada")]
    assert [e.needs_approval for e in events if isinstance(e, ToolCalled)] == [True]


async def test_rejected_write_never_runs_and_the_model_reads_why(rt: Runtime) -> None:
    agent = Agent(ScriptedModel(script("DELETE FROM users")), tools=[run_sql], approvals=READ_FREELY)
    with pytest.raises(RunSuspended):
        await agent.run("remove everyone", runtime=rt, run_id="w1")
    (request,) = Approvals(rt).list()
    Approvals(rt).reject(request.id, by="ada", reason="never delete users; deactivate them")
    result = await agent.run("remove everyone", runtime=rt, run_id="w1")
    assert writes == [] and result.reason == "completed"
    assert "was not approved: never delete users; deactivate them" in str(result.output)


async def test_rejection_can_stop_the_run(rt: Runtime) -> None:
    agent = Agent(
        ScriptedModel(script("DELETE FROM users")),
        tools=[run_sql],
        approvals=READ_FREELY,
        guards=Guards(stop_on_denial=True),
    )
    with pytest.raises(RunSuspended):
        await agent.run("x", runtime=rt, run_id="w1")
    Approvals(rt).reject(Approvals(rt).list()[0].id, by="ada", reason="no")
    result = await agent.run("x", runtime=rt, run_id="w1")
    assert (result.reason, writes) == ("approval_denied", [])


async def test_edited_write_runs_with_the_corrected_arguments(rt: Runtime) -> None:
    agent = Agent(ScriptedModel(script("DELETE FROM users")), tools=[run_sql], approvals=READ_FREELY)
    with pytest.raises(RunSuspended):
        await agent.run("x", runtime=rt, run_id="w1")
    fixed = "UPDATE users SET active = 0"
    Approvals(rt).edit(Approvals(rt).list()[0].id, by="ada", arguments={"sql": fixed})
    result = await agent.run("x", runtime=rt, run_id="w1")
    assert writes == [fixed] and result.output == "done: 1 row changed"


async def test_edited_arguments_the_tool_rejects_are_fed_back(rt: Runtime) -> None:
    agent = Agent(ScriptedModel(script("DELETE FROM users")), tools=[run_sql], approvals=READ_FREELY)
    with pytest.raises(RunSuspended):
        await agent.run("x", runtime=rt, run_id="w1")
    Approvals(rt).edit(Approvals(rt).list()[0].id, by="ada", arguments={"statement": "x"})
    result = await agent.run("x", runtime=rt, run_id="w1")
    assert writes == [] and "corrected arguments that are not valid" in str(result.output)


async def test_a_deadline_rejects_by_default(rt: Runtime) -> None:
    policy = ApprovalPolicy(tools="run_sql", ask=sql_writes(), timeout_s=3600)
    agent = Agent(ScriptedModel(script("DROP TABLE users")), tools=[run_sql], approvals=[policy])
    with pytest.raises(RunSuspended) as parked:
        await agent.run("x", runtime=rt, run_id="w1")
    assert parked.value.wake_at == rt.clock.time() + 3600
    rt.clock.advance(3601)  # type: ignore[attr-defined]
    result = await agent.run("x", runtime=rt, run_id="w1")
    assert writes == [] and "nobody decided before the deadline" in str(result.output)


async def test_an_in_process_approver_still_decides_at_once(rt: Runtime) -> None:
    agent = Agent(
        ScriptedModel(script("DELETE FROM users")),
        tools=[run_sql],
        approvals=READ_FREELY,
        approver=approve_all,
    )
    await agent.run("x", runtime=rt, run_id="w1")
    assert writes == ["DELETE FROM users"] and Approvals(rt).list(status=None) == []
    assert "approval:run_sql" in [s.name for s in rt.steps("w1")]


async def test_a_named_agent_parks_and_a_worker_goes_on(rt: Runtime) -> None:
    from corral.agents import run_agent
    from corral.durable import Worker

    Agent(
        ScriptedModel(script("DELETE FROM users")),
        tools=[run_sql],
        approvals=READ_FREELY,
        name="approvals-demo",
    )
    rt.start(run_agent, "approvals-demo", "remove everyone", run_id="q1")
    worker = Worker(rt)
    await worker.run_until_idle()
    assert rt.get_run("q1").status is RunStatus.WAITING and writes == []
    assert await worker.run_until_idle() == 0  # parked: nothing to do, nothing held
    Approvals(rt).approve(Approvals(rt).list()[0].id, by="ada")
    await worker.run_until_idle()
    assert rt.get_run("q1").status is RunStatus.COMPLETED and writes == ["DELETE FROM users"]


# -- judges ----------------------------------------------------------------------------------------------


def answers(*texts: str) -> Any:
    """Reply with each text in turn (revisions see the reviewer's reason as the last user message)."""
    seen: list[str] = []

    def reply(messages: Sequence[Message], tools: Sequence[ToolDefinition]) -> object:
        last = messages[-1]
        seen.append(last.content if isinstance(last, UserMessage) else "")
        return texts[min(len(seen) - 1, len(texts) - 1)]

    reply.seen = seen  # type: ignore[attr-defined]
    return reply


NUMERIC = Validator(
    lambda s: None if str(s["answer"]).isdigit() else "answer with a number only", name="numeric"
)


async def test_a_judge_fail_goes_back_for_revision(rt: Runtime) -> None:
    reply = answers("about three", "3")
    events: list[object] = []
    agent = Agent(ScriptedModel(reply), judges=Judging(judges=[NUMERIC], max_revisions=1))
    result = await agent.run("How many?", runtime=rt, on_event=events.append)
    assert (result.output, result.reason) == ("3", "completed")
    assert "A reviewer rejected your answer: numeric: answer with a number only" in reply.seen[1]
    assert [e.kind for e in events if isinstance(e, CorrectionSent)] == ["judge"]


async def test_the_judge_fails_the_run_after_the_last_revision(rt: Runtime) -> None:
    agent = Agent(ScriptedModel(answers("many", "lots")), judges=Judging(judges=[NUMERIC], max_revisions=1))
    result = await agent.run("How many?", runtime=rt)
    assert (result.status, result.reason, result.output) == ("stopped", "judge_failed", None)
    assert result.detail == "numeric: answer with a number only"


async def test_the_judge_escalates_to_a_human_who_edits_the_answer(rt: Runtime) -> None:
    judging = Judging(judges=[NUMERIC], max_revisions=0, on_exhausted="escalate")
    agent = Agent(ScriptedModel(answers("many")), judges=judging)
    with pytest.raises(RunSuspended):
        await agent.run("How many?", runtime=rt, run_id="j1")
    (request,) = Approvals(rt).list()
    assert request.action == "judge_escalation" and request.arguments["output"] == "many"
    Approvals(rt).edit(request.id, by="ada", arguments={"output": "12"}, reason="counted by hand")
    result = await agent.run("How many?", runtime=rt, run_id="j1")
    assert (result.output, result.reason) == ("12", "completed")
    assert "approved by ada over the judges" in result.detail


async def test_an_llm_judge_sees_question_answer_and_tool_results(rt: Runtime) -> None:
    judge_model = ScriptedModel([json.dumps({"reason": "matches the rows", "verdict": "pass"})])
    agent = Agent(
        ScriptedModel(script("SELECT name FROM users")),
        tools=[run_sql],
        judges=Judging(judges=[LLMJudge(judge_model, rubric="Check the answer against the tool results.")]),
    )
    result = await agent.run("Who are the users?", runtime=rt)
    assert result.reason == "completed"
    evidence = judge_model.calls[0].messages[1].content
    assert "Question: Who are the users?" in evidence and '["ada", "bob"]' in evidence
    assert 'Answer: done: ["ada", "bob"]' in evidence


async def test_a_day_parked_for_a_human_does_not_spend_the_time_budget(rt: Runtime) -> None:
    agent = Agent(
        ScriptedModel(script("DELETE FROM users")),
        tools=[run_sql],
        approvals=READ_FREELY,
        guards=Guards(max_wall_s=60),
    )
    with pytest.raises(RunSuspended):
        await agent.run("x", runtime=rt, run_id="w1")
    rt.clock.advance(86_400)  # type: ignore[attr-defined]
    Approvals(rt).approve(Approvals(rt).list()[0].id, by="ada")
    result = await agent.run("x", runtime=rt, run_id="w1")
    assert (result.reason, writes) == ("completed", ["DELETE FROM users"])
