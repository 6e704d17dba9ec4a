"""The state of one question in the data agent's workflow, and what every node does with it: events out,
model calls in (journaled, within the guards' budgets)."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any, Literal, Protocol

from pydantic import BaseModel, ConfigDict, Field

from corral.apps.data_agent._answer import Answer
from corral.apps.data_agent._events import DataEvent
from corral.apps.data_agent._judgement import Judgement
from corral.apps.data_agent._runner import QueryResult
from corral.durable import RunContext
from corral.guards import GuardState
from corral.models import Message, OutputSchema, Usage, durable_request

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence
    from pathlib import Path

    from corral.apps.data_agent._runner import QueryRunner
    from corral.apps.data_agent._verified import VerifiedQuery
    from corral.guards import Approver, Guards
    from corral.models import Model, ModelSettings

_log = logging.getLogger("corral.data_agent")

#: What a flow's decline policy decides: ask again, or end the loop (answer with the best result so far).
Decision = Literal["again", "finish"]


class Settings(Protocol):
    """What the workflow reads of the :class:`~corral.apps.data_agent.DataAgent` that runs it (its
    configuration; the agent is one, structurally)."""

    model: Model
    judge_model: Model | None
    runner: QueryRunner
    verified: Sequence[VerifiedQuery]
    approver: Approver | None
    guards: Guards
    max_attempts: int
    judge: bool
    charts: bool
    chart_dir: Path | None
    on_event: Callable[[DataEvent], None] | None
    settings: ModelSettings
    candidates: int
    candidate_temperature: float


class BudgetSpent(Exception):
    """A guard's budget ran out (internal: the question ends ``failed``, saying which budget)."""


class Question(BaseModel):
    """The state of one question: the conversation with the model and the loop's bookkeeping."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    question: str
    run_id: str = ""
    agent: Any = Field(default=None, exclude=True)
    #: Where events go (the agent's ``on_event``; dropped for this question if it raises).
    on_event: Any = Field(default=None, exclude=True)
    flow: Any = Field(default=None, exclude=True)
    guard: GuardState | None = Field(default=None, exclude=True)
    #: The judge guard's :class:`~corral.guards.JudgeState`: spending and revisions (built at its first
    #: verdict; rebuilt by replay). Typed ``Any``: pydantic need not build a schema for the guard.
    judging: Any = Field(default=None, exclude=True)
    started: float = 0.0
    messages: list[Message] = Field(default_factory=list)
    #: The prompt of the current attempt (the vote samples more queries from it).
    prompt: list[Message] = Field(default_factory=list)
    attempts: int = 0
    limit: int = 3
    model_calls: int = 0
    tried: set[str] = Field(default_factory=set)
    declined: bool = False
    decline_reason: str | None = None
    last_error: str = "no query was written"
    #: Each query (or program) sent back, with why: what a lesson is made of (see ``_lessons``).
    failures: list[tuple[str, str]] = Field(default_factory=list)
    #: The query (or program) of the current attempt, and its result once it ran.
    text: str = ""
    result: QueryResult | None = None
    best: tuple[str, QueryResult] | None = None
    judge_note: str | None = None
    #: Each result the judge saw (or was skipped on), in order: kept with the answer.
    judgements: list[Judgement] = Field(default_factory=list)
    usage: Usage = Field(default_factory=Usage)
    answer: Answer | None = None


def emit(q: Question, event: DataEvent) -> None:
    """Hand ``event`` to the agent's ``on_event``; a broken display must not fail a durable question."""
    callback = q.on_event
    if callback is None:
        return
    try:
        callback(event)
    except Exception:
        _log.exception("question %s: the on_event callback failed; it is not called again", q.run_id)
        q.on_event = None


async def ask_model(
    ctx: RunContext,
    q: Question,
    kind: str,
    messages: list[Message],
    schema: OutputSchema | None = None,
    *,
    temperature: float | None = None,
    max_tokens: int | None = None,
    seed: int | None = None,
) -> str:
    """One model call, journaled (a resumed question does not pay for it again), within the guards' budgets
    (checked on the journaled clock before the call). Returns the reply's text."""
    agent: Settings = q.agent
    assert q.guard is not None
    ended = ctx.last_step_ended()
    trip = q.guard.before_model(ended.timestamp() if ended is not None else q.started)
    if trip is not None:
        raise BudgetSpent(f"{trip.reason}: {trip.detail}")
    q.model_calls += 1
    model = agent.judge_model if kind == "judge" and agent.judge_model is not None else agent.model
    options = {"temperature": temperature, "max_tokens": max_tokens, "seed": seed}
    settings = agent.settings.model_copy(update={k: v for k, v in options.items() if v is not None})
    response = await durable_request(ctx, model, list(messages), output_schema=schema, settings=settings)
    q.usage = q.usage + response.usage
    q.guard.record_response(response.usage)
    return response.message.content or ""
