"""corral as an MCP server: the data agent, the sandbox, and exposed agents, for any MCP client.

Tools: ``ask`` (the data agent over the configured sources; its structured output is the ``--json``
contract), ``run_python`` and ``run_sql`` (the sandbox, read-only), and one tool per exposed
:class:`~corral.agents.Agent` or run function (see :func:`~corral.apps.mcp_server.expose`). Every call is a
durable run on the server's journal; long ones send progress notifications. An exposed agent's approvals
are asked through MCP elicitation when the client supports it, and otherwise go to the agent's own approver.
"""

from __future__ import annotations

import asyncio
import copy
import inspect
import json
import secrets
import typing
from collections.abc import Awaitable, Callable, Mapping
from contextvars import ContextVar
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import mcp_types
from mcp.server.elicitation import render_elicitation_schema
from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from mcp.shared.exceptions import MCPError, NoBackChannelError
from pydantic import BaseModel, Field

from corral import __version__
from corral.agents import Agent, AgentEvent, ModelResponded, ToolCalled
from corral.apps.data_agent import Answer, DataEvent
from corral.apps.mcp_server._registry import Exposed, exposed
from corral.durable import Runtime
from corral.guards import ApprovalDecision, ApprovalRequest, Approver
from corral.sandbox import run_python, run_sql

#: The MCP request being served in this task (read by the elicitation approver).
_REQUEST: ContextVar[Context[Any, Any] | None] = ContextVar("corral_mcp_request", default=None)
_MAX_TEXT = 20_000
#: How long an exposed agent's run waits for the client's answer to an approval before it counts as refused.
ANSWER_TIMEOUT_S = 600.0


@dataclass(frozen=True, kw_only=True)
class ServerConfig:
    """What ``corral mcp serve`` offers.

    ``databases`` maps a source name to a SQLite/DuckDB file or a ``postgresql://`` URL; ``files`` maps a
    name to CSV/Parquet files. ``model`` is the data agent's model (default: the setting, or local);
    ``judge`` runs its LLM-as-a-judge check. ``journal`` is where every call's run is recorded (default:
    the user's journal). ``sandbox_tools`` offers ``run_python`` and ``run_sql``.
    """

    databases: Mapping[str, str] = field(default_factory=dict)
    files: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    model: str | None = None
    judge: bool = True
    journal: Path | None = None
    sandbox_tools: bool = True

    def source_names(self) -> list[str]:
        """Every source name, databases first."""
        return [*self.databases, *self.files]


class AskResult(BaseModel):
    """The data agent's answer: the ``corral ask --json`` contract."""

    status: str = Field(description="answered, cannot_answer or failed")
    answer: str
    sql: str | None = None
    code: str | None = None
    columns: list[str] = Field(default_factory=list)
    rows: list[list[Any]] = Field(default_factory=list)
    chart: str | None = None
    run_id: str = ""
    usage: dict[str, Any] = Field(default_factory=dict)


class PythonResult(BaseModel):
    """What a sandboxed Python job did."""

    exit_code: int | None
    stdout: str
    stderr: str
    limit: str | None = Field(None, description="the limit that stopped the job, if one did")
    files: list[str] = Field(default_factory=list, description="files the job left in its directory")


class SqlResultOut(BaseModel):
    """A read-only query's result (rows capped), or the database's error."""

    columns: list[str] = Field(default_factory=list)
    rows: list[list[Any]] = Field(default_factory=list)
    row_count: int = 0
    truncated: bool = False
    error: str | None = None


class ApprovalForm(BaseModel):
    """What a person answers when an exposed agent asks to call a tool that needs approval."""

    approve: bool = Field(description="Allow this call?")
    reason: str = Field("", description="Why (told to the agent when refused)")


def _cut(text: str) -> str:
    return text if len(text) <= _MAX_TEXT else text[:_MAX_TEXT] + f"\n… [cut: {len(text)} characters]"


class _Progress:
    """Sends progress notifications from sync event callbacks (they cannot await)."""

    def __init__(self, ctx: Context[Any, Any]) -> None:
        self.ctx = ctx
        self.count = 0
        self.pending: set[asyncio.Task[None]] = set()

    def __call__(self, message: str) -> None:
        self.count += 1
        task = asyncio.ensure_future(self._send(self.count, message))
        self.pending.add(task)
        task.add_done_callback(self.pending.discard)

    async def _send(self, count: int, message: str) -> None:
        try:
            await self.ctx.report_progress(count, None, message[:300])
        except Exception:  # a client gone away must not fail the run
            return

    async def flush(self) -> None:
        if self.pending:
            await asyncio.gather(*self.pending, return_exceptions=True)


class _Asker:
    """The way an exposed agent's run asks its client on a 2026-07-28 connection, which has no channel from
    server to client during a call: the approver parks here, the tool call answers ``input_required``, and
    the client's next call (carrying the answer) wakes the run again."""

    def __init__(self) -> None:
        loop = asyncio.get_running_loop()
        self.question: asyncio.Future[ApprovalRequest] = loop.create_future()
        self.answer: asyncio.Future[ApprovalDecision] = loop.create_future()

    async def ask(self, request: ApprovalRequest) -> ApprovalDecision:
        self.answer = asyncio.get_running_loop().create_future()
        self.question.set_result(request)
        try:
            async with asyncio.timeout(ANSWER_TIMEOUT_S):
                return await asyncio.shield(self.answer)
        except TimeoutError:
            return ApprovalDecision(
                approved=False,
                reason=f"nobody answered through MCP within {ANSWER_TIMEOUT_S:g} s; do not call it again",
                by="mcp-client",
            )

    def reply(self, responses: Mapping[str, Any] | None) -> None:
        """Hand the client's answer (``input_responses``) to the waiting run."""
        self.question = asyncio.get_running_loop().create_future()
        answer = (responses or {}).get("approval")
        if isinstance(answer, mcp_types.ElicitResult):
            self.answer.set_result(_decision(answer.action, answer.content or {}))
        else:
            self.answer.set_result(_decision("decline", {"reason": "the client sent no answer"}))


_ASKER: ContextVar[_Asker | None] = ContextVar("corral_mcp_asker", default=None)


def _decision(action: str, content: Mapping[str, Any]) -> ApprovalDecision:
    if action == "accept" and content.get("approve") is True:
        return ApprovalDecision(approved=True, reason="approved through MCP", by="mcp-client")
    why = str(content.get("reason") or "") if action == "accept" else f"the user chose {action}"
    return ApprovalDecision(
        approved=False,
        reason=f"refused through MCP ({why or 'no reason given'}); do not call it again",
        by="mcp-client",
    )


def _approval_message(request: ApprovalRequest) -> str:
    arguments = json.dumps(request.arguments, indent=2, default=str)[:2000]
    return f"Run {request.run_id} wants to call {request.tool} with\n{arguments}\nAllow it?"


def _can_elicit(ctx: Context[Any, Any]) -> bool:
    try:
        caps = ctx.client_capabilities
    except Exception:
        return False
    return caps is not None and caps.elicitation is not None


def elicit_approver(fallback: Approver) -> Approver:
    """An approver that asks the MCP client's user (elicitation) and else defers to ``fallback``."""

    async def approve(request: ApprovalRequest) -> ApprovalDecision:
        ctx, asker = _REQUEST.get(), _ASKER.get()
        if ctx is not None and _can_elicit(ctx):
            try:
                answer = await ctx.elicit(_approval_message(request), schema=ApprovalForm)
            except NoBackChannelError:  # a 2026-07-28 connection: ask in the call's result instead
                if asker is not None:
                    return await asker.ask(request)
            except MCPError:
                pass  # the client failed to answer: the fallback decides
            else:
                content = answer.data.model_dump() if answer.action == "accept" else {}
                return _decision(answer.action, content)
        decided = fallback(request)
        return await decided if inspect.isawaitable(decided) else decided

    return approve


def _describe_event(event: AgentEvent) -> str | None:
    if isinstance(event, ModelResponded):
        return f"turn {event.turn}: the model answered" + (" with tool calls" if event.tool_calls else "")
    if isinstance(event, ToolCalled):
        return f"turn {event.turn}: calling {event.tool}"
    return None


@dataclass
class _Pending:
    """An exposed agent's run in flight across the rounds of one multi-round tool call."""

    task: asyncio.Future[Any]
    asker: _Asker
    progress: _Progress


class CorralMCP:
    """Builds the :class:`~mcp.server.mcpserver.MCPServer` of ``corral mcp serve`` from a config."""

    def __init__(
        self,
        config: ServerConfig,
        *,
        runtime: Runtime | None = None,
        expose: Mapping[str, Exposed] | None = None,
    ) -> None:
        self.config = config
        self._runtime = runtime
        self._pending: dict[str, _Pending] = {}
        self.server: MCPServer[Any] = MCPServer(
            "corral",
            version=__version__,
            instructions="corral: ask questions over the configured data sources, run Python or read-only "
            "SQL in a sandbox, and run the agents this server exposes. Every call is a durable run.",
            log_level="WARNING",
        )
        sources = ", ".join(config.source_names()) or "(none configured)"
        if config.source_names():
            self.server.add_tool(
                self.ask,
                name="ask",
                description=f"Answer a question over a data source with SQL or pandas run in a sandbox. "
                f"Sources: {sources}. Returns the answer, the query it ran and the rows.",
                structured_output=True,
            )
        if config.sandbox_tools:
            self.server.add_tool(
                self.run_python,
                name="run_python",
                description="Run Python in corral's sandbox (no network, no host files, limited CPU and "
                "memory) and return its output.",
                structured_output=True,
            )
            if config.source_names():
                self.server.add_tool(
                    self.run_sql,
                    name="run_sql",
                    description=f"Run one read-only SQL query in the sandbox. Sources: {sources}.",
                    structured_output=True,
                )
        for entry in (exposed() if expose is None else expose).values():
            self._add_exposed(entry)

    @property
    def runtime(self) -> Runtime:
        """The runtime every call's run is recorded on (opened on first use)."""
        if self._runtime is None:
            self._runtime = Runtime.open(self.config.journal) if self.config.journal else Runtime()
        return self._runtime

    def _source(self, source: str | None) -> tuple[str, str | None, tuple[str, ...]]:
        names = self.config.source_names()
        chosen = source or (names[0] if len(names) == 1 else None)
        if chosen is None or chosen not in names:
            raise ToolError(f"unknown source {source!r}: choose one of {', '.join(names) or '(none)'}")
        if chosen in self.config.databases:
            return chosen, self.config.databases[chosen], ()
        return chosen, None, self.config.files[chosen]

    async def ask(self, question: str, ctx: Context[Any, Any], source: str | None = None) -> AskResult:
        """Answer a question over one of the configured sources."""
        from corral.apps.data_agent._run import ask  # the same entry point as `corral ask --json`

        _, db, files = self._source(source)
        progress = _Progress(ctx)

        def on_event(event: DataEvent) -> None:
            progress(f"{event.kind}: {' '.join(event.message.split())}")

        answer: Answer = await ask(
            question,
            db=db,
            files=files,
            model=self.config.model,
            runtime=self.runtime,
            on_event=on_event,
            judge=self.config.judge,
            charts=False,
        )
        await progress.flush()
        return AskResult.model_validate(answer.to_json())

    async def run_python(self, code: str) -> PythonResult:
        """Run Python in the sandbox."""
        result = await run_python(code)
        return PythonResult(
            exit_code=result.exit_code,
            stdout=_cut(result.stdout),
            stderr=_cut(result.stderr),
            limit=result.limit,
            files=sorted(result.files),
        )

    async def run_sql(self, query: str, source: str | None = None) -> SqlResultOut:
        """Run one read-only SQL query on a configured source."""
        name, db, files = self._source(source)
        target: Any = db if db is not None else list(files)
        if isinstance(target, str) and "://" in target:
            raise ToolError(f"source {name!r} is a server database: ask questions about it with `ask`")
        result = await run_sql(query, target, read_only=True, max_rows=200)
        return SqlResultOut(
            columns=result.columns,
            rows=[list(row) for row in result.rows],
            row_count=result.row_count,
            truncated=result.truncated,
            error=result.error,
        )

    def _add_exposed(self, entry: Exposed) -> None:
        if entry.kind == "agent":
            assert isinstance(entry.target, Agent)
            served = copy.copy(entry.target)
            served.approver = elicit_approver(entry.target.approver)
            handler = self._agent_handler(served)
        else:
            handler = self._run_handler(entry)
        self.server.add_tool(handler, name=entry.name, description=entry.description)

    def _agent_handler(
        self, agent: Agent[Any]
    ) -> Callable[..., Awaitable[str | mcp_types.InputRequiredResult]]:
        async def run_agent(prompt: str, ctx: Context[Any, Any]) -> str | mcp_types.InputRequiredResult:
            pending = self._pending.pop(ctx.request_state or "", None)
            if pending is None:
                pending = self._start(agent, prompt, ctx)
            else:  # the client's answer to the approval this run asked for
                pending.progress.ctx = ctx
                pending.asker.reply(ctx.input_responses)
            await asyncio.wait((pending.task, pending.asker.question), return_when=asyncio.FIRST_COMPLETED)
            if not pending.task.done():
                state = secrets.token_urlsafe(16)
                self._pending[state] = pending
                request = pending.asker.question.result()
                params = mcp_types.ElicitRequestFormParams(
                    message=_approval_message(request),
                    requested_schema=render_elicitation_schema(ApprovalForm),
                )
                return mcp_types.InputRequiredResult(
                    input_requests={
                        "approval": mcp_types.ElicitRequest(method="elicitation/create", params=params)
                    },
                    request_state=state,
                    result_type="input_required",
                )
            result = pending.task.result()
            await pending.progress.flush()
            if not result.ok:
                raise ToolError(f"run {result.run_id} stopped ({result.reason}): {result.detail}")
            output = result.output
            return output if isinstance(output, str) else json.dumps(output, default=str)

        return run_agent

    def _start(self, agent: Agent[Any], prompt: str, ctx: Context[Any, Any]) -> _Pending:
        progress, asker = _Progress(ctx), _Asker()

        def on_event(event: AgentEvent) -> None:
            line = _describe_event(event)
            if line is not None:
                progress(line)

        tokens = _REQUEST.set(ctx), _ASKER.set(asker)
        try:  # the run's task copies these context variables when it is created
            task = asyncio.ensure_future(agent.run(prompt, runtime=self.runtime, on_event=on_event))
        finally:
            _REQUEST.reset(tokens[0])
            _ASKER.reset(tokens[1])
        return _Pending(task=task, asker=asker, progress=progress)

    def _run_handler(self, entry: Exposed) -> Callable[..., Awaitable[Any]]:
        fn = entry.target
        assert not isinstance(fn, Agent)
        hints = typing.get_type_hints(fn)
        params = list(inspect.signature(fn).parameters.values())[1:]  # the first is the run context

        async def run_function(**kwargs: Any) -> Any:
            result = await self.runtime.run(fn, **kwargs)
            return result if isinstance(result, str) else json.dumps(result, default=str)

        run_function.__signature__ = inspect.Signature(  # type: ignore[attr-defined]
            [p.replace(annotation=hints.get(p.name, Any)) for p in params], return_annotation=str
        )
        run_function.__annotations__ = {p.name: hints.get(p.name, Any) for p in params} | {"return": str}
        run_function.__name__ = entry.name
        run_function.__doc__ = entry.description
        return run_function


def build_server(
    config: ServerConfig, *, runtime: Runtime | None = None, expose: Mapping[str, Exposed] | None = None
) -> MCPServer[Any]:
    """The MCP server for ``config``: ask, run_python, run_sql, and ``expose`` (default: what this process
    has exposed with :func:`~corral.apps.mcp_server.expose`)."""
    return CorralMCP(config, runtime=runtime, expose=expose).server
