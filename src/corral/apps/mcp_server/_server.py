"""corral as an MCP server: the data agent, the sandbox, and exposed agents, for any MCP client.

Tools: ``ask`` (the data agent over the configured sources; its structured output is the ``--json``
contract), ``run_python`` and ``run_sql`` (the sandbox, read-only), and one tool per exposed
:class:`~corral.agents.Agent` or run function (see :func:`~corral.apps.mcp_server.expose`). Every call is a
durable run on the server's journal; long ones send progress notifications. A call that needs approval
parks its run in the journal (``corral approvals``); the server puts the approval to the client's user
through MCP elicitation when the client can answer, records the answer in the ledger, and goes on.
Otherwise the call returns a :class:`RunResult` saying the run is parked, and ``run_status`` resumes it.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import re
import secrets
import typing
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import mcp_types
from mcp.server.elicitation import render_elicitation_schema
from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from mcp.server.request_state import RequestStateSecurity
from mcp.shared.exceptions import MCPError, NoBackChannelError
from pydantic import BaseModel, Field, ValidationError
from pydantic_core import to_jsonable_python

from corral import __version__
from corral._errors import UsageError
from corral.agents import Agent, AgentEvent, ModelResponded, ToolCalled, Workflow
from corral.apps.data_agent import Answer, DataEvent
from corral.apps.mcp_server._registry import Exposed, exposed
from corral.durable import RunBusy, RunNotFound, RunSuspended, Runtime
from corral.guards import ApprovalError, ApprovalRecord, Approvals
from corral.sandbox import run_python, run_sql

_MAX_TEXT = 20_000
_MAX_REASON = 4000
#: The parameter an exposed run function's MCP handler takes the request context by.
_CONTEXT_PARAM = "mcp_request_context"


@dataclass(frozen=True, kw_only=True)
class ServerConfig:
    """What ``corral mcp serve`` offers.

    ``databases`` maps a source name to a SQLite/DuckDB file or a ``postgresql://`` URL; ``files`` maps a
    name to CSV/Parquet files. ``model`` is the data agent's model (default: the setting, or local);
    ``judge`` runs its LLM-as-a-judge check. ``journal`` is where every call's run is recorded (default:
    the user's journal). ``sandbox_tools`` offers ``run_python`` and ``run_sql``. ``state_key`` (at least 32
    characters) seals the state of approvals asked in ``input_required`` results (2026-07-28 clients): with
    the same key, an answer sent after the server restarted still decides; default: a key of this process.
    ``ops`` offers ``ops_diagnose``: the observability agent diagnosing this host (off by default: it reads
    every process's state, and its remediations, once a person approves them, act on the host).
    """

    databases: Mapping[str, str] = field(default_factory=dict)
    files: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    model: str | None = None
    judge: bool = True
    journal: Path | None = None
    sandbox_tools: bool = True
    state_key: str | None = None
    ops: bool = False

    def __post_init__(self) -> None:
        if self.state_key is not None and len(self.state_key) < 32:
            raise UsageError("the MCP server's state key must be at least 32 characters")

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


class PendingApproval(BaseModel):
    """One approval request a parked run waits for (decide it with ``corral approvals``)."""

    id: str
    action: str = Field(description="the tool (or action) the run wants to call")
    arguments: dict[str, Any]
    why: str = ""
    deadline: float | None = Field(None, description="epoch seconds; the policy's default decides then")


class RunResult(BaseModel):
    """What a call of an exposed agent or run function did: its output, or where its run is parked.

    ``status`` is ``completed`` (``output`` is the answer; JSON text for a structured one), ``parked`` (the
    run waits in the journal for the decisions in ``approvals``, or for another signal; ``message`` says how
    to decide and how to get the result: the ``run_status`` tool with ``run_id``), or ``running`` (another
    process, e.g. ``corral worker``, is executing the run now; ask ``run_status`` again later).
    """

    status: Literal["completed", "parked", "running"]
    run_id: str
    output: str | None = None
    approvals: list[PendingApproval] = Field(default_factory=list)
    message: str = ""
    report: dict[str, Any] | None = Field(
        default=None, description="ops_diagnose only: the ops agent's report (`corral ops diagnose --json`)"
    )


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

    def on_event(self, event: AgentEvent) -> None:
        line = _describe_event(event)
        if line is not None:
            self(line)


def _approval_message(record: ApprovalRecord) -> str:
    arguments = json.dumps(record.arguments, indent=2, default=str)[:2000]
    why = f" ({record.why})" if record.why else ""
    return f"Run {record.run_id} wants to call {record.action}{why} with\n{arguments}\nAllow it?"


def _can_elicit(ctx: Context[Any, Any]) -> bool:
    try:
        caps = ctx.client_capabilities
    except Exception:
        return False
    return caps is not None and caps.elicitation is not None


def _describe_event(event: AgentEvent) -> str | None:
    if isinstance(event, ModelResponded):
        return f"turn {event.turn}: the model answered" + (" with tool calls" if event.tool_calls else "")
    if isinstance(event, ToolCalled):
        return f"turn {event.turn}: calling {event.tool}"
    return None


def _parked(run_id: str, waiting_for: str | None, pending: Sequence[ApprovalRecord]) -> RunResult:
    approvals = [
        PendingApproval(id=r.id, action=r.action, arguments=r.arguments, why=r.why, deadline=r.deadline)
        for r in pending
    ]
    after = f"then call the `run_status` tool with run_id {run_id!r} for the result"
    if approvals:
        first = approvals[0].id
        message = (
            f"Run {run_id} is parked until a person decides approval {', '.join(a.id for a in approvals)}: "
            f'`corral approvals approve {first}` or `corral approvals reject {first} --reason "..."` (or '
            f"corral.guards.Approvals(runtime).approve/reject in Python); {after}."
        )
    else:
        message = f"Run {run_id} is parked, waiting for {waiting_for or 'its timer'}; {after}."
    return RunResult(status="parked", run_id=run_id, approvals=approvals, message=message)


#: How long (s) a client has to answer an approval it was asked (a form, or an ``input_required`` result);
#: the run itself stays parked in the journal, so a late answer only means deciding it another way.
ANSWER_TTL_S = 600.0
#: Who the ledger names as the decider of an answer given through MCP.
MCP_DECIDER = "mcp-client"
_RUN_ID = re.compile(r"^mcp-(?P<tool>[A-Za-z0-9_-]{1,64})-(?P<token>[0-9a-f]{16})$")


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
        self._exposed: dict[str, Exposed] = {}
        self.server: MCPServer[Any] = MCPServer(
            "corral",
            version=__version__,
            instructions="corral: ask questions over the configured data sources, run Python or read-only "
            "SQL in a sandbox, and run the agents this server exposes. Every call is a durable run.",
            log_level="WARNING",
            request_state_security=(
                RequestStateSecurity(keys=[config.state_key], ttl=ANSWER_TTL_S) if config.state_key else None
            ),
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
        if config.ops:
            self.server.add_tool(
                self.ops_diagnose,
                name="ops_diagnose",
                description="Diagnose a misbehaving process or service on the server's host from read-only "
                "evidence: the root cause, its evidence and a recommendation (the `report`). A fix it "
                "proposes runs only after a person approves it.",
                structured_output=True,
            )
        if self._exposed or config.ops:
            self.server.add_tool(
                self.run_status,
                name="run_status",
                description="The result of a run an exposed agent or run function started (its `run_id`): "
                "a run parked on an approval goes on once the approval is decided.",
                structured_output=True,
            )

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
        from corral.apps.data_agent import ask  # the same entry point as `corral ask --json`

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

    # -- exposed agents and run functions ---------------------------------------------------------------
    def _add_exposed(self, entry: Exposed) -> None:
        self._exposed[entry.name] = entry
        if entry.kind == "agent":
            handler = self._agent_handler(entry)
        elif entry.kind == "workflow":
            handler = self._workflow_handler(entry)
        else:
            handler = self._run_handler(entry)
        self.server.add_tool(handler, name=entry.name, description=entry.description, structured_output=True)

    def _agent_handler(
        self, entry: Exposed
    ) -> Callable[..., Awaitable[RunResult | mcp_types.InputRequiredResult]]:
        agent = entry.target
        assert isinstance(agent, Agent)

        async def run_agent(prompt: str, ctx: Context[Any, Any]) -> RunResult | mcp_types.InputRequiredResult:
            run_id, ask = self._answered(entry.name, ctx)
            run_id = run_id or _new_run_id(entry.name)
            return await self._drive(ctx, run_id, self._agent_attempt(agent, prompt, run_id, ctx), ask=ask)

        return run_agent

    def _agent_attempt(
        self, agent: Agent[Any], prompt: str, run_id: str, ctx: Context[Any, Any]
    ) -> Callable[[], Awaitable[str]]:
        progress = _Progress(ctx)

        async def attempt() -> str:
            try:
                result = await agent.run(
                    prompt, runtime=self.runtime, run_id=run_id, on_event=progress.on_event
                )
            finally:
                await progress.flush()
            if not result.ok:
                raise ToolError(f"run {result.run_id} stopped ({result.reason}): {result.detail}")
            output = result.output
            return output if isinstance(output, str) else json.dumps(output, default=str)

        return attempt

    def _run_handler(
        self, entry: Exposed
    ) -> Callable[..., Awaitable[RunResult | mcp_types.InputRequiredResult]]:
        fn = entry.target
        assert not isinstance(fn, Agent | Workflow)
        hints = typing.get_type_hints(fn)
        params = list(inspect.signature(fn).parameters.values())[1:]  # the first is the run context

        async def run_function(**kwargs: Any) -> RunResult | mcp_types.InputRequiredResult:
            ctx: Context[Any, Any] = kwargs.pop(_CONTEXT_PARAM)
            run_id, ask = self._answered(entry.name, ctx)
            run_id = run_id or _new_run_id(entry.name)

            async def attempt() -> str:
                return _text(await self.runtime.run(fn, run_id=run_id, **kwargs))

            return await self._drive(ctx, run_id, attempt, ask=ask)

        returns = RunResult | mcp_types.InputRequiredResult
        context = inspect.Parameter(_CONTEXT_PARAM, inspect.Parameter.KEYWORD_ONLY, annotation=Context)
        run_function.__signature__ = inspect.Signature(  # type: ignore[attr-defined]
            [*(p.replace(annotation=hints.get(p.name, Any)) for p in params), context],
            return_annotation=returns,
        )
        run_function.__annotations__ = {p.name: hints.get(p.name, Any) for p in params} | {
            _CONTEXT_PARAM: Context,
            "return": returns,
        }
        run_function.__name__ = entry.name
        run_function.__doc__ = entry.description
        return run_function

    def _workflow_handler(
        self, entry: Exposed
    ) -> Callable[..., Awaitable[RunResult | mcp_types.InputRequiredResult]]:
        workflow = entry.target
        assert isinstance(workflow, Workflow)
        fields = workflow.state_type.model_fields

        async def run_workflow(**kwargs: Any) -> RunResult | mcp_types.InputRequiredResult:
            ctx: Context[Any, Any] = kwargs.pop(_CONTEXT_PARAM)
            try:
                state = workflow.state_type.model_validate(kwargs)
            except ValidationError as exc:
                raise ToolError(f"not a state of the workflow {workflow.name!r}: {exc}") from None
            run_id, ask = self._answered(entry.name, ctx)
            run_id = run_id or _new_run_id(entry.name)
            return await self._drive(ctx, run_id, self._workflow_attempt(workflow, state, run_id), ask=ask)

        # The tool's input schema is the state model's: one parameter per field, with its type and default.
        params = [
            inspect.Parameter(
                name,
                inspect.Parameter.KEYWORD_ONLY,
                annotation=typing.Annotated[info.annotation, info],
            )
            for name, info in fields.items()
        ]
        returns = RunResult | mcp_types.InputRequiredResult
        context = inspect.Parameter(_CONTEXT_PARAM, inspect.Parameter.KEYWORD_ONLY, annotation=Context)
        run_workflow.__signature__ = inspect.Signature(  # type: ignore[attr-defined]
            [*params, context], return_annotation=returns
        )
        run_workflow.__annotations__ = {p.name: p.annotation for p in params} | {
            _CONTEXT_PARAM: Context,
            "return": returns,
        }
        run_workflow.__name__ = entry.name
        run_workflow.__doc__ = entry.description
        return run_workflow

    def _workflow_attempt(
        self, workflow: Workflow[Any], state: BaseModel, run_id: str
    ) -> Callable[[], Awaitable[str]]:
        async def attempt() -> str:
            result = await workflow.run(state, runtime=self.runtime, run_id=run_id)
            return _text(
                {
                    "output": to_jsonable_python(result.output),
                    "state": result.state.model_dump(mode="json"),
                    "path": result.path,
                }
            )

        return attempt

    # -- the ops agent ---------------------------------------------------------------------------------
    async def ops_diagnose(
        self, symptom: str, ctx: Context[Any, Any], pid: int | None = None, service: str | None = None
    ) -> RunResult | mcp_types.InputRequiredResult:
        """Diagnose a symptom on this host (focused on ``pid`` or ``service`` when given)."""
        from corral.apps.ops_agent import DiagnoseRequest

        try:
            request = DiagnoseRequest(symptom=symptom, pid=pid, service=service)
        except ValidationError as exc:
            raise ToolError(f"not a diagnosis request: {exc}") from None
        run_id, ask = self._answered("ops_diagnose", ctx)
        return await self._diagnose(ctx, run_id or _new_run_id("ops_diagnose"), request.model_dump(), ask)

    async def _diagnose(
        self, ctx: Context[Any, Any], run_id: str, request: dict[str, Any], ask: bool
    ) -> RunResult | mcp_types.InputRequiredResult:
        """Run (or resume) the ops agent's diagnosis ``run_id`` through :meth:`_drive`, as the CLI does: its
        approvals (a core dump, a remediation) park the run or are put to the client's user."""
        from corral.apps.ops_agent import DiagnoseRequest, OpsAgent, OpsEvent, Report, diagnose

        progress = _Progress(ctx)
        reports: list[Report] = []

        def on_event(event: OpsEvent) -> None:
            progress(f"{event.stage}: {event.message}")

        try:
            legacy = self.runtime.get_run(run_id).function.endswith(".ops_diagnose")
        except RunNotFound:
            legacy = False

        async def attempt() -> str:
            req = DiagnoseRequest.model_validate(request)
            try:
                if legacy:  # journaled by an earlier version as a closure of OpsAgent.diagnose
                    report = await OpsAgent(on_event=on_event).diagnose(
                        req, runtime=self.runtime, run_id=run_id
                    )
                else:  # detectors only (no model calls); a run any `corral worker` can go on with
                    report = await diagnose(
                        req, use_model=False, runtime=self.runtime, run_id=run_id, on_event=on_event
                    )
            finally:
                await progress.flush()
            reports.append(report)
            return report.summary

        result = await self._drive(ctx, run_id, attempt, ask=ask)
        if isinstance(result, RunResult) and result.status == "completed" and reports:
            result.report = reports[-1].model_dump(mode="json")
        return result

    async def run_status(
        self, run_id: str, ctx: Context[Any, Any]
    ) -> RunResult | mcp_types.InputRequiredResult:
        """The result of a run an exposed tool started; a parked run whose approvals were decided goes on."""
        found = _RUN_ID.match(run_id)
        if found is not None and found["tool"] == "ops_diagnose" and self.config.ops:
            return await self._ops_status(run_id, ctx)
        entry = self._exposed.get(found["tool"]) if found else None
        if entry is None:
            raise ToolError(f"{run_id!r} is not the id of a run this server's exposed tools started")
        _, ask = self._answered("run_status", ctx, run_id=run_id)
        try:
            record = self.runtime.get_run(run_id)
        except RunNotFound:
            raise ToolError(f"there is no run {run_id!r} in this server's journal") from None
        attempt: Callable[[], Awaitable[str]]
        if isinstance(entry.target, Agent):
            attempt = self._agent_attempt(entry.target, _prompt_of(record.input, run_id), run_id, ctx)
        elif isinstance(entry.target, Workflow):
            state = _state_of(entry.target, record.input, run_id)
            attempt = self._workflow_attempt(entry.target, state, run_id)
        else:
            fn = entry.target
            if record.function != f"{fn.__module__}:{fn.__qualname__}":  # the journal's `module:qualname`
                raise ToolError(f"run {run_id!r} is not a run of {entry.name!r}")

            async def attempt() -> str:
                return _text(await self.runtime.resume(run_id))

        return await self._drive(ctx, run_id, attempt, ask=ask)

    async def _ops_status(
        self, run_id: str, ctx: Context[Any, Any]
    ) -> RunResult | mcp_types.InputRequiredResult:
        _, ask = self._answered("run_status", ctx, run_id=run_id)
        try:
            record = self.runtime.get_run(run_id)
            request = json.loads(record.input)["args"][0]
        except RunNotFound:
            raise ToolError(f"there is no run {run_id!r} in this server's journal") from None
        except (ValueError, KeyError, TypeError, IndexError):
            request = None
        from corral.apps.ops_agent import ops_run

        ours = record.function.endswith(".ops_diagnose") or record.function == f"{ops_run.__module__}:ops_run"
        if not ours or not isinstance(request, dict):
            raise ToolError(f"run {run_id!r} is not a run of ops_diagnose")
        return await self._diagnose(ctx, run_id, request, ask)

    async def _drive(
        self, ctx: Context[Any, Any], run_id: str, attempt: Callable[[], Awaitable[str]], *, ask: bool
    ) -> RunResult | mcp_types.InputRequiredResult:
        """Run (or resume) until the run completes or parks; each approval it parks on is put to the client
        (elicitation) when it can answer, and its answer recorded in the ledger as `corral approvals` does."""
        asked: set[str] = set()
        while True:
            try:
                output = await attempt()
            except RunSuspended as parked:
                record = self._waited_on(parked.signal)
                if record is None or record.id in asked or not ask:
                    return _parked(run_id, parked.signal, [record] if record is not None else [])
                asked.add(record.id)
                answer = await self._ask(ctx, record)
                if answer is None:
                    return _parked(run_id, parked.signal, [record])
                if isinstance(answer, mcp_types.InputRequiredResult):
                    return answer
                continue  # decided: the run reads the decision from the ledger and goes on
            except RunBusy as busy:
                return RunResult(
                    status="running",
                    run_id=run_id,
                    message=f"{busy}; call `run_status` with run_id {run_id!r} again later",
                )
            return RunResult(status="completed", run_id=run_id, output=_cut(output))

    def _waited_on(self, signal: str | None) -> ApprovalRecord | None:
        """The pending approval a parked run waits for (``approval:<id>``), if that is what it waits for."""
        if signal is None or not signal.startswith("approval:"):
            return None
        try:
            record = Approvals(self.runtime).get(signal.removeprefix("approval:"))
        except ApprovalError:
            return None
        return record if record.decision is None else None

    async def _ask(
        self, ctx: Context[Any, Any], record: ApprovalRecord
    ) -> bool | mcp_types.InputRequiredResult | None:
        """Put one approval to the client's user: ``True`` once decided, an ``input_required`` result on a
        2026-07-28 connection, ``None`` when the client cannot or does not answer (the run stays parked)."""
        if not _can_elicit(ctx):
            return None
        try:
            async with asyncio.timeout(ANSWER_TTL_S):
                answer = await ctx.elicit(_approval_message(record), schema=ApprovalForm)
        except NoBackChannelError:  # a 2026-07-28 connection: ask in the call's result instead
            return self._input_required(record)
        except (MCPError, TimeoutError):
            return None
        if answer.action != "accept":  # declined or cancelled: nobody answered, so it waits for a person
            return None
        self._decide(record.id, answer.data)
        return True

    def _input_required(self, record: ApprovalRecord) -> mcp_types.InputRequiredResult:
        """Ask in the call's result. The round's state is the approval's id, sealed by the SDK (AES-GCM under
        the server's key, bound to this tool call's name and arguments, valid for ``ANSWER_TTL_S``): the
        client's next call can only answer the approval this server asked it, and nothing is held here."""
        params = mcp_types.ElicitRequestFormParams(
            message=_approval_message(record), requested_schema=render_elicitation_schema(ApprovalForm)
        )
        return mcp_types.InputRequiredResult(
            input_requests={"approval": mcp_types.ElicitRequest(method="elicitation/create", params=params)},
            request_state=record.id,
            result_type="input_required",
        )

    def _answered(
        self, tool: str, ctx: Context[Any, Any], *, run_id: str | None = None
    ) -> tuple[str | None, bool]:
        """For the second round of a 2026-07-28 call: record the answer to the approval it carries and name
        its run. Returns ``(run_id or None on a first round, whether to ask the client again)``."""
        state = ctx.request_state
        if state is None:
            return None, True
        try:
            record = Approvals(self.runtime).get(state)
        except ApprovalError:
            record = None
        found = _RUN_ID.match(record.run_id) if record is not None else None
        if record is None or found is None or (run_id or record.run_id) != record.run_id:
            raise ToolError(f"this answer is for an approval this server does not know ({state[:80]!r})")
        if tool != "run_status" and found["tool"] != tool:
            raise ToolError(f"this answer is for an approval of {found['tool']!r}, not of {tool!r}")
        answer = (ctx.input_responses or {}).get("approval")
        if not isinstance(answer, mcp_types.ElicitResult) or answer.action != "accept":
            return record.run_id, False
        try:
            form = ApprovalForm.model_validate(answer.content or {})
        except ValidationError:
            return record.run_id, False
        self._decide(record.id, form)
        return record.run_id, True

    def _decide(self, approval_id: str, form: ApprovalForm) -> None:
        """Record the client's answer in the ledger, as ``corral approvals approve/reject`` would."""
        approvals, reason = Approvals(self.runtime), form.reason.strip()[:_MAX_REASON]
        try:
            if form.approve:
                approvals.approve(approval_id, by=MCP_DECIDER, reason=reason or "approved through MCP")
            else:
                approvals.reject(approval_id, by=MCP_DECIDER, reason=reason or "refused through MCP")
        except ApprovalError:
            pass  # decided elsewhere first (or its run ended): the run reads whatever decision stands


def _new_run_id(tool: str) -> str:
    return f"mcp-{tool}-{secrets.token_hex(8)}"


def _text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, default=str)


def _prompt_of(recorded_input: str, run_id: str) -> str:
    """The prompt an exposed agent's run was started with (the last argument of its run function)."""
    try:
        args = json.loads(recorded_input)["args"]
    except (ValueError, KeyError, TypeError):
        args = None
    if not isinstance(args, list) or not args or not isinstance(args[-1], str):
        raise ToolError(f"run {run_id!r} is not a run of an exposed agent")
    return args[-1]


def _state_of(workflow: Workflow[Any], recorded_input: str, run_id: str) -> BaseModel:
    """The state an exposed workflow's run was started on (its run function's arguments are the
    workflow's name and the state)."""
    try:
        name, state = json.loads(recorded_input)["args"]
        if name != workflow.name:
            raise ValueError(name)
        parsed: BaseModel = workflow.state_type.model_validate(state)
    except (ValueError, KeyError, TypeError):  # ValidationError is a ValueError
        raise ToolError(f"run {run_id!r} is not a run of the workflow {workflow.name!r}") from None
    return parsed


def build_server(
    config: ServerConfig, *, runtime: Runtime | None = None, expose: Mapping[str, Exposed] | None = None
) -> MCPServer[Any]:
    """The MCP server for ``config``: ask, run_python, run_sql, and ``expose`` (default: what this process
    has exposed with :func:`~corral.apps.mcp_server.expose`)."""
    return CorralMCP(config, runtime=runtime, expose=expose).server
