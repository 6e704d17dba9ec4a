"""Agents and workflows: a loop in which the model picks each next action, and graphs whose edges the
developer fixes; every action of either is a durable step (see ``docs/agents.md``, ``docs/workflows.md``)."""

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
from corral.agents.errors import (
    AgentConfigError,
    AgentNotFound,
    WorkflowCheckError,
    WorkflowEdgeError,
    WorkflowNotFound,
)
from corral.agents.workflow import (
    Budget,
    End,
    GraphReport,
    NodeVisit,
    Workflow,
    WorkflowResult,
    current_visit,
)

__all__ = [
    "Agent",
    "AgentConfigError",
    "AgentEvent",
    "AgentNotFound",
    "AgentResult",
    "ApprovalDecided",
    "Budget",
    "CorrectionSent",
    "End",
    "EventCallback",
    "GraphReport",
    "GuardTripped",
    "ModelResponded",
    "NodeVisit",
    "RunFinished",
    "RunStarted",
    "RunStatus",
    "RunSummary",
    "ToolCalled",
    "ToolOutcome",
    "ToolReturned",
    "Workflow",
    "WorkflowCheckError",
    "WorkflowEdgeError",
    "WorkflowNotFound",
    "WorkflowResult",
    "current_visit",
    "default_runtime",
    "event_adapter",
    "run_agent",
]
