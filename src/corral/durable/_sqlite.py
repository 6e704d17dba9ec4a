"""The SQLite journal: one file, WAL, one autocommitted row per step.

Durability: ``synchronous="normal"`` (default) makes every committed row survive a killed process (the WAL is
in
the OS page cache); a power cut may lose the last commits but never corrupts the file. ``synchronous="full"``
fsyncs the WAL at each commit, so committed rows also survive power loss, at ~4 ms per commit on this machine.
"""

from __future__ import annotations

import contextlib
import sqlite3
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Literal

from corral import __version__
from corral._errors import UsageError
from corral.durable._journal import Journal, RunRecord, RunStatus, StepRecord, StepStatus
from corral.durable.errors import (
    JournalCorrupt,
    JournalError,
    JournalFull,
    JournalTooNew,
    RunNotFound,
)

# Each entry migrates the schema from version i to i + 1. Never edit a released entry: append a new one.
_MIGRATIONS: tuple[str, ...] = (
    """
    CREATE TABLE schema_version (version INTEGER NOT NULL, written_by TEXT NOT NULL);
    INSERT INTO schema_version (version, written_by) VALUES (0, '');
    CREATE TABLE runs (
        run_id      TEXT PRIMARY KEY,
        function    TEXT NOT NULL,
        input       TEXT NOT NULL,
        status      TEXT NOT NULL,
        output      TEXT,
        output_type TEXT,
        waiting_for TEXT,
        created_at  REAL NOT NULL,
        updated_at  REAL NOT NULL
    );
    CREATE INDEX runs_by_status ON runs (status, updated_at);
    CREATE INDEX runs_by_created ON runs (created_at);
    CREATE TABLE steps (
        run_id     TEXT NOT NULL,
        position   INTEGER NOT NULL,
        name       TEXT NOT NULL,
        status     TEXT NOT NULL,
        value      TEXT,
        value_type TEXT,
        key        TEXT,
        started_at REAL NOT NULL,
        ended_at   REAL,
        PRIMARY KEY (run_id, position)
    ) WITHOUT ROWID;
    CREATE TABLE signals (
        id          INTEGER PRIMARY KEY AUTOINCREMENT,
        run_id      TEXT NOT NULL,
        name        TEXT NOT NULL,
        payload     TEXT NOT NULL,
        sent_at     REAL NOT NULL,
        consumed_at REAL,
        position    INTEGER
    );
    CREATE INDEX signals_unconsumed ON signals (run_id, name, id) WHERE consumed_at IS NULL;
    CREATE TABLE timers (run_id TEXT PRIMARY KEY, wake_at REAL NOT NULL) WITHOUT ROWID;
    CREATE INDEX timers_by_due ON timers (wake_at);
    CREATE TABLE leases (run_id TEXT PRIMARY KEY, worker_id TEXT NOT NULL, expires_at REAL NOT NULL) WITHOUT
    ROWID;
    """,
)
SCHEMA_VERSION = len(_MIGRATIONS)

_SQLITE_CORRUPT = 11
_SQLITE_FULL = 13
_SQLITE_NOTADB = 26

_RUN_COLUMNS = (
    "r.run_id, r.function, r.input, r.status, r.created_at, r.updated_at, r.output, r.output_type, "
    "r.waiting_for, t.wake_at, l.worker_id, l.expires_at"
)
_RUN_FROM = "runs r LEFT JOIN timers t ON t.run_id = r.run_id LEFT JOIN leases l ON l.run_id = r.run_id"
_WRITE_STEP = (
    "INSERT INTO steps (run_id, position, name, status, value, value_type, key, started_at, ended_at) "
    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (run_id, position) DO UPDATE SET name = excluded.name, "
    "status = excluded.status, value = excluded.value, value_type = excluded.value_type, key = excluded.key, "
    "started_at = excluded.started_at, ended_at = excluded.ended_at WHERE steps.status IN ('intent', "
    "'waiting')"
)


def _run(row: Sequence[Any]) -> RunRecord:
    return RunRecord(
        run_id=row[0],
        function=row[1],
        input=row[2],
        status=RunStatus(row[3]),
        created_at=row[4],
        updated_at=row[5],
        output=row[6],
        output_type=row[7],
        waiting_for=row[8],
        wake_at=row[9],
        worker_id=row[10],
        lease_expires_at=row[11],
    )


def _step(row: Sequence[Any]) -> StepRecord:
    return StepRecord(
        run_id=row[0],
        position=row[1],
        name=row[2],
        status=StepStatus(row[3]),
        value=row[4],
        value_type=row[5],
        key=row[6],
        started_at=row[7],
        ended_at=row[8],
    )


class SqliteJournal(Journal):
    """A journal in one SQLite file (WAL mode). Safe to share between threads; one per process is typical.

    ``synchronous``: ``"normal"`` survives a killed process, ``"full"`` also survives power loss.
    ``check``: run ``PRAGMA quick_check`` when opening (reads the whole file; turn off for very large
    journals).
    """

    def __init__(
        self,
        path: str | Path,
        *,
        synchronous: Literal["normal", "full"] = "normal",
        busy_timeout: float = 10.0,
        check: bool = True,
    ) -> None:
        if synchronous not in ("normal", "full"):
            raise UsageError(f"SqliteJournal: synchronous must be 'normal' or 'full', not {synchronous!r}")
        self.path = Path(path)
        self.synchronous = synchronous
        self._lock = threading.Lock()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self._conn = sqlite3.connect(
                self.path,
                isolation_level=None,
                check_same_thread=False,
                timeout=busy_timeout,
                cached_statements=64,
            )
        except sqlite3.Error as exc:
            raise JournalError(f"cannot open the journal {self.path}: {exc}") from exc
        try:
            self._conn.execute("PRAGMA journal_mode=WAL").fetchone()
            self._conn.execute(f"PRAGMA synchronous={synchronous.upper()}")
            if check:
                self._quick_check()
            self._migrate()
        except sqlite3.Error as exc:
            self._conn.close()
            raise self._translate(exc) from exc
        except BaseException:
            self._conn.close()
            raise

    # -- plumbing --------------------------------------------------------------------------------------------
    def _translate(self, exc: sqlite3.Error) -> JournalError:
        code = getattr(exc, "sqlite_errorcode", None)
        primary = code & 0xFF if isinstance(code, int) else None
        text = str(exc)
        if primary == _SQLITE_FULL or "disk is full" in text:
            return JournalFull(
                f"the journal {self.path} could not be written: the disk is full ({text}). The write "
                f"was rolled "
                f"back and the journal is consistent; free space, then resume the run (`corral runs "
                f"resume ID`)"
            )
        if primary in (_SQLITE_CORRUPT, _SQLITE_NOTADB) or "malformed" in text or "not a database" in text:
            return JournalCorrupt(self.path, text)
        return JournalError(f"the journal {self.path} failed: {text}")

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        """One write transaction, taken with BEGIN IMMEDIATE so two writers never interleave."""
        with self._lock:
            conn = self._conn
            try:
                conn.execute("BEGIN IMMEDIATE")
                yield conn
                conn.execute("COMMIT")
            except BaseException as exc:
                if conn.in_transaction:
                    with contextlib.suppress(sqlite3.Error):
                        conn.execute("ROLLBACK")
                if isinstance(exc, sqlite3.Error):
                    raise self._translate(exc) from exc
                raise

    @contextmanager
    def _read(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            try:
                yield self._conn
            except sqlite3.Error as exc:
                raise self._translate(exc) from exc

    def _quick_check(self) -> None:
        try:
            rows = self._conn.execute("PRAGMA quick_check").fetchall()
        except sqlite3.DatabaseError as exc:
            raise JournalCorrupt(self.path, str(exc)) from exc
        if rows != [("ok",)]:
            raise JournalCorrupt(self.path, "; ".join(str(r[0]) for r in rows[:5]))

    def check(self) -> None:
        """Run ``PRAGMA quick_check``; raise ``JournalCorrupt`` if it finds a problem."""
        with self._lock:
            self._quick_check()

    def _migrate(self) -> None:
        try:
            with self._tx() as conn:
                tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
                if "schema_version" in tables:
                    version, written_by = conn.execute(
                        "SELECT version, written_by FROM schema_version"
                    ).fetchone()
                elif tables:
                    raise UsageError(
                        f"{self.path} is an SQLite database but not a corral journal (tables: "
                        f"{', '.join(sorted(tables))}); point CORRAL_JOURNAL at another file"
                    )
                else:
                    version, written_by = 0, ""
                if version > SCHEMA_VERSION:
                    raise JournalTooNew(
                        f"the journal {self.path} has schema version {version} (written by corral "
                        f"{written_by}); "
                        f"this corral {__version__} reads up to version {SCHEMA_VERSION}. Upgrade "
                        f"corral; the "
                        f"file was not changed"
                    )
                for script in _MIGRATIONS[version:]:
                    # executescript would commit; run the statements one by one inside our transaction.
                    for statement in script.split(";"):
                        if statement.strip():
                            conn.execute(statement)
                if version < SCHEMA_VERSION:
                    conn.execute(
                        "UPDATE schema_version SET version = ?, written_by = ?", (SCHEMA_VERSION, __version__)
                    )
        except JournalError:
            raise

    @property
    def schema_version(self) -> int:
        """The schema version stored in the file."""
        with self._read() as conn:
            return int(conn.execute("SELECT version FROM schema_version").fetchone()[0])

    def close(self) -> None:
        """Close the connection."""
        with self._lock:
            self._conn.close()

    # -- runs ------------------------------------------------------------------------------------------------
    def create_run(self, run: RunRecord, *, lease_seconds: float | None = None) -> bool:
        with self._tx() as conn:
            cur = conn.execute(
                "INSERT INTO runs (run_id, function, input, status, output, output_type, waiting_for, "
                "created_at, "
                "updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (run_id) DO NOTHING",
                (
                    run.run_id,
                    run.function,
                    run.input,
                    run.status.value,
                    run.output,
                    run.output_type,
                    run.waiting_for,
                    run.created_at,
                    run.updated_at,
                ),
            )
            if cur.rowcount != 1:
                return False
            if lease_seconds is not None and run.worker_id is not None:
                conn.execute(
                    "INSERT OR REPLACE INTO leases (run_id, worker_id, expires_at) VALUES (?, ?, ?)",
                    (run.run_id, run.worker_id, run.created_at + lease_seconds),
                )
            return True

    def get_run(self, run_id: str) -> RunRecord | None:
        with self._read() as conn:
            row = conn.execute(
                f"SELECT {_RUN_COLUMNS} FROM {_RUN_FROM} WHERE r.run_id = ?", (run_id,)
            ).fetchone()
        return None if row is None else _run(row)

    def list_runs(
        self, *, statuses: Sequence[RunStatus] | None = None, limit: int = 100, offset: int = 0
    ) -> list[RunRecord]:
        sql = f"SELECT {_RUN_COLUMNS} FROM {_RUN_FROM}"
        params: list[Any] = []
        if statuses is not None:
            sql += f" WHERE r.status IN ({', '.join('?' * len(statuses))})"
            params.extend(s.value for s in statuses)
        sql += " ORDER BY r.created_at DESC, r.run_id DESC LIMIT ? OFFSET ?"
        params += [limit, offset]
        with self._read() as conn:
            return [_run(row) for row in conn.execute(sql, params)]

    @staticmethod
    def _held(conn: sqlite3.Connection, run_id: str, worker_id: str) -> bool:
        row = conn.execute(
            "SELECT r.status, l.worker_id FROM runs r LEFT JOIN leases l ON l.run_id = r.run_id WHERE "
            "r.run_id = ?",
            (run_id,),
        ).fetchone()
        return row is not None and row[0] == RunStatus.RUNNING.value and row[1] == worker_id

    def finish_run(
        self,
        run_id: str,
        status: RunStatus,
        output: str | None,
        output_type: str | None,
        *,
        worker_id: str,
        now: float,
    ) -> bool:
        with self._tx() as conn:
            if not self._held(conn, run_id, worker_id):
                return False
            conn.execute(
                "UPDATE runs SET status = ?, output = ?, output_type = ?, waiting_for = NULL, updated_at = ? "
                "WHERE run_id = ?",
                (status.value, output, output_type, now, run_id),
            )
            conn.execute("DELETE FROM leases WHERE run_id = ?", (run_id,))
            conn.execute("DELETE FROM timers WHERE run_id = ?", (run_id,))
            return True

    def park_run(
        self, run_id: str, *, signal: str | None, wake_at: float | None, worker_id: str, now: float
    ) -> RunStatus | None:
        with self._tx() as conn:
            if not self._held(conn, run_id, worker_id):
                return None
            ready = wake_at is not None and wake_at <= now
            if signal is not None and not ready:
                ready = (
                    conn.execute(
                        "SELECT 1 FROM signals WHERE run_id = ? AND name = ? AND consumed_at IS NULL LIMIT 1",
                        (run_id, signal),
                    ).fetchone()
                    is not None
                )
            status = RunStatus.PENDING if ready else RunStatus.WAITING
            conn.execute(
                "UPDATE runs SET status = ?, waiting_for = ?, updated_at = ? WHERE run_id = ?",
                (status.value, signal, now, run_id),
            )
            if wake_at is None:
                conn.execute("DELETE FROM timers WHERE run_id = ?", (run_id,))
            else:
                conn.execute(
                    "INSERT OR REPLACE INTO timers (run_id, wake_at) VALUES (?, ?)", (run_id, wake_at)
                )
            conn.execute("DELETE FROM leases WHERE run_id = ?", (run_id,))
            return status

    def cancel_run(self, run_id: str, *, now: float) -> RunRecord:
        with self._tx() as conn:
            row = conn.execute("SELECT status FROM runs WHERE run_id = ?", (run_id,)).fetchone()
            if row is None:
                raise RunNotFound(run_id)
            if not RunStatus(row[0]).is_final:
                # The lease stays so that the executing worker learns of the cancellation when it renews.
                conn.execute(
                    "UPDATE runs SET status = 'cancelled', waiting_for = NULL, updated_at = ? WHERE "
                    "run_id = ?",
                    (now, run_id),
                )
                conn.execute("DELETE FROM timers WHERE run_id = ?", (run_id,))
            found = conn.execute(
                f"SELECT {_RUN_COLUMNS} FROM {_RUN_FROM} WHERE r.run_id = ?", (run_id,)
            ).fetchone()
        return _run(found)

    def release(self, run_id: str, *, worker_id: str, now: float) -> None:
        with self._tx() as conn:
            conn.execute("DELETE FROM leases WHERE run_id = ? AND worker_id = ?", (run_id, worker_id))

    # -- steps -----------------------------------------------------------------------------------------------
    def load_steps(self, run_id: str) -> list[StepRecord]:
        with self._read() as conn:
            rows = conn.execute(
                "SELECT run_id, position, name, status, value, value_type, key, started_at, ended_at "
                "FROM steps "
                "WHERE run_id = ? ORDER BY position",
                (run_id,),
            ).fetchall()
        return [_step(r) for r in rows]

    def write_step(self, step: StepRecord) -> bool:
        # The hot path: one autocommitted statement (one commit), a cached prepared statement, no transaction
        # bookkeeping in Python.
        with self._lock:
            try:
                cur = self._conn.execute(
                    _WRITE_STEP,
                    (
                        step.run_id,
                        step.position,
                        step.name,
                        step.status.value,
                        step.value,
                        step.value_type,
                        step.key,
                        step.started_at,
                        step.ended_at,
                    ),
                )
            except sqlite3.Error as exc:
                raise self._translate(exc) from exc
            return cur.rowcount == 1

    # -- signals ---------------------------------------------------------------------------------------------
    def send_signal(self, run_id: str, name: str, payload: str, *, now: float) -> None:
        with self._tx() as conn:
            row = conn.execute("SELECT status, waiting_for FROM runs WHERE run_id = ?", (run_id,)).fetchone()
            if row is None:
                raise RunNotFound(run_id)
            conn.execute(
                "INSERT INTO signals (run_id, name, payload, sent_at) VALUES (?, ?, ?, ?)",
                (run_id, name, payload, now),
            )
            if row[0] == RunStatus.WAITING.value and row[1] == name:
                conn.execute(
                    "UPDATE runs SET status = 'pending', updated_at = ? WHERE run_id = ?", (now, run_id)
                )

    def consume_signal(self, run_id: str, name: str, step: StepRecord) -> StepRecord | None:
        with self._tx() as conn:
            done = conn.execute(
                "SELECT status FROM steps WHERE run_id = ? AND position = ?", (step.run_id, step.position)
            ).fetchone()
            if done is not None and done[0] in (StepStatus.OK.value, StepStatus.ERROR.value):
                return None
            row = conn.execute(
                "SELECT id, payload FROM signals WHERE run_id = ? AND name = ? AND consumed_at IS NULL "
                "ORDER BY id LIMIT 1",
                (run_id, name),
            ).fetchone()
            if row is None:
                return None
            taken = StepRecord(
                run_id=step.run_id,
                position=step.position,
                name=step.name,
                status=step.status,
                value=row[1],
                value_type=step.value_type,
                key=step.key,
                started_at=step.started_at,
                ended_at=step.ended_at,
            )
            conn.execute(
                _WRITE_STEP,
                (
                    taken.run_id,
                    taken.position,
                    taken.name,
                    taken.status.value,
                    taken.value,
                    taken.value_type,
                    taken.key,
                    taken.started_at,
                    taken.ended_at,
                ),
            )
            conn.execute(
                "UPDATE signals SET consumed_at = ?, position = ? WHERE id = ?",
                (step.ended_at or step.started_at, step.position, row[0]),
            )
            return taken

    # -- leases ----------------------------------------------------------------------------------------------
    def claim(
        self,
        *,
        worker_id: str,
        now: float,
        lease_seconds: float,
        limit: int = 1,
        run_id: str | None = None,
        steal_from: str | None = None,
    ) -> list[RunRecord]:
        with self._tx() as conn:
            if run_id is not None:
                row = conn.execute(
                    "SELECT r.status, l.worker_id, l.expires_at FROM runs r LEFT JOIN leases l "
                    "ON l.run_id = r.run_id WHERE r.run_id = ?",
                    (run_id,),
                ).fetchone()
                if row is None or RunStatus(row[0]).is_final:
                    return []
                if row[1] is not None and row[1] not in (worker_id, steal_from) and row[2] > now:
                    return []
                ids = [run_id]
            else:
                ids = [
                    r[0]
                    for r in conn.execute(
                        "SELECT r.run_id FROM runs r LEFT JOIN leases l ON l.run_id = r.run_id "
                        "WHERE r.status IN ('pending', 'running') AND (l.expires_at IS NULL OR "
                        "l.expires_at <= ?) "
                        "ORDER BY r.updated_at LIMIT ?",
                        (now, limit),
                    )
                ]
                if len(ids) < limit:
                    ids += [
                        r[0]
                        for r in conn.execute(
                            "SELECT t.run_id FROM timers t JOIN runs r ON r.run_id = t.run_id "
                            "WHERE t.wake_at <= ? AND r.status = 'waiting' ORDER BY t.wake_at LIMIT ?",
                            (now, limit - len(ids)),
                        )
                    ]
            claimed = []
            for rid in ids:
                conn.execute(
                    "UPDATE runs SET status = 'running', updated_at = ? WHERE run_id = ?", (now, rid)
                )
                conn.execute(
                    "INSERT OR REPLACE INTO leases (run_id, worker_id, expires_at) VALUES (?, ?, ?)",
                    (rid, worker_id, now + lease_seconds),
                )
                conn.execute("DELETE FROM timers WHERE run_id = ?", (rid,))
                row = conn.execute(
                    f"SELECT {_RUN_COLUMNS} FROM {_RUN_FROM} WHERE r.run_id = ?", (rid,)
                ).fetchone()
                claimed.append(_run(row))
            return claimed

    def renew(self, *, worker_id: str, run_ids: Sequence[str], now: float, lease_seconds: float) -> set[str]:
        held: set[str] = set()
        if not run_ids:
            return held
        with self._tx() as conn:
            for rid in run_ids:
                row = conn.execute(
                    "SELECT r.status FROM runs r JOIN leases l ON l.run_id = r.run_id "
                    "WHERE r.run_id = ? AND l.worker_id = ?",
                    (rid, worker_id),
                ).fetchone()
                if row is not None and row[0] == RunStatus.RUNNING.value:
                    conn.execute(
                        "UPDATE leases SET expires_at = ? WHERE run_id = ?", (now + lease_seconds, rid)
                    )
                    held.add(rid)
        return held
