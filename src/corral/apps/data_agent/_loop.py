"""The data agent's workflow: one correction loop for the SQL and the pandas flows, as a checked graph.

::

    prepare ─► write ─► check ─► run ─► review ─► finish ─► end
                 ▲  │      │       │        │
                 └──┴──────┴───────┴────────┘   (a retry: at most max_attempts + judge_retries writes)
                           └─► approve ─► end    (a statement that changes data; refused: back to write)

The loop owns what both flows share: attempts and their limit, the temperature schedule, the set of texts
already tried, when a decline ends the question, the judge's budget, the time and token budgets (the
guards, on the journaled clock), the model calls (journaled) and the events. A :class:`Flow` supplies only
what differs: how the data is described, how a query is extracted, checked and run, what findings mean,
and what a run without a working query concludes. Every node boundary is a durable step, and each model
call, query and approval is a step inside one: a killed question resumes where it was.
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING, Any, Literal, Protocol

from corral.agents import End, Workflow
from corral.agents.workflow import Budget
from corral.apps.data_agent import _prompts as prompts
from corral.apps.data_agent._answer import Answer
from corral.apps.data_agent._events import CheckNoted, QueryRan, QueryWritten
from corral.apps.data_agent._judging import judge_result
from corral.apps.data_agent._outcome import failed
from corral.apps.data_agent._runner import QueryResult
from corral.apps.data_agent._state import Decision, Question, Settings, ask_model, emit
from corral.apps.data_agent._write import apply_write
from corral.durable import RunContext
from corral.guards import GuardState
from corral.models import AssistantMessage, UserMessage

if TYPE_CHECKING:
    from corral.apps.data_agent._checks import Finding


class Flow(Protocol):
    """What the SQL and the pandas flows supply to the loop (see the module docstring)."""

    language: Literal["sql", "python"]
    #: Model calls that write a query are journaled with this kind (``sql``, ``code``).
    kind: str
    max_tokens: int | None
    #: The feedback when a reply holds no query, and when it repeats one: ``(error, hint)``.
    no_text: tuple[str, str]
    same_text: tuple[str, str]
    failed_text: str
    judge_label: str

    async def prepare(self, ctx: RunContext, q: Question) -> Answer | None: ...
    def extract(self, reply: str) -> str: ...
    def normal(self, text: str) -> str: ...
    def feedback(self, error: str, hints: str = "") -> str: ...
    def on_decline(self, q: Question, reason: str) -> Answer | Decision: ...
    async def check(self, ctx: RunContext, q: Question) -> str: ...
    async def execute(self, ctx: RunContext, q: Question) -> QueryResult: ...
    def on_error(self, q: Question, error: str) -> str: ...
    def on_result(self, q: Question) -> Answer | None: ...
    def findings(self, q: Question) -> list[Finding]: ...
    def skip_judge(self, q: Question) -> bool: ...
    async def conclude(self, ctx: RunContext, q: Question) -> Answer | None: ...
    async def compose(self, ctx: RunContext, q: Question) -> Answer: ...


def again(q: Question) -> str:
    """The next node after a retry: another attempt if there is one left, else the end of the loop."""
    return "write" if q.attempts < q.limit else "finish"


def retry(q: Question, error: str, hints: str = "") -> str:
    """Feed ``error`` (and the system's ``hints``) back to the model and try again."""
    q.last_error = error
    if q.text and error not in (q.flow.no_text[0], q.flow.same_text[0]):
        q.failures.append((q.text, error))
    q.messages.append(UserMessage(content=q.flow.feedback(error, hints)))
    return again(q)


# -- the nodes ---------------------------------------------------------------------------------------------
async def prepare(ctx: RunContext, q: Question) -> Any:
    """Read the data's description, build the first prompt; a question the data cannot answer ends here."""
    q.started = ctx.now().timestamp()
    q.guard = GuardState(q.agent.guards, started_at=q.started)
    cannot = await q.flow.prepare(ctx, q)
    if cannot is not None:
        q.answer = cannot
        return End(cannot)
    return "write"


async def write(ctx: RunContext, q: Question) -> Any:
    """One attempt: the model writes a query (later attempts sample a little: a repeated mistake at
    temperature 0 repeats forever); a decline, no query or a repeat is answered here."""
    flow: Flow = q.flow
    q.attempts += 1
    q.prompt = list(prompts.condensed(q.messages))
    temperature = 0.0 if q.attempts == 1 else 0.3 + 0.3 * (q.attempts - 2)
    reply = await ask_model(ctx, q, flow.kind, q.prompt, temperature=temperature, max_tokens=flow.max_tokens)
    q.messages.append(AssistantMessage(content=reply))
    q.text = flow.extract(reply)
    if not q.text:
        reason = prompts.declined(reply)
        if reason is None:
            return retry(q, *flow.no_text)
        decided = flow.on_decline(q, reason)
        if isinstance(decided, Answer):
            q.answer = decided
            return End(decided)
        return again(q) if decided == "again" else "finish"
    if flow.normal(q.text) in q.tried:
        return retry(q, *flow.same_text)
    q.tried.add(flow.normal(q.text))
    emit(q, QueryWritten(message=q.text, language=flow.language, attempt=q.attempts))
    return "check"


async def check(ctx: RunContext, q: Question) -> Any:
    """The flow's checks before the query runs: repairs, lint, and whether it writes."""
    return await q.flow.check(ctx, q)


async def run(ctx: RunContext, q: Question) -> Any:
    """Run the query in the sandbox; an error goes back to the model with the system's hints."""
    flow: Flow = q.flow
    result = q.result = await flow.execute(ctx, q)
    if not result.ok:
        error = result.error or flow.failed_text
        emit(q, QueryRan(message=f"error: {error}", ok=False, elapsed_s=result.elapsed_s))
        return retry(q, error, flow.on_error(q, error))
    emit(
        q,
        QueryRan(
            message=f"{result.row_count} rows in {result.elapsed_s:.2f} s",
            ok=True,
            rows=result.row_count,
            elapsed_s=result.elapsed_s,
        ),
    )
    cannot = flow.on_result(q)
    if cannot is not None:
        q.answer = cannot
        return End(cannot)
    q.best = (q.text, result)
    return "review"


async def review(ctx: RunContext, q: Question) -> Any:
    """Sanity findings, then the judge guard (within its budget, or skipped when the checks are
    conclusive): a blocking finding or the judge's fail is a retry."""
    agent: Settings = q.agent
    found = q.flow.findings(q)
    for f in found:
        emit(q, CheckNoted(message=f.message, finding=f.kind, blocking=f.blocking))
    blocking = [f.message for f in found if f.blocking]
    if blocking and q.attempts < agent.max_attempts:
        return retry(q, "; ".join(blocking))
    if not agent.judge:
        return "finish"
    reason = await judge_result(ctx, q, found)
    if reason is None:
        return "finish"
    q.limit = max(q.limit, q.attempts + 1)
    q.messages.append(UserMessage(content=q.flow.feedback(f"a reviewer says: {reason}")))
    return again(q)


async def approve(ctx: RunContext, q: Question) -> Any:
    """A statement that changes data: it runs only if a person (or a policy) approves it, through the
    Agent's approval path (the run parks until then); a refusal's reason goes back to the model."""
    answer, refused = await apply_write(ctx, q)
    if refused is not None and q.attempts < q.limit:
        return retry(q, refused)
    q.answer = answer
    return End(answer)


async def finish(ctx: RunContext, q: Question) -> Any:
    """The answer: from the best result, or what a loop without a working query concludes."""
    if q.best is not None:
        q.answer = await q.flow.compose(ctx, q)
    else:
        q.answer = await q.flow.conclude(ctx, q) or failed(q)
    return End(q.answer)


_UNBOUNDED_CALL = Budget(model_calls=1, tokens=None, cost_usd=None)


@functools.lru_cache(maxsize=16)
def data_workflow(max_writes: int = 4, candidates: int = 2) -> Workflow[Question]:
    """The data agent's workflow for ``max_writes`` attempts at most (``max_attempts + judge_retries``) and
    ``candidates`` vote samples per round. Token and cost budgets come from the agent's guards at run time,
    so the static check reports them unbounded; model calls are bounded."""
    wf = Workflow("data-agent", state=Question)
    wf.node(prepare, next=["write", End], budget=_UNBOUNDED_CALL)
    wf.node(write, next=["check", "write", "finish", End], max_visits=max_writes, budget=_UNBOUNDED_CALL)
    wf.node(check, next=["run", "write", "finish", "approve"])
    votes = Budget(model_calls=2 * candidates, tokens=None, cost_usd=None)
    wf.node(run, next=["review", "write", "finish", End], budget=votes)
    wf.node(review, next=["write", "finish"], budget=_UNBOUNDED_CALL)
    wf.node(approve, next=["write", "finish", End])
    wf.node(finish, next=[End])
    return wf


#: The default graph, for ``corral graph show corral.apps.data_agent._loop:workflow``.
workflow = data_workflow()
