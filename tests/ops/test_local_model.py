"""The real thing: the embedded 0.5B model triages the symptom and words the report over real faults.

With the 0.5B model the detectors still find the cause (the model's answers are checked and can only add
areas, pick among near-tied hypotheses, or word the report); these tests show that the whole path runs
with a real model and that its answers are used or refused with a note, never trusted blindly.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from corral.apps.ops_agent import DiagnoseRequest, OpsAgent, OpsTools
from corral.durable import MemoryJournal, Runtime
from corral.models import resolve_model

from . import faults

pytestmark = [pytest.mark.model, pytest.mark.slow]


@pytest.fixture(scope="module")
def local():  # type: ignore[no-untyped-def]
    from corral.models import DEFAULT_LOCAL, weights_path

    if not weights_path(DEFAULT_LOCAL).exists():
        pytest.skip("the local model is not installed (corral models install)")
    return resolve_model("local")


async def test_the_local_model_on_a_close_wait_leak(tmp_path: Path, local, store) -> None:  # type: ignore[no-untyped-def]
    server = faults.start(
        [faults.PY, str(faults.script(tmp_path, "api.py", faults.CLOSE_WAIT_SERVER))], cwd=tmp_path
    )
    runtime = Runtime(MemoryJournal())
    with faults.running(server):
        faults.close_wait_clients(int(server.first_line), 20)
        agent = OpsAgent(model=local, tools=OpsTools(store=store))
        report = await agent.diagnose(
            DiagnoseRequest(
                symptom="connections pile up on the API",
                pid=server.pid,
                remediate=False,
                core_dumps="never",
                interval_s=0.5,
            ),
            runtime=runtime,
            run_id="local",
        )
    assert (
        report.cause is not None and report.cause.kind == "close_wait_leak" and report.cause.pid == server.pid
    )
    model_steps = [s.name for s in runtime.steps("local") if s.name.startswith("model:")]
    assert len(model_steps) >= 2  # triage and the wording
    assert report.explanation or any("explanation" in n for n in report.notes)
