"""Fixtures for the durable layer's tests: a runtime on a fresh journal, with a fake clock."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from corral.durable import FakeClock, Journal, MemoryJournal, Runtime, SqliteJournal


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture(params=["memory", "sqlite"])
def journal(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Journal]:
    j: Journal = MemoryJournal() if request.param == "memory" else SqliteJournal(tmp_path / "journal.sqlite")
    yield j
    j.close()


@pytest.fixture
def rt(journal: Journal, clock: FakeClock) -> Runtime:
    return Runtime(journal, clock=clock)
