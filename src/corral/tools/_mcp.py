"""MCP servers' tools as corral tools: the same fences as a Python tool, and a bulkhead per server.

An :class:`MCPToolset` names one server (a command or a URL, see :mod:`corral.tools._mcp_spec`) and says
which of its tools an agent gets (``include``/``exclude``), under which names (``prefix``), with which
timeout, concurrency limit and approval policy. ``await toolset.tools()`` lists the server's tools and
returns :class:`~corral.tools.Tool` objects an :class:`~corral.agents.Agent` takes like any other — so each
call is a durable step of the agent's run and goes through its guards and approvals.

Inside a durable run the listing is itself a step: a resumed run gets the tools it had, whatever the server
offers now, and a tool the server adds later (even one a tool result asks the model to call) is not the
agent's. Each server is a bulkhead: its calls have a timeout, a concurrency limit, and a circuit breaker
(the model layer's :class:`~corral.models.CircuitBreaker`); a server that dies, hangs or writes garbage
fails its own calls with an error the model reads, and is restarted (with backoff) on the next call.

>>> toolset = MCPToolset("python -m mcp_server_time", prefix="time", include=["get_current_time"])
>>> toolset.name, toolset.prefix
('mcp_server_time', 'time')
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Collection, Mapping, Sequence
from typing import Any

import jsonschema  # type: ignore[import-untyped]
import mcp_types
import pydantic
import stamina
from mcp.shared.exceptions import MCPError
from pydantic import BaseModel, ConfigDict, Field

from corral.durable import RunContext, current_context
from corral.models import CircuitBreaker, ToolDefinition
from corral.tools._mcp_connection import Connection, ConnectionLost, ProtocolBroken
from corral.tools._mcp_spec import HttpServer, ServerSpec, parse_server_spec, servers_from_config
from corral.tools._tool import Tool, ToolContext, _Bulkhead
from corral.tools.errors import (
    ToolArgumentsError,
    ToolDefinitionError,
    ToolError,
    ToolRaisedError,
    ToolReplyError,
    ToolTimeoutError,
    ToolUnavailableError,
)

_NAME_OK = re.compile(r"[^A-Za-z0-9_-]")
# Bounds on what a server may declare about a tool: its words and schema reach every prompt.
MAX_DESCRIPTION_CHARS = 2_000
MAX_SCHEMA_CHARS = 20_000
MAX_TOOLS = 256
_LISTING = "(listing)"  # the "tool" named in errors of a listing


class MCPToolInfo(BaseModel):
    """One tool as the server listed it (bounded and checked), the form journaled per run."""

    model_config = ConfigDict(frozen=True)

    name: str
    description: str = ""
    input_schema: dict[str, Any] = Field(default_factory=dict)
    read_only: bool = False


class MCPListing(BaseModel):
    """A server's tools at one moment; ``skipped`` says which were left out and why."""

    model_config = ConfigDict(frozen=True)

    server: str
    tools: list[MCPToolInfo] = Field(default_factory=list)
    skipped: list[str] = Field(default_factory=list)


class MCPCallOutcome(BaseModel):
    """A call's text for the model, and the kind of error when it failed (what a workflow node journals)."""

    model_config = ConfigDict(frozen=True)

    content: str
    error_kind: str | None = None


def _default_name(spec: ServerSpec) -> str:
    if isinstance(spec, HttpServer):
        host = spec.url.split("://", 1)[-1].split("/", 1)[0]
        return _NAME_OK.sub("_", host)
    args, command = list(spec.args), spec.command.rsplit("/", 1)[-1]
    if command.startswith(("python", "uv", "npx", "node")) and args:
        if "-m" in args and args.index("-m") + 1 < len(args):  # python -m package
            return _NAME_OK.sub("_", args[args.index("-m") + 1])
        first = next((a for a in args if not a.startswith("-") and a != "run"), command)
        return _NAME_OK.sub("_", first.rsplit("/", 1)[-1].removesuffix(".py"))
    return _NAME_OK.sub("_", command)


def _check_tool(tool: mcp_types.Tool) -> MCPToolInfo | str:
    """The tool, bounded; or why it is left out."""
    schema = tool.input_schema
    if not isinstance(schema, dict) or schema.get("type", "object") != "object":
        return f"{tool.name!r}: its input schema is not a JSON object schema"
    if len(json.dumps(schema, default=str)) > MAX_SCHEMA_CHARS:
        return f"{tool.name!r}: its input schema is larger than {MAX_SCHEMA_CHARS} characters"
    try:
        jsonschema.validators.validator_for(schema).check_schema(schema)
    except (jsonschema.SchemaError, RecursionError) as exc:
        return f"{tool.name!r}: its input schema is not valid JSON Schema ({str(exc)[:120]})"
    description = (tool.description or tool.title or "")[:MAX_DESCRIPTION_CHARS]
    read_only = bool(tool.annotations is not None and tool.annotations.read_only_hint)
    return MCPToolInfo(name=tool.name, description=description, input_schema=schema, read_only=read_only)


def _block_text(block: Any) -> str:
    kind = getattr(block, "type", "")
    if kind == "text":
        return str(block.text)
    if kind in ("image", "audio"):
        size = len(block.data) * 3 // 4
        return f"[{kind} {block.mime_type}, about {size} bytes, not shown]"
    if kind == "resource":
        contents = block.resource
        text = getattr(contents, "text", None)
        return str(text) if text is not None else f"[binary resource {contents.uri}, not shown]"
    if kind == "resource_link":
        return f"[resource {block.uri}]"
    return f"[content of type {kind!r}, not shown]"


def render_result(result: Any, *, tool: str, server: str, max_chars: int) -> str:
    """A ``CallToolResult`` as the text the model reads, cut at ``max_chars``; an error result raises."""
    if not isinstance(result, mcp_types.CallToolResult):
        raise ToolReplyError(
            f"The MCP server {server!r} answered the call of {tool!r} with something that is not a tool "
            f"result ({type(result).__name__}). Do without this tool.",
            tool=tool,
        )
    parts = [_block_text(block) for block in result.content]
    if not any(parts) and result.structured_content is not None:
        try:
            parts = [json.dumps(result.structured_content, ensure_ascii=False, default=str)]
        except (ValueError, RecursionError):
            raise ToolReplyError(
                f"The MCP server {server!r} sent a structured result for {tool!r} that cannot be read "
                "(nested too deeply). Do without this tool.",
                tool=tool,
            ) from None
    text = "\n".join(part for part in parts if part)
    if len(text) > max_chars:
        text = text[:max_chars] + f"\n… [cut: {len(text)} characters in all; ask for less]"
    if result.is_error:
        raise ToolRaisedError(
            f"The MCP tool {tool!r} (server {server!r}) reported an error: {text or '(no message)'}",
            tool=tool,
        )
    return text


def _reply_problem(exc: Exception) -> str:
    if isinstance(exc, pydantic.ValidationError) and exc.errors():
        errors = exc.errors(include_url=False)
        where = ".".join(str(p) for p in errors[0]["loc"])
        return f"{len(errors)} problem(s), the first at {where}: {errors[0]['msg']}"
    return f"{type(exc).__name__}: {str(exc)[:200]}"


class MCPTool(Tool[..., Any]):
    """A tool of an MCP server: validated against the server's JSON Schema, called over the protocol.

    Built by :meth:`MCPToolset.tools`; the agent treats it as any :class:`~corral.tools.Tool` (durable step,
    guards, approval). ``remote_name`` is the server's name for it, ``name`` the one the model sees.
    """

    def __init__(self, toolset: MCPToolset, info: MCPToolInfo, *, name: str, needs_approval: bool) -> None:
        async def call_remote() -> str:  # never called: _execute sends the calls to the server
            raise NotImplementedError

        super().__init__(
            call_remote,
            name=name,
            description=info.description,
            timeout=toolset.timeout,
            side_effects=not info.read_only,
            needs_approval=needs_approval,
        )
        self.toolset = toolset
        self.remote_name = info.name
        self.definition = ToolDefinition(
            name=name, description=info.description, parameters=info.input_schema
        )
        self._validator = jsonschema.validators.validator_for(info.input_schema)(info.input_schema)
        self._bulkhead = toolset._bulkhead

    def __repr__(self) -> str:
        return f"<MCPTool {self.name!r} of {self.toolset.name!r}>"

    def validate(
        self, arguments: Mapping[str, Any] | None, *, tool_call_id: str | None = None
    ) -> dict[str, Any]:
        """The arguments if they match the server's schema, else :class:`ToolArgumentsError` saying why."""
        if not isinstance(arguments, Mapping):
            schema = json.dumps(self.definition.parameters, sort_keys=True)
            raise ToolArgumentsError(
                f"The arguments of tool {self.name!r} must be a JSON object matching this schema: {schema}",
                tool=self.name,
                tool_call_id=tool_call_id,
            )
        values = dict(arguments)
        if self._validator.is_valid(values):
            return values
        schema = json.dumps(self.definition.parameters, sort_keys=True)
        errors = sorted(self._validator.iter_errors(values), key=lambda e: list(map(str, e.path)))
        if errors:
            problems = "\n".join(
                f"- {'.'.join(map(str, e.path)) or '(arguments)'}: {e.message[:200]}" for e in errors[:10]
            )
            raise ToolArgumentsError(
                f"Invalid arguments for tool {self.name!r}:\n{problems}\n"
                f"Call it again with arguments matching this JSON schema: {schema}",
                tool=self.name,
                tool_call_id=tool_call_id,
            )
        return values

    async def call(
        self,
        arguments: Mapping[str, Any] | None,
        context: ToolContext | None = None,
        *,
        default_timeout: float | None = None,
    ) -> Any:
        """:meth:`Tool.call`; a timeout also counts against the server's circuit breaker."""
        try:
            return await super().call(arguments, context, default_timeout=default_timeout)
        except ToolTimeoutError:
            self.toolset._breaker.failure()
            raise

    async def _execute(self, values: dict[str, Any], call_id: str | None) -> Any:
        return await self.toolset._call_remote(self, values, call_id)


class MCPToolset:
    """The tools of one MCP server, for an agent or a workflow node.

    ``server`` is a command line (stdio), an ``http(s)://`` URL (streamable HTTP; ``headers`` go with each
    request), or a :class:`StdioServer` / :class:`HttpServer`. ``name`` names the server in messages and
    journal steps (default: from the command or host). ``prefix`` is put before each tool's name
    (``prefix_toolname``) so two servers' tools cannot clash. ``include`` keeps only the named tools (the
    server's names); ``exclude`` drops some. ``needs_approval`` is ``True`` (every tool), ``False``, or the
    server's names of the tools that need a human's yes — they go through the agent's approval path.

    Bulkhead: ``timeout`` bounds each call (seconds, waiting included); ``max_concurrency`` bounds calls in
    flight to this server; after ``breaker_threshold`` failures in a row (server down, timeouts, garbage)
    its calls fail fast for ``breaker_reset_s``. ``connect_attempts`` starts (or reaches) the server with
    exponential backoff before a call gives up. A result longer than ``max_result_chars`` is cut.
    """

    def __init__(
        self,
        server: str | ServerSpec,
        *,
        name: str | None = None,
        prefix: str | None = None,
        include: Collection[str] | None = None,
        exclude: Collection[str] = (),
        needs_approval: bool | Collection[str] = False,
        headers: Mapping[str, str] | None = None,
        timeout: float | None = 30.0,
        connect_timeout: float = 30.0,
        connect_attempts: int = 3,
        max_concurrency: int | None = None,
        max_queue: int = 64,
        max_result_chars: int = 50_000,
        breaker_threshold: int = 3,
        breaker_reset_s: float = 30.0,
    ) -> None:
        self.spec = parse_server_spec(server, headers=headers)
        self.name = name or _default_name(self.spec)
        if prefix is not None and not re.fullmatch(r"[A-Za-z0-9_-]{1,32}", prefix):
            raise ToolDefinitionError(f"MCP prefix {prefix!r}: use 1-32 letters, digits, '_' or '-'")
        if timeout is not None and timeout <= 0:
            raise ToolDefinitionError(f"MCP server {self.name!r}: timeout must be positive, not {timeout}")
        self.prefix = prefix
        self.include = frozenset(include) if include is not None else None
        self.exclude = frozenset(exclude)
        self.needs_approval = (
            needs_approval if isinstance(needs_approval, bool) else frozenset(needs_approval)
        )
        self.timeout = timeout
        self.connect_timeout = connect_timeout
        self.connect_attempts = max(1, connect_attempts)
        self.max_result_chars = max_result_chars
        self._breaker = CircuitBreaker(
            f"mcp:{self.name}", failure_threshold=breaker_threshold, reset_after_s=breaker_reset_s
        )
        self._bulkhead = (
            _Bulkhead(f"mcp:{self.name}", max_concurrency, max_queue) if max_concurrency is not None else None
        )
        self._connection: Connection | None = None
        self._connecting: tuple[asyncio.AbstractEventLoop, asyncio.Lock] | None = None
        self._listed: dict[str, MCPTool] = {}

    def __repr__(self) -> str:
        return f"MCPToolset({self.spec!r}, name={self.name!r}, prefix={self.prefix!r})"

    @property
    def breaker(self) -> CircuitBreaker:
        """This server's circuit breaker (``state`` is ``closed``, ``open`` or ``half-open``)."""
        return self._breaker

    # ---- connection ---------------------------------------------------------------------------------

    async def _connected(self, tool: str) -> Connection:
        loop = asyncio.get_running_loop()
        conn = self._connection
        if conn is not None and conn.loop is loop and conn.lost is None:
            return conn
        if self._connecting is None or self._connecting[0] is not loop:  # asyncio locks are per loop
            self._connecting = (loop, asyncio.Lock())
        async with self._connecting[1]:
            conn = self._connection
            if conn is not None and conn.loop is loop and conn.lost is None:
                return conn
            if conn is not None and conn.loop is loop:
                await conn.close()
            self._connection = await self._open(tool)
            return self._connection

    async def _open(self, tool: str) -> Connection:
        last = ""
        try:
            for attempt in stamina.retry_context(
                on=ConnectionLost,
                attempts=self.connect_attempts,
                timeout=None,
                wait_initial=0.2,
                wait_max=5.0,
                wait_jitter=0.2,
            ):
                with attempt:
                    conn = Connection(self.spec, read_timeout_s=max(self.timeout or 0.0, 300.0))
                    try:
                        await conn.open(self.connect_timeout)
                    except ConnectionLost as exc:
                        tail = conn.stderr_tail()
                        last = f"{exc}" + (f"; it wrote on stderr: {tail[-300:]}" if tail else "")
                        raise
                    return conn
        except ConnectionLost:
            pass
        self._breaker.failure()
        what = "its tools" if tool == _LISTING else f"the tool {tool!r}"
        raise ToolUnavailableError(
            f"The MCP server {self.name!r} ({self.spec.describe()}) is unavailable: {last}. "
            f"Tried {self.connect_attempts} time(s). Answer without {what}, or try later.",
            tool=tool,
        )

    async def aclose(self) -> None:
        """Close the connection (a stdio server's process stops). Used again, the toolset reconnects."""
        conn, self._connection = self._connection, None
        if conn is not None:
            await conn.close()

    async def __aenter__(self) -> MCPToolset:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    # ---- listing ------------------------------------------------------------------------------------

    async def list_tools(self) -> MCPListing:
        """The server's tools now, after ``include``/``exclude`` and the bounds (not journaled)."""
        conn = await self._connected(_LISTING)
        client = conn.client
        assert client is not None
        found: list[MCPToolInfo] = []
        skipped: list[str] = []
        cursor: str | None = None
        try:
            async with asyncio.timeout(self.connect_timeout):
                for _ in range(32):  # a server whose pages never end cannot hang the listing
                    page = await client.list_tools(cursor=cursor, cache_mode="refresh")
                    for tool in page.tools:
                        if (self.include is not None and tool.name not in self.include) or (
                            tool.name in self.exclude
                        ):
                            continue
                        checked = _check_tool(tool)
                        (found if isinstance(checked, MCPToolInfo) else skipped).append(checked)  # type: ignore[arg-type]
                    cursor = page.next_cursor
                    if cursor is None:
                        break
        except (MCPError, pydantic.ValidationError, TimeoutError) as exc:
            conn.mark_lost(f"listing its tools failed: {exc}")
            self._breaker.failure()
            raise ToolUnavailableError(
                f"The MCP server {self.name!r} could not list its tools: {type(exc).__name__}: {exc}",
                tool=_LISTING,
            ) from None
        if len(found) > MAX_TOOLS:
            skipped.extend(f"{t.name!r}: more than {MAX_TOOLS} tools" for t in found[MAX_TOOLS:])
            found = found[:MAX_TOOLS]
        return MCPListing(server=self.name, tools=found, skipped=skipped)

    async def tools(self, ctx: RunContext | None = None) -> list[Tool[..., Any]]:
        """The server's tools as corral tools. Inside a durable run (``ctx``, or the run executing now)
        the listing is a step of that run, so a resumed run gets the same tools without asking."""
        ctx = ctx if ctx is not None else current_context()
        if ctx is None:
            listing = await self.list_tools()
        else:
            listing = await ctx.step(f"mcp:tools:{self.name}", self.list_tools, returns=MCPListing)
        return self.tools_from(listing)

    def tools_from(self, listing: MCPListing) -> list[Tool[..., Any]]:
        """Corral tools for a listing (one from :meth:`list_tools`, or one journaled earlier)."""
        made: list[MCPTool] = []
        for info in listing.tools:
            local = _NAME_OK.sub("_", info.name)
            name = f"{self.prefix}_{local}" if self.prefix else local
            if not name or len(name) > 64:
                continue
            approval = (
                self.needs_approval
                if isinstance(self.needs_approval, bool)
                else info.name in self.needs_approval
            )
            made.append(MCPTool(self, info, name=name, needs_approval=approval))
        self._listed = {t.name: t for t in made}
        return [*made]

    # ---- calls --------------------------------------------------------------------------------------

    async def _call_remote(self, tool: MCPTool, values: dict[str, Any], call_id: str | None) -> str:
        remaining = self._breaker.check()
        if remaining is not None:
            raise ToolUnavailableError(
                f"The MCP server {self.name!r} failed {self._breaker.failures} times in a row; its tools "
                f"fail fast for another {remaining:.0f} s. Answer without {tool.name!r} for now.",
                tool=tool.name,
                tool_call_id=call_id,
            )
        conn = await self._connected(tool.name)
        try:
            result = await conn.call_tool(tool.remote_name, values)
        except ProtocolBroken as exc:
            self._breaker.failure()
            raise ToolReplyError(
                f"The MCP server {self.name!r} broke the protocol during the call of {tool.name!r}: {exc}. "
                "Its connection is dropped and restarted on the next call.",
                tool=tool.name,
                tool_call_id=call_id,
            ) from None
        except ConnectionLost as exc:
            self._breaker.failure()
            raise self._lost(tool, conn, str(exc), call_id) from None
        except MCPError as exc:
            if exc.code == mcp_types.CONNECTION_CLOSED:
                self._breaker.failure()
                conn.mark_lost("it closed the connection")
                raise self._lost(tool, conn, "it closed the connection", call_id) from None
            # The server answered, with a protocol error: it is alive, the call was wrong.
            self._breaker.success()
            raise ToolRaisedError(
                f"The MCP server {self.name!r} refused the call of {tool.name!r}: {exc.message[:500]}",
                tool=tool.name,
                tool_call_id=call_id,
            ) from None
        except (pydantic.ValidationError, ValueError, RecursionError) as exc:
            self._breaker.failure()
            raise ToolReplyError(
                f"The MCP server {self.name!r} sent a malformed reply to {tool.name!r} "
                f"({_reply_problem(exc)}). Do without this tool.",
                tool=tool.name,
                tool_call_id=call_id,
            ) from None
        self._breaker.success()
        try:
            return render_result(result, tool=tool.name, server=self.name, max_chars=self.max_result_chars)
        except ToolError as exc:
            exc.tool_call_id = call_id
            raise

    def _lost(self, tool: MCPTool, conn: Connection, why: str, call_id: str | None) -> ToolUnavailableError:
        tail = conn.stderr_tail()
        said = f" Its last words on stderr: {tail[-300:]!r}." if tail else ""
        return ToolUnavailableError(
            f"The MCP server {self.name!r} failed during the call of {tool.name!r}: {why}.{said} The call "
            "may or may not have taken effect; the server is restarted on the next call. Check before "
            "repeating a call that changes something.",
            tool=tool.name,
            tool_call_id=call_id,
        )

    async def call(
        self, tool: str, arguments: Mapping[str, Any], *, ctx: RunContext | None = None
    ) -> MCPCallOutcome:
        """Call one of this server's tools (its corral name) from a workflow node, as a durable step.

        The outcome is journaled whether it succeeded or failed, so a replay returns it without calling.
        """
        ctx = ctx if ctx is not None else current_context()
        if ctx is None:
            return await self._outcome(tool, dict(arguments))
        return await ctx.step(
            f"tool:{tool}", self._outcome, tool, dict(arguments), returns=MCPCallOutcome, key=None
        )

    async def _outcome(self, tool: str, arguments: dict[str, Any]) -> MCPCallOutcome:
        if not self._listed:
            self.tools_from(await self.list_tools())
        found = self._listed.get(tool)
        if found is None:
            known = ", ".join(sorted(self._listed)) or "(none)"
            return MCPCallOutcome(
                content=f"The MCP server {self.name!r} has no tool {tool!r}; its tools: {known}.",
                error_kind="unknown_tool",
            )
        try:
            value = await found.call(arguments)
        except ToolError as exc:
            return MCPCallOutcome(content=str(exc), error_kind=exc.kind)
        return MCPCallOutcome(content=str(value))


def toolsets_from_config(config: Mapping[str, Any], **options: Any) -> list[MCPToolset]:
    """One :class:`MCPToolset` per server of a desktop client's ``mcpServers`` configuration, each named
    and prefixed after its key; ``options`` (timeout, needs_approval, ...) go to every toolset."""
    return [
        MCPToolset(spec, name=name, prefix=_NAME_OK.sub("_", name)[:32], **options)
        for name, spec in servers_from_config(config).items()
    ]


async def all_tools(toolsets: Sequence[MCPToolset], ctx: RunContext | None = None) -> list[Tool[..., Any]]:
    """The tools of several servers, listed one after another (each listing a step of the current run)."""
    found: list[Tool[..., Any]] = []
    for toolset in toolsets:
        found.extend(await toolset.tools(ctx))
    return found
