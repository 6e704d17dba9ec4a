"""`corral runs …`, `corral signal` and `corral worker` through typer's CliRunner on a real journal."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest
from typer.testing import CliRunner

from corral.apps.cli import app
from corral.durable import RunContext, RunStatus, RunSuspended, Runtime, SqliteJournal

runner = CliRunner()


async def approval_flow(ctx: RunContext, what: str) -> dict[str, object]:
    plan = await ctx.step("plan", lambda: f"plan for {what}")
    decision = await ctx.wait("approval")
    return {"plan": plan, "decision": decision}


async def failing_flow(ctx: RunContext) -> None:
    await ctx.step("boom", _boom)


def _boom() -> None:
    raise RuntimeError("tool exploded")


@pytest.fixture
def journal(tmp_path: Path) -> Path:
    path = tmp_path / "journal.sqlite"
    rt = Runtime(SqliteJournal(path))
    with pytest.raises(RunSuspended):
        rt.run_sync(approval_flow, "deploy", run_id="waits")
    with pytest.raises(RuntimeError):
        rt.run_sync(failing_flow, run_id="fails")
    rt.close()
    return path


def cli(*args: str) -> tuple[int, str]:
    result = runner.invoke(app, list(args))
    return result.exit_code, result.output


def test_list_human_and_json(journal: Path) -> None:
    code, out = cli("runs", "list", "--journal", str(journal))
    assert code == 0 and "waits" in out and "waiting" in out and "fails" in out and "approval" in out
    code, out = cli("runs", "list", "--journal", str(journal), "--json", "--status", "failed")
    assert code == 0
    rows = json.loads(out)
    assert [r["run_id"] for r in rows] == ["fails"] and rows[0]["output"]["message"] == "tool exploded"


def test_show_lists_steps_with_timing(journal: Path) -> None:
    code, out = cli("runs", "show", "waits", "--journal", str(journal))
    assert code == 0 and "plan" in out and "wait:approval" in out and "waiting" in out
    code, out = cli("runs", "show", "waits", "--journal", str(journal), "--json")
    data = json.loads(out)
    assert data["status"] == "waiting" and [s["name"] for s in data["steps"]] == ["plan", "wait:approval"]
    assert data["steps"][0]["value"] == "plan for deploy" and data["steps"][0]["duration_ms"] >= 0


def test_signal_then_resume_completes(journal: Path) -> None:
    code, out = cli("signal", "waits", "approval", '{"ok": true}', "--journal", str(journal))
    assert code == 0 and "pending" in out
    code, out = cli("runs", "resume", "waits", "--journal", str(journal), "--json")
    assert code == 0, out
    assert json.loads(out)["output"] == {"plan": "plan for deploy", "decision": {"ok": True}}
    rt = Runtime(SqliteJournal(journal))
    assert rt.get_run("waits").status is RunStatus.COMPLETED
    rt.close()


def test_worker_once_resumes_signalled_runs(journal: Path) -> None:
    cli("signal", "waits", "approval", "1", "--journal", str(journal))
    code, out = cli("worker", "--once", "--journal", str(journal))
    assert code == 0 and "executed 1 run" in out
    code, out = cli("runs", "list", "--journal", str(journal), "--json", "--status", "completed")
    assert [r["run_id"] for r in json.loads(out)] == ["waits"]


def test_cancel(journal: Path) -> None:
    code, out = cli("runs", "cancel", "waits", "--journal", str(journal))
    assert code == 0 and "cancelled" in out
    code, out = cli("runs", "cancel", "fails", "--journal", str(journal))
    assert code == 0 and "already failed" in out


def test_errors_are_clear(journal: Path) -> None:
    code, out = cli("runs", "show", "nope", "--journal", str(journal))
    assert code == 1 and "no run with id 'nope'" in out
    code, out = cli("signal", "waits", "approval", "{not json", "--journal", str(journal))
    assert code == 2 and "not JSON" in out
    code, out = cli("runs", "resume", "fails", "--journal", str(journal))
    assert code == 1 and "tool exploded" in out
    bad = journal.parent / "bad.sqlite"
    bad.write_bytes(b"garbage" * 1000)
    code, out = cli("runs", "list", "--journal", str(bad))
    assert code == 1 and "corrupt" in out


def test_check_json_and_worker_reasons(journal: Path) -> None:
    code, out = cli("runs", "check", "--journal", str(journal), "--json")
    assert code == 0 and json.loads(out) == {"ok": True, "problems": []}
    code, out = cli("runs", "check", "waits", "--journal", str(journal))
    assert code == 0 and "journal ok: 1 run(s) checked" in out
    conn = sqlite3.connect(journal)
    conn.execute("UPDATE steps SET value = '\"plan for delete\"' WHERE run_id = 'waits'")
    conn.commit()
    conn.close()
    code, out = cli("runs", "check", "--journal", str(journal), "--json")
    report = json.loads(out)
    assert code == 1 and not report["ok"]
    assert [(p["run_id"], p["position"]) for p in report["problems"]] == [("waits", 0)]
    cli("signal", "waits", "approval", "1", "--journal", str(journal))
    code, out = cli("worker", "--once", "--journal", str(journal))
    assert "run waits failed: JournalCorrupt" in out and "1 failed" in out, out
    code, out = cli("runs", "show", "waits", "--journal", str(journal), "--json")
    assert code == 1 and "run 'waits', step 0" in out, "show reports the damage instead of printing it"
