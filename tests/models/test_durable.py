"""The model call as a durable step: a run killed after it and resumed makes no second request."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

from corral.durable import MemoryJournal, RunContext, Runtime
from corral.models import JournaledModel, ModelResponse, ScriptedModel, UserMessage, durable_request

from .conftest import FaultServer

FLOW = Path(__file__).with_name("replay_flow.py")


def _run_flow(journal: Path, server: FaultServer, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(FLOW), str(journal), server.url, "run-1", *extra],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "PYTHONWARNINGS": "error"},
    )


def test_killed_after_model_step_resumes_without_a_second_request(
    tmp_path: Path, fault_server: FaultServer
) -> None:
    journal = tmp_path / "journal.sqlite"
    killed = _run_flow(journal, fault_server, "--kill")
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    assert fault_server.count == 1
    resumed = _run_flow(journal, fault_server)
    assert resumed.returncode == 0, resumed.stderr
    assert resumed.stdout.strip() == "hello|11|done"  # the recorded response, usage included
    assert fault_server.count == 1  # counted at the server: the model was not asked again


async def test_replay_returns_the_recorded_response_in_process() -> None:
    model = ScriptedModel(["first", "second"])
    runtime = Runtime(MemoryJournal())

    async def flow(ctx: RunContext) -> str:
        a = await JournaledModel(model, ctx).request([UserMessage(content="q")])
        b = await durable_request(ctx, model, [UserMessage(content="q2")])
        assert isinstance(a, ModelResponse) and isinstance(b, ModelResponse)
        return f"{a.message.content}+{b.message.content}"

    assert await runtime.run(flow, run_id="r") == "first+second"
    assert [s.name for s in runtime.steps("r")] == ["model:scripted", "model:scripted"]
    assert model.call_count == 2
