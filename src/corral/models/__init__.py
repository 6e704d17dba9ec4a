"""Models: one message format, one protocol, many providers (see ``docs/models.md``)."""

from corral.models._base import Model
from corral.models._messages import (
    AssistantMessage,
    FinishReason,
    Message,
    ModelResponse,
    ModelSettings,
    OutputProblem,
    OutputSchema,
    ProblemKind,
    SystemMessage,
    ToolCall,
    ToolDefinition,
    ToolResultMessage,
    Usage,
    UserMessage,
)

__all__ = [
    "AssistantMessage",
    "FinishReason",
    "Message",
    "Model",
    "ModelResponse",
    "ModelSettings",
    "OutputProblem",
    "OutputSchema",
    "ProblemKind",
    "SystemMessage",
    "ToolCall",
    "ToolDefinition",
    "ToolResultMessage",
    "Usage",
    "UserMessage",
]
