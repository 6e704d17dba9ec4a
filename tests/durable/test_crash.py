"""Crash test with real processes: SIGKILL at random moments, resume, nothing recorded runs twice."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from corral.durable.testing import crash_test


@pytest.mark.parametrize("seed", [1, 2])
def test_sigkill_at_random_moments(tmp_path: Path, seed: int) -> None:
    report = crash_test(tmp_path, kills=10, steps=200, max_delay=0.03, seed=seed)
    assert report.kills == 10
    assert report.counter == report.distinct_keys == 200 * report.runs
    # Each kill can interrupt at most the one step in flight.
    assert report.reexecuted_steps <= report.kills


def test_crash_test_detects_a_step_that_ran_twice(tmp_path: Path) -> None:
    """The checker can fail: forge a second execution of a recorded step by a pid that was not killed."""
    crash_test(tmp_path, kills=1, steps=5, max_delay=0.0, seed=3)
    conn = sqlite3.connect(tmp_path / "counter.sqlite")
    conn.execute("INSERT INTO executions (pid, run_id, position, key) VALUES (1, 'crash-3-0', 0, NULL)")
    conn.commit()
    conn.close()
    with pytest.raises(AssertionError, match="a recorded step ran twice"):
        crash_test(tmp_path, kills=0, steps=5, seed=3)
