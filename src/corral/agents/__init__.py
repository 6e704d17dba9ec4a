"""Agents: a loop in which the model picks each next action, a durable step (see ``docs/agents.md``)."""

from corral.agents._agent import Agent, AgentResult, EventCallback, RunSummary, default_runtime, run_agent
from corral.agents._events import (
    AgentEvent,
    ApprovalDecided,
    CorrectionSent,
    GuardTripped,
    ModelResponded,
    RunFinished,
    RunStarted,
    RunStatus,
    ToolCalled,
    ToolOutcome,
    ToolReturned,
    event_adapter,
)
from corral.agents.errors import AgentConfigError, AgentNotFound

__all__ = [
    "Agent",
    "AgentConfigError",
    "AgentEvent",
    "AgentNotFound",
    "AgentResult",
    "ApprovalDecided",
    "CorrectionSent",
    "EventCallback",
    "GuardTripped",
    "ModelResponded",
    "RunFinished",
    "RunStarted",
    "RunStatus",
    "RunSummary",
    "ToolCalled",
    "ToolOutcome",
    "ToolReturned",
    "default_runtime",
    "event_adapter",
    "run_agent",
]
