"""The JSON API: runs, steps, live events, graphs, approvals, asks, signals, cancel, system.

Every route needs the token (see ``_auth``); every error is a problem (``_problems``).
"""

from __future__ import annotations

import asyncio
import json
import os
import stat
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query, Request
from fastapi import Path as PathParam
from fastapi.responses import Response, StreamingResponse
from pydantic import BaseModel, Field, field_validator

from corral.agents.workflow import END, mermaid, run_path
from corral.apps.server._problems import PROBLEM_RESPONSES, ProblemError
from corral.apps.server._state import ServerState
from corral.apps.server._system import SystemView, system_view
from corral.apps.server._views import (
    FactsCache,
    RunDetail,
    RunView,
    TimelineItem,
    run_detail,
    run_view,
    timeline_item,
)
from corral.durable import RunRecord, RunStatus, StepStatus, trace_id_for
from corral.guards import ApprovalRecord, ApprovalStatus

MAX_RUNS_SCANNED = 1_000_000


def state_of(request: Request) -> ServerState:
    """The server's state (set on the app at start)."""
    state: ServerState = request.app.state.corral
    return state


State = Annotated[ServerState, Depends(state_of)]


class RunPage(BaseModel):
    """A page of runs, newest first. ``total`` (how many matched) is counted when a filter other than
    status applies (every run is read then anyway); ``has_more`` says whether a next page exists."""

    total: int | None
    has_more: bool
    offset: int
    limit: int
    runs: list[RunView]


class RunFilter(BaseModel):
    """Which runs the list shows."""

    status: list[RunStatus] | None = None
    label: str | None = Field(None, max_length=200, description="Part of the agent/workflow/function name.")
    since: float | None = Field(None, description="Created at or after (epoch seconds).")
    until: float | None = Field(None, description="Created before (epoch seconds).")
    min_cost: float | None = Field(None, ge=0)
    max_cost: float | None = Field(None, ge=0)

    @property
    def plain(self) -> bool:
        """No filter but status (which the journal applies)."""
        return not (self.label or self.since is not None or self.until is not None) and (
            self.min_cost is None and self.max_cost is None
        )

    def keep(self, run: RunRecord, facts: FactsCache) -> bool:
        """Whether the run passes the filters other than status; the cheap ones first."""
        if self.since is not None and run.created_at < self.since:
            return False
        if self.until is not None and run.created_at >= self.until:
            return False
        if self.plain:
            return True
        found = facts.get(run)
        if self.label and self.label.lower() not in found.haystack:
            return False
        if self.min_cost is not None and found.cost_usd < self.min_cost:
            return False
        return self.max_cost is None or found.cost_usd <= self.max_cost


def list_runs(state: ServerState, flt: RunFilter, *, limit: int, offset: int) -> RunPage:
    """One page of the runs that pass ``flt``. The journal filters by status and pages; the other filters
    read every run's row, parsing each run's JSON once (``FactsCache``)."""
    facts = state.facts
    if flt.plain:
        records = state.runtime.list_runs(status=flt.status or None, limit=limit + 1, offset=offset)
        page = [run_view(r, facts.get(r)) for r in records[:limit]]
        return RunPage(total=None, has_more=len(records) > limit, offset=offset, limit=limit, runs=page)
    records = state.runtime.list_runs(status=flt.status or None, limit=MAX_RUNS_SCANNED)
    kept = [r for r in records if flt.keep(r, facts)]
    page = [run_view(r, facts.get(r)) for r in kept[offset : offset + limit]]
    more = offset + limit < len(kept)
    return RunPage(total=len(kept), has_more=more, offset=offset, limit=limit, runs=page)


class GraphView(BaseModel):
    """A workflow run's graph and the path it took."""

    spec: dict[str, Any]
    path: list[str]
    current: str | None
    mermaid: str
    finished: bool


class ApprovalView(BaseModel):
    """An approval request with its exact arguments and, once decided, its decision."""

    id: str
    run_id: str
    position: int
    action: str
    arguments: dict[str, Any]
    args_hash: str
    why: str
    created_at: float
    deadline: float | None
    status: ApprovalStatus
    decision: dict[str, Any] | None


def approval_view(record: ApprovalRecord) -> ApprovalView:
    """The request as the API returns it."""
    data = record.model_dump(mode="json")
    return ApprovalView(
        **{k: data[k] for k in ApprovalView.model_fields if k != "status"}, status=record.status
    )


class Decide(BaseModel):
    """A decision: ``reason`` is required to reject (the model reads it), ``args_hash`` (optional) refuses
    the decision if the request is not the one looked at."""

    reason: str = Field("", max_length=4000)
    by: str | None = Field(None, min_length=1, max_length=200)
    args_hash: str | None = Field(None, max_length=128)

    @field_validator("by")
    @classmethod
    def _blank_is_not_given(cls, value: str | None) -> str | None:
        # A name of only blanks (control characters count) names nobody: the server's decider decides.
        return value if value is not None and value.strip() else None


class Reject(Decide):
    """A refusal: its reason is required (the model reads it as the tool's result)."""

    reason: str = Field(min_length=1, max_length=4000, pattern=r"\S")


class Edit(Decide):
    """An approval with corrected arguments."""

    arguments: dict[str, Any]


class SignalBody(BaseModel):
    """A signal's JSON payload."""

    payload: Any = None


class AskBody(BaseModel):
    """A question for the data agent over one of the configured sources."""

    question: str = Field(min_length=1, max_length=2000)
    source: str = Field(min_length=1, max_length=200)
    language: Literal["auto", "sql", "python"] = "auto"
    #: A conversation: the question follows up the thread's previous one (runs ``THREAD.1``, ``THREAD.2``…).
    thread: str | None = Field(default=None, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


class AskStarted(BaseModel):
    """The run that answers the question: watch ``/api/runs/{run_id}/events``."""

    run_id: str
    events: str


router = APIRouter(prefix="/api", responses=PROBLEM_RESPONSES)


def _get(state: ServerState, run_id: str) -> RunRecord:
    return state.runtime.get_run(run_id)


@router.get("/runs", response_model=RunPage, tags=["runs"])
def get_runs(
    state: State,
    status: Annotated[list[RunStatus] | None, Query()] = None,
    label: Annotated[str | None, Query(max_length=200)] = None,
    since: float | None = None,
    until: float | None = None,
    min_cost: Annotated[float | None, Query(ge=0)] = None,
    max_cost: Annotated[float | None, Query(ge=0)] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    offset: Annotated[int, Query(ge=0, le=MAX_RUNS_SCANNED)] = 0,
) -> RunPage:
    """Runs, newest first: filter by status, agent/workflow, creation time and cost; paginated."""
    flt = RunFilter(
        status=status, label=label, since=since, until=until, min_cost=min_cost, max_cost=max_cost
    )
    return list_runs(state, flt, limit=limit, offset=offset)


@router.get("/runs/{run_id}", response_model=RunDetail, tags=["runs"])
def get_run(state: State, run_id: str) -> RunDetail:
    """A run with its input, output, steps and trace id."""
    run = _get(state, run_id)
    return run_detail(run, state.runtime.steps(run_id), trace_id_for(run_id))


@router.get("/runs/{run_id}/steps", response_model=list[TimelineItem], tags=["runs"])
def get_steps(
    state: State, run_id: str, after: Annotated[int, Query(ge=-1, le=10_000_000)] = -1
) -> list[TimelineItem]:
    """The run's steps after position ``after``, as timeline items."""
    return [timeline_item(s) for s in state.runtime.steps(run_id) if s.position > after]


def _graph(state: ServerState, run_id: str) -> GraphView:
    steps = state.runtime.steps(run_id)
    values: list[tuple[str, Any]] = []
    for s in steps:
        try:
            values.append((s.name, json.loads(s.value) if s.status is StepStatus.OK and s.value else None))
        except ValueError:
            values.append((s.name, None))
    spec, path, current = run_path(values)
    if spec is None:
        raise ProblemError(404, f"run {run_id!r} journaled no workflow graph: it is not a workflow run")
    return GraphView(
        spec=spec,
        path=path,
        current=current,
        mermaid=mermaid(spec, path, current=current),
        finished=bool(path) and path[-1] == END,
    )


@router.get("/runs/{run_id}/graph", response_model=GraphView, tags=["runs"])
def get_graph(state: State, run_id: str) -> GraphView:
    """A workflow run's graph with the path it took (404 for a run that is not a workflow)."""
    return _graph(state, run_id)


@router.post("/runs/{run_id}/cancel", response_model=RunView, tags=["runs"])
def cancel_run(state: State, run_id: str) -> RunView:
    """Cancel a run that is not final (a parked run at once, an executing one at its next step)."""
    return run_view(state.runtime.cancel(run_id))


@router.post("/runs/{run_id}/signals/{name}", response_model=RunView, tags=["runs"])
def send_signal(
    state: State,
    run_id: str,
    name: Annotated[str, PathParam(min_length=1, max_length=200)],
    body: SignalBody,
) -> RunView:
    """Send a signal with a JSON payload; a run waiting for it becomes runnable."""
    state.runtime.send_signal(run_id, name, body.payload)
    return run_view(_get(state, run_id))


SSE_HEADERS = {"Cache-Control": "no-store", "X-Accel-Buffering": "no"}


def sse(event: str, data: Any, *, event_id: str | None = None) -> str:
    """One server-sent event (the data is JSON on one line)."""
    head = f"id: {event_id}\n" if event_id is not None else ""
    return f"{head}event: {event}\ndata: {json.dumps(data, default=str)}\n\n"


async def run_events(state: ServerState, run_id: str, request: Request) -> AsyncIterator[str]:
    """The run's timeline as it grows: a ``step`` event per new or changed step, a ``data`` event per
    event of a data agent asked from this server, a ``run`` event when its status changes, ``end`` once it
    is final."""
    journal = state.runtime.journal
    seen: dict[int, str] = {}
    notes = 0
    status: RunStatus | None = None
    quiet = 0.0
    while not await request.is_disconnected():
        run, steps = await asyncio.to_thread(lambda: (journal.get_run(run_id), journal.load_steps(run_id)))
        if run is None:
            yield sse("end", {"status": "gone"})
            return
        for step in steps:
            if seen.get(step.position) != step.status.value:
                seen[step.position] = step.status.value
                item = timeline_item(step)
                yield sse("step", item.model_dump(mode="json"), event_id=str(step.position))
                quiet = 0.0
        events = state.ask_events.get(run_id, [])
        for event in events[notes:]:
            yield sse("data", event)
        notes = len(events)
        if run.status is not status:
            status = run.status
            yield sse("run", run_view(run).model_dump(mode="json"))
        if run.status.is_final:
            yield sse("end", {"status": run.status.value})
            return
        await asyncio.sleep(state.config.poll_interval)
        quiet += state.config.poll_interval
        if quiet >= 15:
            quiet = 0.0
            yield ": keep-alive\n\n"


@router.get(
    "/runs/{run_id}/events",
    tags=["runs"],
    response_class=StreamingResponse,
    responses={200: {"content": {"text/event-stream": {}}, "description": "server-sent events"}},
)
def get_events(state: State, run_id: str, request: Request) -> StreamingResponse:
    """Server-sent events of the run's timeline (``step``, ``data``, ``run``, ``end``)."""
    _get(state, run_id)
    return StreamingResponse(
        run_events(state, run_id, request), media_type="text/event-stream", headers=SSE_HEADERS
    )


def chart_file(state: ServerState, run_id: str) -> bytes:
    """The PNG the data agent drew for the run, read only from the server's chart directory, without
    following links."""
    run = _get(state, run_id)
    try:
        output = json.loads(run.output) if run.output else None
    except ValueError:
        output = None
    chart = output.get("chart") if isinstance(output, dict) else None
    if not isinstance(chart, str):
        raise ProblemError(404, f"run {run_id!r} has no chart")
    folder = state.config.chart_dir.resolve()
    path = Path(chart)
    if path.parent.resolve() != folder or not path.name.endswith(".png"):
        raise ProblemError(404, f"run {run_id!r} has no chart in this server's chart directory")
    dir_fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fd = os.open(path.name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK, dir_fd=dir_fd)
    except OSError as exc:
        raise ProblemError(404, f"run {run_id!r}: its chart is gone") from exc
    finally:
        os.close(dir_fd)
    with os.fdopen(fd, "rb") as f:
        info = os.fstat(f.fileno())
        if not stat.S_ISREG(info.st_mode) or info.st_nlink != 1 or info.st_size > 20_000_000:
            raise ProblemError(404, f"run {run_id!r}: its chart is not a plain file")
        return f.read()


@router.get(
    "/runs/{run_id}/chart.png",
    tags=["ask"],
    response_class=Response,
    responses={200: {"content": {"image/png": {}}, "description": "the chart"}},
)
def get_chart(state: State, run_id: str) -> Response:
    """The chart of a data agent's answer, drawn from its Vega-Lite spec."""
    return Response(chart_file(state, run_id), media_type="image/png")


@router.get("/approvals", response_model=list[ApprovalView], tags=["approvals"])
def get_approvals(
    state: State,
    status: Annotated[list[ApprovalStatus] | None, Query()] = None,
    run_id: Annotated[str | None, Query(max_length=200)] = None,
    every: Annotated[bool, Query(alias="all")] = False,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> list[ApprovalView]:
    """Approval requests: the pending ones unless told otherwise (``all=true``, ``status=``)."""
    wanted: list[ApprovalStatus] | ApprovalStatus | None = status or (None if every else "pending")
    return [approval_view(r) for r in state.approvals.list(status=wanted, run_id=run_id, limit=limit)]


@router.get("/approvals/{approval_id}", response_model=ApprovalView, tags=["approvals"])
def get_approval(state: State, approval_id: str) -> ApprovalView:
    """One request with its exact arguments and hash."""
    return approval_view(state.approvals.get(approval_id))


@router.post("/approvals/{approval_id}/approve", response_model=ApprovalView, tags=["approvals"])
def approve(state: State, approval_id: str, body: Decide) -> ApprovalView:
    """Approve the call as requested; the run goes on (with ``--worker``, in this process)."""
    record = state.approvals.approve(
        approval_id, by=body.by or state.config.decider, reason=body.reason, args_hash=body.args_hash
    )
    return approval_view(record)


@router.post("/approvals/{approval_id}/reject", response_model=ApprovalView, tags=["approvals"])
def reject(state: State, approval_id: str, body: Reject) -> ApprovalView:
    """Refuse the call; the reason goes back to the model as the tool's result."""
    record = state.approvals.reject(
        approval_id, by=body.by or state.config.decider, reason=body.reason, args_hash=body.args_hash
    )
    return approval_view(record)


@router.post("/approvals/{approval_id}/edit", response_model=ApprovalView, tags=["approvals"])
def edit(state: State, approval_id: str, body: Edit) -> ApprovalView:
    """Approve the call with corrected arguments (validated by the tool before it runs)."""
    record = state.approvals.edit(
        approval_id,
        by=body.by or state.config.decider,
        arguments=body.arguments,
        reason=body.reason,
        args_hash=body.args_hash,
    )
    return approval_view(record)


@router.get("/sources", response_model=list[str], tags=["ask"])
def get_sources(state: State) -> list[str]:
    """The names of the sources the data agent may be asked about."""
    return sorted(state.config.sources)


@router.post("/ask", response_model=AskStarted, status_code=202, tags=["ask"])
async def post_ask(state: State, body: AskBody) -> AskStarted:
    """Ask the data agent; the answer is the run's output (watch its events, then get the run)."""
    from corral.apps.server._ask import start_ask

    run_id = await start_ask(state, body.question, body.source, body.language, thread=body.thread)
    return AskStarted(run_id=run_id, events=f"/api/runs/{run_id}/events")


@router.get("/system", response_model=SystemView, tags=["system"])
def get_system(state: State) -> SystemView:
    """Sandbox backend and pool, local models installed, workers and their leases, trace export."""
    return system_view(state)
