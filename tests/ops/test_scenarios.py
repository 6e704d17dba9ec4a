"""Real faulty processes, diagnosed by the agent without knowing which fault it faces.

Each test starts a real process with one fault, gives the agent a symptom and the process (as an
on-call engineer would: a pid), and asserts the root cause the report names, its process, and that its
evidence is linked to journal steps. The agent runs the same detectors and checks in every test; the
model is off here (the detectors decide) — ``test_local_model.py`` runs scenarios with the local model.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from pathlib import Path

import pytest

from corral.apps.ops_agent import DiagnoseRequest, Report
from corral.durable import MemoryJournal, Runtime

from . import faults
from .conftest import needs_gdb

pytestmark = pytest.mark.slow


async def diagnose(make_agent, symptom: str, pid: int, **options) -> Report:  # type: ignore[no-untyped-def]
    request = DiagnoseRequest(
        symptom=symptom, pid=pid, remediate=False, core_dumps="allow", interval_s=0.5, **options
    )
    runtime = Runtime(MemoryJournal())
    report = await make_agent().diagnose(request, runtime=runtime, run_id="incident")
    assert report.run_id == "incident"
    steps = {s.position: s.name for s in runtime.steps("incident")}
    for e in report.cited():
        run, _, position = e.ref.partition("#")
        assert run == "incident" and steps[int(position)].startswith(("tool:", "core:")), e
    return report


def assert_cause(report: Report, kind: str, pid: int | None) -> None:
    assert report.status == "diagnosed", (report.summary, report.notes, report.alternatives)
    assert report.cause is not None and report.cause.kind == kind, report.cause
    if pid is not None:
        assert report.cause.pid == pid
    assert report.confidence >= 0.5 and report.cited()


async def test_close_wait_leak(tmp_path: Path, make_agent) -> None:  # type: ignore[no-untyped-def]
    server = faults.start(
        [faults.PY, str(faults.script(tmp_path, "api.py", faults.CLOSE_WAIT_SERVER))], cwd=tmp_path
    )
    with faults.running(server):
        faults.close_wait_clients(int(server.first_line), 25)
        report = await diagnose(make_agent, "connections pile up on the API", server.pid)
    assert_cause(report, "close_wait_leak", server.pid)
    assert report.cause is not None and report.cause.facts["close_wait"] >= 25


async def test_memory_leak(tmp_path: Path, make_agent) -> None:  # type: ignore[no-untyped-def]
    leaker = faults.start(
        [faults.PY, str(faults.script(tmp_path, "cache.py", faults.MEMORY_LEAK))], cwd=tmp_path
    )
    with faults.running(leaker):
        report = await diagnose(make_agent, "memory keeps growing", leaker.pid)
    assert_cause(report, "memory_leak", leaker.pid)


@needs_gdb
async def test_cpu_spin_found_in_the_backtrace(tmp_path: Path, make_agent) -> None:  # type: ignore[no-untyped-def]
    spinner = faults.start([str(faults.compile_c(tmp_path, "billing", faults.SPIN_C))], cwd=tmp_path)
    with faults.running(spinner):
        report = await diagnose(make_agent, "the API is slow", spinner.pid)
    assert_cause(report, "cpu_spin", spinner.pid)
    assert report.cause is not None and report.cause.checked
    assert report.cause.facts["backtrace"][0] == "compute_checksums"
    assert any(e.tool == "backtraces" for e in report.cited())


@needs_gdb
async def test_deadlock_seen_in_the_backtraces(tmp_path: Path, make_agent) -> None:  # type: ignore[no-untyped-def]
    stuck = faults.start(
        [faults.PY, str(faults.script(tmp_path, "ledger.py", faults.DEADLOCK))], cwd=tmp_path
    )
    with faults.running(stuck):
        await asyncio.sleep(0.5)  # both workers hold their first lock
        report = await diagnose(make_agent, "requests hang", stuck.pid)
    assert_cause(report, "deadlock", stuck.pid)
    assert report.cause is not None and len(report.cause.facts["lock_waiters"]) >= 2


async def test_disk_filled_by_a_log_file(tmp_path: Path, small_volume: Path, make_agent) -> None:  # type: ignore[no-untyped-def]
    log = small_volume / "app.log"
    writer = faults.start(
        [faults.PY, str(faults.script(tmp_path, "app.py", faults.DISK_FILLER)), str(log)], cwd=tmp_path
    )
    with faults.running(writer):
        deadline = time.monotonic() + 20
        while log.stat().st_size < 22 * 2**20 and time.monotonic() < deadline:  # noqa: ASYNC110 - polls a file
            await asyncio.sleep(0.1)
        report = await diagnose(make_agent, "writes fail: no space left on device", writer.pid)
    assert_cause(report, "disk_full", writer.pid)
    assert report.cause is not None and report.cause.path == str(log)


async def test_crash_loop_visible_in_logs(tmp_path: Path, make_agent) -> None:  # type: ignore[no-untyped-def]
    worker = faults.script(tmp_path, "worker.py", faults.CRASHER)
    supervisor = faults.script(tmp_path, "supervise.py", faults.SUPERVISOR)
    loop = faults.start(
        [
            faults.PY,
            "-c",
            f"print('ready', flush=True); exec(open({str(supervisor)!r}).read())",
            str(worker),
            str(tmp_path / "worker.log"),
        ],
        cwd=tmp_path,
    )
    with faults.running(loop):
        await asyncio.sleep(2.0)  # a few cycles
        report = await diagnose(make_agent, "the service keeps going down", loop.pid)
    assert_cause(report, "crash_loop", None)
    assert (
        report.cause is not None
        and "could not connect to the database" in report.cause.facts["repeated_failure"]
    )


async def test_listen_backlog_overflow(tmp_path: Path, make_agent) -> None:  # type: ignore[no-untyped-def]
    server = faults.start(
        [faults.PY, str(faults.script(tmp_path, "slow.py", faults.BACKLOG_SERVER))], cwd=tmp_path
    )
    with faults.running(server):
        for _ in range(12):  # pending connections keep retrying their SYNs while the queue is full
            s = socket.socket()
            s.setblocking(False)
            with contextlib.suppress(BlockingIOError):
                s.connect(("127.0.0.1", int(server.first_line)))
            server.extra.append(s)
        report = await diagnose(make_agent, "clients time out connecting", server.pid)
    assert_cause(report, "listen_overflow", server.pid)


async def test_a_healthy_process_is_not_given_a_cause(tmp_path: Path, make_agent) -> None:  # type: ignore[no-untyped-def]
    idle = faults.start(
        [faults.PY, "-c", "import time; print('ready', flush=True); time.sleep(60)"], cwd=tmp_path
    )
    with faults.running(idle):
        report = await diagnose(make_agent, "the API is slow", idle.pid)
    assert report.status == "inconclusive" and report.cause is None
    assert report.evidence and report.recommendation


async def test_a_close_wait_leak_found_without_naming_the_process(tmp_path: Path, make_agent) -> None:  # type: ignore[no-untyped-def]
    server = faults.start(
        [faults.PY, str(faults.script(tmp_path, "api.py", faults.CLOSE_WAIT_SERVER))], cwd=tmp_path
    )
    with faults.running(server):
        faults.close_wait_clients(int(server.first_line), 25)
        request = DiagnoseRequest(
            symptom="connections pile up", remediate=False, core_dumps="never", interval_s=0.5
        )
        report = await make_agent().diagnose(request, runtime=Runtime(MemoryJournal()))
    # The whole machine is examined: on a shared machine another process may misbehave more (a test of
    # someone else's loading a model grows its memory fast), so the leak must be found, ranked or not.
    found = [h for h in [report.cause, *report.alternatives] if h is not None]
    assert any(h.kind == "close_wait_leak" and h.pid == server.pid for h in found), (report.summary, found)


async def test_a_crash_loop_seen_from_restarts_alone(tmp_path: Path, make_agent) -> None:  # type: ignore[no-untyped-def]
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    worker = faults.script(elsewhere, "worker.py", faults.CRASHER)
    supervisor = faults.script(elsewhere, "supervise.py", faults.SUPERVISOR)
    run = tmp_path / "run"
    run.mkdir()
    loop = faults.start(
        [
            faults.PY,
            "-c",
            f"print('ready', flush=True); exec(open({str(supervisor)!r}).read())",
            str(worker),
            str(elsewhere / "worker.out.0"),
        ],
        cwd=run,
    )
    with faults.running(loop):
        report = await diagnose(make_agent, "the service keeps going down", loop.pid)
    assert_cause(report, "crash_loop", loop.pid)
    assert report.cause is not None and report.cause.facts["children_seen"] >= 3


async def test_zombie_children(tmp_path: Path, make_agent) -> None:  # type: ignore[no-untyped-def]
    parent = faults.start(
        [
            faults.PY,
            "-c",
            "import subprocess, time\n"
            "kids = [subprocess.Popen(['true']) for _ in range(6)]  # never waited for\n"
            "print('ready', flush=True); time.sleep(60)",
        ],
        cwd=tmp_path,
    )
    with faults.running(parent):
        await asyncio.sleep(0.5)
        report = await diagnose(make_agent, "the process table keeps growing", parent.pid)
    assert_cause(report, "zombies", parent.pid)
