"""The five common shapes of LLM workflows, built from :class:`~corral.agents.Workflow` and agents.

Each function returns a checked workflow over a small state model of its own; ``examples/workflows/`` runs
each one with the local model. The agents passed in keep their own guards, which bound each agent node,
and every loop here declares its bound, so :meth:`~corral.agents.Workflow.check` reports the worst case.

- :func:`prompt_chain` — agents in sequence, each reading the last one's output, with a gate between links;
- :func:`routing` — a classifier picks one specialised agent;
- :func:`sectioning` and :func:`voting` — parallelisation: different agents on one input, or one agent
  several times, run concurrently (each branch a durable child run);
- :func:`orchestrator_workers` — an orchestrator's plan decides how many workers run and on what;
- :func:`evaluator_optimizer` — a generator revises until an evaluator accepts, at most ``max_revisions``.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Literal

from pydantic import BaseModel, Field

from corral.agents._agent import Agent, AgentResult
from corral.agents.errors import WorkflowEdgeError
from corral.agents.workflow._graph import END, Budget, End, Next, agent_budget
from corral.agents.workflow._workflow import Workflow
from corral.durable import RunContext

#: A gate between two links of a chain: ``None`` lets the output through, a string is why it stops.
Gate = Callable[[int, str], "str | None"]


def _text(result: AgentResult[Any]) -> str:
    if not result.ok:
        return ""
    return result.output if isinstance(result.output, str) else str(result.output)


class ChainState(BaseModel):
    """A prompt chain's state: the input, each link's output, and why a gate stopped it (if one did)."""

    input: str
    outputs: list[str] = Field(default_factory=list)
    stopped: str | None = None


def prompt_chain(name: str, links: Sequence[Agent[Any]], *, gate: Gate | None = None) -> Workflow[ChainState]:
    """Each agent of ``links`` reads the previous output (the first reads the input). After each link but
    the last, ``gate(index, output)`` may stop the chain with a reason (a failed agent always stops it).
    The output is the last link's text, or ``None`` when a gate stopped the chain."""
    if not links:
        raise WorkflowEdgeError(f"prompt_chain {name!r}: give at least one link")
    wf = Workflow(name, state=ChainState)
    for i, agent in enumerate(links):
        last = i == len(links) - 1

        def then(state: ChainState, result: AgentResult[Any], i: int = i, last: bool = last) -> Next:
            text = _text(result)
            state.outputs.append(text)
            why = (f"link {i} ended with {result.reason}: {result.detail}" if not result.ok else None) or (
                None if last or gate is None else gate(i, text)
            )
            if why is not None:
                state.stopped = why
                return End(None)
            return End(text) if last else f"link{i + 1}"

        def prompt(state: ChainState, i: int = i) -> str:
            return state.input if i == 0 else state.outputs[-1]

        edges: list[Any] = [End] if last else [f"link{i + 1}", End]
        wf.agent(f"link{i}", agent, prompt=prompt, then=then, next=edges)
    return wf


class RouteState(BaseModel):
    """A routing workflow's state: the input, the route picked, and the answer."""

    input: str
    route: str | None = None
    output: str | None = None


def routing(
    name: str, classifier: Agent[Any], routes: Mapping[str, Agent[Any]], *, default: str | None = None
) -> Workflow[RouteState]:
    """``classifier`` answers with one of ``routes``' names (case and spaces ignored; anything else goes to
    ``default``, or ends the run unanswered); the agent of that route answers the input."""
    wf = Workflow(name, state=RouteState)
    names = list(routes)

    def classify_prompt(state: RouteState) -> str:
        return f"Reply with one word, one of: {', '.join(names)}.\n\n{state.input}"

    def pick(state: RouteState, result: AgentResult[Any]) -> Next:
        said = _text(result).strip().strip(".").lower()
        chosen = next((n for n in names if n.lower() == said), None) or next(
            (n for n in names if n.lower() in said.split()), default
        )
        state.route = chosen
        return f"route:{chosen}" if chosen is not None else End(None)

    edges: list[Any] = [*(f"route:{n}" for n in names), End]
    wf.agent("classify", classifier, prompt=classify_prompt, then=pick, next=edges)
    for route, agent in routes.items():

        def answer(state: RouteState, result: AgentResult[Any]) -> Next:
            state.output = _text(result) or None
            return End(state.output)

        wf.agent(f"route:{route}", agent, prompt=lambda s: s.input, then=answer, next=[End])
    return wf


class ParallelState(BaseModel):
    """A parallel workflow's state: the input, each branch's output (in order), and the combined output."""

    input: str
    outputs: list[str] = Field(default_factory=list)
    output: str | None = None


async def _agent_branch(agent: Agent[Any], ctx: RunContext, prompt: str) -> str:
    return _text(await agent.run(prompt, ctx=ctx))


def sectioning(
    name: str, sections: Mapping[str, Agent[Any]], *, combine: Callable[[list[str]], str] | None = None
) -> Workflow[ParallelState]:
    """Every agent of ``sections`` works on the input at the same time (each a durable child run);
    ``combine`` joins their outputs in section order (default: one paragraph per section, titled)."""
    agents = dict(sections)
    titles = list(agents)

    async def branch(ctx: RunContext, state: ParallelState, title: str) -> str:
        return await _agent_branch(agents[title], ctx, state.input)

    def merge(state: ParallelState, results: list[str]) -> Next:
        state.outputs = results
        pairs = zip(titles, results, strict=True)
        joined = combine(results) if combine else "\n\n".join(f"{t}: {r}" for t, r in pairs)
        state.output = joined
        return End(joined)

    wf = Workflow(name, state=ParallelState)
    wf.parallel(
        "sections",
        branch,
        plan=lambda s: titles,
        combine=merge,
        next=[End],
        max_branches=len(titles),
        budget=_widest([agent_budget(a) for a in agents.values()]),
    )
    return wf


def _widest(budgets: Sequence[Budget]) -> Budget:
    """A budget that covers each of ``budgets`` (per field the largest; ``None`` if any is unbounded)."""

    def top(values: list[Any]) -> Any:
        return None if any(v is None for v in values) else max(values)

    return Budget(
        top([b.model_calls for b in budgets]),
        top([b.tokens for b in budgets]),
        top([b.cost_usd for b in budgets]),
    )


def voting(name: str, agent: Agent[Any], *, votes: int) -> Workflow[ParallelState]:
    """``agent`` answers the input ``votes`` times concurrently; the answer most runs gave wins (ties: the
    earliest). Give the agent a temperature above zero, or every vote is the same."""

    async def branch(ctx: RunContext, state: ParallelState, index: int) -> str:
        return await _agent_branch(agent, ctx, state.input)

    def tally(state: ParallelState, results: list[str]) -> Next:
        state.outputs = results
        counts = Counter(r.strip() for r in results if r.strip())
        state.output = max(counts, key=lambda r: (counts[r], -results.index(r))) if counts else None
        return End(state.output)

    wf = Workflow(name, state=ParallelState)
    wf.parallel(
        "vote",
        branch,
        plan=lambda s: list(range(votes)),
        combine=tally,
        next=[End],
        max_branches=votes,
        budget=agent_budget(agent),
    )
    return wf


class Plan(BaseModel):
    """An orchestrator's plan: the subtasks the workers take, one each."""

    subtasks: list[str]


class OrchestratorState(BaseModel):
    """An orchestrator–workers workflow's state: the task, the plan, each worker's output, the synthesis."""

    task: str
    subtasks: list[str] = Field(default_factory=list)
    outputs: list[str] = Field(default_factory=list)
    output: str | None = None


def orchestrator_workers(
    name: str,
    orchestrator: Agent[Plan],
    worker: Agent[Any],
    synthesizer: Agent[Any],
    *,
    max_workers: int,
) -> Workflow[OrchestratorState]:
    """``orchestrator`` (``output_type=Plan``) splits the task into subtasks; one ``worker`` run per
    subtask (at most ``max_workers``, concurrently); ``synthesizer`` writes the answer from their outputs.
    A plan longer than ``max_workers`` is cut to it (the bound the check relies on)."""
    wf = Workflow(name, state=OrchestratorState)

    def planned(state: OrchestratorState, result: AgentResult[Plan]) -> Next:
        plan = result.output if result.ok and result.output is not None else Plan(subtasks=[])
        state.subtasks = [s for s in plan.subtasks if s.strip()][:max_workers]
        return "workers" if state.subtasks else End(None)

    async def branch(ctx: RunContext, state: OrchestratorState, subtask: str) -> str:
        return await _agent_branch(worker, ctx, f"Overall task: {state.task}\n\nYour part: {subtask}")

    def gathered(state: OrchestratorState, results: list[str]) -> Next:
        state.outputs = results
        return "synthesize"

    def synthesis_prompt(state: OrchestratorState) -> str:
        parts = "\n\n".join(f"{s}:\n{o}" for s, o in zip(state.subtasks, state.outputs, strict=True))
        return f"Task: {state.task}\n\nResults of the parts:\n{parts}\n\nWrite the final answer."

    def done(state: OrchestratorState, result: AgentResult[Any]) -> Next:
        state.output = _text(result) or None
        return End(state.output)

    wf.agent("plan", orchestrator, prompt=lambda s: s.task, then=planned, next=["workers", End])
    wf.parallel(
        "workers",
        branch,
        plan=lambda s: s.subtasks,
        combine=gathered,
        next=["synthesize"],
        max_branches=max_workers,
        budget=agent_budget(worker),
    )
    wf.agent("synthesize", synthesizer, prompt=synthesis_prompt, then=done, next=[End])
    return wf


class Verdict(BaseModel):
    """An evaluator's verdict on a draft."""

    verdict: Literal["accept", "revise"]
    feedback: str = ""


class RevisionState(BaseModel):
    """An evaluator–optimizer workflow's state: the task, the drafts, the feedback on each."""

    task: str
    drafts: list[str] = Field(default_factory=list)
    feedback: list[str] = Field(default_factory=list)
    accepted: bool = False


def evaluator_optimizer(
    name: str, generator: Agent[Any], evaluator: Agent[Verdict], *, max_revisions: int
) -> Workflow[RevisionState]:
    """``generator`` drafts; ``evaluator`` (``output_type=Verdict``) accepts or asks for a revision with
    feedback; at most ``max_revisions`` revisions after the first draft. The output is the last draft
    (``state.accepted`` says whether the evaluator accepted it)."""
    wf = Workflow(name, state=RevisionState)
    drafts = max_revisions + 1

    def draft_prompt(state: RevisionState) -> str:
        if not state.drafts:
            return state.task
        return (
            f"Task: {state.task}\n\nYour last draft:\n{state.drafts[-1]}\n\n"
            f"Feedback: {state.feedback[-1]}\n\nWrite an improved draft."
        )

    def drafted(state: RevisionState, result: AgentResult[Any]) -> Next:
        state.drafts.append(_text(result))
        return "evaluate"

    def evaluated(state: RevisionState, result: AgentResult[Verdict]) -> Next:
        verdict = result.output if result.ok else None
        state.accepted = verdict is not None and verdict.verdict == "accept"
        state.feedback.append(verdict.feedback if verdict is not None else "")
        if state.accepted or len(state.drafts) >= drafts:
            return End(state.drafts[-1])
        return "draft"

    wf.agent("draft", generator, prompt=draft_prompt, then=drafted, next=["evaluate"], max_visits=drafts)
    wf.agent(
        "evaluate",
        evaluator,
        prompt=lambda s: f"Task: {s.task}\n\nDraft:\n{s.drafts[-1]}\n\nAccept it, or say what to revise.",
        then=evaluated,
        next=["draft", End],
    )
    return wf


__all__ = [
    "END",
    "ChainState",
    "Gate",
    "OrchestratorState",
    "ParallelState",
    "Plan",
    "RevisionState",
    "RouteState",
    "Verdict",
    "evaluator_optimizer",
    "orchestrator_workers",
    "prompt_chain",
    "routing",
    "sectioning",
    "voting",
]
