"""The example team (examples/team) with the real local model and the sandbox: a worker is killed in the
middle of its question, restarted by the supervisor, and resumes from the journal."""

from __future__ import annotations

import asyncio
import importlib.util
from pathlib import Path
from types import ModuleType

import pytest

from corral.agents import System
from corral.durable import SqliteJournal, StepRecord

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "team" / "team.py"


def load_example() -> ModuleType:
    spec = importlib.util.spec_from_file_location("team_example", EXAMPLE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.model
@pytest.mark.slow
@pytest.mark.sandbox
async def test_a_worker_killed_mid_question_resumes_and_the_team_answers(tmp_path: Path) -> None:
    team = load_example()
    journal = SqliteJournal(tmp_path / "team.db")
    system = System(journal, team.BEHAVIOURS)
    await system.start(team.team(tmp_path))
    answer = asyncio.create_task(system.call("coordinator", team.QUESTION, timeout=900))

    # Wait until the customers worker has finished at least one step of its question (its first model
    # call), then kill it in the middle of the question.
    victim = system._procs["worker-customers"]
    before: list[StepRecord] = []
    for _ in range(12_000):
        if victim.mailbox and victim.task is not None:
            head = victim.mailbox[0]
            run_id = f"mbx:worker-customers:{head.sender}:{head.seq}:0"
            before = [s for s in journal.load_steps(run_id) if s.status == "ok"]
            if before:
                break
        await asyncio.sleep(0.01)
    assert before, "the worker never recorded a step"
    system.kill("worker-customers", "killed by the test")

    result = await answer
    await system.close()
    after = journal.load_steps(run_id)
    # What was recorded before the kill is still there, unchanged: replayed, not made again.
    assert after[: len(before)] == before
    assert len(after) > len(before)
    nodes = {n.name: n for n in system.tree()[0].children}
    assert (nodes["worker-customers"].restarts, nodes["worker-customers"].reason) == (1, "killed by the test")
    assert nodes["worker-offices"].restarts == 0
    parts = result["parts"]
    assert parts["customers"]["status"] == "answered" and parts["customers"]["rows"] == [[59]]
    assert parts["offices"]["status"] == "answered" and parts["offices"]["rows"] == [[8]]
    assert isinstance(result["review"], str) and result["review"]
