"""Prompt chaining with a gate: an outline, checked, then the text written from it.

python examples/workflows/chain.py "Why do databases use write-ahead logs?"
corral graph show examples.workflows.chain:workflow
"""

from __future__ import annotations

import sys

from corral.agents import Agent
from corral.agents.workflow import Workflow
from corral.agents.workflow.patterns import ChainState, prompt_chain
from corral.guards import Guards
from corral.models import Model, ModelSettings, resolve_model


def outline_gate(index: int, output: str) -> str | None:
    """Between the outline and the writing: an outline needs at least two points."""
    points = [line for line in output.splitlines() if line.strip()]
    return None if len(points) >= 2 else f"the outline has {len(points)} point(s); two at least are needed"


def build(model: Model) -> Workflow[ChainState]:
    """Outline, gate, write: two agents in a chain."""
    guards = Guards(max_steps=2, max_tokens=2_000)
    outliner = Agent(
        model,
        instructions=(
            "Write a short outline for an answer to the question: reply only with 3 to 5 points, one per "
            "line, each line starting with '- '."
        ),
        guards=guards,
        settings=ModelSettings(max_tokens=200),
    )
    writer = Agent(
        model,
        instructions="Write a short answer (one paragraph) that follows this outline.",
        guards=guards,
        settings=ModelSettings(max_tokens=300),
    )
    return prompt_chain("example-chain", [outliner, writer], gate=outline_gate)


workflow = build(resolve_model())

if __name__ == "__main__":
    question = sys.argv[1] if len(sys.argv) > 1 else "Why do databases use write-ahead logs?"
    result = workflow.run_sync(ChainState(input=question))
    print(result.output if result.output is not None else f"stopped: {result.state.stopped}")
    print(f"path: {' -> '.join(result.path)}  (corral runs show {result.run_id} --graph)")
