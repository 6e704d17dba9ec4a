"""How many threads llama.cpp gets for one call: the cores that are idle right now.

llama.cpp's threads meet at a barrier for every batch, so a thread whose core another process holds makes the
others spin and wait: on 2 cores, two threads double prompt and reply speed on an idle machine and make
replies several times slower when one core is busy (``bench/local_threads.py``; figures in
docs/data-agent.md, Speed). So a fixed count is wrong half the time: :func:`threads_for_call` samples the
CPU's idle time for a moment before each call and uses the cores that were idle (at least one).
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

#: How long the CPU is watched before a call: short against a call's seconds, long enough to see a busy core.
SAMPLE_S = 0.05
#: A core counts as idle when at least this share of it was idle during the sample.
_IDLE_SHARE = 0.8


@dataclass(frozen=True)
class CpuTimes:
    """Jiffies of all CPUs from the first line of /proc/stat: idle (idle + iowait) and total."""

    idle: int
    total: int


def parse_proc_stat(text: str) -> CpuTimes | None:
    """The totals of the ``cpu`` line of /proc/stat, or ``None`` when the text has none that parses.

    >>> parse_proc_stat("cpu  100 0 50 800 50 0 0 0 0 0\\ncpu0 1 2 3 4 5\\n")
    CpuTimes(idle=850, total=1000)
    >>> parse_proc_stat("garbage") is None
    True
    """
    first = text.split("\n", 1)[0].split()
    if len(first) < 5 or first[0] != "cpu":
        return None
    try:
        values = [int(v) for v in first[1:]]
    except ValueError:
        return None
    # user nice system idle iowait irq softirq steal guest guest_nice; guest time is already in user.
    total = sum(values[:8])
    return CpuTimes(idle=values[3] + values[4], total=total)


def idle_cores(before: CpuTimes, after: CpuTimes, cores: int) -> float:
    """Cores' worth of idle time between two samples (``cores`` when nothing was counted).

    >>> idle_cores(CpuTimes(0, 0), CpuTimes(idle=90, total=200), 2)
    0.9
    """
    spent = after.total - before.total
    if spent <= 0:
        return float(cores)
    return cores * (after.idle - before.idle) / spent


def count_for(idle: float, cores: int) -> int:
    """Threads for ``idle`` cores' worth of idle time out of ``cores``: the whole idle cores, at least one.

    >>> count_for(1.9, 2), count_for(1.2, 2), count_for(0.1, 2), count_for(7.5, 8)
    (2, 1, 1, 7)
    """
    whole = int(idle + (1 - _IDLE_SHARE))
    return max(1, min(cores, whole))


def usable_cores() -> int:
    """The cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def _read() -> CpuTimes | None:
    try:
        return parse_proc_stat(Path("/proc/stat").read_text(encoding="ascii", errors="replace"))
    except OSError:
        return None


def threads_for_call(sample_s: float = SAMPLE_S) -> int | None:
    """The threads to use for the next call, or ``None`` where the CPU's times cannot be read (not Linux).

    The whole machine's idle time is spread over the usable cores: an affinity mask narrower than the machine
    is taken as a share of it.
    """
    before = _read()
    if before is None:
        return None
    time.sleep(sample_s)
    after = _read()
    if after is None:
        return None
    machine = os.cpu_count() or 1
    cores = usable_cores()
    idle = idle_cores(before, after, machine) * cores / machine
    return count_for(idle, cores)
