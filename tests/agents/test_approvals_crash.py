"""SIGKILL a real worker process while a run is parked on an approval (or while it performs the approved
action), decide from another process, restart: the action runs exactly once, or never when rejected.

The side effect is a line in a file outside every process; the decisions go through ``corral approvals``.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from corral.agents import run_agent
from corral.durable import RunStatus, Runtime, SqliteJournal
from corral.guards import ApprovalRecord, Approvals

SCRIPT = Path(__file__).with_name("_approval_worker.py")
CORRAL = str(Path(sys.executable).with_name("corral"))

pytestmark = pytest.mark.slow


def worker(mode: str, tmp_path: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, str(SCRIPT), mode, str(tmp_path / "journal.sqlite"), str(tmp_path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def wait_for(what: str, check: Callable[[], bool], proc: subprocess.Popen[str] | None = None) -> None:
    deadline = time.monotonic() + 60
    while not check():
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"the worker exited before {what}: {proc.communicate()}")
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def kill(proc: subprocess.Popen[str]) -> None:
    os.kill(proc.pid, signal.SIGKILL)
    proc.communicate(timeout=10)
    assert proc.returncode == -signal.SIGKILL


def once(tmp_path: Path) -> None:
    proc = worker("once", tmp_path)
    _out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err


def cli(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [CORRAL, "approvals", *args, "--journal", str(tmp_path / "journal.sqlite")],
        capture_output=True,
        text=True,
        timeout=60,
    )


def effects(tmp_path: Path) -> list[str]:
    path = tmp_path / "effects.log"
    return path.read_text().splitlines() if path.exists() else []


def park_under_a_worker_then_kill_it(tmp_path: Path) -> tuple[Runtime, ApprovalRecord]:
    rt = Runtime(SqliteJournal(tmp_path / "journal.sqlite"))
    rt.start(run_agent, "crash-approvals", "remove bob", run_id="c1")
    proc = worker("serve", tmp_path)
    wait_for("the run to park", lambda: rt.get_run("c1").status is RunStatus.WAITING, proc)
    kill(proc)
    (request,) = Approvals(rt).list()
    return rt, request


def test_killed_while_parked_then_approved_runs_the_write_once(tmp_path: Path) -> None:
    rt, request = park_under_a_worker_then_kill_it(tmp_path)
    assert effects(tmp_path) == []
    listed = json.loads(cli(tmp_path, "list", "--json").stdout)
    assert [r["id"] for r in listed] == [request.id] and listed[0]["why"] == "SQL that writes: DELETE"
    # A signal sent by hand is not a decision: the run wakes, finds none in the ledger, and parks again.
    forged = subprocess.run(
        [
            CORRAL,
            "signal",
            "c1",
            request.signal,
            '{"approved": true}',
            "--journal",
            str(tmp_path / "journal.sqlite"),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert forged.returncode == 0, forged.stderr
    once(tmp_path)
    assert effects(tmp_path) == [] and rt.get_run("c1").status is RunStatus.WAITING

    done = cli(
        tmp_path, "approve", request.id, "--by", "ada", "--reason", "bob left", "--hash", request.args_hash
    )
    assert done.returncode == 0, done.stderr
    again = cli(tmp_path, "reject", request.id, "--by", "eve", "--reason", "no")
    assert again.returncode == 1 and "already approved (by ada)" in again.stderr
    once(tmp_path)
    assert effects(tmp_path) == ["DELETE FROM users WHERE name = 'bob'"]
    run = rt.get_run("c1")
    assert run.status is RunStatus.COMPLETED and "done: 1 row changed" in (run.output or "")
    once(tmp_path)  # nothing left to do: the write is not repeated
    assert len(effects(tmp_path)) == 1
    shown = json.loads(cli(tmp_path, "show", request.id, "--json").stdout)
    assert (shown["status"], shown["decision"]["by"], shown["decision"]["reason"]) == (
        "approved",
        "ada",
        "bob left",
    )


def test_killed_while_parked_then_rejected_never_writes(tmp_path: Path) -> None:
    rt, request = park_under_a_worker_then_kill_it(tmp_path)
    done = cli(tmp_path, "reject", request.id, "--by", "ada", "--reason", "keep bob")
    assert done.returncode == 0, done.stderr
    once(tmp_path)
    assert effects(tmp_path) == []
    run = rt.get_run("c1")
    assert run.status is RunStatus.COMPLETED and "was not approved: keep bob" in (run.output or "")


def test_killed_in_the_approved_write_resumes_without_asking_again(tmp_path: Path) -> None:
    (tmp_path / "hang").touch()
    rt = Runtime(SqliteJournal(tmp_path / "journal.sqlite"))
    rt.start(run_agent, "crash-approvals", "remove bob", run_id="c1")
    proc = worker("serve", tmp_path)
    wait_for("the run to park", lambda: rt.get_run("c1").status is RunStatus.WAITING, proc)
    (request,) = Approvals(rt).list()
    assert (
        cli(
            tmp_path, "edit", request.id, "--by", "ada", "--args", '{"sql": "DELETE FROM users WHERE id = 2"}'
        ).returncode
        == 0
    )
    wait_for("the worker to enter the write", (tmp_path / "inside").exists, proc)
    kill(proc)
    (tmp_path / "resume").touch()
    once(tmp_path)
    assert effects(tmp_path) == ["DELETE FROM users WHERE id = 2"]
    assert rt.get_run("c1").status is RunStatus.COMPLETED
    assert len(Approvals(rt).list(status=None)) == 1  # one request, one decision: nobody was asked twice
