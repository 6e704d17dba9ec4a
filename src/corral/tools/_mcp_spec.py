"""Where an MCP server is: a command to start (stdio) or a URL (streamable HTTP).

A spec is written the way users already write them: a command line (``uvx mcp-server-time``), a URL
(``http://127.0.0.1:8765/mcp``), or the ``mcpServers`` object of a desktop client's configuration file.

>>> parse_server_spec("python -m mcp_server_time --local-timezone UTC")
StdioServer(command='python', args=('-m', 'mcp_server_time', '--local-timezone', 'UTC'), env=None, cwd=None)
>>> parse_server_spec("http://127.0.0.1:8765/mcp").url
'http://127.0.0.1:8765/mcp'
>>> sorted(servers_from_config({"mcpServers": {"time": {"command": "mcp-server-time"}}}))
['time']
"""

from __future__ import annotations

import shlex
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, TypeAlias

from corral.tools.errors import ToolDefinitionError


@dataclass(frozen=True)
class StdioServer:
    """An MCP server started as a child process and spoken to over its stdin and stdout."""

    command: str
    args: tuple[str, ...] = ()
    env: Mapping[str, str] | None = None
    cwd: str | None = None

    def describe(self) -> str:
        """The command line, for messages."""
        return shlex.join([self.command, *self.args])


@dataclass(frozen=True)
class HttpServer:
    """An MCP server reached over streamable HTTP. ``headers`` go with every request (e.g. a bearer token)."""

    url: str
    headers: Mapping[str, str] = field(default_factory=dict)

    def describe(self) -> str:
        """The URL, for messages (headers are left out: they may hold a token)."""
        return self.url

    def __repr__(self) -> str:
        # A header may hold a token: never print its value.
        return f"HttpServer(url={self.url!r}, headers={sorted(self.headers)!r})"


ServerSpec: TypeAlias = StdioServer | HttpServer


def parse_server_spec(spec: str | ServerSpec, *, headers: Mapping[str, str] | None = None) -> ServerSpec:
    """A spec from a string: an ``http(s)://`` URL is a streamable-HTTP server, anything else a command."""
    if isinstance(spec, StdioServer | HttpServer):
        return spec
    text = spec.strip()
    if text.startswith(("http://", "https://")):
        return HttpServer(url=text, headers=dict(headers or {}))
    try:
        parts = shlex.split(text)
    except ValueError as exc:
        raise ToolDefinitionError(f"MCP server spec {spec!r} is not a valid command line: {exc}") from exc
    if not parts:
        raise ToolDefinitionError("an MCP server spec is empty: give a command or an http(s):// URL")
    return StdioServer(command=parts[0], args=tuple(parts[1:]))


def _one_server(name: str, entry: Any) -> ServerSpec:
    if not isinstance(entry, Mapping):
        raise ToolDefinitionError(f"MCP server {name!r}: its configuration must be an object")
    if "url" in entry:
        url, headers = entry["url"], entry.get("headers") or {}
        if not isinstance(url, str) or not isinstance(headers, Mapping):
            raise ToolDefinitionError(f"MCP server {name!r}: 'url' must be a string, 'headers' an object")
        return HttpServer(url=url, headers={str(k): str(v) for k, v in headers.items()})
    command, args, env = entry.get("command"), entry.get("args") or [], entry.get("env")
    if not isinstance(command, str) or not isinstance(args, list):
        raise ToolDefinitionError(
            f"MCP server {name!r}: give 'command' (a string) and 'args' (a list), or 'url'"
        )
    if env is not None and not isinstance(env, Mapping):
        raise ToolDefinitionError(f"MCP server {name!r}: 'env' must be an object")
    return StdioServer(
        command=command,
        args=tuple(str(a) for a in args),
        env={str(k): str(v) for k, v in env.items()} if env is not None else None,
        cwd=str(entry["cwd"]) if entry.get("cwd") else None,
    )


def servers_from_config(config: Mapping[str, Any]) -> dict[str, ServerSpec]:
    """The servers of a desktop client's configuration (its ``mcpServers`` object), by name."""
    servers = config.get("mcpServers", config.get("servers"))
    if not isinstance(servers, Mapping):
        raise ToolDefinitionError("an MCP configuration needs an 'mcpServers' object of named servers")
    return {str(name): _one_server(str(name), entry) for name, entry in servers.items()}
