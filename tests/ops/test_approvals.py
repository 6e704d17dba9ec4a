"""Remediations wait for a human: approved they run and are verified, rejected or malformed they do not;
core dumps ask first by default; a diagnosis killed midway resumes from its journal."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from corral.apps.cli import app
from corral.apps.ops_agent import ActionError, DiagnoseRequest, KillProcess, parse_action
from corral.durable import MemoryJournal, RunNotFound, RunSuspended, Runtime, SqliteJournal
from corral.guards import Approvals

from . import faults
from .conftest import needs_gdb

pytestmark = pytest.mark.slow


def leaky_server(tmp_path: Path) -> faults.Fault:
    server = faults.start(
        [faults.PY, str(faults.script(tmp_path, "api.py", faults.CLOSE_WAIT_SERVER))], cwd=tmp_path
    )
    faults.close_wait_clients(int(server.first_line), 15)
    return server


def request(pid: int) -> DiagnoseRequest:
    return DiagnoseRequest(symptom="connections pile up", pid=pid, core_dumps="never", interval_s=0.5)


async def parked(make_agent, runtime: Runtime, pid: int, run_id: str = "r"):  # type: ignore[no-untyped-def]
    agent = make_agent()
    with pytest.raises(RunSuspended):
        await agent.diagnose(request(pid), runtime=runtime, run_id=run_id)
    [pending] = Approvals(runtime).list(run_id=run_id)
    assert not [s for s in runtime.steps(run_id) if s.name.startswith("action:")]
    return agent, pending


async def test_an_approved_fix_runs_once_and_is_verified(tmp_path: Path, make_agent) -> None:  # type: ignore[no-untyped-def]
    runtime = Runtime(MemoryJournal())
    with faults.running(leaky_server(tmp_path)) as server:
        agent, pending = await parked(make_agent, runtime, server.pid)
        assert pending.action == "kill_process" and pending.arguments["pid"] == server.pid
        assert server.proc.poll() is None  # nothing ran while it waited
        Approvals(runtime).approve(pending.id, by="oncall", reason="it leaks")
        report = await agent.diagnose(request(server.pid), runtime=runtime, run_id="r")
        server.proc.wait(timeout=10)
    assert report.remediation is not None and report.remediation.executed and report.remediation.verified
    assert report.remediation.decided_by == "oncall"
    assert [s.name for s in runtime.steps("r")].count("action:kill_process") == 1


async def test_a_rejected_fix_does_not_run(tmp_path: Path, make_agent) -> None:  # type: ignore[no-untyped-def]
    runtime = Runtime(MemoryJournal())
    with faults.running(leaky_server(tmp_path)) as server:
        agent, pending = await parked(make_agent, runtime, server.pid)
        Approvals(runtime).reject(pending.id, by="oncall", reason="peak hours")
        report = await agent.diagnose(request(server.pid), runtime=runtime, run_id="r")
        assert server.proc.poll() is None
    assert report.remediation is not None and report.remediation.approval == "rejected"
    assert not report.remediation.executed


@pytest.mark.parametrize(
    "edit", [{"pid": 1, "name": "systemd"}, {"pid": "1; rm -rf /"}, {"unit": "x.service"}]
)
async def test_an_edit_that_is_not_a_valid_action_does_not_run(tmp_path: Path, make_agent, edit) -> None:  # type: ignore[no-untyped-def]
    runtime = Runtime(MemoryJournal())
    with faults.running(leaky_server(tmp_path)) as server:
        agent, pending = await parked(make_agent, runtime, server.pid)
        Approvals(runtime).edit(pending.id, by="oncall", arguments=edit, reason="try this")
        report = await agent.diagnose(request(server.pid), runtime=runtime, run_id="r")
        assert server.proc.poll() is None
    assert report.remediation is not None and not report.remediation.executed
    assert "failed" in (report.remediation.result or "")


def test_actions_check_their_target_before_acting(tmp_path: Path) -> None:
    with pytest.raises(ActionError):
        parse_action("kill_process", {"pid": 1, "name": "init"})
    with pytest.raises(ActionError):
        parse_action("kill_process", {"pid": 5, "name": "x", "signal": "HUP"})
    with pytest.raises(ActionError):
        parse_action("format_disk", {"device": "/dev/sda"})
    # The parent when it can be named (a process started by init has pid 1 as parent, refused above).
    own = os.getppid() if os.getppid() > 1 else os.getpid()
    with pytest.raises(ActionError, match="this agent or one of its parents"):
        KillProcess(pid=own, name="python").run()
    sleeper = subprocess.Popen(["sleep", "30"])
    try:
        with pytest.raises(ActionError, match="not 'nginx'"):
            KillProcess(pid=sleeper.pid, name="nginx").run()  # the pid is someone else now
        assert sleeper.poll() is None
    finally:
        sleeper.kill()
        sleeper.wait()


@needs_gdb
async def test_a_core_dump_asks_first_by_default(tmp_path: Path, make_agent) -> None:  # type: ignore[no-untyped-def]
    stuck = faults.start(
        [faults.PY, str(faults.script(tmp_path, "ledger.py", faults.DEADLOCK))], cwd=tmp_path
    )
    runtime = Runtime(MemoryJournal())
    req = DiagnoseRequest(symptom="requests hang", pid=stuck.pid, remediate=False, interval_s=0.5)
    agent = make_agent()
    with faults.running(stuck):
        await asyncio.sleep(0.5)
        with pytest.raises(RunSuspended):
            await agent.diagnose(req, runtime=runtime, run_id="core")
        [pending] = Approvals(runtime).list(run_id="core")
        assert pending.action == "take_core" and pending.arguments["pid"] == stuck.pid
        assert not list(agent.tools.store.root.glob("*.enc")) if agent.tools.store.root.exists() else True
        Approvals(runtime).approve(pending.id, by="oncall")
        report = await agent.diagnose(req, runtime=runtime, run_id="core")
    assert report.cause is not None and report.cause.kind == "deadlock"


async def test_a_diagnosis_killed_midway_resumes_from_its_journal(tmp_path: Path, make_agent) -> None:  # type: ignore[no-untyped-def]
    journal = tmp_path / "journal.sqlite"
    with faults.running(leaky_server(tmp_path)) as server:
        child = subprocess.Popen(  # noqa: ASYNC220 - the process to SIGKILL
            [sys.executable, "-m", "tests.ops._crash_child", str(journal), str(server.pid), "inc"],
            cwd=Path(__file__).parents[2],
        )
        try:
            deadline = time.monotonic() + 60
            watched = None
            while watched is None and time.monotonic() < deadline and child.poll() is None:
                await asyncio.sleep(0.1)
                if journal.exists():
                    rt = Runtime(SqliteJournal(journal))
                    with contextlib.suppress(RunNotFound):  # the file exists before the run's row does
                        watched = next((s for s in rt.steps("inc") if s.name == "tool:watch_processes"), None)
                    rt.close()
            assert watched is not None, "the child never journaled its watch"
            os.kill(child.pid, signal.SIGKILL)  # midway: during the second watch or the steps after it
        finally:
            child.kill()
            child.wait(timeout=10)
        runtime = Runtime(SqliteJournal(journal))
        with pytest.raises(RunSuspended):
            await make_agent().diagnose(
                DiagnoseRequest(
                    symptom="connections pile up",
                    pid=server.pid,
                    core_dumps="never",
                    samples=4,
                    interval_s=1.5,
                ),
                runtime=runtime,
                run_id="inc",
            )
        first = next(s for s in runtime.steps("inc") if s.name == "tool:watch_processes")
        assert first.value == watched.value  # replayed from the journal, not watched again
        [pending] = Approvals(runtime).list(run_id="inc")
        assert pending.arguments["pid"] == server.pid
        runtime.close()


def test_the_cli_parks_then_resumes_after_approval(tmp_path: Path) -> None:
    journal = tmp_path / "journal.sqlite"
    runner = CliRunner()
    env = {"CORRAL_CORE_DIR": str(tmp_path / "cores")}
    with faults.running(leaky_server(tmp_path)) as server:
        first = runner.invoke(
            app,
            [
                "ops",
                "diagnose",
                "connections pile up",
                "--pid",
                str(server.pid),
                "--no-model",
                "--cores",
                "never",
                "--journal",
                str(journal),
                "--run-id",
                "cli",
                "--json",
                "--quiet",
            ],
            env=env,
        )
        assert first.exit_code == 3, first.output
        waiting = json.loads(first.stdout.strip().splitlines()[-1])
        assert waiting["status"] == "waiting" and waiting["run_id"] == "cli"
        decided = runner.invoke(
            app,
            [
                "approvals",
                "approve",
                waiting["approvals"][0],
                "--journal",
                str(journal),
                "--by",
                "oncall",
                "--reason",
                "leaks sockets",
            ],
        )
        assert decided.exit_code == 0, decided.output
        second = runner.invoke(
            app,
            ["ops", "resume", "cli", "--no-model", "--journal", str(journal), "--json", "--quiet"],
            env=env,
        )
        assert second.exit_code == 0, second.output
        report = json.loads(second.stdout.strip().splitlines()[-1])
        server.proc.wait(timeout=10)
    assert report["cause"]["kind"] == "close_wait_leak"
    assert report["remediation"]["executed"] and report["remediation"]["verified"]


def test_a_generic_worker_goes_on_with_an_approved_diagnosis(tmp_path: Path) -> None:
    """`corral ops diagnose` journals a run of a module-level function (`ops_run`) with JSON arguments, so
    `corral worker` — which knows nothing of the ops agent — resumes it once the fix is approved."""
    journal = tmp_path / "journal.sqlite"
    runner = CliRunner()
    env = {"CORRAL_CORE_DIR": str(tmp_path / "cores")}
    common = ["--journal", str(journal)]
    flags = ["--no-model", "--cores", "never", "--run-id", "w", "--json", "--quiet"]
    with faults.running(leaky_server(tmp_path)) as server:
        first = runner.invoke(
            app,
            ["ops", "diagnose", "connections pile up", "--pid", str(server.pid), *flags, *common],
            env=env,
        )
        assert first.exit_code == 3, first.output
        [approval] = json.loads(first.stdout.strip().splitlines()[-1])["approvals"]
        assert (
            runner.invoke(app, ["approvals", "approve", approval, "--by", "oncall", *common]).exit_code == 0
        )
        worked = runner.invoke(app, ["worker", "--once", *common], env=env)
        assert worked.exit_code == 0, worked.output
        assert "executed 1 run(s), 0 failed" in worked.output, worked.output
        server.proc.wait(timeout=10)
    runtime = Runtime(SqliteJournal(journal))
    run = runtime.get_run("w")
    assert run.function == "corral.apps.ops_agent._run:ops_run"
    report = runtime.outcome(run)
    runtime.close()
    assert report["cause"]["kind"] == "close_wait_leak"
    assert report["remediation"]["executed"] and report["remediation"]["verified"]
