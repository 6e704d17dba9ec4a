"""The structured events of an agent run: one or more per step, for live progress, traces and a UI.

Each event is a frozen pydantic model with a ``type`` tag, so a stream of them serialises to JSON lines and
parses back with :data:`event_adapter`. The data behind every event is journaled with its step (the model's
response, the tool's :class:`ToolOutcome`, the approval decision, the run's summary), so replaying a run
produces the same events again.

>>> from corral.models import Usage
>>> event = GuardTripped(run_id="r1", at=3.0, reason="max_steps", detail="asked 25 times")
>>> event_adapter.validate_json(event.model_dump_json()) == event
True
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, TypeAlias

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter

from corral.guards import TerminalReason
from corral.models import ToolCall, Usage

#: How a run ended: ``completed`` (a validated answer), ``stopped`` (a guard ended it) or ``failed``
#: (the model could not be reached).
RunStatus: TypeAlias = Literal["completed", "stopped", "failed"]


class _Event(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    run_id: str
    #: Seconds since the run started, by the run's journaled clock.
    at: float = 0.0


class RunStarted(_Event):
    """The agent started (or resumed) a run."""

    type: Literal["run_started"] = "run_started"
    prompt: str
    model: str
    tools: list[str] = Field(default_factory=list)


class ModelResponded(_Event):
    """The model answered one turn: its text, the tool calls it asked for, and what it cost."""

    type: Literal["model_responded"] = "model_responded"
    turn: int
    text: str | None = None
    tool_calls: list[ToolCall] = Field(default_factory=list)
    usage: Usage
    total_usage: Usage
    finish_reason: str = "stop"
    problems: list[str] = Field(default_factory=list)


class ToolCalled(_Event):
    """A tool call about to run (after an approval, when ``needs_approval``), with its arguments."""

    type: Literal["tool_called"] = "tool_called"
    turn: int
    tool_call_id: str
    tool: str
    arguments: dict[str, Any]
    needs_approval: bool = False


class ToolReturned(_Event):
    """A tool's result, or its error (``error_kind`` set) as fed back to the model."""

    type: Literal["tool_returned"] = "tool_returned"
    turn: int
    tool_call_id: str
    tool: str
    content: str
    error_kind: str | None = None
    duration_s: float = 0.0

    @property
    def ok(self) -> bool:
        """Whether the tool succeeded."""
        return self.error_kind is None


class ApprovalDecided(_Event):
    """A human (or a policy) approved or refused a tool call."""

    type: Literal["approval_decided"] = "approval_decided"
    turn: int
    tool_call_id: str
    tool: str
    approved: bool
    reason: str = ""
    by: str = ""


class CorrectionSent(_Event):
    """A mistake of the model (unknown tool, bad arguments, bad final output) fed back for it to fix."""

    type: Literal["correction_sent"] = "correction_sent"
    turn: int
    kind: str
    detail: str
    tool_call_id: str | None = None


class GuardTripped(_Event):
    """A guard ended the run."""

    type: Literal["guard_tripped"] = "guard_tripped"
    reason: TerminalReason
    detail: str


class RunFinished(_Event):
    """The run ended: how, why, with what output and at what cost."""

    type: Literal["run_finished"] = "run_finished"
    status: RunStatus
    reason: TerminalReason
    detail: str = ""
    output: Any = None
    usage: Usage
    turns: int
    tool_calls: int


#: Any event of an agent run, discriminated by ``type``.
AgentEvent: TypeAlias = Annotated[
    RunStarted
    | ModelResponded
    | ToolCalled
    | ToolReturned
    | ApprovalDecided
    | CorrectionSent
    | GuardTripped
    | RunFinished,
    Field(discriminator="type"),
]

#: Validates/parses any :data:`AgentEvent` (e.g. from a JSON line).
event_adapter: TypeAdapter[AgentEvent] = TypeAdapter(AgentEvent)


class ToolOutcome(BaseModel):
    """A tool step's journaled result: the text the model reads and, on failure, the kind of failure."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    content: str
    error_kind: str | None = None
    duration_s: float = 0.0
