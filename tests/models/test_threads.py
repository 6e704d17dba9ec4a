"""The thread count of a local-model call follows the idle cores measured just before it."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

from corral.models._threads import (
    CpuTimes,
    count_for,
    idle_cores,
    parse_proc_stat,
    threads_for_call,
    usable_cores,
)


def test_every_core_busy_gives_one_thread() -> None:
    # Spinning processes on every usable core leave no idle core: the call must not spread over them.
    spinners = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(usable_cores())]
    try:
        time.sleep(0.3)
        counts = [threads_for_call(sample_s=0.1) for _ in range(3)]
    finally:
        for p in spinners:
            p.kill()
            p.wait()
    assert counts == [1, 1, 1]


def test_counts_whole_idle_cores() -> None:
    assert [count_for(x, 4) for x in (0.0, 0.9, 1.0, 2.5, 3.9, 9.0)] == [1, 1, 1, 2, 4, 4]


@pytest.mark.parametrize("text", ["", "cpu", "cpu a b c d e", "intr 1 2 3 4 5", "cpu 1 2 3"])
def test_unreadable_proc_stat_is_none(text: str) -> None:
    assert parse_proc_stat(text) is None


def test_no_time_passed_counts_all_cores_idle() -> None:
    same = CpuTimes(idle=5, total=10)
    assert idle_cores(same, same, 2) == 2.0
