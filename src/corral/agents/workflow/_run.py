"""Running a workflow: each node boundary is a durable step, each parallel branch a durable child run.

A run journals the graph once (step ``workflow:<name>``, so it can be drawn from the journal alone), then
one step ``node:<name>`` per executed node holding the edge the node took. Everything a node does in
between (model calls, tool calls, agents) is a step of the same run. A resumed run replays: completed steps
return their records, so the workflow is back in the node it was in without repeating a completed call;
a replayed node that takes another edge than the recorded one is a :class:`~corral.durable.DeterminismError`.

A parallel node's branches are child runs (``ctx.spawn``/``ctx.join``): each has its own journal, so
branches that take many steps run concurrently and still replay exactly. :func:`drive` executes them in
this process when the workflow was started with :meth:`Workflow.run`; a :class:`~corral.durable.Worker`
executes them too.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter
from collections.abc import Sequence
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from pydantic import BaseModel
from pydantic_core import to_jsonable_python

from corral.agents.errors import WorkflowEdgeError, WorkflowNotFound
from corral.agents.workflow._graph import END, End
from corral.durable import DeterminismError, RunContext, RunStatus, RunSuspended, Runtime

if TYPE_CHECKING:
    from corral.agents.workflow._workflow import Workflow

S = TypeVar("S", bound=BaseModel)

#: Workflows of this process by name: a worker (or a branch's child run) finds its workflow here.
WORKFLOWS: dict[str, Workflow[Any]] = {}


@dataclass(frozen=True, slots=True)
class NodeVisit:
    """The node executing now and how many times this run has entered it (1 on the first visit)."""

    workflow: str
    node: str
    visit: int


_visit: ContextVar[NodeVisit | None] = ContextVar("corral_node_visit", default=None)


def current_visit() -> NodeVisit | None:
    """The workflow node executing in this task, or ``None`` outside workflow nodes."""
    return _visit.get()


@dataclass
class WorkflowResult(Generic[S]):
    """How a workflow run ended: the value its last node gave :class:`End`, the final state, the nodes it
    executed in order, and the run's id."""

    output: Any
    state: S
    path: list[str] = field(default_factory=list)
    run_id: str = ""


def _same(value: Any) -> Any:
    return value


def find_workflow(name: str, run_id: str) -> Workflow[Any]:
    """The workflow of this process named ``name``; :class:`WorkflowNotFound` if it was never built."""
    found = WORKFLOWS.get(name)
    if found is None:
        known = ", ".join(sorted(WORKFLOWS)) or "none"
        raise WorkflowNotFound(
            f"run {run_id!r} is a run of the workflow {name!r}, which this process has not built "
            f"(workflows here: {known}); import the module that defines it before running workers"
        )
    return found


async def execute(wf: Workflow[S], ctx: RunContext, state: S) -> WorkflowResult[S]:
    """Run ``wf`` from its start on ``state`` as steps of ``ctx``'s run (see the module docstring)."""
    wf.check_or_raise()
    await ctx.step(f"workflow:{wf.name}", _same, wf.spec())
    node = wf.start or ""
    visits: Counter[str] = Counter()
    path: list[str] = []
    while True:
        declared = wf.nodes[node]
        visits[node] += 1
        if declared.max_visits is not None and visits[node] > declared.max_visits:
            raise WorkflowEdgeError(
                f"workflow {wf.name!r}, run {ctx.run_id!r}: node {path[-1] if path else '?'} went to "
                f"{node!r} a {visits[node]}th time; it is bounded to max_visits={declared.max_visits}"
            )
        token = _visit.set(NodeVisit(wf.name, node, visits[node]))
        try:
            returned = await declared.fn(ctx, state)
        finally:
            _visit.reset(token)
        taken = wf.edge_name(node, returned)
        # The edge is compared here, with a message naming both edges, rather than by the journal's
        # generic argument fingerprint.
        recorded = await ctx.step(f"node:{node}", _same, taken, check_args=False)
        if recorded != taken:
            raise DeterminismError(
                ctx.run_id, ctx.position - 1, f"{node} -> {recorded}", f"{node} -> {taken}"
            )
        path.append(node)
        if taken == END:
            output = returned.value if isinstance(returned, End) else None
            return WorkflowResult(output, state, path, ctx.run_id)
        node = taken


async def run_workflow(ctx: RunContext, workflow: str, state: dict[str, Any]) -> dict[str, Any]:
    """The run function of every workflow's runs (importable, so a worker can execute or resume them)."""
    wf = find_workflow(workflow, ctx.run_id)
    result = await execute(wf, ctx, wf.state_type.model_validate(state))
    return {
        "output": to_jsonable_python(result.output),
        "state": result.state.model_dump(mode="json"),
        "path": result.path,
        "run_id": ctx.run_id,
    }


async def run_branch(ctx: RunContext, workflow: str, node: str, state: dict[str, Any], item: Any) -> Any:
    """The run function of one branch of a parallel node (a child run of the workflow's run)."""
    wf = find_workflow(workflow, ctx.run_id)
    branch = wf.branches[node]
    result = await branch(ctx, wf.state_type.model_validate(state), item)
    return to_jsonable_python(result)


async def run_parallel(
    ctx: RunContext, workflow: str, node: str, state: BaseModel, items: Sequence[Any], max_branches: int
) -> list[Any]:
    """Start one child run per item, then wait for all of them; their results in item order."""
    items = list(items)
    if len(items) > max_branches:
        raise WorkflowEdgeError(
            f"workflow {workflow!r}, run {ctx.run_id!r}: node {node!r} planned {len(items)} branches; it is "
            f"bounded to max_branches={max_branches}"
        )
    visit = current_visit()
    number = visit.visit if visit is not None else 1
    snapshot = state.model_dump(mode="json")
    ids = []
    for i, item in enumerate(items):
        child = f"{ctx.run_id}/{node}.{number}.{i}"
        ids.append(await ctx.spawn(run_branch, workflow, node, snapshot, item, run_id=child))
    return [await ctx.join(child) for child in ids]


async def _finish_child(rt: Runtime, child: str) -> None:
    if rt.get_run(child).status.is_final:
        return
    # A branch that fails records its error; the parent's join raises it there, where it belongs.
    with contextlib.suppress(Exception):
        try:
            await rt.resume(child)
        except RunSuspended as parked:
            await drive(rt, parked)


def open_branches(rt: Runtime, run_id: str) -> list[str]:
    """The unfinished branch runs of ``run_id`` (their ids extend the parent's, see :func:`run_parallel`):
    found in the journal, so a new process resuming a parked workflow finds them too."""
    live = [RunStatus.PENDING, RunStatus.RUNNING, RunStatus.WAITING]
    prefix = f"{run_id}/"
    return sorted(r.run_id for r in rt.list_runs(status=live, limit=100_000) if r.run_id.startswith(prefix))


async def drive(rt: Runtime, parked: RunSuspended) -> Any:
    """Bring a run parked on its parallel branches to its end in this process: execute the branches
    concurrently, then resume the run. A run parked for anything else (an approval, a timer) or on a
    branch that cannot finish here raises ``RunSuspended`` again."""
    run_id = parked.run_id
    while True:
        if not (parked.signal or "").startswith("child:"):
            raise parked
        open_before = open_branches(rt, run_id)
        await asyncio.gather(*(_finish_child(rt, c) for c in open_before))
        if open_before and all(not rt.get_run(c).status.is_final for c in open_before):
            raise parked
        try:
            return await rt.resume(run_id)
        except RunSuspended as again:
            parked = again
