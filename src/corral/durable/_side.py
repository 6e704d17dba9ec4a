"""A second connection to a SQLite journal's file, for the tables that live beside its runs.

The ledger and the mailbox store keep their tables in the journal's own file (one file to back up) on a
connection of their own, opened the same way: autocommit, WAL, the journal's durability mode, the schema
created if missing. A failure to open names what was being opened.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

from corral.durable.errors import JournalError


def open_side_connection(
    path: Path, *, schema: str, what: str, synchronous: str = "normal", busy_timeout: float = 10.0
) -> sqlite3.Connection:
    """An autocommit WAL connection to ``path`` with ``schema`` (a script of ``CREATE … IF NOT EXISTS``)."""
    conn: sqlite3.Connection | None = None
    try:
        conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=busy_timeout)
        conn.execute("PRAGMA journal_mode=WAL").fetchone()
        conn.execute(f"PRAGMA synchronous={'FULL' if synchronous == 'full' else 'NORMAL'}")
        conn.executescript(schema)
    except sqlite3.Error as exc:
        if conn is not None:
            conn.close()
        raise JournalError(f"cannot open {what} in {path}: {exc}") from exc
    return conn
