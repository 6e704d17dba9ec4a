"""Parallelisation: sectioning (different agents on one input) and voting (one agent several times).

Each branch is a durable child run, and the branches run at the same time.

    python examples/workflows/parallel.py "Move the team's build from Jenkins to GitHub Actions."
"""

from __future__ import annotations

import sys

from corral.agents import Agent
from corral.agents.workflow import Workflow
from corral.agents.workflow.patterns import ParallelState, sectioning, voting
from corral.guards import Guards
from corral.models import Model, ModelSettings, resolve_model


def build_sections(model: Model) -> Workflow[ParallelState]:
    """Two reviewers look at one proposal from two sides at once."""
    guards = Guards(max_steps=2, max_tokens=2_000)
    short = ModelSettings(max_tokens=150)
    sections = {
        "benefits": Agent(
            model, instructions="List the two main benefits of the proposal.", guards=guards, settings=short
        ),
        "risks": Agent(
            model, instructions="List the two main risks of the proposal.", guards=guards, settings=short
        ),
    }
    return sectioning("example-sections", sections)


def build_vote(model: Model) -> Workflow[ParallelState]:
    """Three samples of one classifier; the majority wins."""
    judge = Agent(
        model,
        instructions="Is this change risky? Reply with one word: yes or no.",
        guards=Guards(max_steps=1, max_tokens=1_000),
        settings=ModelSettings(max_tokens=3, temperature=0.8),
    )
    return voting("example-vote", judge, votes=3)


sections = build_sections(resolve_model())
vote = build_vote(resolve_model())
workflow = sections

if __name__ == "__main__":
    proposal = sys.argv[1] if len(sys.argv) > 1 else "Move the team's build from Jenkins to GitHub Actions."
    print(sections.run_sync(ParallelState(input=proposal)).output)
    decided = vote.run_sync(ParallelState(input=proposal))
    print(f"risky? {decided.output} (votes: {decided.state.outputs})")
