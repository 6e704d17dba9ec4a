"""Tools: typed Python functions a model can call, each behind its own bulkhead (see ``docs/agents.md``)."""

from corral.tools._tool import IDEMPOTENCY_KEY_PARAM, Tool, ToolContext, as_tool, format_result, tool
from corral.tools.errors import (
    ToolArgumentsError,
    ToolBusyError,
    ToolDefinitionError,
    ToolError,
    ToolRaisedError,
    ToolRefusedError,
    ToolTimeoutError,
)

__all__ = [
    "IDEMPOTENCY_KEY_PARAM",
    "Tool",
    "ToolArgumentsError",
    "ToolBusyError",
    "ToolContext",
    "ToolDefinitionError",
    "ToolError",
    "ToolRaisedError",
    "ToolRefusedError",
    "ToolTimeoutError",
    "as_tool",
    "format_result",
    "tool",
]
