"""A statement that changes data runs only when a person (or a policy) approves it, the way an Agent's tool
calls are approved.

The write is one call of a tool that needs approval, made by an :class:`~corral.agents.Agent` whose
"model" proposes exactly that call: the approval then takes the Agent's own path — recorded in the run's
journal (a resumed question does not ask twice), a sync approver run off the event loop (a person typing
at the prompt does not stall the run's lease renewals) — and whatever that path becomes, the data agent
follows it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from pydantic import ValidationError

from corral.agents import Agent, ApprovalDecided, ToolReturned
from corral.apps.data_agent._answer import Answer
from corral.apps.data_agent._events import Answered, CheckNoted
from corral.apps.data_agent._runner import QueryResult
from corral.apps.data_agent._sqlcheck import statement_kind
from corral.apps.data_agent._state import Question, emit
from corral.durable import RunContext
from corral.guards import Guards
from corral.models import (
    AssistantMessage,
    Message,
    Model,
    ModelResponse,
    ToolCall,
    ToolResultMessage,
)
from corral.tools import Tool

TOOL = "sql_write"


class _Proposal(Model):
    """Proposes one call of the write tool, then ends: no language model decides anything here."""

    def __init__(self, sql: str) -> None:
        self.sql = sql
        self.name = "data-agent-write"

    async def request(self, messages: Sequence[Message], **options: Any) -> ModelResponse:
        if any(isinstance(m, ToolResultMessage) for m in messages):
            return ModelResponse(message=AssistantMessage(content="done"))
        call = ToolCall(id="write", name=TOOL, arguments={"sql": self.sql})
        return ModelResponse(message=AssistantMessage(tool_calls=[call]), finish_reason="tool_calls")


def _refused(q: Question, sql: str, kind: str, why: str) -> Answer:
    emit(q, CheckNoted(message=f"refused: a {kind} statement would change the data{why}"))
    return Answer(
        status="cannot_answer",
        answer=(
            f"Refused: answering needs a {kind} statement, which changes the data. The data agent is "
            f"read-only; writes need explicit approval{why}."
        ),
        sql=sql,
        run_id=q.run_id,
        usage=q.usage,
        attempts=q.attempts,
    )


def _write_result(returned: ToolReturned | None) -> QueryResult:
    if returned is None or returned.error_kind is not None:
        error = returned.content if returned is not None else "the write did not run"
        return QueryResult(ok=False, error=error)
    try:
        return QueryResult.model_validate_json(returned.content)
    except ValidationError:
        return QueryResult(ok=False, error="the write's result was not readable")


async def apply_write(ctx: RunContext, q: Question) -> Answer:
    """Ask for approval of the write ``q.text`` and, when approved, run it through the runner's separate
    ``write`` path. Without an approver, or a runner that can write, it is refused without asking."""
    agent = q.agent
    sql = q.text
    kind = statement_kind(sql, dialect=q.flow.full.dialect).upper()
    write = getattr(agent.runner, "write", None)
    if agent.approver is None or write is None:
        return _refused(q, sql, kind, "")

    async def sql_write(sql: str) -> str:
        """Run one approved statement that changes data."""
        result: QueryResult = await write(sql)
        return result.model_dump_json()

    tool = Tool(sql_write, name=TOOL, needs_approval=True, side_effects=True)
    guards = Guards(max_steps=2, stop_on_denial=True, max_wall_s=None, max_tool_output_chars=10_000_000)
    writer = Agent(_Proposal(sql), tools=[tool], approver=agent.approver, guards=guards)
    outcome = await writer.run(f"Apply this {kind} statement.", ctx=ctx)
    decided = next((e for e in outcome.events if isinstance(e, ApprovalDecided)), None)
    if decided is None or not decided.approved:
        return _refused(
            q, sql, kind, f" ({decided.reason})" if decided is not None and decided.reason else ""
        )
    by = decided.by or "a person"
    emit(q, CheckNoted(message=f"approved by {by}: {kind}"))
    result = _write_result(next((e for e in outcome.events if isinstance(e, ToolReturned)), None))
    if not result.ok:
        return Answer(
            status="failed",
            answer=f"The approved {kind} failed: {result.error}",
            sql=sql,
            run_id=q.run_id,
            usage=q.usage,
            attempts=q.attempts,
        )
    emit(q, Answered(message=f"{kind} applied", rows=result.row_count))
    return Answer(
        status="answered",
        answer=f"Applied the {kind} statement (approved by {by}).",
        sql=sql,
        columns=result.columns,
        rows=result.rows,
        row_count=result.row_count,
        run_id=q.run_id,
        usage=q.usage,
        attempts=q.attempts,
    )
