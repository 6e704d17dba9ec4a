"""The data agent: a workflow in which the model makes few, small choices and the system does the rest.

::

    schema (cached, narrowed) ─► write query ─► check ─► run in sandbox ─► sanity check, judge ─► answer
                      ▲                                                            │
                      └── error text + similar names │ sanity findings │ judge fail ◄┘   (bounded attempts)

The loop is :mod:`._loop`'s workflow (a :class:`~corral.agents.Workflow`, checked before it runs); the SQL
and pandas flows (:mod:`._sqlflow`, :mod:`._pandas_agent`) supply what differs. Every model call, query and
approval is a step of a durable run, so a resumed question repeats none of them. The model writes SQL and
judges; it never writes the prose answer's numbers, which the system takes from the result.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from corral.apps.data_agent._answer import Answer
from corral.apps.data_agent._events import Answered, DataEvent
from corral.apps.data_agent._lessons import LessonStore
from corral.apps.data_agent._loop import data_workflow
from corral.apps.data_agent._pandas_agent import PandasFlow
from corral.apps.data_agent._pandas_runner import CodeRunner
from corral.apps.data_agent._runner import QueryRunner
from corral.apps.data_agent._sqlflow import SqlFlow
from corral.apps.data_agent._state import BudgetSpent, Question, emit
from corral.apps.data_agent._verified import VerifiedQuery
from corral.apps.data_agent.errors import DataAgentError
from corral.durable import MemoryJournal, RunContext, Runtime, current_context
from corral.guards import ApprovalPolicy, Approver, Guards
from corral.models import Model, ModelSettings

#: The time budget of one question unless ``guards`` says otherwise: the longest a person waits for one.
DEFAULT_WALL_S = 300.0


@dataclass
class DataAgent:
    """Answers questions over one source.

    ``model`` writes queries; ``judge_model`` (default: the same model) judges results. ``runner`` runs
    every query (the sandbox in the product). ``max_attempts`` bounds query rewrites after errors or
    sanity findings; the judge gets ``judge_retries`` extra attempts. The first query that joins, groups or
    nests gets ``candidates`` more, sampled at ``candidate_temperature`` from the same prompt and run too;
    the result most of them agree on is kept (self-consistency on results, not on SQL text). A statement
    that changes data is refused unless ``allow_writes`` is set: it then takes the approval path an
    :class:`~corral.agents.Agent`'s tool calls take — journaled, the question parked until a person decides
    (``corral approvals``; ``write_policy`` sets a deadline and notification), or decided at once by an
    in-process ``approver`` — and runs through the runner's separate ``write`` path. ``guards`` bound each
    question: model calls, tokens, cost, and wall time (by the run's journaled clock, so a resumed
    question keeps the budget it had; a wait for a person does not count).
    """

    model: Model
    runner: QueryRunner
    judge_model: Model | None = None
    verified: Sequence[VerifiedQuery] = ()
    approver: Approver | None = None
    #: Let a statement that changes data be proposed: it waits, parked, for a person's decision
    #: (``corral approvals``) under ``write_policy`` (default: wait for ever).
    allow_writes: bool = False
    write_policy: ApprovalPolicy | None = None
    guards: Guards = field(default_factory=lambda: Guards(max_steps=12, max_wall_s=DEFAULT_WALL_S))
    max_attempts: int = 3
    judge: bool = True
    judge_retries: int = 1
    #: Votes of the judge per verdict (a fail needs a majority).
    judge_votes: int = 3
    charts: bool = True
    chart_dir: Path | None = None
    on_event: Callable[[DataEvent], None] | None = None
    #: Runs pandas code over a file source (:class:`~._pandas_runner.SandboxPandasRunner` in the product).
    code_runner: CodeRunner | None = None
    #: ``"auto"`` answers file sources with pandas when there is a ``code_runner`` and databases with SQL;
    #: ``"sql"`` or ``"python"`` forces one.
    language: Literal["auto", "sql", "python"] = "auto"
    settings: ModelSettings = field(default_factory=lambda: ModelSettings(temperature=0.0, max_tokens=400))
    candidates: int = 2
    candidate_temperature: float = 0.6
    #: In a thread, the previous question, its SQL or code and first rows (:func:`._thread.context_text`).
    previous: str = ""
    #: Where the loop keeps what its corrections taught and finds lessons for new questions (``_lessons``);
    #: ``None`` keeps none.
    lessons: LessonStore | None = None

    def _flow(self) -> SqlFlow | PandasFlow:
        if self.language != "sql" and self.code_runner is not None:
            return PandasFlow(self.code_runner)
        if self.language == "python":
            raise DataAgentError("language='python' needs a code_runner (pandas runs over CSV/Parquet files)")
        return SqlFlow(self)

    async def answer(self, ctx: RunContext, question: str) -> Answer:
        """Answer ``question`` as steps of ``ctx``'s run; never raises for a bad query, a bad model reply or
        a spent budget (those are a status)."""
        judge_left = self.judge_retries if self.judge else 0
        q = Question(
            question=question,
            run_id=ctx.run_id,
            agent=self,
            on_event=self.on_event,
            flow=self._flow(),
            limit=self.max_attempts,
        )
        workflow = data_workflow(self.max_attempts + judge_left, self.candidates)
        try:
            await workflow.run_in(ctx, q)
        except BudgetSpent as exc:
            emit(q, Answered(message=f"stopped: {exc}"))
            return Answer(
                status="failed", answer=f"Stopped by a budget: {exc}", run_id=ctx.run_id, usage=q.usage
            )
        assert q.answer is not None, "every path of the data agent's workflow ends with an answer"
        if q.judgements:
            return q.answer.model_copy(update={"judgements": list(q.judgements)})
        return q.answer

    async def ask(
        self,
        question: str,
        *,
        ctx: RunContext | None = None,
        runtime: Runtime | None = None,
        run_id: str | None = None,
    ) -> Answer:
        """Answer ``question`` (see :meth:`answer`).

        With ``ctx`` — or, inside a durable run with neither ``runtime`` nor ``run_id``, that run's context —
        the steps join that run. Otherwise the question is a durable run of its own on ``runtime``
        (default: an in-memory journal, for scripts and tests; ``corral ask`` uses the user's journal).
        """
        if ctx is None and runtime is None and run_id is None:
            ctx = current_context()
        if ctx is not None:
            return await self.answer(ctx, question)

        async def data_question(run_ctx: RunContext, question: str) -> Answer:
            return await self.answer(run_ctx, question)

        rt = runtime if runtime is not None else Runtime(MemoryJournal())
        answer: Answer = await rt.run(data_question, question, run_id=run_id)
        return answer
