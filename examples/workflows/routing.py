"""Routing: a classifier picks which specialised agent answers.

python examples/workflows/routing.py "I was charged twice this month"
"""

from __future__ import annotations

import sys

from corral.agents import Agent
from corral.agents.workflow import Workflow
from corral.agents.workflow.patterns import RouteState, routing
from corral.guards import Guards
from corral.models import Model, ModelSettings, resolve_model


def build(model: Model) -> Workflow[RouteState]:
    """A classifier and three support agents."""
    guards = Guards(max_steps=2, max_tokens=2_000)
    short = ModelSettings(max_tokens=200)

    def specialist(topic: str) -> Agent[str]:
        return Agent(
            model,
            instructions=f"You answer {topic} questions in two sentences.",
            guards=guards,
            settings=short,
        )

    classifier = Agent(
        model,
        instructions=(
            "Classify the customer message. billing: charges, payments, invoices, refunds. technical: "
            "errors, crashes, logins, bugs. general: anything else. Reply with that one word only."
        ),
        guards=guards,
        settings=ModelSettings(max_tokens=5, temperature=0.0),
    )
    routes = {
        "billing": specialist("billing"),
        "technical": specialist("technical"),
        "general": specialist("general"),
    }
    return routing("example-routing", classifier, routes, default="general")


workflow = build(resolve_model())

if __name__ == "__main__":
    message = sys.argv[1] if len(sys.argv) > 1 else "I was charged twice this month"
    result = workflow.run_sync(RouteState(input=message))
    print(f"route: {result.state.route}\n{result.output}")
