"""A statement that changes data runs only when a person (or a policy) approves it, the way an Agent's tool
calls are approved.

The write is one call of a tool that needs approval, made by an :class:`~corral.agents.Agent` whose
"model" proposes exactly that call, inside the question's run: the approval takes the Agent's own path.
By default that is a durable wait — the request is journaled (with the statement and why it needs a
decision), the question's run *parks* holding nothing, and anyone decides from anywhere
(``corral approvals approve|reject|edit``, :class:`~corral.guards.Approvals`, a terminal offering to decide
through the same ledger); a killed process loses nothing, and the write runs once after the approval. An
in-process ``approver`` (tests, scripts) decides at once instead.

A rejection's reason goes back to the model, which may write another query; an edit runs the corrected
statement after the same checks a proposed one passes (:func:`write_problem`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import sqlglot
from pydantic import BaseModel, ValidationError
from sqlglot import exp

from corral.agents import Agent, ApprovalDecided, ToolReturned
from corral.apps.data_agent._answer import Answer
from corral.apps.data_agent._events import Answered, CheckNoted
from corral.apps.data_agent._runner import QueryResult
from corral.apps.data_agent._sqlcheck import is_read_only, statement_kind
from corral.apps.data_agent._state import Question, emit
from corral.durable import RunContext
from corral.guards import ApprovalPolicy, Guards
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
#: Statements that change no data but the database's setup or what the session can reach: never run.
_NOT_WRITES = (exp.Attach, exp.Detach, exp.Pragma, exp.Command, exp.Use, exp.Set)


def write_problem(sql: str, *, dialect: str) -> str | None:
    """Why ``sql`` may not run as a write, or ``None``: it must parse, be one statement, and not be a
    statement about the database's setup (ATTACH, PRAGMA, ...). A proposed write and a person's edit pass
    these same checks.

    >>> write_problem("DELETE FROM t WHERE id = 1", dialect="sqlite") is None
    True
    >>> write_problem("DELETE FROM t; DROP TABLE u", dialect="sqlite")
    'one statement at a time (this text holds 2)'
    """
    try:
        trees = [t for t in sqlglot.parse(sql, read=dialect) if t is not None]
    except sqlglot.errors.SqlglotError as exc:
        return f"the statement does not parse: {str(exc).splitlines()[0][:200]}"
    if not trees:
        return "there is no statement"
    if len(trees) > 1:
        return f"one statement at a time (this text holds {len(trees)})"
    if isinstance(trees[0], _NOT_WRITES):
        return f"{statement_kind(sql, dialect=dialect).upper()} changes no data and is not run"
    return None


class _Written(BaseModel):
    """What the write tool returns: the statement that ran (a person may have edited it) and its result."""

    sql: str
    result: QueryResult


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


def _answer(q: Question, status: Any, text: str, sql: str, result: QueryResult | None = None) -> Answer:
    return Answer(
        status=status,
        answer=text,
        sql=sql,
        columns=result.columns if result is not None else [],
        rows=result.rows if result is not None else [],
        row_count=result.row_count if result is not None else 0,
        run_id=q.run_id,
        usage=q.usage,
        attempts=q.attempts,
    )


def _refused(q: Question, sql: str, kind: str, why: str) -> Answer:
    emit(q, CheckNoted(message=f"refused: a {kind} statement would change the data{why}"))
    return _answer(
        q,
        "cannot_answer",
        f"Refused: answering needs a {kind} statement, which changes the data. The data agent is "
        f"read-only; writes need explicit approval{why}.",
        sql,
    )


def _written(returned: ToolReturned | None, sql: str) -> _Written:
    if returned is None:
        return _Written(sql=sql, result=QueryResult(ok=False, error="the write did not run"))
    if returned.error_kind is not None:
        return _Written(sql=sql, result=QueryResult(ok=False, error=returned.content))
    try:
        return _Written.model_validate_json(returned.content)
    except ValidationError:
        return _Written(sql=sql, result=QueryResult(ok=False, error="the write's result was not readable"))


def _tool(q: Question) -> Tool[..., Any]:
    """The write tool: the statement (as proposed, or as a person edited it) is checked again, then a
    statement that only reads runs on the read-only path and one that writes on the runner's ``write``."""
    runner = q.agent.runner
    dialect = q.flow.full.dialect

    async def sql_write(sql: str) -> str:
        """Run one approved statement that changes data."""
        problem = write_problem(sql, dialect=dialect)
        if problem is not None:
            return _Written(sql=sql, result=QueryResult(ok=False, error=problem)).model_dump_json()
        if is_read_only(sql, dialect=dialect):
            result: QueryResult = await runner.run(sql)
        else:
            result = await runner.write(sql)
        return _Written(sql=sql, result=result).model_dump_json()

    return Tool(sql_write, name=TOOL, needs_approval=True, side_effects=True)


def _policy(given: ApprovalPolicy | None, kind: str) -> ApprovalPolicy:
    """The write's policy: the agent's (its deadline, default decision, notification), asking with a reason
    a person reads (which statement) unless it says ``never``."""
    policy = given if given is not None else ApprovalPolicy()
    if policy.ask != "always":
        return replace(policy, tools=TOOL)
    return replace(policy, tools=TOOL, ask=lambda tool, arguments: f"a {kind} statement changes the data")


async def apply_write(ctx: RunContext, q: Question) -> tuple[Answer, str | None]:
    """Have the write ``q.text`` decided and, when approved, run it. Returns the answer, and — when a person
    (or a policy) refused it — the reason, for the model to read. Without writes allowed, or a runner that
    can write, it is refused without asking."""
    agent = q.agent
    sql = q.text
    dialect = q.flow.full.dialect
    kind = statement_kind(sql, dialect=dialect).upper()
    allowed = agent.allow_writes or agent.approver is not None
    if not allowed or getattr(agent.runner, "write", None) is None:
        return _refused(q, sql, kind, ""), None
    problem = write_problem(sql, dialect=dialect)
    if problem is not None:
        # Not worth a person's time: the model hears why and may write another statement.
        emit(q, CheckNoted(message=f"{kind}: {problem}", finding="write", blocking=True))
        return _refused(q, sql, kind, f" ({problem})"), f"the {kind} statement cannot run: {problem}"
    policy = _policy(agent.write_policy, kind)
    guards = Guards(max_steps=2, stop_on_denial=True, max_wall_s=None, max_tool_output_chars=10_000_000)
    writer = Agent(
        _Proposal(sql), tools=[_tool(q)], approver=agent.approver, approvals=[policy], guards=guards
    )
    emit(q, CheckNoted(message=f"a {kind} statement needs approval", finding="approval"))
    asked = ctx.last_step_ended()
    outcome = await writer.run(f"Apply this {kind} statement.", ctx=ctx)
    answered = ctx.last_step_ended()
    if q.guard is not None and asked is not None and answered is not None:
        # A question that waited days for a person has not spent its time budget on the wait.
        q.guard.record_wait((answered - asked).total_seconds())
    decided = next((e for e in outcome.events if isinstance(e, ApprovalDecided)), None)
    if decided is None or not decided.approved:
        reason = decided.reason if decided is not None and decided.reason else "not approved"
        return _refused(q, sql, kind, f" ({reason})"), f"the {kind} statement was refused: {reason}"
    by = decided.by or "a person"
    written = _written(next((e for e in outcome.events if isinstance(e, ToolReturned)), None), sql)
    ran, result = written.sql, written.result
    edited = " as edited" if ran != sql else ""
    emit(q, CheckNoted(message=f"approved by {by}{edited}: {kind}"))
    if not result.ok:
        return _answer(q, "failed", f"The approved {kind} failed: {result.error}", ran), None
    ran_kind = statement_kind(ran, dialect=dialect).upper()
    emit(q, Answered(message=f"{ran_kind} applied", rows=result.row_count))
    text = f"Applied the {ran_kind} statement (approved by {by}{edited})."
    return _answer(q, "answered", text, ran, result), None
