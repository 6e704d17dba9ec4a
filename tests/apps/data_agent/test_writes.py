"""A statement that changes data parks the question as a durable approval: decided by anyone through the
ledger (approve, reject with a reason the model reads, edit), run exactly once — also when the process that
asked was killed with SIGKILL while parked."""

from __future__ import annotations

import asyncio
import os
import pty
import select
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import pytest

from corral.apps.data_agent import _run
from corral.durable import RunSuspended, Runtime, SqliteJournal
from corral.guards import ApprovalRecord, Approvals
from corral.models import Message, ScriptedModel, SystemMessage, ToolDefinition, UserMessage

from ._write_child import INSERT
from .conftest import ROOT, WritableRunner

PASS = '{"reason": "fine", "missing": "", "verdict": "pass"}'


def _polkas(db: Path) -> int:
    conn = sqlite3.connect(db)
    try:
        return int(conn.execute("SELECT COUNT(*) FROM Genre WHERE Name = 'Polka'").fetchone()[0])
    finally:
        conn.close()


def _plug(monkeypatch: pytest.MonkeyPatch, replies: list[str], seen: list[list[Message]]) -> None:
    """The product's run function with a writable in-process runner and a model replying ``replies``."""
    left = list(replies)

    def reply(messages: Sequence[Message], tools: Sequence[ToolDefinition]) -> str:
        system = messages[0].content if isinstance(messages[0], SystemMessage) else ""
        if system.startswith("You check whether"):
            return PASS
        settings = model.calls[-1].settings
        if settings is not None and settings.seed is not None:
            return "no alternative"  # a sampled candidate (the vote, a lesson's confirmation) writes nothing
        seen.append(list(messages))
        return f"```sql\n{left.pop(0)}\n```"

    model = ScriptedModel(reply)
    monkeypatch.setattr(_run, "make_runner", WritableRunner)
    monkeypatch.setattr(_run, "make_model", lambda name: model)
    monkeypatch.setattr(_run, "_models", {})


def _park(rt: Runtime, db: Path, run_id: str) -> ApprovalRecord:
    with pytest.raises(RunSuspended):
        asyncio.run(
            _run.ask("Add a genre called Polka", db=str(db), runtime=rt, run_id=run_id, allow_writes=True)
        )
    [request] = Approvals(rt).list()
    return request


def test_a_write_parks_and_runs_once_when_approved(
    chinook: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[list[Message]] = []
    _plug(monkeypatch, [INSERT], seen)
    rt = Runtime(SqliteJournal(tmp_path / "j.sqlite"))
    try:
        request = _park(rt, chinook, "w-1")
        assert request.action == "sql_write" and request.arguments == {"sql": INSERT}
        assert request.why == "a INSERT statement changes the data" and request.run_id == "w-1"
        assert _polkas(chinook) == 0  # parked: nothing ran
        Approvals(rt).approve(request.id, by="ada", reason="ok")
        answer = asyncio.run(_run.resume("w-1", runtime=rt))
        assert answer.status == "answered" and "approved by ada" in answer.answer
        assert answer.sql == INSERT and _polkas(chinook) == 1
        again = asyncio.run(_run.resume("w-1", runtime=rt))
        assert again == answer and _polkas(chinook) == 1
        assert len(seen) == 1  # the model wrote once; the resume replayed its call from the journal
    finally:
        rt.close()


def test_a_rejection_reaches_the_model_and_the_write_never_runs(
    chinook: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[list[Message]] = []
    _plug(monkeypatch, [INSERT, "SELECT COUNT(*) AS genres FROM Genre"], seen)
    rt = Runtime(SqliteJournal(tmp_path / "j.sqlite"))
    try:
        request = _park(rt, chinook, "w-2")
        Approvals(rt).reject(request.id, by="ada", reason="never add genres; count them instead")
        answer = asyncio.run(_run.resume("w-2", runtime=rt))
        assert answer.status == "answered" and answer.rows == [[25]]
        feedback = [m.content for m in seen[-1] if isinstance(m, UserMessage)][-1]
        assert "the INSERT statement was refused: never add genres; count them instead" in feedback
        assert _polkas(chinook) == 0
    finally:
        rt.close()


def test_an_edit_runs_the_corrected_statement_after_the_same_checks(
    chinook: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _plug(monkeypatch, [INSERT, INSERT], [])
    rt = Runtime(SqliteJournal(tmp_path / "j.sqlite"))
    try:
        request = _park(rt, chinook, "w-3")
        polka = "INSERT INTO Genre (Name) VALUES ('Polka'), ('Polka')"
        Approvals(rt).edit(request.id, by="ada", arguments={"sql": polka})
        answer = asyncio.run(_run.resume("w-3", runtime=rt))
        assert answer.status == "answered" and answer.sql == polka and "as edited" in answer.answer
        assert _polkas(chinook) == 2
        # An edit that smuggles a second statement fails the write checks: nothing runs.
        request = _park(rt, chinook, "w-4")
        Approvals(rt).edit(request.id, by="eve", arguments={"sql": f"{INSERT}; DROP TABLE Genre"})
        refused = asyncio.run(_run.resume("w-4", runtime=rt))
        assert refused.status == "failed" and "one statement at a time" in refused.answer
        assert _polkas(chinook) == 2
    finally:
        rt.close()


def test_a_proposed_write_that_fails_the_checks_goes_back_without_asking(
    chinook: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[list[Message]] = []
    _plug(
        monkeypatch,
        ["ATTACH DATABASE '/tmp/other.db' AS other", "SELECT COUNT(*) AS genres FROM Genre"],
        seen,
    )
    rt = Runtime(SqliteJournal(tmp_path / "j.sqlite"))
    try:
        answer = asyncio.run(
            _run.ask("Remove the genres", db=str(chinook), runtime=rt, run_id="w-5", allow_writes=True)
        )
        assert answer.rows == [[25]] and Approvals(rt).list(status=None) == []
        assert (
            "ATTACH changes no data and is not run"
            in [m.content for m in seen[-1] if isinstance(m, UserMessage)][-1]
        )
    finally:
        rt.close()


def _child(db: Path, journal: Path, *, tty: bool) -> tuple[subprocess.Popen[bytes], int | None]:
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT / "tests"),
        "CORRAL_JOURNAL": str(journal),
        "CORRAL_USER": "tty",
    }
    if not tty:
        child = subprocess.Popen(
            [sys.executable, "-m", "apps.data_agent._write_child", str(db)],
            cwd=ROOT / "tests",
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        return child, None
    parent, terminal = pty.openpty()
    child = subprocess.Popen(
        [sys.executable, "-m", "apps.data_agent._write_child", str(db)],
        cwd=ROOT / "tests",
        env=env,
        stdin=terminal,
        stdout=terminal,
        stderr=terminal,
    )
    os.close(terminal)
    return child, parent


def _drain(screen: int) -> bytes:
    """What the child wrote to its terminal so far (a full pty would block the child's writes)."""
    out = b""
    while select.select([screen], [], [], 0)[0]:
        try:
            chunk = os.read(screen, 65536)
        except OSError:  # the child closed the terminal (it ended)
            break
        if not chunk:
            break
        out += chunk
    return out


def _until_exit(child: subprocess.Popen[bytes], screen: int, timeout: float = 60) -> bytes:
    """The child's terminal output until it ends (killed after ``timeout`` s)."""
    out = b""
    deadline = time.monotonic() + timeout
    while child.poll() is None and time.monotonic() < deadline:
        out += _drain(screen)
        time.sleep(0.05)
    _stop(child)
    return out + _drain(screen)


def _stop(child: subprocess.Popen[bytes]) -> None:
    if child.poll() is None:
        child.kill()
    child.wait(10)


def _pending(journal: Path, child: subprocess.Popen[bytes], screen: int | None) -> ApprovalRecord:
    """Wait until the child has parked its question on an approval request, and return the request."""
    deadline = time.monotonic() + 60
    while True:
        if screen is not None:
            _drain(screen)
        rt = Runtime(SqliteJournal(journal))
        try:
            found = Approvals(rt).list()
        finally:
            rt.close()
        if found:
            return found[0]
        assert child.poll() is None or child.returncode == 3, "the child ended before parking"
        assert time.monotonic() < deadline, "the child never parked on an approval"
        time.sleep(0.05)


@pytest.mark.slow
def test_killed_while_parked_then_approved_the_write_runs_exactly_once(
    chinook: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    journal = tmp_path / "journal.sqlite"
    child, screen = _child(chinook, journal, tty=True)
    try:
        request = _pending(journal, child, screen)
        time.sleep(0.3)  # the terminal is at its prompt, the run parked
        child.send_signal(signal.SIGKILL)
        child.wait(10)
    finally:
        _stop(child)
        if screen is not None:
            os.close(screen)
    assert _polkas(chinook) == 0
    rt = Runtime(SqliteJournal(journal))
    try:
        Approvals(rt).approve(request.id, by="ada", reason="go")
        _plug(monkeypatch, ["SELECT 'a repeated model call would write this' AS wrong"], [])
        answer = asyncio.run(_run.resume(request.run_id, runtime=rt))
        assert answer.status == "answered" and answer.sql == INSERT and _polkas(chinook) == 1
        assert asyncio.run(_run.resume(request.run_id, runtime=rt)) == answer
    finally:
        rt.close()
    assert _polkas(chinook) == 1


@pytest.mark.slow
def test_the_terminal_steps_aside_when_someone_else_decides(chinook: Path, tmp_path: Path) -> None:
    journal = tmp_path / "journal.sqlite"
    child, screen = _child(chinook, journal, tty=True)
    assert screen is not None
    output = b""
    try:
        request = _pending(journal, child, screen)
        rt = Runtime(SqliteJournal(journal))
        try:
            Approvals(rt).approve(request.id, by="second-terminal", reason="fine")
        finally:
            rt.close()
        output = _until_exit(child, screen)
        assert child.returncode == 0, output.decode(errors="replace")
    finally:
        _stop(child)
        os.close(screen)
    assert b"decided elsewhere by second-terminal" in output
    assert _polkas(chinook) == 1


@pytest.mark.slow
def test_on_the_terminal_a_keypress_decides_through_the_ledger(chinook: Path, tmp_path: Path) -> None:
    journal = tmp_path / "journal.sqlite"
    child, screen = _child(chinook, journal, tty=True)
    assert screen is not None
    try:
        request = _pending(journal, child, screen)
        os.write(screen, b"r\nnot on a Friday\n")
        _until_exit(child, screen)
    finally:
        _stop(child)
        os.close(screen)
    rt = Runtime(SqliteJournal(journal))
    try:
        decided = Approvals(rt).get(request.id)
    finally:
        rt.close()
    assert decided.status == "rejected" and decided.decision is not None
    assert decided.decision.by == "tty" and decided.decision.reason == "not on a Friday"
    assert _polkas(chinook) == 0


def test_without_a_terminal_ask_exits_parked_and_says_how_to_decide(chinook: Path, tmp_path: Path) -> None:
    journal = tmp_path / "journal.sqlite"
    child, _ = _child(chinook, journal, tty=False)
    _, err = child.communicate(timeout=120)
    assert child.returncode == 3, err.decode()
    text = " ".join(err.decode().split())
    assert "corral approvals approve ap-" in text and "corral runs resume" in text
    assert _polkas(chinook) == 0
