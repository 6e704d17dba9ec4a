"""Damage is JournalCorrupt naming the run and step, never replayed as a wrong or shorter history."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from typer.testing import CliRunner

from corral.apps.cli import app
from corral.durable import (
    SCHEMA_VERSION,
    DeterminismError,
    JournalCorrupt,
    RunContext,
    RunStatus,
    RunSuspended,
    Runtime,
    SqliteJournal,
)
from corral.durable._sqlite import _MIGRATIONS

runner = CliRunner()


class Crash(BaseException):
    """Stands in for the process dying."""


CRASH = [False]


async def priced(ctx: RunContext) -> int:
    price = await ctx.step("quote", lambda: 987654321)
    if CRASH[0]:
        raise Crash
    return int(await ctx.step("charge", lambda: price))


async def five_then_wait(ctx: RunContext) -> int:
    total = 0
    for i in range(5):
        total += await ctx.step("work", lambda i=i: i)
    await ctx.wait("go")
    return total


def _sql(path: Path, statement: str, *params: object) -> None:
    conn = sqlite3.connect(path)
    conn.execute(statement, params)
    conn.commit()
    conn.close()


def _crashed_run(path: Path) -> None:
    rt = Runtime(SqliteJournal(path))
    CRASH[0] = True
    try:
        with pytest.raises(Crash):
            rt.run_sync(priced, run_id="p")
    finally:
        CRASH[0] = False
    rt.close()  # the last connection: the WAL is checkpointed into the file


def test_an_empty_file_is_corrupt_not_a_new_journal(tmp_path: Path) -> None:
    path = tmp_path / "j.sqlite"
    path.write_bytes(b"")
    with pytest.raises(JournalCorrupt, match=r"empty \(0 bytes\)"):
        SqliteJournal(path)
    assert path.read_bytes() == b"", "the file is left as it was"


def test_a_changed_digit_in_a_step_value_is_reported_not_replayed(tmp_path: Path) -> None:
    path = tmp_path / "j.sqlite"
    _crashed_run(path)
    data = path.read_bytes()
    assert data.count(b"987654321") == 1
    path.write_bytes(data.replace(b"987654321", b"987654329"))  # one digit, the b-tree stays valid
    rt = Runtime(SqliteJournal(path))
    with pytest.raises(JournalCorrupt) as info:
        rt.run_sync(priced, run_id="p")
    assert info.value.run_id == "p" and info.value.position == 0
    assert "run 'p', step 0" in str(info.value)
    run = rt.get_run("p")
    assert run.status is RunStatus.FAILED and "JournalCorrupt" in (run.output or ""), (
        "marked failed, with why"
    )
    rt.close()


def test_runs_check_names_the_damaged_run_and_step(tmp_path: Path) -> None:
    path = tmp_path / "j.sqlite"
    _crashed_run(path)
    ok = runner.invoke(app, ["runs", "check", "--journal", str(path)])
    assert ok.exit_code == 0 and "journal ok: 1 run(s) checked" in ok.output, ok.output
    _sql(path, "UPDATE steps SET value = '987654320' WHERE run_id = 'p' AND position = 0")
    bad = runner.invoke(app, ["runs", "check", "--journal", str(path)])
    assert bad.exit_code == 1
    assert "run 'p', step 0" in bad.output and "checksum" in bad.output, bad.output


def test_a_changed_run_outcome_is_reported(tmp_path: Path) -> None:
    path = tmp_path / "j.sqlite"
    rt = Runtime(SqliteJournal(path))
    assert rt.run_sync(priced, run_id="done") == 987654321
    _sql(path, "UPDATE runs SET output = '987654322' WHERE run_id = 'done'")
    with pytest.raises(JournalCorrupt, match="run 'done'"):
        rt.result("done")
    rt.close()


def test_a_changed_signal_payload_is_reported(tmp_path: Path) -> None:
    path = tmp_path / "j.sqlite"
    rt = Runtime(SqliteJournal(path))
    with pytest.raises(RunSuspended):
        rt.run_sync(five_then_wait, run_id="w")
    rt.send_signal("w", "go", {"amount": 10})
    _sql(path, """UPDATE signals SET payload = '{"amount":90}'""")
    with pytest.raises(JournalCorrupt, match="signal 'go'"):
        rt.run_sync(five_then_wait, run_id="w")
    rt.close()


def test_lost_step_rows_are_reported(tmp_path: Path) -> None:
    path = tmp_path / "j.sqlite"
    rt = Runtime(SqliteJournal(path))
    with pytest.raises(RunSuspended):
        rt.run_sync(five_then_wait, run_id="w")
    _sql(path, "DELETE FROM steps WHERE run_id = 'w' AND position >= 3")  # a dropped suffix
    rt.send_signal("w", "go", None)
    with pytest.raises(JournalCorrupt, match=r"run 'w': 5 completed steps were recorded but only 3"):
        rt.run_sync(five_then_wait, run_id="w")
    rt.close()


def test_invalid_utf8_is_named_and_the_worker_says_why_and_fails_the_run(tmp_path: Path) -> None:
    path = tmp_path / "j.sqlite"
    rt = Runtime(SqliteJournal(path))
    with pytest.raises(RunSuspended):
        rt.run_sync(five_then_wait, run_id="w")
    rt.send_signal("w", "go", None)
    rt.close()
    _sql(path, "UPDATE steps SET value = CAST(X'2266ff22' AS TEXT) WHERE run_id = 'w' AND position = 2")
    result = runner.invoke(app, ["worker", "--once", "--journal", str(path)])
    assert "run w failed: JournalCorrupt" in result.output, result.output
    assert "run 'w', step 2" in result.output and "not valid UTF-8" in result.output
    assert "\ufffd" not in result.output and "\\xff" not in result.output, "the bytes are not printed"
    rt = Runtime(SqliteJournal(path))
    assert rt.get_run("w").status is RunStatus.FAILED
    rt.close()


def test_invalid_utf8_in_a_run_row_is_named_when_listing(tmp_path: Path) -> None:
    path = tmp_path / "j.sqlite"
    rt = Runtime(SqliteJournal(path))
    rt.run_sync(priced, run_id="ok")
    rt.run_sync(priced, run_id="bad")
    rt.close()
    _sql(path, "UPDATE runs SET output = CAST(X'31ff32' AS TEXT) WHERE run_id = 'bad'")
    result = runner.invoke(app, ["runs", "list", "--journal", str(path)])
    assert (
        result.exit_code == 1 and "run 'bad': its row holds bytes that are not valid UTF-8" in result.output
    )


def _wal_snapshot(tmp_path: Path) -> tuple[bytes, bytes]:
    """A journal's database file and WAL as a process that still holds it open leaves them (not merged)."""
    live = tmp_path / "live" / "j.sqlite"
    rt = Runtime(SqliteJournal(live))
    for i in range(40):
        rt.run_sync(priced, run_id=f"r{i}")
    snapshot = live.read_bytes(), live.with_name("j.sqlite-wal").read_bytes()
    rt.close()
    return snapshot


def _materialise(directory: Path, db: bytes, wal: bytes) -> Path:
    directory.mkdir()
    path = directory / "j.sqlite"
    path.write_bytes(db)
    path.with_name("j.sqlite-wal").write_bytes(wal)
    return path


def test_a_damaged_wal_is_reported_not_silently_shortened(tmp_path: Path) -> None:
    db, wal = _wal_snapshot(tmp_path)
    page = int.from_bytes(wal[8:12], "big")
    assert (len(wal) - 32) // (24 + page) > 20
    damaged = bytearray(wal)
    damaged[32 + 10 * (24 + page) + 24 + 100] ^= 0x01  # one bit in the page of frame 11
    path = _materialise(tmp_path / "copy", db, bytes(damaged))
    with pytest.raises(JournalCorrupt, match=r"write-ahead log j\.sqlite-wal is damaged at frame 11"):
        SqliteJournal(path)


def test_an_intact_or_torn_wal_opens(tmp_path: Path) -> None:
    db, wal = _wal_snapshot(tmp_path)
    j = SqliteJournal(_materialise(tmp_path / "intact", db, wal))
    assert len(j.list_runs(limit=100)) == 40
    j.close()
    # A process killed while writing its last frame (never committed) leaves a torn tail: not damage.
    page = int.from_bytes(wal[8:12], "big")
    j = SqliteJournal(_materialise(tmp_path / "torn", db, wal[: len(wal) - page // 2]))
    statuses = {r.run_id: r.status for r in j.list_runs(limit=100)}
    assert statuses.pop("r39") is RunStatus.RUNNING, "r39's finish was the torn, uncommitted write"
    assert set(statuses.values()) == {RunStatus.COMPLETED}
    j.close()


def test_a_journal_of_the_previous_schema_is_migrated_with_checksums(tmp_path: Path) -> None:
    path = tmp_path / "v1.sqlite"
    conn = sqlite3.connect(path)
    conn.executescript(_MIGRATIONS[0])
    conn.execute("UPDATE schema_version SET version = 1, written_by = '0.1.0'")
    conn.execute(
        "INSERT INTO runs (run_id, function, input, status, created_at, updated_at) VALUES "
        "('old', ?, '{\"args\":[],\"kwargs\":{}}', 'pending', 1.0, 1.0)",
        (f"{priced.__module__}:{priced.__qualname__}",),
    )
    conn.execute(
        "INSERT INTO steps (run_id, position, name, status, value, started_at, ended_at) VALUES "
        "('old', 0, 'quote', 'ok', '41', 1.0, 1.0)"
    )
    conn.commit()
    conn.execute("PRAGMA journal_mode=WAL")
    conn.close()
    rt = Runtime(SqliteJournal(path))
    assert rt.journal.schema_version == SCHEMA_VERSION  # type: ignore[attr-defined]
    assert rt.run_sync(priced, run_id="old") == 41, "the recorded step replays after the migration"
    assert rt.journal.verify() == []
    rt.close()


def test_the_durability_mode_is_a_property_of_the_journal(tmp_path: Path) -> None:
    path = tmp_path / "j.sqlite"
    Runtime.open(path, synchronous="full").close()
    j = SqliteJournal(path)  # e.g. `corral worker` or `runs resume`, which pass no mode
    assert j.synchronous == "full"
    assert j._conn.execute("PRAGMA synchronous").fetchone() == (2,), "the connection commits with FULL"
    j.close()
    result = runner.invoke(app, ["worker", "--once", "--synchronous", "normal", "--journal", str(path)])
    assert result.exit_code == 0, result.output
    j = SqliteJournal(path)
    assert j.synchronous == "normal"
    j.close()
    bad = runner.invoke(app, ["worker", "--once", "--synchronous", "fast", "--journal", str(path)])
    assert bad.exit_code == 1 and "must be 'normal' or 'full'" in bad.output


ORDER = [("a", "b")]


def _echo(x: str) -> str:
    return x


async def two_tools(ctx: RunContext) -> list[str]:
    first, second = ORDER[0]
    one = await ctx.step("tool", _echo, first)
    if CRASH[0]:
        raise Crash
    two = await ctx.step("tool", _echo, second)
    return [one, two]


async def two_tools_accepting(ctx: RunContext) -> list[str]:
    first, second = ORDER[0]
    one = await ctx.step("tool", _echo, first, check_args=False)
    if CRASH[0]:
        raise Crash
    two = await ctx.step("tool", _echo, second, check_args=False)
    return [one, two]


@pytest.mark.parametrize("flow", [two_tools, two_tools_accepting])
def test_replay_compares_the_arguments_of_steps(tmp_path: Path, flow) -> None:  # type: ignore[no-untyped-def]
    rt = Runtime(SqliteJournal(tmp_path / "j.sqlite"))
    CRASH[0] = True
    try:
        with pytest.raises(Crash):
            rt.run_sync(flow, run_id="swap")
    finally:
        CRASH[0] = False
    ORDER[0] = ("b", "a")  # the code now passes the arguments of the two steps the other way round
    try:
        if flow is two_tools:
            with pytest.raises(
                DeterminismError, match=r"step 0: .*other arguments.*check_args=False"
            ) as info:
                rt.run_sync(flow, run_id="swap")
            assert info.value.arguments
        else:
            assert rt.run_sync(flow, run_id="swap") == ["a", "a"], "the recorded step 0 and a new step 1"
    finally:
        ORDER[0] = ("a", "b")
        rt.close()
