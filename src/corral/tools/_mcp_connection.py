"""One live connection to an MCP server, owned by a background task of the event loop that opened it.

The SDK's ``Client`` is an async context manager whose task group must be entered and left by one task,
while an agent calls tools from many tasks at once; so a small owner task holds the ``async with`` open and
every caller uses the session it publishes. The connection notices when the server goes away (its process
exits, the HTTP stream breaks) or writes something that is not JSON-RPC: calls then fail at once with a
clear error instead of waiting for their timeout, and the toolset opens a fresh connection on the next call.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import IO, Any

import httpx2
import pydantic
from mcp import Client, StdioServerParameters
from mcp.client.session import IncomingMessage
from mcp.client.stdio import stdio_client
from mcp.client.streamable_http import streamable_http_client

from corral.tools._mcp_spec import HttpServer, ServerSpec, StdioServer

# The tail of a server's stderr quoted in the error of a call it died in.
_STDERR_TAIL = 600
# A non-JSON-RPC line from the server is quoted this far.
_GARBAGE_QUOTE = 200


class ConnectionLost(Exception):
    """The server went away or broke the protocol; ``str()`` says how, for the model."""


class ProtocolBroken(ConnectionLost):
    """The server wrote something on the connection that is not a JSON-RPC message."""


@asynccontextmanager
async def _http_transport(spec: HttpServer, read_timeout_s: float) -> AsyncIterator[Any]:
    timeout = httpx2.Timeout(30.0, read=read_timeout_s)
    async with (
        httpx2.AsyncClient(headers=dict(spec.headers), timeout=timeout) as http,
        streamable_http_client(spec.url, http_client=http) as streams,
    ):
        yield streams


class Connection:
    """A connected ``Client`` (``client``), whether it still works (``lost``), and how to close it."""

    def __init__(self, spec: ServerSpec, *, read_timeout_s: float) -> None:
        self.spec = spec
        self.loop = asyncio.get_running_loop()
        self.client: Client | None = None
        self.lost: str | None = None
        self.garbled = False
        # The tasks waiting for a reply now, and those this connection cancelled because it broke.
        self._inflight: set[asyncio.Task[Any]] = set()
        self._aborted: set[asyncio.Task[Any]] = set()
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._read_timeout_s = read_timeout_s
        self._stderr: IO[str] | None = None

    def _transport(self) -> Any:
        spec = self.spec
        if isinstance(spec, HttpServer):
            return _http_transport(spec, self._read_timeout_s)
        assert isinstance(spec, StdioServer)
        params = StdioServerParameters(
            command=spec.command,
            args=list(spec.args),
            env=dict(spec.env) if spec.env is not None else None,
            cwd=spec.cwd,
        )
        # The server's stderr goes to a file, so its last words can be quoted when it dies.
        self._stderr = tempfile.TemporaryFile(mode="w+", encoding="utf-8", errors="replace")  # noqa: SIM115 - closed by close()
        return stdio_client(params, errlog=self._stderr)

    async def open(self, timeout_s: float) -> None:
        """Start the server (or reach it) and finish the handshake, or raise :class:`ConnectionLost`."""
        ready: asyncio.Future[None] = self.loop.create_future()
        self._task = asyncio.create_task(self._own(ready), name=f"corral-mcp {self.spec.describe()}")
        try:
            async with asyncio.timeout(timeout_s):
                await asyncio.shield(ready)
        except TimeoutError:
            await self.close()
            raise ConnectionLost(f"it did not answer the handshake within {timeout_s:g} s") from None
        except ConnectionLost:
            await self.close()
            raise

    async def _own(self, ready: asyncio.Future[None]) -> None:
        try:
            async with Client(
                self._transport(),
                message_handler=self._on_message,
                read_timeout_seconds=self._read_timeout_s,
                client_info=None,
            ) as client:
                self.client = client
                if not ready.done():
                    ready.set_result(None)
                await self._stop.wait()
        except Exception as exc:  # the SDK wraps transport failures in exception groups: say it plainly
            detail = _describe(exc)
            self.mark_lost(f"the connection failed: {detail}")
            if not ready.done():
                ready.set_exception(ConnectionLost(f"it could not be started or reached: {detail}"))
        finally:
            self.mark_lost("the connection was closed")
            if not ready.done():
                ready.set_exception(ConnectionLost("the connection was closed before the handshake"))

    async def _on_message(self, message: IncomingMessage) -> None:
        # Notifications (tools/list_changed among them) are ignored on purpose: a run's tools are the
        # listing it journaled, so a server cannot add tools to a running agent.
        if isinstance(message, Exception):
            quoted = _describe(message)[:_GARBAGE_QUOTE]
            self.garbled = self.lost is None
            self.mark_lost(f"it wrote something that is not a JSON-RPC message ({quoted})")

    def mark_lost(self, why: str) -> None:
        """Record that this connection cannot be used any more (the first reason is kept), and wake every
        call waiting on it: they fail now rather than at their timeout."""
        if self.lost is None:
            self.lost = why
        for task in self._inflight - self._aborted:
            if not task.done():
                self._aborted.add(task)
                task.cancel(f"the MCP connection broke: {why}")

    async def call_tool(self, name: str, arguments: dict[str, Any]) -> Any:
        """The server's ``CallToolResult``; :class:`ConnectionLost` if the connection breaks meanwhile."""
        client, task = self.client, asyncio.current_task()
        if client is None or self.lost is not None or task is None:
            raise ConnectionLost(self.lost or "it is not connected")
        # No task per call (this is the hot path): the caller's own task is cancelled if the connection
        # breaks, and that cancellation, ours alone, becomes ConnectionLost.
        self._inflight.add(task)
        try:
            return await client.call_tool(name, arguments)
        except asyncio.CancelledError:
            if task not in self._aborted:
                raise
            self._aborted.discard(task)
            task.uncancel()
            raise (ProtocolBroken if self.garbled else ConnectionLost)(self.lost or "it broke") from None
        finally:
            self._inflight.discard(task)

    def stderr_tail(self) -> str:
        """The last lines the server wrote to stderr (stdio servers only)."""
        if self._stderr is None:
            return ""
        with contextlib.suppress(OSError, ValueError):
            self._stderr.flush()
            size = self._stderr.seek(0, os.SEEK_END)
            self._stderr.seek(max(0, size - _STDERR_TAIL))
            return self._stderr.read().strip()
        return ""

    async def close(self) -> None:
        """Close the session and stop the server process (stdio); safe to call twice."""
        self._stop.set()
        task = self._task
        if task is not None and not task.done() and asyncio.get_running_loop() is self.loop:
            try:
                async with asyncio.timeout(5.0):
                    await asyncio.shield(task)
            except TimeoutError:
                task.cancel()
                with contextlib.suppress(BaseException):
                    await task
        if self._stderr is not None:
            with contextlib.suppress(OSError):
                self._stderr.close()


def _describe(exc: BaseException) -> str:
    """The innermost useful message of an exception (groups are unwrapped to their first member)."""
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    if isinstance(exc, pydantic.ValidationError) and exc.errors():
        first = exc.errors(include_url=False)[0]
        return f"{first['msg']}; it starts {str(first.get('input', ''))[:60]!r}"
    text = str(exc) or type(exc).__name__
    return f"{type(exc).__name__}: {text}" if type(exc).__name__ not in text else text
