"""Evaluator–optimizer: a writer revises until a reviewer accepts, at most twice.

python examples/workflows/evaluator.py "A one-line slogan for a crash-proof agent framework."
"""

from __future__ import annotations

import sys

from corral.agents import Agent
from corral.agents.workflow import Workflow
from corral.agents.workflow.patterns import RevisionState, Verdict, evaluator_optimizer
from corral.guards import Guards
from corral.models import Model, ModelSettings, resolve_model


def build(model: Model) -> Workflow[RevisionState]:
    """A writer and a reviewer, two revisions at most."""
    guards = Guards(max_steps=2, max_tokens=2_000)
    writer = Agent(
        model,
        instructions="Write what is asked, briefly.",
        guards=guards,
        settings=ModelSettings(max_tokens=80),
    )
    reviewer = Agent(
        model,
        instructions="Review the draft against the task. Accept it if it does the task; otherwise say what to fix.",
        output_type=Verdict,
        guards=guards,
        settings=ModelSettings(max_tokens=120),
    )
    return evaluator_optimizer("example-revise", writer, reviewer, max_revisions=2)


workflow = build(resolve_model())

if __name__ == "__main__":
    task = sys.argv[1] if len(sys.argv) > 1 else "A one-line slogan for a crash-proof agent framework."
    result = workflow.run_sync(RevisionState(task=task))
    verdict = "accepted" if result.state.accepted else "not accepted"
    print(f"{result.output}\n({len(result.state.drafts)} drafts, {verdict})")
