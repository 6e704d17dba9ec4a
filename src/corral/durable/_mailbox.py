"""Durable mailboxes: the messages between long-lived processes and the processes' own rows, beside a journal.

A process (``corral.agents.System``) handles one message at a time. Handling it ends in one :class:`Batch`
committed in one transaction: the message is deleted (consumed), the process's new row (state, per-receiver
send counters) is written, and the messages it sent are inserted. So a message is consumed exactly when the
handler's result is recorded — never twice, never lost — and many handlings share one commit (group
commit). A message's ``(receiver, sender, seq)`` is unique: a sender that sends again after a crash (the same
seq, because its counter is in its row) is ignored.

The tables live in the journal's own file (like the ledger), on a connection of their own.

>>> store = MemoryMailboxStore()
>>> store.commit(Batch(sent=[Envelope(1, "b", "a", 0, '"hi"', 0.0)], rows={"a": '{"n": 1}'}))
[1]
>>> [(m.receiver, m.body) for m in store.load_messages()]
[('b', '"hi"')]
>>> store.commit(Batch(consumed=[1], sent=[Envelope(2, "b", "a", 0, '"hi"', 0.0)]))
[]
>>> store.load_messages(), store.load_rows()
([], {'a': '{"n": 1}'})
"""

from __future__ import annotations

import fcntl
import os
import sqlite3
import threading
import weakref
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from corral._errors import UsageError
from corral.durable._side import open_side_connection
from corral.durable.errors import JournalError

if TYPE_CHECKING:
    from corral.durable._journal import Journal

_SCHEMA = """
CREATE TABLE IF NOT EXISTS mailbox (
    id        INTEGER PRIMARY KEY,
    receiver  TEXT NOT NULL,
    sender    TEXT NOT NULL,
    seq       INTEGER NOT NULL,
    body      TEXT NOT NULL,
    sent_at   REAL NOT NULL,
    UNIQUE (receiver, sender, seq)
);
CREATE TABLE IF NOT EXISTS processes (
    name TEXT PRIMARY KEY,
    data TEXT NOT NULL
) WITHOUT ROWID
"""
_INSERT = "INSERT OR IGNORE INTO mailbox VALUES (?, ?, ?, ?, ?, ?)"


@dataclass(frozen=True, slots=True)
class Envelope:
    """One stored message. ``id`` orders delivery (the sender's system assigns it); ``body`` is JSON text."""

    id: int
    receiver: str
    sender: str
    seq: int
    body: str
    sent_at: float


@dataclass(slots=True)
class Batch:
    """What one commit changes: messages consumed (by id), messages sent, process rows written (name → JSON
    text) and removed."""

    consumed: list[int] = field(default_factory=list)
    sent: list[Envelope] = field(default_factory=list)
    rows: dict[str, str] = field(default_factory=dict)
    removed: list[str] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.consumed or self.sent or self.rows or self.removed)

    def merge(self, other: Batch) -> None:
        """Add ``other``'s changes after this batch's (a later row of a process replaces an earlier one)."""
        self.consumed.extend(other.consumed)
        self.sent.extend(other.sent)
        self.rows.update(other.rows)
        self.removed.extend(other.removed)


class MailboxStore(ABC):
    """Storage of mailboxes and process rows. ``commit`` is one atomic transaction."""

    @abstractmethod
    def commit(self, batch: Batch) -> list[int]:
        """Apply ``batch`` atomically; the ids of the sent messages that were stored (a duplicate
        ``(receiver, sender, seq)`` is skipped)."""

    @abstractmethod
    def load_messages(self) -> list[Envelope]:
        """Every unconsumed message, by id."""

    @abstractmethod
    def load_rows(self) -> dict[str, str]:
        """Every process row."""

    def depths(self) -> dict[str, int]:
        """How many unconsumed messages each receiver has (receivers with none are left out)."""
        out: dict[str, int] = {}
        for env in self.load_messages():
            out[env.receiver] = out.get(env.receiver, 0) + 1
        return out

    def own(self) -> bool:
        """Become the one runner of these mailboxes; False if another runner holds them."""
        return True

    def disown(self) -> None:  # noqa: B027 - nothing to release for stores without an owner lock
        """Stop being their runner."""

    def close(self) -> None:  # noqa: B027 - optional for stores without resources
        """Release resources."""


class MemoryMailboxStore(MailboxStore):
    """Mailboxes in dicts (tests, examples): gone when the process ends."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._messages: dict[int, Envelope] = {}
        self._keys: set[tuple[str, str, int]] = set()
        self._rows: dict[str, str] = {}

    def commit(self, batch: Batch) -> list[int]:
        stored = []
        with self._lock:
            for mid in batch.consumed:
                self._messages.pop(mid, None)
            for env in batch.sent:
                key = (env.receiver, env.sender, env.seq)
                if key in self._keys:
                    continue
                self._keys.add(key)
                self._messages[env.id] = env
                stored.append(env.id)
            self._rows.update(batch.rows)
            for name in batch.removed:
                self._rows.pop(name, None)
        return stored

    def load_messages(self) -> list[Envelope]:
        with self._lock:
            return [self._messages[i] for i in sorted(self._messages)]

    def load_rows(self) -> dict[str, str]:
        with self._lock:
            return dict(self._rows)


class SqliteMailboxStore(MailboxStore):
    """Mailboxes in the ``mailbox`` and ``processes`` tables of a SQLite journal's file.

    A sender's per-receiver counter is committed in the same transaction as its sends, so a sender that
    runs again after a crash reuses a seq only when the first sends were never stored; the UNIQUE key
    refuses any other resend of a message still queued.
    """

    def __init__(self, path: str | Path, *, synchronous: str = "normal", busy_timeout: float = 10.0) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        self._owner: int | None = None
        self._conn = open_side_connection(
            self.path,
            schema=_SCHEMA,
            what="the mailboxes",
            synchronous=synchronous,
            busy_timeout=busy_timeout,
        )
        self._closer = weakref.finalize(self, self._conn.close)

    def _fail(self, exc: sqlite3.Error) -> JournalError:
        return JournalError(f"the mailboxes in {self.path} failed: {exc}")

    def own(self) -> bool:
        # An exclusive flock on a file beside the journal: released by the kernel when the owner dies, so
        # a crashed runner never blocks its successor.
        with self._lock:
            if self._owner is not None:
                return False
            fd = os.open(f"{self.path}.agents.lock", os.O_RDWR | os.O_CREAT, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                os.close(fd)
                return False
            self._owner = fd
            return True

    def disown(self) -> None:
        with self._lock:
            if self._owner is not None:
                os.close(self._owner)  # closing the descriptor drops its flock
                self._owner = None

    def commit(self, batch: Batch) -> list[int]:
        stored: list[int] = []
        with self._lock:
            conn = self._conn
            try:
                conn.execute("BEGIN IMMEDIATE")
                try:
                    if batch.consumed:
                        conn.executemany("DELETE FROM mailbox WHERE id = ?", [(i,) for i in batch.consumed])
                    stored = self._insert(conn, batch.sent)
                    if batch.rows:
                        conn.executemany("INSERT OR REPLACE INTO processes VALUES (?, ?)", batch.rows.items())
                    if batch.removed:
                        conn.executemany(
                            "DELETE FROM processes WHERE name = ?", [(n,) for n in batch.removed]
                        )
                except BaseException:
                    conn.execute("ROLLBACK")
                    raise
                conn.execute("COMMIT")
            except sqlite3.Error as exc:
                raise self._fail(exc) from exc
        return stored

    @staticmethod
    def _insert(conn: sqlite3.Connection, sent: list[Envelope]) -> list[int]:
        # One executemany for the whole batch; only when some row was a duplicate (never, unless a sender
        # resends) is it redone row by row to learn which ones were stored.
        if not sent:
            return []
        before = conn.total_changes
        conn.execute("SAVEPOINT sent")
        conn.executemany(_INSERT, [(e.id, e.receiver, e.sender, e.seq, e.body, e.sent_at) for e in sent])
        if conn.total_changes - before == len(sent):
            conn.execute("RELEASE sent")
            return [e.id for e in sent]
        conn.execute("ROLLBACK TO sent")
        conn.execute("RELEASE sent")
        stored = []
        for e in sent:
            if conn.execute(_INSERT, (e.id, e.receiver, e.sender, e.seq, e.body, e.sent_at)).rowcount == 1:
                stored.append(e.id)
        return stored

    def load_messages(self) -> list[Envelope]:
        with self._lock:
            try:
                rows = self._conn.execute("SELECT * FROM mailbox ORDER BY id").fetchall()
            except sqlite3.Error as exc:
                raise self._fail(exc) from exc
        return [Envelope(*row) for row in rows]

    def depths(self) -> dict[str, int]:
        with self._lock:
            try:
                query = "SELECT receiver, count(*) FROM mailbox GROUP BY receiver"
                rows = self._conn.execute(query).fetchall()
            except sqlite3.Error as exc:
                raise self._fail(exc) from exc
        return dict(rows)

    def load_rows(self) -> dict[str, str]:
        with self._lock:
            try:
                rows = self._conn.execute("SELECT name, data FROM processes").fetchall()
            except sqlite3.Error as exc:
                raise self._fail(exc) from exc
        return dict(rows)

    def close(self) -> None:
        """Close the store's connection (and give up ownership)."""
        self.disown()
        with self._lock:
            self._closer()


_STORES: weakref.WeakKeyDictionary[Journal, MailboxStore] = weakref.WeakKeyDictionary()
_STORES_LOCK = threading.Lock()


def mailbox_for(journal: Journal) -> MailboxStore:
    """The mailbox store of a journal, one per journal object: a ``SqliteJournal`` gets a
    :class:`SqliteMailboxStore` in its file (same durability setting); a ``MemoryJournal`` a
    :class:`MemoryMailboxStore` that lives as long as the journal."""
    with _STORES_LOCK:
        found = _STORES.get(journal)
        if found is None:
            path = getattr(journal, "path", None)
            if path is None:
                found = MemoryMailboxStore()
            elif isinstance(path, Path):
                found = SqliteMailboxStore(path, synchronous=str(getattr(journal, "synchronous", "normal")))
            else:
                raise UsageError(f"{type(journal).__name__} has no mailboxes: its 'path' is not a file path")
            _STORES[journal] = found
        return found
