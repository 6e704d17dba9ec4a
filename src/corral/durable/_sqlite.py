"""The SQLite journal: one file, WAL, one autocommitted row per step.

Durability: ``synchronous="normal"`` (default) makes every committed row survive a killed process (the WAL is
in
the OS page cache); a power cut may lose the last commits but never corrupts the file. ``synchronous="full"``
fsyncs the WAL at each commit, so committed rows also survive power loss, at ~4 ms per commit on this machine.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import threading
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Literal

from corral import __version__
from corral._errors import UsageError
from corral.durable._integrity import run_checksum, signal_checksum, step_checksum, wal_damage
from corral.durable._journal import Journal, RunRecord, RunStatus, StepRecord, StepStatus
from corral.durable._serde import encode_error
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
    """
    ALTER TABLE runs ADD COLUMN generation INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE runs ADD COLUMN final_steps INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE runs ADD COLUMN checksum INTEGER;
    ALTER TABLE steps ADD COLUMN args_hash INTEGER;
    ALTER TABLE steps ADD COLUMN checksum INTEGER;
    ALTER TABLE signals ADD COLUMN checksum INTEGER;
    ALTER TABLE leases ADD COLUMN generation INTEGER NOT NULL DEFAULT 0;
    CREATE TABLE settings (name TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID;
    UPDATE steps SET checksum = corral_step_checksum(run_id, position, name, status, value, value_type, key,
        args_hash, started_at, ended_at);
    UPDATE runs SET checksum = corral_run_checksum(run_id, function, input, output, output_type),
        final_steps = (SELECT count(*) FROM steps s WHERE s.run_id = runs.run_id
            AND s.status IN ('ok', 'error'));
    UPDATE signals SET checksum = corral_signal_checksum(run_id, name, payload)
    """,
)
SCHEMA_VERSION = len(_MIGRATIONS)

_SQLITE_CORRUPT = 11
_SQLITE_FULL = 13
_SQLITE_NOTADB = 26
_BAD_TEXT = "Could not decode to UTF-8"

Synchronous = Literal["normal", "full"]
_STEP_STATUS = {s.value: s for s in StepStatus}

_RUN_COLUMNS = (
    "r.run_id, r.function, r.input, r.status, r.created_at, r.updated_at, r.output, r.output_type, "
    "r.waiting_for, t.wake_at, l.worker_id, l.expires_at, r.generation, r.checksum"
)
_RUN_FROM = "runs r LEFT JOIN timers t ON t.run_id = r.run_id LEFT JOIN leases l ON l.run_id = r.run_id"
_STEP_COLUMNS = (
    "run_id, position, name, status, value, value_type, key, started_at, ended_at, args_hash, checksum"
)
_UPSERT = (
    " ON CONFLICT (run_id, position) DO UPDATE SET name = excluded.name, "
    "status = excluded.status, value = excluded.value, value_type = excluded.value_type, key = excluded.key, "
    "started_at = excluded.started_at, ended_at = excluded.ended_at, args_hash = excluded.args_hash, "
    "checksum = excluded.checksum WHERE steps.status IN ('intent', 'waiting')"
)
_WRITE_STEP = f"INSERT INTO steps ({_STEP_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)" + _UPSERT
# The fenced write: one statement (one commit), refused unless the writer's claim still holds the run. A lease
# row exists only while its run is running (park, finish, cancel and release delete it), and the leases table
# is small and keyed by run id, so the fence is one lookup in a page that is usually cached.
_FENCE = "SELECT 1 FROM leases WHERE run_id = ? AND generation = ?"
_WRITE_STEP_FENCED = (
    f"INSERT INTO steps ({_STEP_COLUMNS}) SELECT ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ? WHERE EXISTS ({_FENCE})"
    + _UPSERT
)
_HELD = (
    "SELECT r.status, l.worker_id, r.generation FROM runs r LEFT JOIN leases l ON l.run_id = r.run_id "
    "WHERE r.run_id = ?"
)


def _step_row(step: StepRecord) -> tuple[Any, ...]:
    status = step.status.value
    return (
        step.run_id,
        step.position,
        step.name,
        status,
        step.value,
        step.value_type,
        step.key,
        step.started_at,
        step.ended_at,
        step.args_hash,
        step_checksum(
            step.run_id,
            step.position,
            step.name,
            status,
            step.value,
            step.value_type,
            step.key,
            step.args_hash,
            step.started_at,
            step.ended_at,
        ),
    )


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _register_functions(conn: sqlite3.Connection) -> None:
    """The checksum functions, for migrations that fill checksums of rows written before they existed."""
    conn.create_function("corral_step_checksum", 10, step_checksum, deterministic=True)
    conn.create_function("corral_run_checksum", 5, run_checksum, deterministic=True)
    conn.create_function("corral_signal_checksum", 3, signal_checksum, deterministic=True)


class SqliteJournal(Journal):
    """A journal in one SQLite file (WAL mode). Safe to share between threads; one per process is typical.

    ``synchronous``: ``"normal"`` survives a killed process, ``"full"`` also survives power loss. It is a
    property of the journal, stored in the file: ``None`` (default) uses the stored mode (``"normal"`` for a
    new journal); a value changes the stored mode, so every process that opens the journal later uses it.
    ``check``: run ``PRAGMA quick_check`` when opening (reads the whole file; turn off for very large
    journals). Every row carries a checksum verified when it is read.
    """

    def __init__(
        self,
        path: str | Path,
        *,
        synchronous: Synchronous | None = None,
        busy_timeout: float = 10.0,
        check: bool = True,
    ) -> None:
        if synchronous not in (None, "normal", "full"):
            raise UsageError(f"SqliteJournal: synchronous must be 'normal' or 'full', not {synchronous!r}")
        self.path = Path(path)
        self._lock = threading.Lock()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if not self.path.exists():
            self._create(busy_timeout, synchronous)
        try:
            empty = self.path.stat().st_size == 0
        except OSError as exc:
            raise JournalError(f"cannot open the journal {self.path}: {exc}") from exc
        if empty:
            raise JournalCorrupt(
                self.path,
                "the file is empty (0 bytes), and corral never leaves a journal empty: it was truncated. "
                "Restore it from a copy, or delete it to start a new journal",
            )
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
            _register_functions(self._conn)
            self._conn.execute("PRAGMA journal_mode=WAL").fetchone()
            if check:
                self._quick_check()
            else:
                self._conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
            damage = wal_damage(self.path)
            if damage is not None:
                raise JournalCorrupt(
                    self.path,
                    f"{damage}. Keep a copy of the file and its -wal file; to accept the loss of those "
                    f"commits, run `sqlite3 {self.path} 'PRAGMA wal_checkpoint(TRUNCATE)'`",
                )
            if self._needs_writing(synchronous):
                self._migrate(new=False)
                self._apply_synchronous(synchronous)
            else:
                self._apply_synchronous(None)
        except sqlite3.Error as exc:
            self._conn.close()
            raise self._translate(exc) from exc
        except BaseException:
            self._conn.close()
            raise

    def _create(self, busy_timeout: float, synchronous: Synchronous | None) -> None:
        """Create the journal under a temporary name and link it into place, so that a process killed while
        creating it never leaves a half-made (e.g. empty) journal behind."""
        self._remove_stale_temporaries()
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
        try:
            self._conn = sqlite3.connect(tmp, isolation_level=None, timeout=busy_timeout)
            try:
                # No fsync while building a file nobody sees yet: one fsync below, before it is published
                # (with "full"); a killed process loses nothing the page cache holds either way.
                self._conn.execute("PRAGMA synchronous=OFF")
                _register_functions(self._conn)
                self._conn.execute("PRAGMA journal_mode=WAL").fetchone()
                self._migrate(new=True)
            finally:
                self._conn.close()  # the last connection: checkpoints and removes the WAL
            if synchronous == "full":
                fd = os.open(tmp, os.O_RDONLY)
                try:
                    os.fsync(fd)
                finally:
                    os.close(fd)
            with contextlib.suppress(FileExistsError):  # another process created it first: use theirs
                os.link(tmp, self.path)
        except sqlite3.Error as exc:
            raise JournalError(f"cannot create the journal {self.path}: {exc}") from exc
        except OSError as exc:
            raise JournalError(f"cannot create the journal {self.path}: {exc}") from exc
        finally:
            for leftover in (tmp, Path(f"{tmp}-wal"), Path(f"{tmp}-shm")):
                with contextlib.suppress(OSError):
                    leftover.unlink()

    def _remove_stale_temporaries(self) -> None:
        """Temporary files of creators that were killed (their pid no longer exists)."""
        for leftover in self.path.parent.glob(f".{self.path.name}.*.tmp*"):
            pid = leftover.name[len(self.path.name) + 2 :].split(".", 1)[0]
            if pid.isdigit() and not _alive(int(pid)):
                with contextlib.suppress(OSError):
                    leftover.unlink()

    def _stored_synchronous(self) -> str:
        row = self._conn.execute("SELECT value FROM settings WHERE name = 'synchronous'").fetchone()
        return str(row[0]) if row is not None else "normal"

    def _needs_writing(self, wanted: Synchronous | None) -> bool:
        """Whether opening must write (migrate, or store another mode); a plain open takes no write lock."""
        try:
            version = self._conn.execute("SELECT version FROM schema_version").fetchone()[0]
        except sqlite3.OperationalError:
            return True  # no schema_version table: _migrate says what the file is
        if version != SCHEMA_VERSION:
            return True
        return wanted is not None and wanted != self._stored_synchronous()

    def _apply_synchronous(self, wanted: Synchronous | None) -> None:
        if wanted is None:
            stored = self._stored_synchronous()
        else:
            with self._tx() as conn:
                conn.execute(
                    "INSERT OR REPLACE INTO settings (name, value) VALUES ('synchronous', ?)", (wanted,)
                )
            stored = wanted
        if stored not in ("normal", "full"):
            raise JournalCorrupt(self.path, f"its stored synchronous mode {stored!r} is not normal or full")
        self._conn.execute(f"PRAGMA synchronous={stored.upper()}")

    @property
    def synchronous(self) -> Synchronous:
        """The durability mode this connection commits with (``"normal"`` or ``"full"``)."""
        with self._read() as conn:
            level = conn.execute("PRAGMA synchronous").fetchone()[0]
        return "full" if level >= 2 else "normal"

    # -- plumbing --------------------------------------------------------------------------------------------
    def _translate(self, exc: sqlite3.Error) -> JournalError:
        code = getattr(exc, "sqlite_errorcode", None)
        primary = code & 0xFF if isinstance(code, int) else None
        text = str(exc)
        if _BAD_TEXT in text:
            # The driver's message quotes the undecodable bytes: never print them.
            return JournalCorrupt(self.path, "a text column holds bytes that are not valid UTF-8")
        if primary == _SQLITE_FULL or "disk is full" in text:
            return JournalFull(
                f"the journal {self.path} could not be written: the disk is full ({text}). The write "
                f"was rolled back and the journal is consistent; free space, then resume the run "
                f"(`corral runs resume ID`)"
            )
        if primary in (_SQLITE_CORRUPT, _SQLITE_NOTADB) or "malformed" in text or "not a database" in text:
            return JournalCorrupt(self.path, text)
        return JournalError(f"the journal {self.path} failed: {text}")

    def _corrupt(self, run_id: str, position: int | None, detail: str) -> JournalCorrupt:
        where = f"run {run_id!r}" + ("" if position is None else f", step {position}")
        return JournalCorrupt(self.path, f"{where}: {detail}", run_id=run_id, position=position)

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

    def verify(self, run_id: str | None = None) -> list[JournalCorrupt]:
        """``quick_check``, the WAL, then every run's row and steps (checksums, run-level step count)."""
        found: list[JournalCorrupt] = []
        try:
            self.check()
        except JournalCorrupt as exc:
            found.append(exc)
        damage = wal_damage(self.path)
        if damage is not None:
            found.append(JournalCorrupt(self.path, damage))
        if run_id is not None:
            ids = [run_id]
        else:
            with self._read() as conn:
                ids = [r[0] for r in conn.execute("SELECT run_id FROM runs ORDER BY created_at")]
        for rid in ids:
            try:
                if self.get_run(rid) is None:
                    raise RunNotFound(rid)
                self.load_steps(rid)
            except JournalCorrupt as exc:
                found.append(exc)
        return found

    def _migrate(self, *, new: bool) -> None:
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
            elif new:
                version, written_by = 0, ""
            else:
                raise JournalCorrupt(
                    self.path,
                    "it is an SQLite database without any table, and corral never leaves a journal "
                    "without its tables: it was truncated or emptied. Restore it from a copy, or delete it "
                    "to start a new journal",
                )
            if version > SCHEMA_VERSION:
                raise JournalTooNew(
                    f"the journal {self.path} has schema version {version} (written by corral "
                    f"{written_by}); this corral {__version__} reads up to version {SCHEMA_VERSION}. "
                    f"Upgrade corral; the file was not changed"
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

    @property
    def schema_version(self) -> int:
        """The schema version stored in the file."""
        with self._read() as conn:
            return int(conn.execute("SELECT version FROM schema_version").fetchone()[0])

    def close(self) -> None:
        """Close the connection."""
        with self._lock:
            self._conn.close()

    # -- rows ------------------------------------------------------------------------------------------------
    def _run(self, row: Sequence[Any]) -> RunRecord:
        run = RunRecord(
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
            generation=row[12],
        )
        if row[13] != run_checksum(run.run_id, run.function, run.input, run.output, run.output_type):
            raise self._corrupt(
                run.run_id, None, "its row (function, input or outcome) does not match its checksum"
            )
        return run

    def _step(self, row: Sequence[Any]) -> StepRecord:
        # Runs once per recorded step on every resume: positional, no enum constructor.
        run_id, position, name, status, value, value_type, key, started, ended, args_hash, checksum = row
        if checksum != step_checksum(
            run_id, position, name, status, value, value_type, key, args_hash, started, ended
        ):
            raise self._corrupt(run_id, position, f"the row of step {name!r} does not match its checksum")
        step_status = _STEP_STATUS.get(status)
        if step_status is None:
            raise self._corrupt(run_id, position, f"unknown step status {status!r}")
        return StepRecord(
            run_id, position, name, step_status, value, value_type, key, started, ended, args_hash
        )

    def _bad_text(
        self, table: str, where: str, params: tuple[Any, ...], run_id: str | None
    ) -> JournalCorrupt:
        """Find the row whose text is not UTF-8 (the driver does not say which) and name its run and step."""
        conn = self._conn
        conn.text_factory = bytes
        try:
            columns = "run_id, position" if table == "steps" else "run_id, NULL"
            for row in conn.execute(f"SELECT {columns}, * FROM {table} WHERE {where}", params):
                for cell in row[2:]:
                    if isinstance(cell, bytes):
                        try:
                            cell.decode("utf-8")
                        except UnicodeDecodeError:
                            rid = row[0].decode("utf-8", "backslashreplace") if row[0] else run_id or "?"
                            return self._corrupt(rid, row[1], "its row holds bytes that are not valid UTF-8")
        finally:
            conn.text_factory = str
        return self._corrupt(run_id or "?", None, "a row holds bytes that are not valid UTF-8")

    def _run_row(self, conn: sqlite3.Connection, run_id: str) -> RunRecord | None:
        try:
            row = conn.execute(
                f"SELECT {_RUN_COLUMNS} FROM {_RUN_FROM} WHERE r.run_id = ?", (run_id,)
            ).fetchone()
        except sqlite3.OperationalError as exc:
            if _BAD_TEXT in str(exc):
                raise self._bad_text("runs", "run_id = ?", (run_id,), run_id) from None
            raise
        return None if row is None else self._run(row)

    # -- runs ------------------------------------------------------------------------------------------------
    def create_run(self, run: RunRecord, *, lease_seconds: float | None = None) -> bool:
        leased = lease_seconds is not None and run.worker_id is not None
        with self._tx() as conn:
            cur = conn.execute(
                "INSERT INTO runs (run_id, function, input, status, output, output_type, waiting_for, "
                "created_at, updated_at, generation, checksum) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
                "ON CONFLICT (run_id) DO NOTHING",
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
                    run.generation if leased else 0,
                    run_checksum(run.run_id, run.function, run.input, run.output, run.output_type),
                ),
            )
            if cur.rowcount != 1:
                return False
            if leased and lease_seconds is not None:
                conn.execute(
                    "INSERT OR REPLACE INTO leases (run_id, worker_id, expires_at, generation) "
                    "VALUES (?, ?, ?, ?)",
                    (run.run_id, run.worker_id, run.created_at + lease_seconds, run.generation),
                )
            return True

    def get_run(self, run_id: str) -> RunRecord | None:
        with self._read() as conn:
            return self._run_row(conn, run_id)

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
            try:
                return [self._run(row) for row in conn.execute(sql, params)]
            except sqlite3.OperationalError as exc:
                if _BAD_TEXT in str(exc):
                    raise self._bad_text("runs", "1", (), None) from None
                raise

    @staticmethod
    def _held(conn: sqlite3.Connection, run_id: str, worker_id: str, generation: int | None) -> bool:
        row = conn.execute(_HELD, (run_id,)).fetchone()
        return (
            row is not None
            and row[0] == RunStatus.RUNNING.value
            and row[1] == worker_id
            and (generation is None or row[2] == generation)
        )

    @staticmethod
    def _count_final(conn: sqlite3.Connection, run_id: str) -> None:
        """Record how many final step rows the run has: a later load that finds fewer reports the loss."""
        conn.execute(
            "UPDATE runs SET final_steps = (SELECT count(*) FROM steps WHERE run_id = ?1 AND status IN "
            "('ok', 'error')) WHERE run_id = ?1",
            (run_id,),
        )

    def finish_run(
        self,
        run_id: str,
        status: RunStatus,
        output: str | None,
        output_type: str | None,
        *,
        worker_id: str,
        now: float,
        generation: int | None = None,
    ) -> bool:
        with self._tx() as conn:
            if not self._held(conn, run_id, worker_id, generation):
                return False
            conn.execute(
                "UPDATE runs SET status = ?, output = ?, output_type = ?, waiting_for = NULL, "
                "updated_at = ?, checksum = corral_run_checksum(run_id, function, input, ?, ?) "
                "WHERE run_id = ?",
                (status.value, output, output_type, now, output, output_type, run_id),
            )
            self._count_final(conn, run_id)
            conn.execute("DELETE FROM leases WHERE run_id = ?", (run_id,))
            conn.execute("DELETE FROM timers WHERE run_id = ?", (run_id,))
            return True

    def park_run(
        self,
        run_id: str,
        *,
        signal: str | None,
        wake_at: float | None,
        worker_id: str,
        now: float,
        generation: int | None = None,
    ) -> RunStatus | None:
        with self._tx() as conn:
            if not self._held(conn, run_id, worker_id, generation):
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
            self._count_final(conn, run_id)
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
                # Dropping the lease fences the executing worker's next write (and its next renewal).
                conn.execute(
                    "UPDATE runs SET status = 'cancelled', waiting_for = NULL, updated_at = ? WHERE "
                    "run_id = ?",
                    (now, run_id),
                )
                conn.execute("DELETE FROM timers WHERE run_id = ?", (run_id,))
                conn.execute("DELETE FROM leases WHERE run_id = ?", (run_id,))
            found = self._run_row(conn, run_id)
        assert found is not None
        return found

    def release(self, run_id: str, *, worker_id: str, now: float) -> None:
        with self._tx() as conn:
            conn.execute("DELETE FROM leases WHERE run_id = ? AND worker_id = ?", (run_id, worker_id))

    # -- steps -----------------------------------------------------------------------------------------------
    def load_steps(self, run_id: str) -> list[StepRecord]:
        with self._read() as conn:
            try:
                counted = conn.execute("SELECT final_steps FROM runs WHERE run_id = ?", (run_id,)).fetchone()
                rows = conn.execute(
                    f"SELECT {_STEP_COLUMNS} FROM steps WHERE run_id = ? ORDER BY position", (run_id,)
                ).fetchall()
            except sqlite3.OperationalError as exc:
                if _BAD_TEXT in str(exc):
                    raise self._bad_text("steps", "run_id = ?", (run_id,), run_id) from None
                raise
            steps = [self._step(r) for r in rows]
        final = sum(1 for s in steps if s.status in (StepStatus.OK, StepStatus.ERROR))
        if counted is not None and final < counted[0]:
            last = f"the last one present is step {steps[-1].position}" if steps else "none is present"
            raise self._corrupt(
                run_id,
                None,
                f"{counted[0]} completed steps were recorded but only {final} are present ({last}): "
                f"step rows were lost",
            )
        return steps

    def write_step(self, step: StepRecord, *, generation: int | None = None) -> bool:
        # The hot path: one autocommitted statement (one commit), a cached prepared statement, no transaction
        # bookkeeping in Python. Fenced by the run's status and lease generation inside the same statement.
        row = _step_row(step)
        with self._lock:
            try:
                if generation is None:
                    cur = self._conn.execute(_WRITE_STEP, row)
                else:
                    cur = self._conn.execute(_WRITE_STEP_FENCED, (*row, step.run_id, generation))
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
                "INSERT INTO signals (run_id, name, payload, sent_at, checksum) VALUES (?, ?, ?, ?, ?)",
                (run_id, name, payload, now, signal_checksum(run_id, name, payload)),
            )
            if row[0] == RunStatus.WAITING.value and row[1] == name:
                conn.execute(
                    "UPDATE runs SET status = 'pending', updated_at = ? WHERE run_id = ?", (now, run_id)
                )

    def consume_signal(
        self, run_id: str, name: str, step: StepRecord, *, generation: int | None = None
    ) -> StepRecord | None:
        with self._tx() as conn:
            if generation is not None and conn.execute(_FENCE, (run_id, generation)).fetchone() is None:
                return None
            done = conn.execute(
                "SELECT status FROM steps WHERE run_id = ? AND position = ?", (step.run_id, step.position)
            ).fetchone()
            if done is not None and done[0] in (StepStatus.OK.value, StepStatus.ERROR.value):
                return None
            row = conn.execute(
                "SELECT id, payload, checksum FROM signals WHERE run_id = ? AND name = ? "
                "AND consumed_at IS NULL ORDER BY id LIMIT 1",
                (run_id, name),
            ).fetchone()
            if row is None:
                return None
            if row[2] != signal_checksum(run_id, name, row[1]):
                raise self._corrupt(
                    run_id, step.position, f"the payload of signal {name!r} does not match its checksum"
                )
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
                args_hash=step.args_hash,
            )
            conn.execute(_WRITE_STEP, _step_row(taken))
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
                    "UPDATE runs SET status = 'running', updated_at = ?, generation = generation + 1 "
                    "WHERE run_id = ?",
                    (now, rid),
                )
                conn.execute(
                    "INSERT OR REPLACE INTO leases (run_id, worker_id, expires_at, generation) "
                    "VALUES (?1, ?2, ?3, (SELECT generation FROM runs WHERE run_id = ?1))",
                    (rid, worker_id, now + lease_seconds),
                )
                conn.execute("DELETE FROM timers WHERE run_id = ?", (rid,))
                try:
                    found = self._run_row(conn, rid)
                except JournalCorrupt as exc:
                    # Never execute a damaged input; mark the run failed with the reason, visible to
                    # `corral runs show`, instead of leaving it runnable forever.
                    self._fail_damaged(conn, rid, exc, now)
                    continue
                assert found is not None
                claimed.append(found)
            return claimed

    @staticmethod
    def _fail_damaged(conn: sqlite3.Connection, run_id: str, exc: JournalCorrupt, now: float) -> None:
        output = encode_error(exc)
        conn.execute(
            "UPDATE runs SET status = 'failed', output = ?, output_type = NULL, updated_at = ?, "
            "checksum = corral_run_checksum(run_id, function, input, ?, NULL) WHERE run_id = ?",
            (output, now, output, run_id),
        )
        conn.execute("DELETE FROM leases WHERE run_id = ?", (run_id,))

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
