"""corral as an MCP server: the data agent, the sandbox, your agents and workflows, the ops agent (opt-in).

``corral mcp serve`` runs it (see ``docs/mcp.md``)::

    from corral.apps.mcp_server import ServerConfig, build_server, expose
    expose(my_agent)                       # an Agent (a Workflow, an async run function) becomes a tool
    server = build_server(ServerConfig(databases={"chinook": "examples/chinook/chinook.sqlite"}))
"""

from corral.apps.mcp_server._http import (
    DEFAULT_HOST,
    DEFAULT_PORT,
    BearerTokenGate,
    http_app,
    new_token,
    serve_http,
    serve_stdio,
)
from corral.apps.mcp_server._registry import Exposed, expose, expose_reference, exposed
from corral.apps.mcp_server._server import (
    ApprovalForm,
    AskResult,
    CorralMCP,
    PendingApproval,
    PythonResult,
    RunResult,
    ServerConfig,
    SqlResultOut,
    build_server,
)

__all__ = [
    "DEFAULT_HOST",
    "DEFAULT_PORT",
    "ApprovalForm",
    "AskResult",
    "BearerTokenGate",
    "CorralMCP",
    "Exposed",
    "PendingApproval",
    "PythonResult",
    "RunResult",
    "ServerConfig",
    "SqlResultOut",
    "build_server",
    "expose",
    "expose_reference",
    "exposed",
    "http_app",
    "new_token",
    "serve_http",
    "serve_stdio",
]
