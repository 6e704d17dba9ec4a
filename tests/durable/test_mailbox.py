"""The mailbox store beside a journal: one atomic commit per batch, duplicates refused, rows kept."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from corral.durable import (
    Batch,
    Envelope,
    JournalError,
    MailboxStore,
    MemoryJournal,
    MemoryMailboxStore,
    SqliteJournal,
    SqliteMailboxStore,
    mailbox_for,
)


def env(i: int, to: str = "b", sender: str = "a", seq: int | None = None) -> Envelope:
    return Envelope(i, to, sender, i if seq is None else seq, f'"m{i}"', float(i))


@pytest.fixture(params=["memory", "sqlite"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> MailboxStore:
    if request.param == "memory":
        return MemoryMailboxStore()
    return mailbox_for(SqliteJournal(tmp_path / "j.db"))


def test_commit_consume_and_rows(store: MailboxStore) -> None:
    assert store.commit(Batch(sent=[env(1), env(2), env(3, to="c")], rows={"a": "{}"})) == [1, 2, 3]
    assert [m.id for m in store.load_messages()] == [1, 2, 3]
    assert store.depths() == {"b": 2, "c": 1}
    store.commit(Batch(consumed=[1, 3], rows={"b": '{"n": 1}'}, removed=["a"]))
    assert store.load_messages() == [env(2)]
    assert store.load_rows() == {"b": '{"n": 1}'}


def test_a_resend_with_the_same_sender_seq_is_refused(store: MailboxStore) -> None:
    store.commit(Batch(sent=[env(1, seq=0)]))
    # The same (receiver, sender, seq) again, beside a new message: only the new one is stored.
    assert store.commit(Batch(sent=[env(2, seq=0), env(3, seq=1)])) == [3]
    assert [m.id for m in store.load_messages()] == [1, 3]


def test_sqlite_commit_is_all_or_nothing(tmp_path: Path) -> None:
    journal = SqliteJournal(tmp_path / "j.db")
    store = mailbox_for(journal)
    store.commit(Batch(sent=[env(1)], rows={"a": "{}"}))
    bad = Batch(consumed=[1], sent=[env(2)], rows={"a": '{"n": 2}'})
    bad.rows["b"] = None  # type: ignore[assignment]  # violates NOT NULL: the whole batch must roll back
    with pytest.raises(JournalError):
        store.commit(bad)
    assert [m.id for m in store.load_messages()] == [1]
    assert store.load_rows() == {"a": "{}"}
    # The tables live in the journal's own file.
    with sqlite3.connect(tmp_path / "j.db") as conn:
        assert conn.execute("SELECT count(*) FROM mailbox").fetchone() == (1,)
    conn.close()


def test_mailbox_for_gives_one_store_per_journal(tmp_path: Path) -> None:
    memory = MemoryJournal()
    assert mailbox_for(memory) is mailbox_for(memory)
    assert isinstance(mailbox_for(memory), MemoryMailboxStore)
    assert isinstance(mailbox_for(SqliteJournal(tmp_path / "j.db")), SqliteMailboxStore)
