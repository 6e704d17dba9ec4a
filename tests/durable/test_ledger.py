"""The ledger beside the journal: insert once, compare-and-set state changes, listing; both backends."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from corral.durable import (
    Ledger,
    LedgerRecord,
    MemoryJournal,
    MemoryLedger,
    SqliteJournal,
    SqliteLedger,
    ledger_for,
)


@pytest.fixture(params=["memory", "sqlite"])
def ledger(request: pytest.FixtureRequest, tmp_path: Path) -> Ledger:
    if request.param == "memory":
        return ledger_for(MemoryJournal())
    return ledger_for(SqliteJournal(tmp_path / "journal.sqlite"))


def rec(key: str, state: str = "pending", at: float = 0.0) -> LedgerRecord:
    return LedgerRecord("approval", key, "run", state, "{}", at, at)


def test_insert_once(ledger: Ledger) -> None:
    assert ledger.insert(rec("a")) is True
    assert ledger.insert(LedgerRecord("approval", "a", "other", "x", '{"x": 1}', 5.0, 5.0)) is False
    assert ledger.get("approval", "a") == rec("a")
    assert ledger.get("approval", "b") is None and ledger.get("other-kind", "a") is None


def test_transition_is_compare_and_set(ledger: Ledger) -> None:
    ledger.insert(rec("a"))
    changed = ledger.transition("approval", "a", expect="pending", to="decided", data='{"by": 1}', now=2.0)
    assert changed is not None and (changed.state, changed.data, changed.updated_at) == (
        "decided",
        '{"by": 1}',
        2.0,
    )
    assert (
        ledger.transition("approval", "a", expect="pending", to="decided", data='{"by": 2}', now=3.0) is None
    )
    assert ledger.get("approval", "a") == changed
    assert (
        ledger.transition("approval", "missing", expect="pending", to="decided", data="{}", now=1.0) is None
    )


def test_list_by_state_most_recent_first(ledger: Ledger) -> None:
    for i in range(5):
        ledger.insert(rec(f"k{i}", at=float(i)))
    ledger.transition("approval", "k1", expect="pending", to="decided", data="{}", now=10.0)
    assert [r.key for r in ledger.list("approval")] == ["k1", "k4", "k3", "k2", "k0"]
    assert [r.key for r in ledger.list("approval", states=["pending"], limit=2)] == ["k4", "k3"]
    assert [r.key for r in ledger.list("approval", states=["pending"], limit=2, offset=2)] == ["k2", "k0"]
    assert [r.key for r in ledger.list("approval", states=["decided"])] == ["k1"]


def test_one_ledger_per_journal_and_it_survives_reopening(tmp_path: Path) -> None:
    journal = SqliteJournal(tmp_path / "journal.sqlite")
    first = ledger_for(journal)
    assert ledger_for(journal) is first and isinstance(first, SqliteLedger)
    first.insert(rec("a"))
    reopened = SqliteJournal(
        tmp_path / "journal.sqlite"
    )  # the journal accepts its file with the ledger in it
    assert ledger_for(reopened).get("approval", "a") == rec("a")
    memory: Callable[[], Ledger] = lambda: ledger_for(MemoryJournal())  # noqa: E731
    assert isinstance(memory(), MemoryLedger) and memory() is not memory()
