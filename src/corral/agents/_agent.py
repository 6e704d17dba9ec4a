"""The agent loop: the model picks the next action, every action is a durable step, guards bound the loop.

One turn: the guards check the step count and the budgets; the model is asked (a durable step, so a
resumed run never pays for the same call twice); each tool call it asks for is checked (known tool? valid
arguments? the same call again and again? approved?) and run as a durable step of its own; whatever went
wrong goes back to the model as a tool result or a message that says what was wrong and what is expected.
A reply without tool calls is the final answer; it must validate against ``output_type``, or it is fed
back too. The loop ends with a validated answer or with the :data:`~corral.guards.TerminalReason` of the
guard that stopped it — never with a traceback for something a model or a tool did.

>>> from corral.models import ScriptedModel
>>> from corral.durable import MemoryJournal, Runtime
>>> from corral.tools import tool
>>> @tool
... def add(a: int, b: int) -> int:
...     '''Add two integers.'''
...     return a + b
>>> agent = Agent(ScriptedModel([("add", {"a": 2, "b": 3}), "It is 5."]), tools=[add])
>>> result = agent.run_sync("What is 2 + 3?", runtime=Runtime(MemoryJournal()))
>>> result.output, result.reason, result.turns, result.tool_calls
('It is 5.', 'completed', 2, 1)
"""

from __future__ import annotations

import asyncio
import inspect
import json
import logging
import re
import time
from collections.abc import Awaitable, Callable, Sequence
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar, overload

import pydantic
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter

from corral._errors import UsageError
from corral.agents._events import (
    AgentEvent,
    ApprovalDecided,
    CorrectionSent,
    GuardTripped,
    ModelResponded,
    RunFinished,
    RunStarted,
    RunStatus,
    ToolCalled,
    ToolOutcome,
    ToolReturned,
)
from corral.agents.errors import AgentConfigError, AgentNotFound
from corral.durable import RunContext, Runtime, current_context
from corral.guards import (
    ApprovalDecision,
    ApprovalPolicy,
    ApprovalRequest,
    Approver,
    CorrectionKind,
    Guards,
    GuardState,
    GuardTrip,
    JudgeState,
    Judging,
    TerminalReason,
    approval_needed,
    exhausted,
    request_approval,
)
from corral.models import (
    Message,
    Model,
    ModelResponse,
    ModelSettings,
    OutputSchema,
    SystemMessage,
    ToolCall,
    ToolResultMessage,
    Usage,
    UserMessage,
    durable_request,
)
from corral.models.errors import ModelError
from corral.tools import Tool, ToolContext, ToolError, ToolRefusedError, as_tool, format_result

T = TypeVar("T")
_log = logging.getLogger("corral.agents")

#: Receives each :data:`~corral.agents.AgentEvent` as it happens (sync; keep it quick).
EventCallback = Callable[[AgentEvent], None]

_FENCE = re.compile(r"^\s*```(?:json)?\s*\n?(.*?)\n?\s*```\s*$", re.DOTALL)


class RunSummary(BaseModel):
    """What an agent run returns to the durable layer (its journaled result): enough to rebuild the result."""

    model_config = ConfigDict(frozen=True)

    status: RunStatus
    reason: TerminalReason
    detail: str = ""
    output: Any = None
    usage: Usage = Field(default_factory=Usage)
    turns: int = 0
    tool_calls: int = 0
    elapsed_s: float = 0.0


@dataclass(repr=False)
class AgentResult(Generic[T]):
    """How an agent run ended.

    ``output`` is the validated answer (``None`` unless ``status == "completed"``); ``reason`` says why the
    run ended (``"completed"`` or the guard that stopped it) and ``detail`` explains it in a sentence.
    ``events`` are those seen by this process (a run that had already finished replays none).
    """

    output: T | None
    status: RunStatus
    reason: TerminalReason
    detail: str
    usage: Usage
    turns: int
    tool_calls: int
    run_id: str
    elapsed_s: float = 0.0
    events: list[AgentEvent] = field(default_factory=list)
    messages: list[Message] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """Whether the run produced a validated answer."""
        return self.status == "completed"

    @property
    def steps(self) -> int:
        """Steps of the loop: model turns (each followed by the tool calls it asked for)."""
        return self.turns

    def __repr__(self) -> str:
        # Short on purpose: a result can hold thousands of events and messages, and asyncio formats the
        # main task's result when ``asyncio.run`` ends (Python 3.11), which made a long run's repr cost
        # milliseconds.
        output = repr(self.output)
        if len(output) > 80:
            output = output[:79] + "…"
        return (
            f"AgentResult(status={self.status!r}, reason={self.reason!r}, output={output}, "
            f"turns={self.turns}, tool_calls={self.tool_calls}, run_id={self.run_id!r})"
        )


def _strip_fence(text: str) -> str:
    # Small models wrap JSON in a Markdown code fence even when told not to; the JSON inside is fine.
    match = _FENCE.match(text)
    return match.group(1) if match else text


def _describe_output_error(exc: pydantic.ValidationError) -> str:
    problems = []
    for error in exc.errors(include_url=False):
        where = ".".join(str(part) for part in error["loc"]) or "(the whole answer)"
        problems.append(f"{where}: {error['msg']}")
    return "; ".join(problems)


def _truncate(text: str, limit: int) -> str:
    if len(text) <= limit:
        return text
    return text[:limit] + f"\n… [cut: {len(text)} characters in all; ask for less]"


class _Run:
    """The state of one execution of the loop (rebuilt from the journal when a run resumes)."""

    def __init__(self, agent: Agent[Any], ctx: RunContext, callbacks: Sequence[EventCallback]) -> None:
        self.agent = agent
        self.ctx = ctx
        self.callbacks = list(callbacks)
        self.events: list[AgentEvent] = []
        self.messages: list[Message] = []
        # The run clock is read (and journaled) once at the start and once per turn: each read is a journal
        # row, and per-event reads would double the loop's cost. Within a turn, time advances by the
        # recorded durations of its tool calls, which replays identically.
        self.started = ctx.now().timestamp()
        self.clock = self.started
        self.state = GuardState(agent.guards, started_at=self.started)
        self.tool_calls = 0
        self.turn = 0
        self.prompt = ""
        self.judging = JudgeState(agent.judges) if agent.judges is not None else None

    def emit(self, event: AgentEvent) -> None:
        self.events.append(event)
        for callback in list(self.callbacks):
            try:
                callback(event)
            except Exception:
                # A broken display must not fail a durable run (the failure would be journaled for good):
                # log it once and stop calling that callback for this run.
                _log.exception(
                    "run %s: on_event callback %r failed; it is not called again", self.ctx.run_id, callback
                )
                self.callbacks.remove(callback)

    def at(self) -> float:
        return self.clock - self.started

    def finish(self, reason: TerminalReason, detail: str = "", output: Any = None) -> RunSummary:
        status: RunStatus = (
            "completed" if reason == "completed" else "failed" if reason == "model_error" else "stopped"
        )
        at = self.at()
        run_id = self.ctx.run_id
        if status != "completed":
            self.emit(GuardTripped(run_id=run_id, at=at, reason=reason, detail=detail))
        summary = RunSummary(
            status=status,
            reason=reason,
            detail=detail,
            output=output,
            usage=self.state.usage,
            turns=self.state.turns,
            tool_calls=self.tool_calls,
            elapsed_s=at,
        )
        self.emit(
            RunFinished(
                run_id=run_id,
                at=at,
                status=status,
                reason=reason,
                detail=detail,
                output=output,
                usage=summary.usage,
                turns=summary.turns,
                tool_calls=summary.tool_calls,
            )
        )
        return summary

    def stop(self, trip: GuardTrip) -> RunSummary:
        return self.finish(trip.reason, trip.detail)

    def correction(self, kind: str, detail: str, tool_call_id: str | None = None) -> None:
        self.emit(
            CorrectionSent(
                run_id=self.ctx.run_id,
                at=self.at(),
                turn=self.turn,
                kind=kind,
                detail=detail,
                tool_call_id=tool_call_id,
            )
        )

    async def loop(self, prompt: str) -> RunSummary:
        agent, ctx = self.agent, self.ctx
        self.prompt = prompt
        if agent.instructions:
            self.messages.append(SystemMessage(content=agent.instructions))
        self.messages.append(UserMessage(content=prompt))
        self.emit(
            RunStarted(run_id=ctx.run_id, prompt=prompt, model=agent.model.name, tools=list(agent.tools))
        )
        while True:
            if self.turn:  # the first turn starts at the run's start, read just above
                # The tool steps of the last turn just ended: their journaled end time is "now" for the
                # budget, and reading it writes no row (ctx.now() would add one per turn).
                ended = ctx.last_step_ended()
                self.clock = (ended or ctx.now()).timestamp()
            trip = self.state.before_model(self.clock)
            if trip is not None:
                return self.stop(trip)
            try:
                response = await durable_request(
                    ctx,
                    agent.model,
                    self.messages,
                    tools=agent._definitions,
                    output_schema=agent._output_schema,
                    settings=agent.settings,
                )
            except ModelError as exc:
                return self.finish("model_error", f"{type(exc).__name__}: {exc}")
            self.turn += 1
            self.state.record_response(response.usage)
            message = response.message
            self.messages.append(message)
            self.emit(
                ModelResponded(
                    run_id=ctx.run_id,
                    at=self.at(),
                    turn=self.turn,
                    text=message.content,
                    tool_calls=message.tool_calls,
                    usage=response.usage,
                    total_usage=self.state.usage,
                    finish_reason=response.finish_reason,
                    problems=[p.detail for p in response.problems],
                )
            )
            if message.tool_calls:
                summary = await self.run_tools(response)
            else:
                summary = await self.final_answer(response)
            if summary is not None:
                return summary

    async def run_tools(self, response: ModelResponse) -> RunSummary | None:
        """One turn's tool calls: check them all in order, run the good ones, record outcomes in order.

        Checks, guards and approvals go call by call; the calls then run side by side (each in its own
        step, positions taken in call order) unless the agent says otherwise; outcomes are recorded in call
        order whatever order they finished in, so a replay rebuilds the same conversation and guard state.
        """
        kinds: set[CorrectionKind] = set()
        details: list[str] = []
        planned: list[tuple[Tool[..., Any], ToolCall, ToolOutcome | None]] = []
        for call in response.message.tool_calls:
            tool = self.agent.tools.get(call.name)
            if tool is None:
                names = ", ".join(sorted(self.agent.tools)) or "(none)"
                detail = (
                    f"There is no tool named {call.name!r}. The tools you can call are: {names}. "
                    "Call one of them, or answer without a tool."
                )
                kinds.add("unknown_tool")
                details.append(detail)
                self.feedback(call, detail, "unknown_tool")
                continue
            try:
                tool.validate(call.arguments, tool_call_id=call.id)
            except ToolError as exc:
                detail = str(exc)
                if call.arguments is None and call.raw_arguments is not None:
                    detail = f"{detail}\nYou wrote: {call.raw_arguments[:300]}"
                kinds.add("invalid_arguments")
                details.append(detail)
                self.feedback(call, detail, "invalid_arguments")
                continue
            prepared = await self.prepare(tool, call)
            if isinstance(prepared, RunSummary):
                return prepared
            if isinstance(prepared, ToolOutcome):
                planned.append((tool, call, prepared))
            else:
                planned.append((tool, prepared, None))
        outcomes = await self.execute([(tool, call) for tool, call, refused in planned if refused is None])
        for tool, call, refused in planned:
            summary = self.tool_done(tool, call, refused or outcomes.pop(0))
            if summary is not None:
                return summary
        trip = self.state.record_turn_problems(kinds, details)
        return self.stop(trip) if trip is not None else None

    def feedback(self, call: ToolCall, detail: str, kind: str) -> None:
        self.correction(kind, detail, call.id)
        self.messages.append(
            ToolResultMessage(tool_call_id=call.id, name=call.name, content=detail, is_error=True)
        )

    async def prepare(self, tool: Tool[..., Any], call: ToolCall) -> RunSummary | ToolOutcome | ToolCall:
        """Guards and approval for one call: a summary to stop, a refusal to feed back, or the call to run
        (with a human's corrected arguments when the approval edited them)."""
        ctx, agent = self.ctx, self.agent
        arguments = call.arguments or {}
        trip = self.state.before_tool(tool.name, arguments, self.clock)
        if trip is not None:
            return self.stop(trip)
        needed = approval_needed(agent.approvals, tool.name, arguments, needs_approval=tool.needs_approval)
        self.emit(
            ToolCalled(
                run_id=ctx.run_id,
                at=self.at(),
                turn=self.turn,
                tool_call_id=call.id,
                tool=tool.name,
                arguments=arguments,
                needs_approval=needed is not None,
            )
        )
        if needed is None:
            return call
        decision = await self.decide(tool, call, *needed)
        self.emit(
            ApprovalDecided(
                run_id=ctx.run_id,
                at=self.at(),
                turn=self.turn,
                tool_call_id=call.id,
                tool=tool.name,
                approved=decision.approved,
                reason=decision.reason,
                by=decision.by,
            )
        )
        if decision.approved:
            return call if decision.arguments is None else self.edited(tool, call, decision)
        if agent.guards.stop_on_denial:
            return self.finish("approval_denied", f"{tool.name!r} was refused: {decision.reason}")
        refused = ToolRefusedError(
            f"The call of {tool.name!r} was not approved: {decision.reason}", tool=tool.name
        )
        return ToolOutcome(content=str(refused), error_kind=refused.kind)

    async def decide(
        self, tool: Tool[..., Any], call: ToolCall, policy: ApprovalPolicy, why: str
    ) -> ApprovalDecision:
        """An in-process approver's decision (a step), or a human's through a durable wait (the run parks)."""
        ctx, agent = self.ctx, self.agent
        arguments = call.arguments or {}
        if agent.approver is None:
            asked = ctx.last_step_ended()
            decision = await request_approval(ctx, tool.name, arguments, policy=policy, why=why)
            answered = ctx.last_step_ended()
            if asked is not None and answered is not None:
                # Journaled times, so a replay computes the same wait.
                self.state.record_wait((answered - asked).total_seconds())
            return decision
        request = ApprovalRequest(
            run_id=ctx.run_id, tool=tool.name, arguments=arguments, tool_call_id=call.id
        )
        decided: ApprovalDecision = await ctx.step(
            f"approval:{tool.name}", agent._decide, request, returns=ApprovalDecision
        )
        return decided

    def edited(
        self, tool: Tool[..., Any], call: ToolCall, decision: ApprovalDecision
    ) -> ToolCall | ToolOutcome:
        """The call with a human's corrected arguments, if the tool accepts them."""
        try:
            tool.validate(decision.arguments, tool_call_id=call.id)
        except ToolError as exc:
            return ToolOutcome(
                content=f"A human approved {tool.name!r} with corrected arguments that are not valid: {exc}",
                error_kind="arguments",
            )
        return call.model_copy(update={"arguments": decision.arguments})

    def tool_step(self, tool: Tool[..., Any], call: ToolCall) -> Awaitable[ToolOutcome]:
        """The durable step of one tool call; a side-effect tool's step carries the call's idempotency key."""
        ctx = self.ctx
        key = f"{ctx.run_id}/{self.turn}/{call.id}"
        context = ToolContext(
            run_id=ctx.run_id, tool_call_id=call.id, tool_name=tool.name, idempotency_key=key
        )
        return ctx.step(
            f"tool:{tool.name}",
            self.agent._call_tool,
            tool,
            call.arguments or {},
            context,
            returns=ToolOutcome,
            key=key if tool.side_effects else None,
        )

    async def execute(self, calls: list[tuple[Tool[..., Any], ToolCall]]) -> list[ToolOutcome]:
        if len(calls) <= 1 or not self.agent.parallel_tool_calls:
            return [await self.tool_step(tool, call) for tool, call in calls]
        # Tasks start in creation order, so each step takes the same journal position on every replay.
        tasks = [asyncio.ensure_future(self.tool_step(tool, call)) for tool, call in calls]
        try:
            return list(await asyncio.gather(*tasks))
        except BaseException:
            for task in tasks:  # a crash or a lost lease: do not leave siblings running unjournaled
                task.cancel()
            raise

    def tool_done(self, tool: Tool[..., Any], call: ToolCall, outcome: ToolOutcome) -> RunSummary | None:
        self.tool_calls += 1
        self.clock += outcome.duration_s
        self.emit(
            ToolReturned(
                run_id=self.ctx.run_id,
                at=self.at(),
                turn=self.turn,
                tool_call_id=call.id,
                tool=tool.name,
                content=outcome.content,
                error_kind=outcome.error_kind,
                duration_s=outcome.duration_s,
            )
        )
        self.messages.append(
            ToolResultMessage(
                tool_call_id=call.id,
                name=tool.name,
                content=outcome.content,
                is_error=outcome.error_kind is not None,
            )
        )
        trip = self.state.record_tool(
            tool.name,
            error_kind=outcome.error_kind,
            error=outcome.content if outcome.error_kind else None,
        )
        return self.stop(trip) if trip is not None else None

    async def final_answer(self, response: ModelResponse) -> RunSummary | None:
        agent = self.agent
        text = response.message.content or ""
        detail: str | None = None
        output: Any = None
        blocking = [p for p in response.problems if p.kind in ("empty_reply", "truncated")]
        if blocking:
            detail = "; ".join(p.detail for p in blocking)
        elif agent.output_type is str:
            output = text
        else:
            try:
                value = agent._output_adapter.validate_json(_strip_fence(text))
            except pydantic.ValidationError as exc:
                detail = f"the answer does not match the expected output: {_describe_output_error(exc)}"
            else:
                output = agent._output_adapter.dump_python(value, mode="json")
        if detail is None:
            self.state.record_turn_problems(set(), [])
            if self.judging is not None:
                return await self.judge_answer(self.judging, output)
            return self.finish("completed", output=output)
        trip = self.state.record_turn_problems({"invalid_output"}, [detail])
        if trip is not None:
            return self.stop(trip)
        if agent._output_schema is not None:
            expected = (
                "Reply with only a JSON value (no prose, no code fence) matching this JSON schema: "
                f"{json.dumps(agent._output_schema.json_schema, sort_keys=True)}"
            )
        else:
            expected = "Answer the question in plain text, or call a tool."
        self.correction("invalid_output", detail)
        self.messages.append(UserMessage(content=f"Your reply could not be accepted: {detail}.\n{expected}"))
        return None

    async def judge_answer(self, state: JudgeState, output: Any) -> RunSummary | None:
        """The attached judges on a valid answer: pass, a revision with their reason, or ``on_exhausted``."""
        judging = state.judging
        evidence = [m.content for m in self.messages if isinstance(m, ToolResultMessage) and not m.is_error]
        subject = {"question": self.prompt, "answer": output, "tool_results": evidence[-5:]}
        report = await state.check(self.ctx, subject)
        if report.passed:
            return self.finish("completed", report.skipped, output=output)
        if state.revisions < judging.max_revisions:
            state.revisions += 1
            self.correction("judge", report.reason)
            self.messages.append(
                UserMessage(
                    content=f"A reviewer rejected your answer: {report.reason}\nRevise your answer (use the "
                    "tools again if you need to)."
                )
            )
            return None
        ended = await exhausted(self.ctx, judging, output, report, state.revisions)
        if ended.outcome == "failed":
            return self.finish("judge_failed", ended.reason)
        if not ended.edited:
            return self.finish("completed", ended.reason, output=output)
        try:
            value = self.agent._output_adapter.validate_python(ended.output)
        except pydantic.ValidationError as exc:
            detail = (
                f"the output a human wrote does not match the expected output: {_describe_output_error(exc)}"
            )
            return self.finish("judge_failed", detail)
        return self.finish(
            "completed", ended.reason, output=self.agent._output_adapter.dump_python(value, mode="json")
        )


def _same(summary: RunSummary) -> RunSummary:
    return summary


#: Named agents of this process, for :func:`run_agent` (a worker finds an agent's runs by its name).
_AGENTS: dict[str, Agent[Any]] = {}
#: The live callbacks and the run holder of the ``Agent.run`` call executing now (absent under a worker).
_CALL: ContextVar[tuple[list[EventCallback], list[_Run]] | None] = ContextVar(
    "corral_agent_call", default=None
)


async def run_agent(ctx: RunContext, agent: str, prompt: str) -> RunSummary:
    """The run function of every named agent's runs: importable, so a :class:`~corral.durable.Worker` can
    execute or resume them (``runtime.start(run_agent, "name", prompt)`` queues one). The process must have
    built the ``Agent(name=...)`` first, e.g. by importing the module that defines it.
    """
    found = _AGENTS.get(agent)
    if found is None:
        known = ", ".join(sorted(_AGENTS)) or "none"
        raise AgentNotFound(
            f"run {ctx.run_id!r} is a run of the agent {agent!r}, which this process has not built (agents "
            f"here: {known}); import the module that defines Agent(name={agent!r}) before running workers"
        )
    call = _CALL.get()
    callbacks = call[0] if call is not None else [cb for cb in (found.on_event,) if cb is not None]
    run = _Run(found, ctx, callbacks)
    if call is not None:
        call[1].append(run)
    return await run.loop(prompt)


_default_runtime: Runtime | None = None


def default_runtime() -> Runtime:
    """The process's default runtime: a SQLite journal at :func:`corral._config.journal_path`."""
    global _default_runtime
    if _default_runtime is None:
        _default_runtime = Runtime()
    return _default_runtime


class Agent(Generic[T]):
    """A model, the tools it may call, and the guards that bound it.

    ``tools`` are :class:`~corral.tools.Tool` objects or plain typed functions. ``instructions`` become the
    system message. ``output_type`` is ``str`` (the reply's text) or anything pydantic validates (a model,
    ``list[int]``...): the model is asked for JSON matching its schema and the reply is validated.
    ``guards`` bound the run (:class:`~corral.guards.Guards` defaults otherwise). ``on_event`` receives
    every event live (see :mod:`corral.apps.cli._progress` for a terminal renderer). ``approvals``: the
    :class:`~corral.guards.ApprovalPolicy` list that says which calls need a human's decision (beside tools
    declared ``needs_approval=True``); such a call journals its request and the run parks until someone
    decides (``corral approvals``, :class:`~corral.guards.Approvals`) or its deadline passes — ``run``
    then raises :class:`~corral.durable.RunSuspended` and a worker (or ``run(..., run_id=...)``) goes on
    after the decision. ``approver``: decide in process instead (``approve_all``, ``terminal_approver``;
    tests and interactive scripts). ``judges``: a :class:`~corral.guards.Judging` that checks each valid
    final answer and sends failed ones back for revision (``judge_failed`` when they stay failed).
    ``parallel_tool_calls``: the calls of one turn run side by side (each its own durable step); their
    outcomes are still recorded in call order. ``name`` makes the agent's runs executable by a
    :class:`~corral.durable.Worker` (see :func:`run_agent`); unnamed agents' runs resume only through
    ``agent.run(..., run_id=...)``.
    """

    @overload
    def __init__(
        self: Agent[str],
        model: Model,
        tools: Sequence[Tool[..., Any] | Callable[..., Any]] = (),
        *,
        instructions: str = "",
        guards: Guards | None = None,
        on_event: EventCallback | None = None,
        approver: Approver | None = None,
        approvals: Sequence[ApprovalPolicy] = (),
        judges: Judging | None = None,
        settings: ModelSettings | None = None,
        parallel_tool_calls: bool = True,
        name: str | None = None,
    ) -> None: ...
    @overload
    def __init__(
        self: Agent[T],
        model: Model,
        tools: Sequence[Tool[..., Any] | Callable[..., Any]] = (),
        *,
        instructions: str = "",
        output_type: type[T],
        guards: Guards | None = None,
        on_event: EventCallback | None = None,
        approver: Approver | None = None,
        approvals: Sequence[ApprovalPolicy] = (),
        judges: Judging | None = None,
        settings: ModelSettings | None = None,
        parallel_tool_calls: bool = True,
        name: str | None = None,
    ) -> None: ...
    def __init__(
        self,
        model: Model,
        tools: Sequence[Tool[..., Any] | Callable[..., Any]] = (),
        *,
        instructions: str = "",
        output_type: Any = str,
        guards: Guards | None = None,
        on_event: EventCallback | None = None,
        approver: Approver | None = None,
        approvals: Sequence[ApprovalPolicy] = (),
        judges: Judging | None = None,
        settings: ModelSettings | None = None,
        parallel_tool_calls: bool = True,
        name: str | None = None,
    ) -> None:
        self.model = model
        self.name = name
        self.parallel_tool_calls = parallel_tool_calls
        self.tools: dict[str, Tool[..., Any]] = {}
        for item in tools:
            made = as_tool(item)
            if made.name in self.tools:
                raise AgentConfigError(
                    f"two tools are named {made.name!r}; give one another name with name=..."
                )
            self.tools[made.name] = made
        self.instructions = instructions
        self.output_type = output_type
        self.guards = guards or Guards()
        self.on_event = on_event
        self.approver = approver
        self.approvals = tuple(approvals)
        self.judges = judges
        self.settings = settings
        self._definitions = [t.definition for t in self.tools.values()]
        self._output_schema: OutputSchema | None = None
        try:
            self._output_adapter: TypeAdapter[Any] = TypeAdapter(output_type)
            if output_type is not str:
                name = getattr(output_type, "__name__", "output")
                self._output_schema = OutputSchema(name=name, json_schema=self._output_adapter.json_schema())
        except pydantic.PydanticSchemaGenerationError as exc:
            raise AgentConfigError(
                f"output_type {output_type!r} cannot be validated by pydantic: {exc}"
            ) from exc
        if name is not None:
            # The newest agent of a name wins: a module reloaded (or a test) builds it again.
            _AGENTS[name] = self

    async def _call_tool(
        self, tool: Tool[..., Any], arguments: dict[str, Any], context: ToolContext
    ) -> ToolOutcome:
        started = time.perf_counter()
        try:
            value = await tool.call(arguments, context, default_timeout=self.guards.tool_timeout_s)
        except ToolError as exc:
            return ToolOutcome(
                content=str(exc), error_kind=exc.kind, duration_s=time.perf_counter() - started
            )
        content = _truncate(format_result(value), self.guards.max_tool_output_chars)
        return ToolOutcome(content=content, duration_s=time.perf_counter() - started)

    async def _decide(self, request: ApprovalRequest) -> ApprovalDecision:
        approver = self.approver
        if approver is None:  # pragma: no cover - the loop waits durably instead
            raise UsageError("no in-process approver: approvals are durable waits")
        if inspect.iscoroutinefunction(approver):
            decided: ApprovalDecision = await approver(request)
            return decided
        # A sync approver may block for minutes (a human at a terminal): keep the event loop, and with it
        # the lease renewals and other runs, going meanwhile.
        result = await asyncio.to_thread(approver, request)
        if inspect.isawaitable(result):
            result = await result
        return result

    def _result(self, summary: RunSummary, run: _Run | None, run_id: str) -> AgentResult[T]:
        output = None
        if summary.status == "completed" and summary.output is not None:
            output = self._output_adapter.validate_python(summary.output)
        return AgentResult(
            output=output,
            status=summary.status,
            reason=summary.reason,
            detail=summary.detail,
            usage=summary.usage,
            turns=summary.turns,
            tool_calls=summary.tool_calls,
            run_id=run_id,
            elapsed_s=summary.elapsed_s,
            events=run.events if run is not None else [],
            messages=run.messages if run is not None else [],
        )

    async def run(
        self,
        prompt: str,
        *,
        ctx: RunContext | None = None,
        runtime: Runtime | None = None,
        run_id: str | None = None,
        on_event: EventCallback | None = None,
    ) -> AgentResult[T]:
        """Run the agent on ``prompt`` to a validated answer or a guard's stop.

        With ``ctx`` — or, when called inside a durable run with neither ``runtime`` nor ``run_id``, that
        run's context — the loop's steps join that run. Otherwise the agent starts (or, given the ``run_id``
        of an unfinished run, resumes) a durable run of its own on ``runtime`` (default: the SQLite journal
        of :func:`default_runtime`). ``on_event`` is called for each event, after the
        agent's own ``on_event``.
        """
        callbacks = [cb for cb in (self.on_event, on_event) if cb is not None]
        if ctx is None and runtime is None and run_id is None:
            # Called from inside a durable run without its ctx: join that run. Starting a second run from
            # run code would be an effect outside the journal, and a replay would start it again.
            ctx = current_context()
        if ctx is not None:
            run = _Run(self, ctx, callbacks)
            summary = await run.loop(prompt)
            # Inside someone else's run the summary is not the run's result, so journal it as a step of
            # its own: how the agent ended (and which guard stopped it) stays visible in the journal.
            summary = await ctx.step("agent:finish", _same, summary, returns=RunSummary)
            return self._result(summary, run, ctx.run_id)
        holder: list[_Run] = []

        async def agent_run(run_ctx: RunContext, prompt: str) -> RunSummary:
            run = _Run(self, run_ctx, callbacks)
            holder.append(run)
            return await run.loop(prompt)

        rt = runtime if runtime is not None else default_runtime()
        if self.name is not None:
            _AGENTS[self.name] = self
            token = _CALL.set((callbacks, holder))
            try:
                handle = await rt.run(run_agent, self.name, prompt, run_id=run_id)
            finally:
                _CALL.reset(token)
        else:
            handle = await rt.run(agent_run, prompt, run_id=run_id)
        summary = RunSummary.model_validate(handle)
        last = holder[-1] if holder else None
        return self._result(summary, last, last.ctx.run_id if last is not None else (run_id or ""))

    def run_sync(
        self,
        prompt: str,
        *,
        runtime: Runtime | None = None,
        run_id: str | None = None,
        on_event: EventCallback | None = None,
    ) -> AgentResult[T]:
        """:meth:`run` for scripts: starts an event loop (and fails inside one; use ``await agent.run``)."""
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return asyncio.run(self.run(prompt, runtime=runtime, run_id=run_id, on_event=on_event))
        raise UsageError(
            "Agent.run_sync() was called inside a running event loop; use `await agent.run(...)`"
        )
