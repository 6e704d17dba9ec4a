"""The five workflow patterns, each through its runnable example in ``examples/workflows/`` (scripted)."""

from __future__ import annotations

import importlib.util
from collections.abc import Callable, Sequence
from pathlib import Path
from types import ModuleType

import pytest

from corral.agents.workflow.patterns import (
    ChainState,
    OrchestratorState,
    ParallelState,
    RevisionState,
    RouteState,
)
from corral.durable import MemoryJournal, Runtime
from corral.models import Message, ScriptedModel, SystemMessage, ToolDefinition, UserMessage

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "workflows"


def example(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"example_{name}", EXAMPLES / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def by_role(replies: dict[str, Callable[[str], str] | str]) -> ScriptedModel:
    """A model whose reply depends on the first words of the system message (which agent is asking)."""
    seen: list[str] = []

    def reply(messages: Sequence[Message], tools: Sequence[ToolDefinition]) -> str:
        system = messages[0].content if isinstance(messages[0], SystemMessage) else ""
        prompt = next((m.content for m in messages if isinstance(m, UserMessage)), "") or ""
        for start, answer in replies.items():
            if (system or "").startswith(start):
                seen.append(start)
                return answer(prompt) if callable(answer) else answer
        raise AssertionError(f"no scripted reply for system message {system!r}")

    model = ScriptedModel(reply)
    model.seen = seen  # type: ignore[attr-defined]
    return model


def rt() -> Runtime:
    return Runtime(MemoryJournal())


def test_prompt_chain_passes_each_output_on_through_its_gate() -> None:
    model = by_role(
        {
            "Write a short outline": "- logs first\n- then pages",
            "Write a short answer": lambda p: f"Answer from: {p}",
        }
    )
    result = example("chain").build(model).run_sync(ChainState(input="Why WAL?"), runtime=rt())
    assert result.output == "Answer from: - logs first\n- then pages"
    assert result.path == ["link0", "link1"] and result.state.stopped is None


def test_prompt_chains_gate_stops_a_weak_link() -> None:
    model = by_role({"Write a short outline": "just one point", "Write a short answer": "never asked"})
    result = example("chain").build(model).run_sync(ChainState(input="Why WAL?"), runtime=rt())
    assert result.output is None and result.path == ["link0"]
    assert result.state.stopped == "the outline has 1 point(s); two at least are needed"
    assert model.seen == ["Write a short outline"]  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("said", "route"), [("Billing.", "billing"), ("technical", "technical"), ("?", "general")]
)
def test_routing_sends_the_input_to_the_agent_the_classifier_names(said: str, route: str) -> None:
    model = by_role(
        {
            "Classify": said,
            "You answer billing": "A billing answer.",
            "You answer technical": "A technical answer.",
            "You answer general": "A general answer.",
        }
    )
    result = example("routing").build(model).run_sync(RouteState(input="charged twice"), runtime=rt())
    assert result.state.route == route and result.output == f"A {route} answer."
    assert result.path == ["classify", f"route:{route}"]


def test_sectioning_runs_each_section_and_joins_them_in_order() -> None:
    model = by_role(
        {"List the two main benefits": "faster builds", "List the two main risks": "migration effort"}
    )
    result = example("parallel").build_sections(model).run_sync(ParallelState(input="move CI"), runtime=rt())
    assert result.output == "benefits: faster builds\n\nrisks: migration effort"


def test_voting_keeps_the_majority_answer() -> None:
    model = ScriptedModel(["yes", "no", "yes"])
    result = example("parallel").build_vote(model).run_sync(ParallelState(input="risky?"), runtime=rt())
    assert sorted(result.state.outputs) == ["no", "yes", "yes"] and result.output == "yes"


def test_orchestrator_plan_decides_the_workers() -> None:
    model = by_role(
        {
            "Split the task": '{"subtasks": ["SQLite", "DuckDB", "PostgreSQL"]}',
            "Do your part": lambda p: "notes on " + p.rsplit("Your part: ", 1)[1],
            "Combine the parts": "All three compared.",
        }
    )
    journal = MemoryJournal()
    result = (
        example("orchestrator")
        .build(model)
        .run_sync(OrchestratorState(task="compare"), runtime=Runtime(journal), run_id="o1")
    )
    assert result.state.subtasks == ["SQLite", "DuckDB", "PostgreSQL"]
    assert result.state.outputs == ["notes on SQLite", "notes on DuckDB", "notes on PostgreSQL"]
    assert result.output == "All three compared." and result.path == ["plan", "workers", "synthesize"]
    # One child run per planned subtask.
    runs = {r.run_id for r in journal.list_runs(statuses=None, limit=10, offset=0)}
    assert runs == {"o1", "o1/workers.1.0", "o1/workers.1.1", "o1/workers.1.2"}


def test_evaluator_optimizer_revises_until_accepted() -> None:
    verdicts = iter(['{"verdict": "revise", "feedback": "shorter"}', '{"verdict": "accept", "feedback": ""}'])
    drafts = iter(["a long first draft", "short"])
    model = by_role(
        {"Write what is asked": lambda p: next(drafts), "Review the draft": lambda p: next(verdicts)}
    )
    result = example("evaluator").build(model).run_sync(RevisionState(task="slogan"), runtime=rt())
    assert result.output == "short" and result.state.accepted
    assert result.path == ["draft", "evaluate", "draft", "evaluate"]


def test_evaluator_optimizer_stops_at_its_bound() -> None:
    model = by_role(
        {"Write what is asked": "a draft", "Review the draft": '{"verdict": "revise", "feedback": "no"}'}
    )
    wf = example("evaluator").build(model)
    result = wf.run_sync(RevisionState(task="slogan"), runtime=rt())
    assert len(result.state.drafts) == 3 and not result.state.accepted  # the first draft and two revisions
    assert wf.check().visits == {"draft": 3, "evaluate": 3}


def test_every_example_workflow_passes_its_checks() -> None:
    for name in ("chain", "routing", "parallel", "orchestrator", "evaluator"):
        module = example(name)
        report = module.workflow.check()
        assert report.ok, report.describe()
        assert report.worst.model_calls is not None and report.worst.tokens is not None


def test_examples_worst_case_follows_from_the_agents_guards() -> None:
    # The orchestrator example: plan (3 steps) + 4 workers (3 each) + synthesis (3) = 18 calls; each of
    # the six agent runs may use 3,000 tokens.
    report = example("orchestrator").workflow.check()
    assert (report.worst.model_calls, report.worst.tokens) == (18, 18_000)
