"""The ledger: small records beside a journal whose state changes by compare-and-set.

Some durable facts belong to no single step of a run: a human's decision on an approval is made from outside
the run (a terminal, a web page) and must be recorded exactly once, even when two people click at the same
moment. The ledger stores such records — ``(kind, key)`` → a state and a JSON body — and changes a record's
state only if it is still in the state the caller expects, in one transaction. Run code reads it inside
steps (so replays see what the first execution saw); deciders write it through their own API (e.g.
:class:`corral.guards.Approvals`).

It lives in the journal's own file (a SQLite journal gets a ``ledger`` table next to its runs), so a backup
of the journal holds it too. :func:`ledger_for` gives the ledger of a journal or a run context.

>>> from corral.durable import MemoryJournal
>>> ledger = ledger_for(MemoryJournal())
>>> ledger.insert(LedgerRecord("approval", "a1", "run-1", "pending", "{}", 0.0, 0.0))
True
>>> ledger.transition("approval", "a1", expect="pending", to="decided", data='{"ok": true}', now=1.0).state
'decided'
>>> ledger.transition("approval", "a1", expect="pending", to="decided", data="{}", now=2.0) is None
True
"""

from __future__ import annotations

import sqlite3
import threading
import weakref
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

from corral._errors import UsageError
from corral.durable._side import open_side_connection
from corral.durable.errors import JournalError

if TYPE_CHECKING:
    from corral.durable._context import RunContext
    from corral.durable._journal import Journal

_SCHEMA = """
CREATE TABLE IF NOT EXISTS ledger (
    kind       TEXT NOT NULL,
    key        TEXT NOT NULL,
    run_id     TEXT NOT NULL,
    state      TEXT NOT NULL,
    data       TEXT NOT NULL,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL,
    PRIMARY KEY (kind, key)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS ledger_by_state ON ledger (kind, state, updated_at)
"""


@dataclass(frozen=True, slots=True)
class LedgerRecord:
    """One ledger record: ``data`` is JSON text owned by whoever wrote it; ``state`` is what
    :meth:`Ledger.transition` compares."""

    kind: str
    key: str
    run_id: str
    state: str
    data: str
    created_at: float
    updated_at: float


class Ledger(ABC):
    """Keyed records with compare-and-set state changes. Every method is one atomic operation."""

    @abstractmethod
    def insert(self, record: LedgerRecord) -> bool:
        """Insert ``record``; False (and no change) if ``(kind, key)`` exists."""

    @abstractmethod
    def get(self, kind: str, key: str) -> LedgerRecord | None:
        """The record, or None."""

    @abstractmethod
    def transition(
        self, kind: str, key: str, *, expect: str, to: str, data: str, now: float
    ) -> LedgerRecord | None:
        """If the record's state is ``expect``, set state ``to`` and body ``data``; return the new record.
        None (and no change) if there is no such record or its state is another."""

    @abstractmethod
    def list(
        self, kind: str, *, states: Sequence[str] | None = None, limit: int = 100, offset: int = 0
    ) -> list[LedgerRecord]:
        """Records of ``kind`` (only those in ``states`` if given), most recently changed first."""


class MemoryLedger(Ledger):
    """The ledger of a :class:`~corral.durable.MemoryJournal`: a dict under a lock."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._records: dict[tuple[str, str], LedgerRecord] = {}

    def insert(self, record: LedgerRecord) -> bool:
        with self._lock:
            if (record.kind, record.key) in self._records:
                return False
            self._records[record.kind, record.key] = record
            return True

    def get(self, kind: str, key: str) -> LedgerRecord | None:
        with self._lock:
            return self._records.get((kind, key))

    def transition(
        self, kind: str, key: str, *, expect: str, to: str, data: str, now: float
    ) -> LedgerRecord | None:
        with self._lock:
            record = self._records.get((kind, key))
            if record is None or record.state != expect:
                return None
            record = replace(record, state=to, data=data, updated_at=now)
            self._records[kind, key] = record
            return record

    def list(
        self, kind: str, *, states: Sequence[str] | None = None, limit: int = 100, offset: int = 0
    ) -> list[LedgerRecord]:
        with self._lock:
            found = [
                r for r in self._records.values() if r.kind == kind and (states is None or r.state in states)
            ]
        found.sort(key=lambda r: (r.updated_at, r.key), reverse=True)
        return found[offset : offset + limit]


class SqliteLedger(Ledger):
    """The ledger in the ``ledger`` table of a SQLite journal's file, on a connection of its own.

    Open it on a file the journal has already created (:func:`ledger_for` does): a file holding only the
    ledger table is not a journal, and ``SqliteJournal`` would refuse it.
    """

    def __init__(self, path: str | Path, *, synchronous: str = "normal", busy_timeout: float = 10.0) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        self._conn = open_side_connection(
            self.path, schema=_SCHEMA, what="the ledger", synchronous=synchronous, busy_timeout=busy_timeout
        )
        # Closed when the ledger goes (with its journal, in ledger_for), or by close().
        self._closer = weakref.finalize(self, self._conn.close)

    def _fail(self, exc: sqlite3.Error) -> JournalError:
        return JournalError(f"the ledger in {self.path} failed: {exc}")

    def insert(self, record: LedgerRecord) -> bool:
        with self._lock:
            try:
                cursor = self._conn.execute(
                    "INSERT OR IGNORE INTO ledger VALUES (?, ?, ?, ?, ?, ?, ?)",
                    (
                        record.kind,
                        record.key,
                        record.run_id,
                        record.state,
                        record.data,
                        record.created_at,
                        record.updated_at,
                    ),
                )
            except sqlite3.Error as exc:
                raise self._fail(exc) from exc
            return cursor.rowcount == 1

    def get(self, kind: str, key: str) -> LedgerRecord | None:
        with self._lock:
            try:
                row = self._conn.execute(
                    "SELECT * FROM ledger WHERE kind = ? AND key = ?", (kind, key)
                ).fetchone()
            except sqlite3.Error as exc:
                raise self._fail(exc) from exc
        return None if row is None else LedgerRecord(*row)

    def transition(
        self, kind: str, key: str, *, expect: str, to: str, data: str, now: float
    ) -> LedgerRecord | None:
        # One UPDATE guarded by the expected state: SQLite runs it atomically, so of two deciders racing
        # for one record exactly one sees a changed row.
        with self._lock:
            try:
                row = self._conn.execute(
                    "UPDATE ledger SET state = ?, data = ?, updated_at = ? "
                    "WHERE kind = ? AND key = ? AND state = ? RETURNING *",
                    (to, data, now, kind, key, expect),
                ).fetchone()
            except sqlite3.Error as exc:
                raise self._fail(exc) from exc
        return None if row is None else LedgerRecord(*row)

    def list(
        self, kind: str, *, states: Sequence[str] | None = None, limit: int = 100, offset: int = 0
    ) -> list[LedgerRecord]:
        query = "SELECT * FROM ledger WHERE kind = ?"
        params: list[object] = [kind]
        if states is not None:
            query += f" AND state IN ({', '.join('?' * len(states))})"
            params.extend(states)
        query += " ORDER BY updated_at DESC, key DESC LIMIT ? OFFSET ?"
        params.extend([limit, offset])
        with self._lock:
            try:
                rows = self._conn.execute(query, params).fetchall()
            except sqlite3.Error as exc:
                raise self._fail(exc) from exc
        return [LedgerRecord(*row) for row in rows]

    def close(self) -> None:
        """Close the ledger's connection."""
        with self._lock:
            self._closer()


_LEDGERS: weakref.WeakKeyDictionary[Journal, Ledger] = weakref.WeakKeyDictionary()
_LEDGERS_LOCK = threading.Lock()


def ledger_for(source: Journal | RunContext) -> Ledger:
    """The ledger of a journal (or of the journal a run context writes to): one per journal object.

    A ``SqliteJournal`` gets a :class:`SqliteLedger` in its file (same durability setting); a journal
    without a ``path`` (``MemoryJournal``) a :class:`MemoryLedger` that lives as long as the journal.
    """
    from corral.durable._context import RunContext

    journal = source._journal if isinstance(source, RunContext) else source
    with _LEDGERS_LOCK:
        found = _LEDGERS.get(journal)
        if found is None:
            path = getattr(journal, "path", None)
            if path is None:
                found = MemoryLedger()
            elif isinstance(path, Path):
                found = SqliteLedger(path, synchronous=str(getattr(journal, "synchronous", "normal")))
            else:
                raise UsageError(f"{type(journal).__name__} has no ledger: its 'path' is not a file path")
            _LEDGERS[journal] = found
        return found
