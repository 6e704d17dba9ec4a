"""The SQLite journal's own promises: schema versions, corruption, disk full, one row per step."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from corral import UsageError
from corral.durable import (
    SCHEMA_VERSION,
    JournalCorrupt,
    JournalFull,
    JournalTooNew,
    RunContext,
    RunStatus,
    Runtime,
    SqliteJournal,
    StepStatus,
)


async def flow(ctx: RunContext, n: int) -> int:
    total = 0
    for i in range(n):
        total += await ctx.step("model", lambda i=i: {"role": "assistant", "content": f"turn {i}"}) and 1
        total += await ctx.step("tool", lambda i=i: i)
    return total


def test_new_journal_is_wal_with_the_current_schema(tmp_path: Path) -> None:
    j = SqliteJournal(tmp_path / "j.sqlite")
    assert j.schema_version == SCHEMA_VERSION
    j.close()
    conn = sqlite3.connect(tmp_path / "j.sqlite")
    assert conn.execute("PRAGMA journal_mode").fetchone() == ("wal",)
    tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert {"runs", "steps", "signals", "timers", "leases", "schema_version"} <= tables
    conn.close()


def test_reopening_keeps_data_and_does_not_migrate_twice(tmp_path: Path) -> None:
    rt = Runtime(SqliteJournal(tmp_path / "j.sqlite"))
    assert rt.run_sync(flow, 3, run_id="a") == sum(range(3)) + 3
    rt.close()
    rt2 = Runtime(SqliteJournal(tmp_path / "j.sqlite"))
    assert rt2.get_run("a").status is RunStatus.COMPLETED
    assert len(rt2.steps("a")) == 6
    rt2.close()


def test_journal_written_by_a_newer_version_is_refused_untouched(tmp_path: Path) -> None:
    path = tmp_path / "j.sqlite"
    SqliteJournal(path).close()
    conn = sqlite3.connect(path)
    conn.execute("UPDATE schema_version SET version = ?, written_by = '9.9.9'", (SCHEMA_VERSION + 1,))
    conn.commit()
    conn.close()
    before = path.read_bytes()
    with pytest.raises(
        JournalTooNew,
        match=rf"schema version {SCHEMA_VERSION + 1} \(written by corral 9\.9\.9\).*Upgrade corral",
    ):
        SqliteJournal(path)
    assert path.read_bytes() == before


def test_garbage_file_is_journal_corrupt(tmp_path: Path) -> None:
    path = tmp_path / "j.sqlite"
    path.write_bytes(b"this is not a database at all " * 200)
    with pytest.raises(JournalCorrupt) as info:
        SqliteJournal(path)
    assert str(path) in str(info.value) and ".recover" in str(info.value)


def test_truncated_file_is_journal_corrupt(tmp_path: Path) -> None:
    path = tmp_path / "j.sqlite"
    rt = Runtime(SqliteJournal(path))
    rt.run_sync(flow, 300, run_id="big")
    rt.journal.close()
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()
    size = path.stat().st_size
    assert size > 8 * 4096
    with path.open("r+b") as f:
        f.truncate(size // 3)
    with pytest.raises(JournalCorrupt, match="corrupt"):
        SqliteJournal(path)


def test_other_sqlite_database_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "app.db"
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE users (id INTEGER)")
    conn.commit()
    conn.close()
    with pytest.raises(UsageError, match="not a corral journal"):
        SqliteJournal(path)


def test_bad_synchronous_option() -> None:
    with pytest.raises(UsageError, match="'normal' or 'full'"):
        SqliteJournal("/nonexistent/x.sqlite", synchronous="off")  # type: ignore[arg-type]


async def test_disk_full_is_clear_and_leaves_the_journal_consistent(tmp_path: Path) -> None:
    path = tmp_path / "j.sqlite"
    journal = SqliteJournal(path)
    rt = Runtime(journal)
    pages = journal._conn.execute("PRAGMA page_count").fetchone()[0]
    # Emulate a full disk: the file may not grow beyond a few more pages.
    journal._conn.execute(f"PRAGMA max_page_count = {pages + 4}")
    calls: list[int] = []

    async def big(ctx: RunContext) -> int:
        for i in range(1000):
            await ctx.step("blob", lambda i=i: calls.append(i) or "x" * 2000)
        return len(calls)

    with pytest.raises(JournalFull, match=r"disk is full.*consistent"):
        await rt.run(big, run_id="full")
    recorded = [s for s in rt.steps("full") if s.status is StepStatus.OK]
    assert 0 < len(recorded) < 1000
    assert len(calls) == len(recorded) + 1  # the step whose result could not be written ran once, unrecorded
    journal.check()
    journal.close()
    # Space comes back (a new connection has no page limit): the run resumes where it stopped.
    rt2 = Runtime(SqliteJournal(path))
    rt2.register(big)
    assert await rt2.resume("full") == 1000 + 1
    assert len(rt2.steps("full")) == 1000
    rt2.close()


def test_file_grows_linearly_with_run_length(tmp_path: Path) -> None:
    sizes = {}
    for n in (200, 800):
        path = tmp_path / f"j{n}.sqlite"
        rt = Runtime(SqliteJournal(path))
        rt.run_sync(flow, n, run_id="r")
        rows = rt.journal._conn.execute("SELECT count(*) FROM steps").fetchone()[0]  # type: ignore[attr-defined]
        assert rows == 2 * n  # one row per step, never the whole history per step
        rt.journal._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")  # type: ignore[attr-defined]
        rt.close()
        sizes[n] = path.stat().st_size
    assert sizes[800] < 4.6 * sizes[200]


def test_full_synchronous_mode_runs(tmp_path: Path) -> None:
    j = SqliteJournal(tmp_path / "j.sqlite", synchronous="full")
    assert j._conn.execute("PRAGMA synchronous").fetchone() == (2,)
    rt = Runtime(j)
    assert rt.run_sync(flow, 2) == 3
    rt.close()


async def test_run_code_cannot_swallow_a_journal_failure(tmp_path: Path) -> None:
    journal = SqliteJournal(tmp_path / "j.sqlite")
    rt = Runtime(journal)
    pages = journal._conn.execute("PRAGMA page_count").fetchone()[0]
    journal._conn.execute(f"PRAGMA max_page_count = {pages + 4}")

    async def stubborn(ctx: RunContext) -> str:
        for i in range(1000):
            try:
                await ctx.step("blob", lambda i=i: "x" * 2000)
            except Exception:  # a careless agent loop
                await ctx.step("after", lambda: "carried on")
                return "completed anyway"
        return "never"

    with pytest.raises(JournalFull):
        await rt.run(stubborn, run_id="s")
    run = rt.get_run("s")
    assert run.status is RunStatus.RUNNING and run.worker_id is None  # left for a resume, lease released
    assert all(s.name == "blob" for s in rt.steps("s"))
    journal.close()
