"""Read-only readers of ``/proc``: processes, threads, TCP sockets, kernel counters, node metrics.

Each reader is bounded (how many processes, how many bytes of a file) and tolerant: a process that exits
while it is read is skipped, never an error. Nothing here redacts; the tools (``_tools``) do, inside the
step that records the output.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import shutil
import subprocess
import time
from collections import Counter
from pathlib import Path

from pydantic import BaseModel, Field

PROC = Path("/proc")
_TICKS = os.sysconf("SC_CLK_TCK")
_PAGE = os.sysconf("SC_PAGE_SIZE")

#: TCP states as ``/proc/net/tcp`` numbers them.
TCP_STATES = {
    "01": "ESTABLISHED",
    "02": "SYN_SENT",
    "03": "SYN_RECV",
    "04": "FIN_WAIT1",
    "05": "FIN_WAIT2",
    "06": "TIME_WAIT",
    "07": "CLOSE",
    "08": "CLOSE_WAIT",
    "09": "LAST_ACK",
    "0A": "LISTEN",
    "0B": "CLOSING",
}


def read_text(path: Path, limit: int = 1 << 20) -> str:
    """Up to ``limit`` bytes of ``path`` as text (undecodable bytes replaced)."""
    with path.open("rb") as f:
        return f.read(limit).decode("utf-8", "replace")


class ProcessInfo(BaseModel):
    """One process, as ``/proc/<pid>`` shows it."""

    pid: int
    ppid: int
    name: str
    cmdline: str
    state: str
    threads: int
    rss_kb: int
    cpu_s: float
    started_s_ago: float
    open_fds: int | None = None
    children: int = 0
    uid: int | None = None
    unit: str | None = None


def _stat_fields(text: str) -> tuple[str, list[str]]:
    # comm may hold spaces and parentheses: it ends at the last ')'.
    name = text[text.index("(") + 1 : text.rindex(")")]
    return name, text[text.rindex(")") + 2 :].split()


def _uptime() -> float:
    return float(read_text(PROC / "uptime").split()[0])


def _unit(pid: int) -> str | None:
    with contextlib.suppress(OSError):
        for line in read_text(PROC / str(pid) / "cgroup", 8192).splitlines():
            tail = line.rsplit("/", 1)[-1]
            if tail.endswith(".service"):
                return tail
    return None


def read_process(pid: int, *, uptime: float | None = None, count_fds: bool = True) -> ProcessInfo | None:
    """The process ``pid``, or None if it is gone or unreadable."""
    base = PROC / str(pid)
    try:
        name, f = _stat_fields(read_text(base / "stat", 4096))
        raw_cmd = (base / "cmdline").read_bytes()[:4096]
        status = read_text(base / "status", 8192)
    except (OSError, ValueError):
        return None
    uid = None
    for line in status.splitlines():
        if line.startswith("Uid:"):
            uid = int(line.split()[1])
    fds = None
    if count_fds:
        with contextlib.suppress(OSError):
            fds = len(os.listdir(base / "fd"))
    up = _uptime() if uptime is None else uptime
    return ProcessInfo(
        pid=pid,
        ppid=int(f[1]),
        name=name,
        cmdline=raw_cmd.replace(b"\0", b" ").decode("utf-8", "replace").strip(),
        state=f[0],
        threads=int(f[17]),
        rss_kb=int(f[21]) * _PAGE // 1024,
        cpu_s=(int(f[11]) + int(f[12])) / _TICKS,
        started_s_ago=round(max(0.0, up - int(f[19]) / _TICKS), 2),
        open_fds=fds,
        uid=uid,
        unit=_unit(pid),
    )


def pids() -> list[int]:
    """Every process id now."""
    return sorted(int(p) for p in os.listdir(PROC) if p.isdigit())


def process_table(*, limit: int = 2000) -> list[ProcessInfo]:
    """Every readable process (at most ``limit``), with its number of children filled in."""
    up = _uptime()
    table = [p for p in (read_process(pid, uptime=up) for pid in pids()[:limit]) if p is not None]
    children = Counter(p.ppid for p in table)
    for p in table:
        p.children = children[p.pid]
    return table


def descendants(root: int, table: list[ProcessInfo]) -> set[int]:
    """``root`` and every process below it in ``table``."""
    kids: dict[int, list[int]] = {}
    for p in table:
        kids.setdefault(p.ppid, []).append(p.pid)
    found, todo = {root}, [root]
    while todo:
        for child in kids.get(todo.pop(), []):
            if child not in found:
                found.add(child)
                todo.append(child)
    return found


class ThreadInfo(BaseModel):
    """One thread of a process: its id, name, state and CPU seconds so far."""

    tid: int
    name: str
    state: str
    cpu_s: float


def threads_of(pid: int, *, limit: int = 512) -> list[ThreadInfo]:
    """The threads of ``pid`` (empty if it is gone)."""
    out: list[ThreadInfo] = []
    with contextlib.suppress(OSError):
        for tid in sorted(os.listdir(PROC / str(pid) / "task"))[:limit]:
            with contextlib.suppress(OSError, ValueError):
                name, f = _stat_fields(read_text(PROC / str(pid) / "task" / tid / "stat", 4096))
                out.append(
                    ThreadInfo(tid=int(tid), name=name, state=f[0], cpu_s=(int(f[11]) + int(f[12])) / _TICKS)
                )
    return out


def environment(pid: int, *, limit: int = 65536) -> list[tuple[str, str]]:
    """The environment ``pid`` started with (unredacted: redact before it leaves the tool)."""
    raw = (PROC / str(pid) / "environ").read_bytes()[:limit]
    pairs = []
    for item in raw.split(b"\0"):
        if b"=" in item:
            k, _, v = item.decode("utf-8", "replace").partition("=")
            pairs.append((k, v))
    return pairs


def open_files(pid: int, *, limit: int = 4096) -> list[str]:
    """The targets of ``pid``'s open descriptors (``socket:[…]``, paths…)."""
    out = []
    with contextlib.suppress(OSError):
        for fd in os.listdir(PROC / str(pid) / "fd")[:limit]:
            with contextlib.suppress(OSError):
                out.append(os.readlink(PROC / str(pid) / "fd" / fd))
    return out


def holders(path: str, *, limit: int = 200_000) -> list[int]:
    """The processes that hold ``path`` open (at most ``limit`` descriptors looked at)."""
    found: list[int] = []
    seen = 0
    for pid in pids():
        with contextlib.suppress(OSError):
            for fd in os.listdir(PROC / str(pid) / "fd"):
                seen += 1
                if seen > limit:
                    return found
                with contextlib.suppress(OSError):
                    if os.readlink(PROC / str(pid) / "fd" / fd) == path:
                        found.append(pid)
                        break
    return found


# -- sockets ----------------------------------------------------------------------------------------------
class TcpSocket(BaseModel):
    """One TCP socket from ``/proc/net/tcp{,6}``. For a LISTEN socket ``rx_queue`` is the accept queue's
    length now."""

    local: str
    remote: str
    state: str
    tx_queue: int
    rx_queue: int
    inode: int
    pid: int | None = None


def _address(hexaddr: str) -> str:
    host, port = hexaddr.split(":")
    if len(host) == 8:
        ip = ".".join(str(int(host[i : i + 2], 16)) for i in (6, 4, 2, 0))
    else:
        words = [host[i : i + 8] for i in range(0, 32, 8)]
        raw = b"".join(bytes.fromhex(w)[::-1] for w in words)
        ip = f"[{ipaddress.IPv6Address(raw)}]"
    return f"{ip}:{int(port, 16)}"


def tcp_sockets(*, limit: int = 50_000) -> list[TcpSocket]:
    """Every TCP socket of this network namespace (IPv4 and IPv6), at most ``limit``."""
    out: list[TcpSocket] = []
    for name in ("tcp", "tcp6"):
        with contextlib.suppress(OSError):
            for line in read_text(PROC / "net" / name, 32 << 20).splitlines()[1:]:
                f = line.split()
                if len(f) < 10 or len(out) >= limit:
                    continue
                tx, rx = (int(x, 16) for x in f[4].split(":"))
                out.append(
                    TcpSocket(
                        local=_address(f[1]),
                        remote=_address(f[2]),
                        state=TCP_STATES.get(f[3], f[3]),
                        tx_queue=tx,
                        rx_queue=rx,
                        inode=int(f[9]),
                    )
                )
    return out


def socket_owners(*, pid_set: set[int] | None = None, limit: int = 200_000) -> dict[int, int]:
    """Socket inode -> owning pid, from ``/proc/*/fd`` (only ``pid_set`` if given)."""
    owners: dict[int, int] = {}
    seen = 0
    for pid in pids() if pid_set is None else sorted(pid_set):
        with contextlib.suppress(OSError):
            for fd in os.listdir(PROC / str(pid) / "fd"):
                seen += 1
                if seen > limit:
                    return owners
                with contextlib.suppress(OSError):
                    target = os.readlink(PROC / str(pid) / "fd" / fd)
                    if target.startswith("socket:["):
                        owners.setdefault(int(target[8:-1]), pid)
    return owners


def listen_backlogs(*, timeout_s: float = 5.0) -> dict[str, int]:
    """Each listening socket's backlog (the accept queue's limit) by local address, from ``ss -ltn``
    (``/proc/net/tcp`` does not show it); empty when ``ss`` is missing or fails."""
    ss = shutil.which("ss")
    if ss is None:
        return {}
    try:
        done = subprocess.run([ss, "-ltnH"], capture_output=True, timeout=timeout_s, check=False)
    except subprocess.TimeoutExpired:
        return {}
    out: dict[str, int] = {}
    for line in done.stdout.decode("utf-8", "replace").splitlines()[:10_000]:
        f = line.split()
        if len(f) >= 4 and f[2].isdigit():
            local = f[3].replace("*:", "0.0.0.0:", 1) if f[3].startswith("*:") else f[3]
            out[local.split("%")[0]] = int(f[2])
    return out


def tcp_ext_counters() -> dict[str, int]:
    """The kernel's TCP extension counters (``/proc/net/netstat`` TcpExt: ListenOverflows, ListenDrops…)."""
    lines = read_text(PROC / "net" / "netstat").splitlines()
    counters: dict[str, int] = {}
    for names, values in zip(lines[::2], lines[1::2], strict=False):
        if names.startswith("TcpExt:"):
            for k, v in zip(names.split()[1:], values.split()[1:], strict=False):
                counters[k] = int(v)
    return counters


# -- node --------------------------------------------------------------------------------------------------
class Mount(BaseModel):
    """One mounted filesystem's space and inode use."""

    mountpoint: str
    fstype: str
    size_mb: float
    used_pct: float
    inodes_used_pct: float


class NodeMetrics(BaseModel):
    """The machine: load, CPU busy share over a short interval, memory, swap, and its real filesystems."""

    load1: float
    load5: float
    cpus: int
    cpu_busy_pct: float
    mem_total_mb: float
    mem_available_mb: float
    swap_used_mb: float
    mounts: list[Mount] = Field(default_factory=list)


_PSEUDO_FS = {
    "proc",
    "sysfs",
    "cgroup",
    "cgroup2",
    "devpts",
    "mqueue",
    "debugfs",
    "tracefs",
    "securityfs",
    "pstore",
    "bpf",
    "autofs",
    "hugetlbfs",
    "fusectl",
    "configfs",
    "binfmt_misc",
    "nsfs",
    "rpc_pipefs",
    "devtmpfs",
    "ramfs",
    "efivarfs",
}


def _cpu_times() -> tuple[int, int]:
    f = [int(x) for x in read_text(PROC / "stat", 4096).splitlines()[0].split()[1:]]
    idle = f[3] + (f[4] if len(f) > 4 else 0)
    return sum(f), idle


def mounts(*, limit: int = 200) -> list[Mount]:
    """Real (non-pseudo) filesystems with their space and inode use."""
    out: list[Mount] = []
    seen: set[str] = set()
    for line in read_text(PROC / "mounts").splitlines()[:2000]:
        f = line.split()
        if len(f) < 3 or f[2] in _PSEUDO_FS or f[1] in seen or len(out) >= limit:
            continue
        seen.add(f[1])
        mountpoint = f[1].replace("\\040", " ")
        try:
            st = os.statvfs(mountpoint)
        except OSError:
            continue
        if st.f_blocks == 0:
            continue
        used = (st.f_blocks - st.f_bfree) / st.f_blocks * 100
        inodes = (st.f_files - st.f_ffree) / st.f_files * 100 if st.f_files else 0.0
        size = st.f_blocks * st.f_frsize / 2**20
        out.append(
            Mount(
                mountpoint=mountpoint,
                fstype=f[2],
                size_mb=round(size, 1),
                used_pct=round(used, 1),
                inodes_used_pct=round(inodes, 1),
            )
        )
    return out


def node_metrics(*, interval: float = 0.5) -> NodeMetrics:
    """Load, CPU busy share over ``interval`` seconds, memory and the real filesystems."""
    total0, idle0 = _cpu_times()
    time.sleep(interval)
    total1, idle1 = _cpu_times()
    busy = 100.0 * (1 - (idle1 - idle0) / max(1, total1 - total0))
    mem: dict[str, int] = {}
    for line in read_text(PROC / "meminfo").splitlines():
        key, _, rest = line.partition(":")
        with contextlib.suppress(ValueError, IndexError):
            mem[key] = int(rest.split()[0])
    load = read_text(PROC / "loadavg").split()
    return NodeMetrics(
        load1=float(load[0]),
        load5=float(load[1]),
        cpus=os.cpu_count() or 1,
        cpu_busy_pct=round(busy, 1),
        mem_total_mb=round(mem.get("MemTotal", 0) / 1024, 1),
        mem_available_mb=round(mem.get("MemAvailable", 0) / 1024, 1),
        swap_used_mb=round((mem.get("SwapTotal", 0) - mem.get("SwapFree", 0)) / 1024, 1),
        mounts=mounts(),
    )
