"""Both journal backends pass the one conformance suite."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest

from corral.durable import Journal, MemoryJournal, SqliteJournal
from corral.durable.testing import CHECKS, check_journal


def test_memory_journal_conforms() -> None:
    check_journal(MemoryJournal)


def test_sqlite_journal_conforms(tmp_path: Path) -> None:
    counter = itertools.count()
    check_journal(lambda: SqliteJournal(tmp_path / f"j{next(counter)}.sqlite"))


def test_sqlite_full_journal_conforms(tmp_path: Path) -> None:
    counter = itertools.count()
    check_journal(lambda: SqliteJournal(tmp_path / f"j{next(counter)}.sqlite", synchronous="full"))


class _ForgetfulJournal(MemoryJournal):
    """A broken backend: final step rows can be overwritten."""

    def write_step(self, step):  # type: ignore[no-untyped-def]
        self._steps.setdefault(step.run_id, {})[step.position] = step
        return True


def test_the_suite_catches_a_broken_backend() -> None:
    with pytest.raises(AssertionError, match="check_steps: a final row must not be overwritten"):
        check_journal(_ForgetfulJournal)


class _UnfencedJournal(MemoryJournal):
    """A broken backend: writes ignore the lease generation."""

    def write_step(self, step, *, generation=None):  # type: ignore[no-untyped-def]
        return super().write_step(step)


def test_the_suite_catches_a_backend_without_fencing() -> None:
    with pytest.raises(AssertionError, match="check_fencing: a stale holder's write is refused"):
        check_journal(_UnfencedJournal)


@pytest.mark.parametrize("check", CHECKS, ids=lambda c: c.__name__)
def test_each_check_runs_alone(check, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    j: Journal = SqliteJournal(tmp_path / "j.sqlite")
    try:
        check(j)
    finally:
        j.close()
