"""Orchestrator–workers: the orchestrator's plan decides how many workers run, and on what.

python examples/workflows/orchestrator.py "Compare SQLite, DuckDB and PostgreSQL for a data agent."
"""

from __future__ import annotations

import sys

from corral.agents import Agent
from corral.agents.workflow import Workflow
from corral.agents.workflow.patterns import OrchestratorState, Plan, orchestrator_workers
from corral.guards import Guards
from corral.models import Model, ModelSettings, resolve_model


def build(model: Model) -> Workflow[OrchestratorState]:
    """A planner, up to four workers, a synthesiser."""
    guards = Guards(max_steps=3, max_tokens=3_000)
    orchestrator = Agent(
        model,
        instructions="Split the task into two to four independent subtasks, each one short sentence.",
        output_type=Plan,
        guards=guards,
        settings=ModelSettings(max_tokens=200),
    )
    worker = Agent(model, instructions="Do your part of the task in three sentences.", guards=guards)
    synthesizer = Agent(model, instructions="Combine the parts into one short answer.", guards=guards)
    return orchestrator_workers("example-orchestrator", orchestrator, worker, synthesizer, max_workers=4)


workflow = build(resolve_model())

if __name__ == "__main__":
    task = sys.argv[1] if len(sys.argv) > 1 else "Compare SQLite, DuckDB and PostgreSQL for a data agent."
    result = workflow.run_sync(OrchestratorState(task=task))
    print(f"subtasks: {result.state.subtasks}\n\n{result.output}")
