"""The real thing: the embedded 0.5B model answers a simple Chinook question, queries in the sandbox."""

from __future__ import annotations

from pathlib import Path

import pytest

from corral.apps.data_agent import DataAgent, open_source
from corral.apps.data_agent._sandbox_runner import SandboxQueryRunner
from corral.models import resolve_model


@pytest.mark.model
@pytest.mark.slow
@pytest.mark.sandbox
async def test_the_local_model_answers_a_simple_chinook_question(chinook: Path) -> None:
    agent = DataAgent(model=resolve_model("local"), runner=SandboxQueryRunner(open_source(str(chinook))))
    answer = await agent.ask("How many customers are there?")
    assert answer.status == "answered", answer.answer
    assert answer.rows == [[59]]
    assert answer.sql is not None and "customer" in answer.sql.lower()
    assert answer.usage.requests >= 1 and answer.usage.input_tokens > 0
    # One aggregate value with no finding: the judge is skipped, and the answer says so.
    assert answer.judge is not None and answer.judge.startswith("skipped"), answer.judge
