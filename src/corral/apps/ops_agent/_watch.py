"""Watching processes over a few seconds: what only shows as change — memory growth, CPU per thread,
sockets piling up in CLOSE_WAIT, listen queues overflowing."""

from __future__ import annotations

import contextlib
import os
import stat
import time
from collections import Counter

from pydantic import BaseModel, Field

from corral.apps.ops_agent import _procfs as procfs


class ProcSample(BaseModel):
    """One process at one instant of a watch."""

    pid: int
    t: float
    rss_kb: int
    cpu_s: float
    threads: int
    open_fds: int | None
    state: str
    tcp: dict[str, int] = Field(default_factory=dict)
    #: Sizes in bytes of the biggest regular files the process holds open (what it may be filling).
    files: dict[str, int] = Field(default_factory=dict)


def _open_file_sizes(pid: int, *, top: int = 8) -> dict[str, int]:
    sizes: dict[str, int] = {}
    for target in procfs.open_files(pid, limit=1024):
        if target.startswith("/") and not target.startswith(("/dev/", "/proc/", "/sys/")):
            with contextlib.suppress(OSError):
                st = os.stat(target)
                if stat.S_ISREG(st.st_mode):
                    sizes[target] = st.st_size
    return dict(sorted(sizes.items(), key=lambda kv: -kv[1])[:top])


class ThreadLoad(BaseModel):
    """A thread's CPU use over the watch, in cores (1.0 = one core busy all the time)."""

    pid: int
    tid: int
    name: str
    cores: float
    wchan: str = ""
    #: In how many of the samples the thread was running or runnable (state R): a thread that spins on a
    #: crowded machine gets little CPU but is always runnable.
    running: int = 0
    samples: int = 0


class ListenQueue(BaseModel):
    """A listening socket's accept queue at the last sample: ``queued`` of at most ``backlog``."""

    pid: int | None
    local: str
    queued: int
    backlog: int


class Watch(BaseModel):
    """What a watch saw: samples per process, thread loads, listen queues and the kernel's listen-overflow
    counters' growth during the watch."""

    interval_s: float
    samples: dict[int, list[ProcSample]] = Field(default_factory=dict)
    threads: list[ThreadLoad] = Field(default_factory=list)
    listen: list[ListenQueue] = Field(default_factory=list)
    listen_overflows: int = 0
    listen_drops: int = 0
    gone: list[int] = Field(default_factory=list)
    #: Every child pid seen under each watched process during the watch (a supervisor restarting a
    #: crashing child shows many short-lived ones).
    children: dict[int, list[int]] = Field(default_factory=dict)
    #: The children alive at the end of the watch.
    live_children: dict[int, list[int]] = Field(default_factory=dict)


def _wchan(pid: int, tid: int) -> str:
    with contextlib.suppress(OSError):
        return procfs.read_text(procfs.PROC / str(pid) / "task" / str(tid) / "wchan", 128).strip()
    return ""


def _tcp_by_pid(pid_set: set[int]) -> tuple[dict[int, Counter[str]], list[procfs.TcpSocket]]:
    owners = procfs.socket_owners(pid_set=pid_set)
    per: dict[int, Counter[str]] = {pid: Counter() for pid in pid_set}
    mine = []
    for sock in procfs.tcp_sockets():
        pid = owners.get(sock.inode)
        if pid is not None:
            sock.pid = pid
            per[pid][sock.state] += 1
            mine.append(sock)
    return per, mine


def _children(parents: set[int]) -> list[tuple[int, int]]:
    """(parent, child) for every child of ``parents`` now (one pass over ``/proc/*/stat``)."""
    found = []
    for pid in procfs.pids():
        with contextlib.suppress(OSError, ValueError, IndexError):
            text = procfs.read_text(procfs.PROC / str(pid) / "stat", 1024)
            ppid = int(text[text.rindex(")") + 2 :].split()[1])
            if ppid in parents:
                found.append((ppid, pid))
    return found


def _note_children(pid_set: set[int], out: Watch) -> None:
    current = _children(pid_set)
    for pid, child in current:
        seen = out.children.setdefault(pid, [])
        if child not in seen and len(seen) < 200:
            seen.append(child)
    out.live_children = {pid: [c for p, c in current if p == pid] for pid in pid_set}


def _sleep_noting_children(interval_s: float, pid_set: set[int], out: Watch) -> None:
    """Sleep ``interval_s``, looking at the children every 0.1 s meanwhile (short-lived ones show)."""
    deadline = time.monotonic() + interval_s
    while (left := deadline - time.monotonic()) > 0:
        time.sleep(min(0.1, left))
        _note_children(pid_set, out)


def watch(pids: list[int], *, samples: int = 3, interval_s: float = 1.0) -> Watch:
    """Sample ``pids`` ``samples`` times, ``interval_s`` apart (at most 64 processes, 10 samples)."""
    pid_set = set(pids[:64])
    samples = max(2, min(samples, 10))
    out = Watch(interval_s=interval_s, samples={pid: [] for pid in pid_set})
    first_threads: dict[tuple[int, int], float] = {}
    running: Counter[tuple[int, int]] = Counter()
    counters0 = procfs.tcp_ext_counters()
    start = time.monotonic()
    sockets: list[procfs.TcpSocket] = []
    for i in range(samples):
        if i:
            _sleep_noting_children(interval_s, pid_set, out)
        now = round(time.monotonic() - start, 3)
        tcp, sockets = _tcp_by_pid(pid_set)
        _note_children(pid_set, out)
        for pid in sorted(pid_set):
            p = procfs.read_process(pid)
            if p is None:
                if pid not in out.gone:
                    out.gone.append(pid)
                continue
            out.samples[pid].append(
                ProcSample(
                    pid=pid,
                    t=now,
                    rss_kb=p.rss_kb,
                    cpu_s=p.cpu_s,
                    threads=p.threads,
                    open_fds=p.open_fds,
                    state=p.state,
                    tcp=dict(tcp[pid]),
                    files=_open_file_sizes(pid),
                )
            )
            for t in procfs.threads_of(pid):
                if i == 0:
                    first_threads[(pid, t.tid)] = t.cpu_s
                running[(pid, t.tid)] += t.state == "R"
    elapsed = max(1e-3, time.monotonic() - start)
    for pid in sorted(pid_set):
        for t in procfs.threads_of(pid):
            before = first_threads.get((pid, t.tid))
            if before is not None:
                cores = round((t.cpu_s - before) / elapsed, 3)
                out.threads.append(
                    ThreadLoad(
                        pid=pid,
                        tid=t.tid,
                        name=t.name,
                        cores=cores,
                        wchan=_wchan(pid, t.tid),
                        running=running[(pid, t.tid)],
                        samples=samples,
                    )
                )
    counters1 = procfs.tcp_ext_counters()
    out.listen_overflows = counters1.get("ListenOverflows", 0) - counters0.get("ListenOverflows", 0)
    out.listen_drops = counters1.get("ListenDrops", 0) - counters0.get("ListenDrops", 0)
    backlogs = procfs.listen_backlogs() if any(s.state == "LISTEN" for s in sockets) else {}
    out.listen = [
        ListenQueue(pid=s.pid, local=s.local, queued=s.rx_queue, backlog=backlogs.get(s.local, 0))
        for s in sockets
        if s.state == "LISTEN"
    ]
    out.threads.sort(key=lambda t: -t.cores)
    out.threads = out.threads[:64]
    return out
