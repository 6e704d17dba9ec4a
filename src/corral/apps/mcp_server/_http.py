"""Serving over streamable HTTP: a bearer token on every request, loopback by default.

The token is compared in constant time; a request without it (or with another) gets ``401`` and never
reaches the MCP session manager.
"""

from __future__ import annotations

import hmac
import json
import secrets
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import uvicorn
from mcp.server.mcpserver import MCPServer

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8765


def new_token() -> str:
    """A fresh random bearer token (256 bits, URL-safe)."""
    return secrets.token_urlsafe(32)


class BearerTokenGate:
    """ASGI middleware: HTTP requests must carry ``Authorization: Bearer <token>``."""

    def __init__(self, app: ASGIApp, token: str) -> None:
        if len(token) < 16:
            raise ValueError("the MCP server's bearer token must be at least 16 characters long")
        self.app = app
        self._expected = f"Bearer {token}".encode()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            given = b""
            for name, value in scope.get("headers", ()):
                if name.lower() == b"authorization":
                    given = value
            if not hmac.compare_digest(given, self._expected):
                await self._refuse(send)
                return
        await self.app(scope, receive, send)

    @staticmethod
    async def _refuse(send: Send) -> None:
        body = json.dumps({"error": "unauthorized", "detail": "send Authorization: Bearer <token>"}).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 401,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"www-authenticate", b'Bearer realm="corral"'),
                    (b"content-length", str(len(body)).encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})


def http_app(server: MCPServer[Any], *, token: str, host: str = DEFAULT_HOST) -> ASGIApp:
    """The server's streamable-HTTP app (at ``/mcp``) behind the bearer-token gate."""
    app: ASGIApp = server.streamable_http_app(host=host)
    return BearerTokenGate(app, token)


async def serve_http(
    server: MCPServer[Any], *, token: str, host: str = DEFAULT_HOST, port: int = DEFAULT_PORT
) -> None:
    """Serve until cancelled (Ctrl-C)."""
    config = uvicorn.Config(
        http_app(server, token=token, host=host), host=host, port=port, log_level="warning", lifespan="on"
    )
    await uvicorn.Server(config).serve()


async def serve_stdio(server: MCPServer[Any]) -> None:
    """Serve one client over this process's stdin and stdout until it disconnects."""
    await server.run_stdio_async()
