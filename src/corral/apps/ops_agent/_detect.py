"""Deterministic detectors: evidence in, ranked hypotheses out, each citing the evidence it rests on.

The model is the least reliable part of the agent, so it does not find causes: these functions do, from
numbers the tools measured (CLOSE_WAIT counts per process, RSS growth over samples, CPU per thread, a
filesystem's use and the file that fills it, restart patterns in logs, listen queues and the kernel's
overflow counter, lock waits in backtraces). Scores are 0–1; a detector that sees nothing returns nothing.
Every input is a redacted tool output (JSON), so detectors read it defensively.
"""

from __future__ import annotations

import itertools
import re
from collections import Counter
from collections.abc import Iterator
from typing import Any

from corral.apps.ops_agent._report import Evidence, Hypothesis, Kind

#: Areas of evidence, and the symptom words that point to each (triage without a model, and the check on
#: the model's triage).
AREAS: dict[str, tuple[str, ...]] = {
    "cpu": ("cpu", "load", "slow", "latency", "hot", "spin", "100%", "busy", "sluggish"),
    "memory": ("memory", "oom", "rss", "leak", "swap", "ram", "grow"),
    "sockets": (
        "connection",
        "socket",
        "close_wait",
        "refused",
        "backlog",
        "accept",
        "reset",
        "pile",
        "timeout",
        "timed out",
        "slow",
        "syn",
    ),
    "disk": ("disk", "space", "full", "inode", "enospc", "no space", "storage", "volume", "write"),
    "logs": (
        "crash",
        "restart",
        "exit",
        "down",
        "flap",
        "dies",
        "died",
        "loop",
        "error",
        "fail",
        "unavailable",
    ),
    "threads": (
        "hang",
        "hung",
        "stuck",
        "freez",
        "not respond",
        "unresponsive",
        "deadlock",
        "blocked",
        "wedged",
        "timeout",
        "slow",
    ),
}
AREA_OF: dict[Kind, str] = {
    "close_wait_leak": "sockets",
    "listen_overflow": "sockets",
    "fd_leak": "sockets",
    "memory_leak": "memory",
    "memory_pressure": "memory",
    "cpu_spin": "cpu",
    "cpu_bound": "cpu",
    "thread_leak": "threads",
    "file_growth": "disk",
    "deadlock": "threads",
    "disk_full": "disk",
    "crash_loop": "logs",
    "crashed": "logs",
    "zombies": "logs",
}


def full_percent(areas: list[str]) -> float:
    """How full a filesystem must be to suspect it: 80 % when the symptom is about disks, else 90 %."""
    return 80.0 if "disk" in areas else 90.0


def triage(symptom: str) -> list[str]:
    """The areas a symptom's words point to (every area when none does)."""
    text = symptom.lower()
    found = [area for area, words in AREAS.items() if any(w in text for w in words)]
    return found or list(AREAS)


# -- reading evidence ---------------------------------------------------------------------------------------
def _of(evidence: list[Evidence], tool: str) -> Iterator[Evidence]:
    return (e for e in evidence if e.tool == tool and e.ok and isinstance(e.data, dict))


def _num(value: Any, default: float = 0.0) -> float:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else default


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _names(evidence: list[Evidence]) -> dict[int, str]:
    names: dict[int, str] = {}
    for e in _of(evidence, "processes"):
        for p in e.data.get("processes", []):
            if isinstance(p, dict) and isinstance(p.get("pid"), int):
                names[p["pid"]] = str(p.get("name", "?"))[:64]
    return names


def _label(pid: int | None, names: dict[int, str]) -> str:
    return f"process {pid} ({names.get(pid or -1, '?')})"


# -- detectors over a watch ---------------------------------------------------------------------------------
def _series(e: Evidence) -> dict[int, list[dict[str, Any]]]:
    out: dict[int, list[dict[str, Any]]] = {}
    samples = e.data.get("samples", {})
    if isinstance(samples, dict):
        for key, rows in samples.items():
            if str(key).isdigit() and isinstance(rows, list):
                out[int(key)] = [r for r in rows if isinstance(r, dict)]
    return out


def _watch_hypotheses(e: Evidence, names: dict[int, str]) -> Iterator[Hypothesis]:
    for pid, rows in _series(e).items():
        if len(rows) < 2:
            continue
        first, last = rows[0], rows[-1]
        span = max(1e-3, _num(last.get("t")) - _num(first.get("t")))
        tcp_last = _dict(last.get("tcp"))
        tcp_first = _dict(first.get("tcp"))
        cw, cw0 = int(_num(tcp_last.get("CLOSE_WAIT"))), int(_num(tcp_first.get("CLOSE_WAIT")))
        if cw >= 5:
            yield Hypothesis(
                id="",
                kind="close_wait_leak",
                pid=pid,
                evidence=[e.id],
                check="rewatch",
                score=min(0.95, 0.55 + cw / 100 + (0.05 if cw > cw0 else 0.0)),
                title=f"{_label(pid, names)} does not close its side of {cw} TCP connections (CLOSE_WAIT)",
                facts={
                    "close_wait": cw,
                    "close_wait_at_start": cw0,
                    "established": int(_num(tcp_last.get("ESTABLISHED"))),
                },
            )
        rss = [_num(r.get("rss_kb")) for r in rows]
        growth = rss[-1] - rss[0]
        rising = all(b >= a for a, b in itertools.pairwise(rss))
        if rising and growth >= max(4096.0, 0.05 * rss[0]):
            slope = growth / 1024 / span
            yield Hypothesis(
                id="",
                kind="memory_leak",
                pid=pid,
                evidence=[e.id],
                check="rewatch",
                score=min(0.95, 0.55 + slope / 50),
                facts={
                    "rss_mb_start": round(rss[0] / 1024, 1),
                    "rss_mb_end": round(rss[-1] / 1024, 1),
                    "growth_mb_per_s": round(slope, 2),
                },
                title=f"{_label(pid, names)} grows its memory {slope:.1f} MB/s "
                f"({rss[0] / 1024:.0f} → {rss[-1] / 1024:.0f} MB in {span:.1f} s) and never gives it back",
            )
        fds = [_num(r.get("open_fds"), -1) for r in rows]
        if min(fds) >= 0 and fds[-1] - fds[0] >= 20 and cw < 5:
            yield Hypothesis(
                id="",
                kind="fd_leak",
                pid=pid,
                evidence=[e.id],
                check="rewatch",
                score=0.5,
                title=f"{_label(pid, names)} opens files without closing them ({fds[0]:.0f} → {fds[-1]:.0f})",
                facts={"open_fds_start": fds[0], "open_fds_end": fds[-1]},
            )
        threads = [_num(r.get("threads")) for r in rows]
        if threads[-1] - threads[0] >= 10 and all(b >= a for a, b in itertools.pairwise(threads)):
            yield Hypothesis(
                id="",
                kind="thread_leak",
                pid=pid,
                evidence=[e.id],
                check="rewatch",
                score=0.55,
                title=f"{_label(pid, names)} starts threads that never end "
                f"({threads[0]:.0f} → {threads[-1]:.0f})",
                facts={"threads_start": threads[0], "threads_end": threads[-1]},
            )
        yield from _file_growth(e, pid, rows, span, names)
    yield from _thread_hypotheses(e, names)
    yield from _listen_hypotheses(e, names)
    yield from _restart_hypotheses(e, names)


def _restart_hypotheses(e: Evidence, names: dict[int, str]) -> Iterator[Hypothesis]:
    """A watched process whose children keep being replaced: a supervisor restarting a crashing child."""
    children, alive = _dict(e.data.get("children")), _dict(e.data.get("live_children"))
    for key, pids in children.items():
        if not str(key).isdigit() or not isinstance(pids, list):
            continue
        samples = len(_series(e).get(int(key), []))
        still = alive.get(key) if isinstance(alive.get(key), list) else []
        ended = [p for p in pids if p not in (still or [])]
        if len(pids) >= 3 and len(ended) >= 2:  # children that come and go
            yield Hypothesis(
                id="",
                kind="crash_loop",
                pid=int(key),
                evidence=[e.id],
                check="rewatch",
                score=min(0.8, 0.45 + 0.05 * len(pids)),
                title=f"{_label(int(key), names)} keeps restarting its child: {len(pids)} different child "
                f"processes during the watch, {len(ended)} of them already gone",
                facts={
                    "children_seen": len(pids),
                    "children_ended": len(ended),
                    "samples": samples,
                    "repeated_failure": "",
                },
            )


def _file_growth(
    e: Evidence, pid: int, rows: list[dict[str, Any]], span: float, names: dict[int, str]
) -> Iterator[Hypothesis]:
    first, last = _dict(rows[0].get("files")), _dict(rows[-1].get("files"))
    grown = {p: _num(last[p]) - _num(first.get(p)) for p in last if p in first}
    if not grown:
        return
    path, growth = max(grown.items(), key=lambda kv: kv[1])
    rate = growth / 2**20 / span
    if growth >= 8 * 2**20 or rate >= 1.0:
        yield Hypothesis(
            id="",
            kind="file_growth",
            pid=pid,
            path=str(path)[:4096],
            evidence=[e.id],
            check="rewatch",
            score=min(0.85, 0.45 + rate / 20),
            title=f"{_label(pid, names)} writes {path} at {rate:.1f} MB/s "
            f"({_num(last[path]) / 2**20:.0f} MB now)",
            facts={
                "file": str(path),
                "mb_per_s": round(rate, 2),
                "size_mb": round(_num(last[path]) / 2**20, 1),
            },
        )


def _thread_hypotheses(e: Evidence, names: dict[int, str]) -> Iterator[Hypothesis]:
    threads = [t for t in e.data.get("threads", []) if isinstance(t, dict)]
    per_pid: dict[int, float] = {}
    for t in threads:
        pid = int(_num(t.get("pid")))
        per_pid[pid] = per_pid.get(pid, 0.0) + _num(t.get("cores"))
    reported: set[int] = set()
    for t in threads:
        cores, pid = _num(t.get("cores")), int(_num(t.get("pid")))
        samples = int(_num(t.get("samples")))
        always_running = samples >= 2 and _num(t.get("running")) >= samples - (1 if samples > 2 else 0)
        if (cores >= 0.3 or (cores >= 0.05 and always_running)) and pid not in reported:
            cores_seen = cores
            cores = max(cores, 0.5) if always_running else cores
            reported.add(pid)
            tid = int(_num(t.get("tid")))
            yield Hypothesis(
                id="",
                kind="cpu_spin",
                pid=pid,
                evidence=[e.id],
                check="backtrace",
                score=min(0.9, 0.45 + 0.45 * min(1.0, cores)),
                title=f"thread {tid} of {_label(pid, names)} burns {cores_seen:.2f} of a core"
                + (" and is always runnable" if always_running else ""),
                facts={
                    "tid": tid,
                    "thread_name": str(t.get("name", ""))[:64],
                    "cores": cores_seen,
                    "process_cores": round(per_pid.get(pid, 0.0), 3),
                },
            )
    for pid, cores in per_pid.items():
        if cores >= 0.8 and pid not in reported:
            yield Hypothesis(
                id="",
                kind="cpu_bound",
                pid=pid,
                evidence=[e.id],
                score=min(0.8, 0.4 + cores / 5),
                title=f"{_label(pid, names)} keeps {cores:.2f} cores busy across its threads",
                facts={"process_cores": round(cores, 3)},
            )
    blocked: Counter[int] = Counter()
    total: Counter[int] = Counter()
    for t in threads:
        pid = int(_num(t.get("pid")))
        total[pid] += 1
        if "futex" in str(t.get("wchan", "")) and _num(t.get("cores")) < 0.01:
            blocked[pid] += 1
    for pid, n in blocked.items():
        if n >= 2 and per_pid.get(pid, 0.0) < 0.05 and pid not in reported:
            yield Hypothesis(
                id="",
                kind="deadlock",
                pid=pid,
                evidence=[e.id],
                check="backtrace",
                score=0.3,
                title=f"{_label(pid, names)} is idle with {n} of {total[pid]} threads waiting on futexes",
                facts={"futex_waiters": n, "threads": total[pid]},
            )


def _listen_hypotheses(e: Evidence, names: dict[int, str]) -> Iterator[Hypothesis]:
    overflows = int(_num(e.data.get("listen_overflows")))
    queues = [q for q in e.data.get("listen", []) if isinstance(q, dict)]
    full = [
        q for q in queues if _num(q.get("backlog")) > 0 and _num(q.get("queued")) >= _num(q.get("backlog"))
    ]
    if not full and overflows > 0:  # backlog unknown (no ss): a waiting queue while the kernel drops
        full = [q for q in queues if _num(q.get("queued")) > 0]
    for q in full:
        pid = q.get("pid") if isinstance(q.get("pid"), int) else None
        yield Hypothesis(
            id="",
            kind="listen_overflow",
            pid=pid,
            evidence=[e.id],
            check="rewatch",
            score=0.6 + (0.3 if overflows > 0 else 0.0),
            title=f"{_label(pid, names)} does not accept connections fast enough: its listen queue on "
            f"{q.get('local')} is full ({int(_num(q.get('queued')))}/{int(_num(q.get('backlog')))}), "
            f"and the kernel dropped {overflows} connection attempts meanwhile",
            facts={
                "local": str(q.get("local")),
                "queued": q.get("queued"),
                "backlog": q.get("backlog"),
                "listen_overflows": overflows,
            },
        )


# -- detectors over other evidence --------------------------------------------------------------------------
_CRASH = re.compile(
    r"traceback|exception|panic|fatal|segmentation fault|core dumped|exited|exit (?:code|status)"
    r"|killed|crash|abort|main process exited",
    re.IGNORECASE,
)
_START = re.compile(
    r"\bstart(?:ing|ed)\b|listening on|booting|initiali[sz]|ready to accept|restart", re.IGNORECASE
)
_SYSTEMD_RESTART = re.compile(r"restart counter is at (\d+)")


def _normal(line: str) -> str:
    line = re.sub(r"^\S*\d{2}:\d{2}:\d{2}\S*\s*", "", line)
    return re.sub(r"0x[0-9a-f]+|\d+", "N", line)[:200]


def _log_hypotheses(evidence: list[Evidence]) -> Iterator[Hypothesis]:
    for e in (*_of(evidence, "read_log"), *_of(evidence, "journal")):
        lines = [str(x) for x in e.data.get("lines", [])]
        crashes = [x for x in lines if _CRASH.search(x)]
        starts = [x for x in lines if _START.search(x)]
        counter = max((int(m.group(1)) for x in lines for m in [_SYSTEMD_RESTART.search(x)] if m), default=0)
        cycles = max(min(len(crashes), len(starts)), counter)
        if cycles < 3:
            continue
        common = Counter(_normal(x) for x in crashes).most_common(1)
        worst = next((x for x in crashes if _normal(x) == common[0][0]), "") if common else ""
        yield Hypothesis(
            id="",
            kind="crash_loop",
            evidence=[e.id],
            path=str(e.data.get("source", ""))[:300],
            score=min(0.9, 0.5 + 0.05 * cycles),
            title=f"the service crashes and restarts over and over ({cycles} cycles in "
            f"{e.data.get('source')}); "
            f"the repeated failure: {worst[:200]!r}",
            facts={
                "cycles": cycles,
                "crash_lines": len(crashes),
                "start_lines": len(starts),
                "repeated_failure": worst[:300],
            },
        )


def _crash_hypotheses(evidence: list[Evidence]) -> Iterator[Hypothesis]:
    for e in _of(evidence, "backtraces"):
        signal = e.data.get("signal")
        if not isinstance(signal, str):
            continue
        threads = [t for t in e.data.get("threads", []) if isinstance(t, dict)]
        hit = next(
            (t for t in threads if t.get("number") == e.data.get("thread")), threads[0] if threads else {}
        )
        frames = [str(f.get("function")) for f in hit.get("frames", []) if isinstance(f, dict)][:8]
        known = [f for f in frames if f != "??"]
        where = " ← ".join(known[:4]) if known else "an unknown frame (no symbols)"
        yield Hypothesis(
            id="",
            kind="crashed",
            evidence=[e.id],
            score=0.85 if known else 0.6,
            title=f"the process crashed with {signal} ({str(e.data.get('signal_text', ''))[:60]}) in {where}",
            facts={"signal": signal, "backtrace": frames, "core_id": str(e.data.get("core_id", ""))},
        )


def _disk_hypotheses(evidence: list[Evidence], full_pct: float) -> Iterator[Hypothesis]:
    walks = list(_of(evidence, "disk_usage"))
    writers = {str(e.data.get("path")): e for e in _of(evidence, "who_has_open")}
    for e in _of(evidence, "node_metrics"):
        for m in e.data.get("mounts", []):
            if not isinstance(m, dict):
                continue
            used, inodes = _num(m.get("used_pct")), _num(m.get("inodes_used_pct"))
            if max(used, inodes) < full_pct:
                continue
            mountpoint = str(m.get("mountpoint"))
            cited, facts = (
                [e.id],
                {
                    "mountpoint": mountpoint,
                    "used_pct": used,
                    "inodes_used_pct": inodes,
                    "size_mb": m.get("size_mb"),
                },
            )
            title = f"the filesystem {mountpoint} is {max(used, inodes):.0f}% full" + (
                " (inodes)" if inodes > used else ""
            )
            score, path, pid = 0.55, None, None
            walk = next((w for w in walks if str(w.data.get("root")) == mountpoint), None)
            if walk is not None:
                cited.append(walk.id)
                big = next((f for f in walk.data.get("biggest", []) if isinstance(f, dict)), None)
                size_mb = _num(m.get("size_mb")) * used / 100
                crowded = next((d for d in walk.data.get("most_files", []) if isinstance(d, dict)), None)
                if inodes > used and crowded:  # out of inodes: many small files, not one big one
                    score = 0.8
                    facts.update(directory=str(crowded.get("path")), files=crowded.get("files"))
                    title += f": {crowded.get('path')} holds {int(_num(crowded.get('files')))} files"
                elif big and _num(big.get("size_mb")) >= 0.3 * size_mb:
                    path = str(big.get("path"))
                    score = 0.8 + (0.1 if _num(big.get("modified_s_ago"), 1e9) < 120 else 0.0)
                    facts.update(
                        file=path, file_mb=big.get("size_mb"), file_modified_s_ago=big.get("modified_s_ago")
                    )
                    title += f": {path} takes {_num(big.get('size_mb')):.0f} MB of it"
                    writer = writers.get(path)
                    if writer is not None:
                        cited.append(writer.id)
                        holders = [p for p in writer.data.get("pids", []) if isinstance(p, int)]
                        if holders:
                            pid = holders[0]
                            facts["writers"] = holders[:10]
                            title += f", written by process {pid}"
            yield Hypothesis(
                id="",
                kind="disk_full",
                score=score,
                evidence=cited,
                path=path,
                pid=pid,
                title=title,
                facts=facts,
            )


def _process_hypotheses(evidence: list[Evidence]) -> Iterator[Hypothesis]:
    for e in _of(evidence, "processes"):
        table = [p for p in e.data.get("processes", []) if isinstance(p, dict)]
        zombies = [z for z in e.data.get("zombies", []) if isinstance(z, int)]
        parents = Counter(p.get("ppid") for p in table if p.get("pid") in zombies)
        for ppid, n in parents.items():
            if isinstance(ppid, int) and n >= 3:
                yield Hypothesis(
                    id="",
                    kind="zombies",
                    pid=ppid,
                    evidence=[e.id],
                    score=0.5 + min(0.3, n / 100),
                    title=f"process {ppid} does not reap its children: {n} zombies",
                    facts={"zombies": n},
                )
    for e in _of(evidence, "node_metrics"):
        total, avail = _num(e.data.get("mem_total_mb")), _num(e.data.get("mem_available_mb"))
        if total and avail / total < 0.1:
            yield Hypothesis(
                id="",
                kind="memory_pressure",
                evidence=[e.id],
                score=0.5,
                title=f"the machine is short of memory: {avail:.0f} of {total:.0f} MB available",
                facts={"mem_available_mb": avail, "mem_total_mb": total},
            )


# -- backtraces ---------------------------------------------------------------------------------------------
LOCK_WAIT = (
    "lll_lock_wait",
    "pthread_mutex_lock",
    "pthread_rwlock_rdlock",
    "pthread_rwlock_wrlock",
    "PyThread_acquire_lock",
    "acquire_timed",
    "lock_PyThread_acquire_lock",
    "sem_wait",
    "new_sem_wait",
    "do_futex_wait",
    "std::mutex::lock",
    "futex_lock",
    "lll_lock",
)
IO_WAIT = frozenset(
    {
        "epoll_wait",
        "epoll_pwait",
        "poll",
        "ppoll",
        "select",
        "pselect",
        "pselect6",
        "accept",
        "accept4",
        "recv",
        "recvfrom",
        "recvmsg",
        "libc_recv",
        "read",
        "libc_read",
        "nanosleep",
        "clock_nanosleep",
        "sleep",
        "pause",
        "sigwait",
        "sigtimedwait",
        "sigsuspend",
        "pthread_cond_wait",
        "pthread_cond_timedwait",
        "pthread_cond_clockwait",
        "wait4",
        "waitpid",
        "waitid",
        "pthread_join",
        "pthread_clockjoin_ex",
        "io_getevents",
        "msgrcv",
        "semop",
        "semtimedop",
        "usleep",
    }
)


def _base(function: str) -> str:
    name = function.split("(")[0]
    return re.sub(r"^_*(?:GI_+)?", "", name).removesuffix("64")


def wait_kind(frames: list[dict[str, Any]], depth: int = 12) -> str:
    """``lock`` when a thread waits to take a lock, ``io`` when it waits for I/O, time, a condition or a
    child, ``running`` otherwise (the innermost frame that decides wins).

    >>> wait_kind([{"function": "__GI___clock_nanosleep"}, {"function": "serve"}])
    'io'
    >>> wait_kind([{"function": "futex_wait"}, {"function": "__lll_lock_wait"}, {"function": "transfer"}])
    'lock'
    >>> wait_kind([{"function": "compute_checksums"}, {"function": "start_thread"}])
    'running'
    """
    for frame in frames[:depth]:
        name = _base(str(frame.get("function", "")))
        if name in IO_WAIT:
            return "io"
        if any(w in name for w in LOCK_WAIT):
            return "lock"
    return "running"


def judge_backtraces(h: Hypothesis, e: Evidence) -> Hypothesis:
    """``h`` (a cpu_spin or deadlock hypothesis) rescored from the backtraces in ``e``."""
    threads = [t for t in e.data.get("threads", []) if isinstance(t, dict)]
    kinds = {
        int(_num(t.get("tid"))): wait_kind([f for f in t.get("frames", []) if isinstance(f, dict)])
        for t in threads
    }
    stacks = {
        int(_num(t.get("tid"))): [str(f.get("function")) for f in t.get("frames", []) if isinstance(f, dict)][
            :10
        ]
        for t in threads
    }
    out = h.model_copy(deep=True)
    out.checked = True
    out.evidence = [*h.evidence, e.id]
    if h.kind == "cpu_spin":
        tid = int(_num(h.facts.get("tid")))
        out.facts["backtrace"] = stacks.get(tid, [])
        if kinds.get(tid) == "running":
            out.score = min(0.95, h.score + 0.1)
            out.title += f"; its backtrace shows it running in {' ← '.join(stacks.get(tid, [])[:4]) or '?'}"
        elif tid in kinds:
            out.score = h.score * 0.5
            out.title += "; but its backtrace shows it waiting"
        return out
    lockers = sorted(t for t, k in kinds.items() if k == "lock")
    io = sorted(t for t, k in kinds.items() if k == "io")
    out.facts.update(lock_waiters=lockers, io_waiters=io, backtraces={str(t): stacks[t] for t in lockers[:8]})
    if len(lockers) >= 2:
        out.score = 0.9 if not io else 0.7
        out.title = (
            f"{h.title.split(' is idle')[0]} is deadlocked: threads {', '.join(map(str, lockers[:6]))} each "
            f"wait to take a lock and none runs"
        )
    else:
        out.score = 0.1
        out.title += "; its backtraces show no lock waits"
    return out


# -- all together -------------------------------------------------------------------------------------------
def detect(evidence: list[Evidence], areas: list[str]) -> list[Hypothesis]:
    """Every hypothesis the evidence supports, best first, numbered ``H1``…; a hypothesis in an area the
    symptom points to gets a small bonus."""
    names = _names(evidence)
    found: list[Hypothesis] = []
    watches = list(_of(evidence, "watch_processes"))
    if watches:
        found.extend(_watch_hypotheses(watches[0], names))
    found.extend(_log_hypotheses(evidence))
    found.extend(_crash_hypotheses(evidence))
    found.extend(_disk_hypotheses(evidence, full_percent(areas)))
    found.extend(_process_hypotheses(evidence))
    for h in found:
        if h.kind == "deadlock" and "threads" not in areas:
            h.score = 0.2  # idle with futex waiters is common: worth a core dump only when something hangs
        elif AREA_OF[h.kind] in areas:
            h.score = round(min(0.98, h.score + 0.05), 3)
    return renumber(found)


def renumber(hypotheses: list[Hypothesis]) -> list[Hypothesis]:
    """Best first (ties broken by kind and pid, so the order is deterministic), ids ``H1``…"""
    ranked = sorted(hypotheses, key=lambda h: (-h.score, h.kind, h.pid or 0, h.path or ""))
    for i, h in enumerate(ranked, 1):
        h.id = f"H{i}"
    return ranked
