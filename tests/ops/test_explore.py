"""Agency where it helps: when the detectors find nothing convincing, a model explores with the read-only
tools, and the detectors read what it found. The model's own conclusion is only a note."""

from __future__ import annotations

import datetime
from collections.abc import Sequence
from pathlib import Path

import pytest

from corral.apps.ops_agent import DiagnoseRequest
from corral.durable import MemoryJournal, Runtime
from corral.models import Message, ScriptedModel, ToolCall, ToolDefinition, ToolResultMessage

from . import faults

pytestmark = pytest.mark.slow


def crash_log(path: Path) -> None:
    now = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    cycle = [
        f"{now} worker starting",
        f"{now} Traceback (most recent call last): OSError: [Errno 98] Address already in use",
        f"{now} worker exited with code 1",
    ]
    path.write_text("\n".join(cycle * 5) + "\n")


async def test_the_model_explores_when_the_detectors_find_nothing(tmp_path: Path, make_agent) -> None:  # type: ignore[no-untyped-def]
    logs = tmp_path / "elsewhere"
    logs.mkdir()
    crash_log(logs / "gateway.out")  # not where the agent looks by itself

    def script(messages: Sequence[Message], tools: Sequence[ToolDefinition]) -> object:
        if not tools:  # triage and the explanation
            system = str(getattr(messages[0], "content", ""))
            return '{"areas": ["logs"]}' if "triage" in system else "The gateway cannot bind its port."
        if not any(isinstance(m, ToolResultMessage) for m in messages):
            return ToolCall(id="c1", name="read_log", arguments={"path": str(logs / "gateway.out")})
        return "The gateway crashes at start: its port is in use."

    model = ScriptedModel(script)
    idle = faults.start(
        [faults.PY, "-c", "import time; print('ready', flush=True); time.sleep(60)"], cwd=tmp_path
    )
    with faults.running(idle):
        request = DiagnoseRequest(symptom="the gateway keeps going down", pid=idle.pid, remediate=False,
                                  core_dumps="never", interval_s=0.5)  # fmt: skip
        plain = await make_agent().diagnose(request, runtime=Runtime(MemoryJournal()))
        assert plain.status == "inconclusive"  # the detectors alone do not find it
        request = request.model_copy(update={"explore": True})
        runtime = Runtime(MemoryJournal())
        report = await make_agent(model).diagnose(request, runtime=runtime, run_id="x")
    assert report.cause is not None and report.cause.kind == "crash_loop"
    assert "Address already in use" in report.cause.facts["repeated_failure"]
    assert any(e.ref == "x#explore" for e in report.cited())
    assert any("exploring model concluded" in n for n in report.notes)
    calls = [s.name for s in runtime.steps("x")].count("tool:read_log")
    assert calls == 1  # the agent's call, journaled once
