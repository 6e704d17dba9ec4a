"""End to end with the real local 0.5B model: two tools, a durable SQLite journal, a correct answer."""

from __future__ import annotations

from pathlib import Path

import pytest

from corral.agents import Agent, ToolReturned
from corral.durable import Runtime, SqliteJournal
from corral.guards import Guards
from corral.models import ModelSettings, resolve_model
from corral.tools import tool

pytestmark = [pytest.mark.model, pytest.mark.slow]


def test_the_local_model_uses_a_tool_and_answers(tmp_path: Path) -> None:
    made: list[tuple[str, int, int]] = []

    @tool
    def add(a: int, b: int) -> int:
        """Add two integers and return the sum."""
        made.append(("add", a, b))
        return a + b

    @tool
    def multiply(a: int, b: int) -> int:
        """Multiply two integers and return the product."""
        made.append(("multiply", a, b))
        return a * b

    agent = Agent(
        resolve_model("local"),
        tools=[add, multiply],
        instructions="Use the tools to compute. Then reply with the result in one short sentence.",
        settings=ModelSettings(temperature=0.0, seed=7, max_tokens=128),
        guards=Guards(max_steps=6),
    )
    runtime = Runtime(SqliteJournal(tmp_path / "journal.sqlite"))
    result = agent.run_sync("What is 17 + 25?", runtime=runtime, run_id="local-e2e")
    assert result.reason == "completed", result.detail
    assert ("add", 17, 25) in made
    assert result.output is not None and "42" in result.output
    returned = [e for e in result.events if isinstance(e, ToolReturned)]
    assert any(e.tool == "add" and e.content == "42" for e in returned)
    assert result.usage.total_tokens > 0
    names = [s.name for s in runtime.steps("local-e2e")]
    assert "tool:add" in names and names.count(f"model:{agent.model.name}") == result.turns
