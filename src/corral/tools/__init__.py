"""Tools: typed Python functions and MCP servers' tools a model can call, each behind its own bulkhead.

See ``docs/agents.md`` and ``docs/mcp.md``.
"""

import typing

from corral.tools._mcp_spec import HttpServer, ServerSpec, StdioServer, parse_server_spec, servers_from_config
from corral.tools._tool import IDEMPOTENCY_KEY_PARAM, Tool, ToolContext, as_tool, format_result, tool
from corral.tools.errors import (
    ToolArgumentsError,
    ToolBusyError,
    ToolDefinitionError,
    ToolError,
    ToolRaisedError,
    ToolRefusedError,
    ToolReplyError,
    ToolTimeoutError,
    ToolUnavailableError,
)

__all__ = [  # noqa: RUF022 - plain sorted(), as tests/tools/test_tool.py pins
    "HttpServer",
    "IDEMPOTENCY_KEY_PARAM",
    "MCPCallOutcome",
    "MCPListing",
    "MCPTool",
    "MCPToolInfo",
    "MCPToolset",
    "ServerSpec",
    "StdioServer",
    "Tool",
    "ToolArgumentsError",
    "ToolBusyError",
    "ToolContext",
    "ToolDefinitionError",
    "ToolError",
    "ToolRaisedError",
    "ToolRefusedError",
    "ToolReplyError",
    "ToolTimeoutError",
    "ToolUnavailableError",
    "all_tools",
    "as_tool",
    "format_result",
    "parse_server_spec",
    "render_result",
    "servers_from_config",
    "tool",
    "toolsets_from_config",
]

# The MCP SDK takes about a second to import (it brings its HTTP server stack along): load it on first use,
# so agents without MCP tools do not pay for it.
_MCP_NAMES = frozenset(
    {
        "MCPCallOutcome",
        "MCPListing",
        "MCPTool",
        "MCPToolInfo",
        "MCPToolset",
        "all_tools",
        "render_result",
        "toolsets_from_config",
    }
)

if typing.TYPE_CHECKING:
    from corral.tools._mcp import (
        MCPCallOutcome,
        MCPListing,
        MCPTool,
        MCPToolInfo,
        MCPToolset,
        all_tools,
        render_result,
        toolsets_from_config,
    )


def __getattr__(name: str) -> typing.Any:
    if name in _MCP_NAMES:
        from corral.tools import _mcp

        return getattr(_mcp, name)
    raise AttributeError(f"module 'corral.tools' has no attribute {name!r}")
