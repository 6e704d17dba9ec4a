"""`corral approvals …` through typer's CliRunner on a real journal (the crash tests run it as a process)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from corral.apps.cli import app
from corral.durable import RunContext, RunStatus, RunSuspended, Runtime, SqliteJournal
from corral.guards import ApprovalPolicy, request_approval

runner = CliRunner()


async def drop(ctx: RunContext, table: str) -> str:
    policy = ApprovalPolicy(timeout_s=3600)
    decision = await request_approval(ctx, "drop_table", {"table": table}, policy=policy, why="drops data")
    if not decision.approved:
        return f"kept {table}: {decision.reason}"
    return f"dropped {(decision.arguments or {'table': table})['table']}"


@pytest.fixture
def journal(tmp_path: Path) -> Path:
    path = tmp_path / "journal.sqlite"
    rt = Runtime(SqliteJournal(path))
    for table in ("t1", "t2"):
        with pytest.raises(RunSuspended):
            rt.run_sync(drop, table, run_id=f"drop-{table}")
    rt.close()
    return path


def cli(journal: Path, *args: str) -> tuple[int, str]:
    result = runner.invoke(
        app, ["approvals", *args, "--journal", str(journal)], env={"CORRAL_USER": "ops", "COLUMNS": "200"}
    )
    return result.exit_code, result.output


def ids(journal: Path) -> dict[str, str]:
    code, out = cli(journal, "list", "--json")
    assert code == 0, out
    return {r["run_id"]: r["id"] for r in json.loads(out)}


def test_list_show_and_decide(journal: Path) -> None:
    code, out = cli(journal, "list")
    assert code == 0 and "drop_table" in out and "drops data" in out and "pending" in out
    found = ids(journal)
    assert sorted(found) == ["drop-t1", "drop-t2"]
    code, out = cli(journal, "show", found["drop-t1"])
    assert code == 0 and '"table": "t1"' in out and "deadline" in out and "hash" in out
    code, out = cli(journal, "reject", found["drop-t1"], "--reason", "t1 is in use")
    assert code == 0 and "rejected by ops" in out
    code, out = cli(journal, "edit", found["drop-t2"], "--args", '{"table": "t2_old"}', "--by", "ada")
    assert code == 0 and "edited by ada" in out
    assert cli(journal, "list")[1].strip() == "no pending approval requests"
    code, out = cli(journal, "list", "--all", "--json")
    assert sorted(r["status"] for r in json.loads(out)) == ["edited", "rejected"]
    code, out = cli(journal, "list", "--status", "rejected", "--json")
    (rejected,) = json.loads(out)
    assert rejected["decision"] == {
        "outcome": "reject",
        "by": "ops",
        "at": rejected["decision"]["at"],
        "reason": "t1 is in use",
        "arguments": None,
        "args_hash": rejected["args_hash"],
        "expired": False,
    }
    rt = Runtime(SqliteJournal(journal))
    assert rt.get_run("drop-t1").status is RunStatus.PENDING
    assert rt.run_sync(drop, "t1", run_id="drop-t1") == "kept t1: t1 is in use"
    assert rt.run_sync(drop, "t2", run_id="drop-t2") == "dropped t2_old"
    rt.close()


def test_errors_are_clear(journal: Path) -> None:
    found = ids(journal)
    code, out = cli(journal, "approve", "ap-000000000000")
    assert code == 1 and "no approval request with id 'ap-000000000000'" in out
    code, out = cli(journal, "edit", found["drop-t1"], "--args", "{not json")
    assert code == 2 and "--args is not JSON" in out
    code, out = cli(journal, "edit", found["drop-t1"], "--args", "[1]")
    assert code == 2 and "must be a JSON object" in out
    code, out = cli(journal, "list", "--status", "maybe")
    assert code == 2 and "unknown status 'maybe'" in out
    code, out = cli(journal, "approve", found["drop-t1"], "--hash", "0" * 64)
    assert code == 1 and "look at the request again" in out
    assert cli(journal, "approve", found["drop-t1"])[0] == 0
    code, out = cli(journal, "approve", found["drop-t1"])
    assert code == 1 and "already approved (by ops)" in out
