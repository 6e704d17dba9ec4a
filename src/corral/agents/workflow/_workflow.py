"""``Workflow``: a graph of durable steps and agents over one typed state, checked before it runs.

>>> from pydantic import BaseModel
>>> from corral.durable import MemoryJournal, Runtime
>>> class Count(BaseModel):
...     n: int = 0
>>> wf = Workflow("count-to-three", state=Count)
>>> @wf.node(next=["bump"])
... async def begin(ctx, state):
...     return "bump"
>>> @wf.node(next=["bump", End], max_visits=3)
... async def bump(ctx, state):
...     state.n = await ctx.step("add", lambda: state.n + 1)
...     return End(state.n) if state.n == 3 else bump
>>> result = wf.run_sync(Count(), runtime=Runtime(MemoryJournal()))
>>> result.output, result.path
(3, ['begin', 'bump', 'bump', 'bump'])
>>> print(wf.check().describe().splitlines()[1])
  worst case of one run: 0 model calls, 0 tokens, $0.0000
"""

from __future__ import annotations

import asyncio
from typing import TypeVar

from pydantic import BaseModel

from corral._errors import UsageError
from corral.agents.errors import WorkflowCheckError
from corral.agents.workflow._check import GraphReport, check_graph
from corral.agents.workflow._graph import End, Graph
from corral.agents.workflow._mermaid import mermaid
from corral.agents.workflow._run import WORKFLOWS, WorkflowResult, drive, execute, run_workflow
from corral.durable import RunBusy, RunContext, RunStatus, RunSuspended, Runtime

S = TypeVar("S", bound=BaseModel)

__all__ = ["End", "Workflow"]


class Workflow(Graph[S]):
    """A workflow: nodes over one pydantic ``state``, with declared edges (see :class:`Graph` for
    ``node``, ``agent`` and ``parallel``).

    ``name`` identifies the workflow's runs (a worker, or a parallel branch's child run, finds the workflow
    by it: build it at import time of a module). :meth:`check` runs the static checks; :meth:`run` refuses a
    graph that fails them before its first step.
    """

    def __init__(self, name: str, *, state: type[S]) -> None:
        super().__init__(name, state=state)
        self._report: GraphReport | None = None
        self._checked_size = -1
        # The newest workflow of a name wins: a module reloaded (or a test) builds it again.
        WORKFLOWS[name] = self

    def check(self) -> GraphReport:
        """The static checks' report (see :mod:`corral.agents.workflow._check`); never raises."""
        size = len(self.nodes)
        if self._report is None or self._checked_size != size:
            self._report, self._checked_size = check_graph(self), size
        return self._report

    def check_or_raise(self) -> GraphReport:
        """:meth:`check`, raising :class:`~corral.agents.WorkflowCheckError` if the graph fails it."""
        report = self.check()
        if not report.ok:
            raise WorkflowCheckError(self.name, report.problems)
        return report

    def mermaid(self) -> str:
        """The graph as a Mermaid state diagram (``corral graph show``)."""
        return mermaid(self.spec())

    async def run_in(self, ctx: RunContext, state: S) -> WorkflowResult[S]:
        """Run the workflow as steps of an existing run (``ctx``): e.g. inside another run function."""
        return await execute(self, ctx, state)

    async def run(
        self, state: S, *, runtime: Runtime | None = None, run_id: str | None = None
    ) -> WorkflowResult[S]:
        """Run the workflow on ``state`` as a durable run of its own (or resume the unfinished run
        ``run_id``), executing its parallel branches in this process. A run parked for another reason (an
        approval, a timer) raises :class:`~corral.durable.RunSuspended`; resume it later with ``run_id``."""
        if not isinstance(state, self.state_type):
            raise UsageError(f"workflow {self.name!r} runs on {self.state_type.__name__}, not {state!r}")
        self.check_or_raise()
        WORKFLOWS[self.name] = self
        if runtime is None:
            from corral.agents._agent import default_runtime

            runtime = default_runtime()
        try:
            raw = await runtime.run(run_workflow, self.name, state.model_dump(mode="json"), run_id=run_id)
        except RunSuspended as parked:
            raw = await drive(runtime, parked)
        except RunBusy:
            # Resumed while parked on its branches (e.g. after a crash): finish them, then the run.
            run = runtime.get_run(run_id or "")
            if run.status is not RunStatus.WAITING or not (run.waiting_for or "").startswith("child:"):
                raise
            raw = await drive(runtime, RunSuspended(run.run_id, "signal", run.waiting_for, run.wake_at))
        return WorkflowResult(
            raw["output"], self.state_type.model_validate(raw["state"]), list(raw["path"]), str(raw["run_id"])
        )

    def run_sync(
        self, state: S, *, runtime: Runtime | None = None, run_id: str | None = None
    ) -> WorkflowResult[S]:
        """:meth:`run` for scripts (starts an event loop)."""
        return asyncio.run(self.run(state, runtime=runtime, run_id=run_id))
