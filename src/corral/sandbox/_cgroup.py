"""One cgroup per worker (memory + pids + CPU), with a child cgroup for its jobs, on cgroup v1 or v2.

The host moves nothing itself: the launcher joins the worker's cgroup (it is still root then), so the worker,
its bubblewrap parent and every job process are inside from their first instruction. Each job process joins
the worker's *job* cgroup before anything of the job runs (through descriptors of its ``cgroup.procs`` files
the host opened), so the memory, pids and CPU time of the job's whole process tree are counted and limited
there, by the kernel, apart from the worker. Before each job the host sets the job cgroup's limits to the
run's limits and the worker's to its idle usage plus them, so one run's limits never depend on the previous
run and a job cannot take the worker's share.

On v2, where a cgroup with children may hold no processes, the worker's processes live in ``worker`` and the
job's in ``job``, both below the worker's cgroup.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from dataclasses import dataclass
from pathlib import Path

_CGROOT = Path("/sys/fs/cgroup")
#: Job cgroups per worker, used in turn: a job starts while the one before it is still being torn down in the
#: other, so neither's counters include the other's.
JOB_SLOTS = 2


def _read(path: Path) -> str:
    return path.read_text(encoding="ascii").strip()


def _write(path: Path, value: str) -> None:
    path.write_text(value, encoding="ascii")


def _own_cgroups() -> dict[str, str]:
    """controller (or "" for v2) -> this process's cgroup path."""
    out: dict[str, str] = {}
    for line in Path("/proc/self/cgroup").read_text().splitlines():
        _, controllers, path = line.split(":", 2)
        if controllers == "":
            out[""] = path
        for name in controllers.split(","):
            if name:
                out[name] = path
    return out


def cgroup_version() -> int | None:
    """2 when cgroup v2 carries the memory controller, 1 when v1 memory and pids are mounted, else None."""
    if (_CGROOT / "cgroup.controllers").exists():
        return 2
    if (_CGROOT / "memory" / "memory.limit_in_bytes").exists() and (_CGROOT / "pids").is_dir():
        return 1
    return None


@dataclass
class WorkerCgroup:
    """The cgroup directories of one worker and the operations the pool needs on them."""

    version: int
    memory: Path
    pids: Path
    cpu: Path | None = None
    """CPU bandwidth (optional: without it a job is limited in CPU time but not in cores)."""
    cpuacct: Path | None = None
    """CPU time accounting (v1 ``cpuacct``; on v2 the ``cpu`` directory's ``cpu.stat`` counts it)."""

    @property
    def dirs(self) -> list[Path]:
        return sorted({self.memory, self.pids, *(p for p in (self.cpu, self.cpuacct) if p)})

    def job_dirs(self, slot: int | None = None) -> list[Path]:
        """The job cgroups' directories (of one slot, or of all): one per v1 hierarchy, one on v2."""
        found: list[Path] = []
        for n in range(JOB_SLOTS) if slot is None else [slot]:
            if self.version == 2:
                found.append(self.memory / f"job{n}")
            else:
                found += sorted({self.memory / f"job{n}", self.pids / f"job{n}"})
                if self.cpuacct:
                    found.append(self.cpuacct / f"job{n}")
        return found

    def _job_cpu_file(self, slot: int) -> Path | None:
        if self.version == 2:
            return self.memory / f"job{slot}" / "cpu.stat"
        return self.cpuacct / f"job{slot}" / "cpuacct.usage" if self.cpuacct else None

    def open_job_fds(self) -> dict[str, object]:
        """For the worker, per job slot, descriptors opened by root (so their use needs no permission of the
        worker's): ``cgroup_join`` (a job process writes "0" to join) and ``cgroup_cpu`` (read); and
        ``cgroup_procs``, the path of the slot's process list (a v1 list read through one descriptor is
        cached for a second, so the Landlock backend's worker, which sees the cgroup directories, opens it
        afresh)."""
        join, cpu, procs = [], [], []
        for slot in range(JOB_SLOTS):
            join.append(
                [os.open(d / "cgroup.procs", os.O_WRONLY | os.O_CLOEXEC) for d in self.job_dirs(slot)]
            )
            cpu_file = self._job_cpu_file(slot)
            cpu.append(
                os.open(cpu_file, os.O_RDONLY | os.O_CLOEXEC) if cpu_file and cpu_file.exists() else None
            )
            procs.append(str(self.memory / f"job{slot}" / "cgroup.procs"))
        return {"cgroup_join": join, "cgroup_cpu": cpu, "cgroup_procs": procs}

    def job_cpu_ns(self, slot: int) -> int:
        """CPU time the slot's processes used so far, in nanoseconds (measured by the kernel)."""
        path = self._job_cpu_file(slot)
        if path is None:
            return 0
        text = _read(path)
        if self.version == 1:
            return int(text.split()[0])
        for line in text.splitlines():
            key, _, value = line.partition(" ")
            if key == "usage_usec":
                return int(value) * 1000
        return 0

    @classmethod
    def create(cls, name: str, *, delegated: Path | None = None) -> WorkerCgroup:
        """Create ``name`` under the host's own cgroups (or, rootless, below the ``delegated`` v2 cgroup,
        see :func:`prepare_delegated_v2`). Raises ``OSError`` when cgroups are not writable."""
        version = cgroup_version()
        own = _own_cgroups()
        if version == 1:
            memory = _CGROOT / "memory" / own.get("memory", "/").lstrip("/") / name
            pids = _CGROOT / "pids" / own.get("pids", "/").lstrip("/") / name
            memory.mkdir()
            try:
                pids.mkdir()
            except OSError:
                memory.rmdir()
                raise
            optional: list[Path | None] = []
            for controller in ("cpu", "cpuacct"):
                path: Path | None = _CGROOT / controller / own.get(controller, "/").lstrip("/") / name
                try:
                    assert path is not None
                    path.mkdir()
                except OSError:
                    path = None
                optional.append(path)
            made = cls(1, memory, pids, optional[0], optional[1])
            try:
                for job in made.job_dirs():
                    job.mkdir()
            except OSError:
                made.remove()
                raise
            return made
        if version == 2:
            parent = delegated or _CGROOT / own.get("", "/").lstrip("/")
            # v2 forbids processes in a cgroup whose controllers are delegated; use a sibling subtree we own.
            base = parent / "corral-sandbox"
            base.mkdir(exist_ok=True)
            with contextlib.suppress(OSError):
                _write(base / "cgroup.subtree_control", "+memory +pids")
            with contextlib.suppress(OSError):
                _write(base / "cgroup.subtree_control", "+cpu")
            path = base / name
            path.mkdir()
            has_cpu = (path / "cpu.max").exists()
            made = cls(2, path, path, path if has_cpu else None, path)
            try:
                (path / "worker").mkdir()
                for job in made.job_dirs():
                    job.mkdir()
                _write(path / "cgroup.subtree_control", "+memory +pids" + (" +cpu" if has_cpu else ""))
            except OSError:
                made.remove()
                raise
            return made
        raise OSError("no usable cgroup hierarchy (need v2 with memory+pids, or v1 memory and pids)")

    @property
    def procs_files(self) -> list[str]:
        """Where the worker's processes go (the launcher writes its pid there)."""
        if self.version == 2:
            return [str(self.memory / "worker" / "cgroup.procs")]
        return [str(d / "cgroup.procs") for d in self.dirs]

    def memory_usage(self) -> int:
        name = "memory.usage_in_bytes" if self.version == 1 else "memory.current"
        return int(_read(self.memory / name))

    def resident(self) -> int:
        """Memory that cannot be reclaimed: anonymous pages and tmpfs/shm (page cache of read files excluded).

        What a leak would grow; page cache from reading inputs is reclaimable and is not a reason to recycle.
        """
        keys = ("total_rss", "total_shmem") if self.version == 1 else ("anon", "shmem")
        total = 0
        for line in _read(self.memory / "memory.stat").splitlines():
            key, _, value = line.partition(" ")
            if key in keys:
                total += int(value)
        return total

    def pids_current(self) -> int:
        return int(_read(self.pids / "pids.current"))

    def set_limits(self, *, memory_bytes: int, pids: int, job_memory: int, job_pids: int) -> None:
        """Set absolute limits: the worker's (the pool adds its idle usage) and the job cgroups'."""
        self._set_memory(self.memory, memory_bytes)
        _write(self.pids / "pids.max", str(pids))
        for slot in range(JOB_SLOTS):
            self._set_memory(self.memory / f"job{slot}", job_memory)
            _write(self.pids / f"job{slot}" / "pids.max", str(job_pids))

    def _set_memory(self, directory: Path, memory_bytes: int) -> None:
        if self.version == 1:
            # Swap would let a job's memory escape the limit, so memory+swap gets the same cap where the
            # kernel accounts swap. v1 requires memory <= memory+swap at every step: raise memsw first, lower
            # it last.
            memsw = directory / "memory.memsw.limit_in_bytes"
            has_memsw = memsw.exists()
            if has_memsw and memory_bytes > int(_read(memsw)):
                _write(memsw, str(memory_bytes))
            _write(directory / "memory.limit_in_bytes", str(memory_bytes))
            if has_memsw:
                _write(memsw, str(memory_bytes))
        else:
            _write(directory / "memory.max", str(memory_bytes))
            with contextlib.suppress(OSError):
                _write(directory / "memory.swap.max", "0")

    def set_cpu(self, cores: float) -> None:
        """At most ``cores`` CPUs' worth of time per scheduling period (CFS bandwidth), when available."""
        if self.cpu is None:
            return
        period = 100_000
        quota = max(1000, int(cores * period))
        if self.version == 1:
            _write(self.cpu / "cpu.cfs_period_us", str(period))
            _write(self.cpu / "cpu.cfs_quota_us", str(quota))
        else:
            _write(self.cpu / "cpu.max", f"{quota} {period}")

    def throttled(self) -> int:
        """How many scheduling periods the CPU limit throttled this cgroup so far (0 without a CPU limit)."""
        if self.cpu is None:
            return 0
        for line in _read(self.cpu / "cpu.stat").splitlines():
            key, _, value = line.partition(" ")
            if key == "nr_throttled":
                return int(value)
        return 0

    def reset_peak(self, slot: int) -> None:
        """Start a new peak measurement of a job slot (v1: max_usage; v2: memory.peak, kernel >= 6.12)."""
        try:
            if self.version == 1:
                _write(self.memory / f"job{slot}" / "memory.max_usage_in_bytes", "0")
            else:
                _write(self.memory / f"job{slot}" / "memory.peak", "reset")
        except OSError:
            pass

    def peak(self, slot: int) -> int | None:
        """A job slot's peak memory since :meth:`reset_peak`."""
        try:
            name = "memory.max_usage_in_bytes" if self.version == 1 else "memory.peak"
            return int(_read(self.memory / f"job{slot}" / name))
        except (OSError, ValueError):
            return None

    def oom_kills(self, slot: int | None = None) -> int:
        """How many processes the kernel's OOM killer took in the worker's (or a job slot's) cgroup so far."""
        directory = self.memory if slot is None else self.memory / f"job{slot}"
        text = _read(directory / ("memory.oom_control" if self.version == 1 else "memory.events"))
        for line in text.splitlines():
            key, _, value = line.partition(" ")
            if key == "oom_kill":
                return int(value)
        return 0

    def kill_all(self) -> None:
        """SIGKILL every process in the cgroup (v2 has cgroup.kill; v1 is walked until empty)."""
        if self.version == 2:
            with contextlib.suppress(OSError):
                _write(self.memory / "cgroup.kill", "1")
        for _ in range(50):
            pids = self._pids()
            if not pids:
                return
            for pid in pids:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            time.sleep(0.01)

    def _pids(self) -> list[int]:
        found: set[int] = set()
        for path in [*self.dirs, *self.job_dirs(), self.memory / "worker"]:
            with contextlib.suppress(OSError):
                found.update(int(p) for p in _read(path / "cgroup.procs").split())
        return sorted(found)

    def remove(self) -> None:
        """Kill what is left and remove the directories (retrying while the kernel finishes the exits)."""
        self.kill_all()
        for path in [*self.job_dirs(), self.memory / "worker", *self.dirs]:
            for _ in range(100):
                try:
                    path.rmdir()
                    break
                except FileNotFoundError:
                    break
                except OSError:
                    time.sleep(0.01)


def remove_stale() -> list[str]:
    """Remove worker cgroups whose host process is gone (a host that was SIGKILLed cannot clean up itself)."""
    version = cgroup_version()
    own = _own_cgroups()
    if version == 1:
        parents = [_CGROOT / c / own.get(c, "/").lstrip("/") for c in ("memory", "pids", "cpu", "cpuacct")]
    elif version == 2:
        parents = [_CGROOT / own.get("", "/").lstrip("/") / "corral-sandbox"]
    else:
        return []
    removed: list[str] = []
    for parent in parents:
        if not parent.is_dir():
            continue
        for path in parent.glob("corral-*-p*-w*"):
            try:
                host_pid = int(path.name.split("-")[1])
            except (IndexError, ValueError):
                continue
            if host_pid == os.getpid() or Path(f"/proc/{host_pid}").exists():
                continue
            with contextlib.suppress(OSError):
                for child in [f"job{n}" for n in range(JOB_SLOTS)] + ["worker"]:
                    with contextlib.suppress(FileNotFoundError):
                        (path / child).rmdir()
                path.rmdir()  # fails, harmlessly, while anything still runs in it
                removed.append(str(path))
    return removed


@dataclass
class NoCgroup:
    """The rootless backend without cgroup delegation: no cgroup at all, the same interface.

    Memory, pids and CPU time are then limited per job by rlimits in the job's own user namespace (see
    ``corral.sandbox._worker``) and the wall clock; every counter here reads as unknown (0 or ``None``).
    """

    version: int = 0
    cpu: Path | None = None

    @property
    def dirs(self) -> list[Path]:
        return []

    def job_dirs(self, slot: int | None = None) -> list[Path]:
        return []

    def open_job_fds(self) -> dict[str, object]:
        return {}

    @property
    def procs_files(self) -> list[str]:
        return []

    def job_cpu_ns(self, slot: int) -> int:
        return 0

    def memory_usage(self) -> int:
        return 0

    def resident(self) -> int:
        return 0

    def pids_current(self) -> int:
        return 0

    def set_limits(self, *, memory_bytes: int, pids: int, job_memory: int, job_pids: int) -> None:
        return None

    def set_cpu(self, cores: float) -> None:
        return None

    def throttled(self) -> int:
        return 0

    def reset_peak(self, slot: int) -> None:
        return None

    def peak(self, slot: int) -> int | None:
        return None

    def oom_kills(self, slot: int | None = None) -> int:
        return 0

    def kill_all(self) -> None:
        return None

    def remove(self) -> None:
        return None


def delegated_v2() -> Path | None:
    """The cgroup v2 directory this (unprivileged) process may manage, or ``None``.

    A user systemd scope started with ``Delegate=yes`` (``systemd-run --user --scope -p Delegate=yes …``) or
    any subtree handed to the user: this process's own cgroup must be writable by it, with the memory and
    pids controllers available. v2 allows no processes in a cgroup whose controllers are enabled for its
    children, so the caller first moves itself into a ``host`` leaf (see :func:`prepare_delegated_v2`).
    """
    if cgroup_version() != 2:
        return None
    own = _CGROOT / _own_cgroups().get("", "/").lstrip("/")
    if own.name == "host" and os.access(own.parent / "cgroup.subtree_control", os.W_OK):
        own = own.parent  # already prepared by this process
    if not (os.access(own, os.W_OK) and os.access(own / "cgroup.procs", os.W_OK)):
        return None
    try:
        available = _read(own / "cgroup.controllers").split()
    except OSError:
        return None
    return own if {"memory", "pids"} <= set(available) else None


def prepare_delegated_v2() -> Path:
    """Move this process into ``<delegated>/host`` and enable memory, pids (and cpu) below the delegated
    cgroup, so worker cgroups can be made beside it. Raises ``OSError`` when nothing is delegated."""
    own = delegated_v2()
    if own is None:
        raise OSError("no delegated cgroup v2 subtree (memory and pids) writable by this user")
    host = own / "host"
    host.mkdir(exist_ok=True)
    for pid in _read(own / "cgroup.procs").split():
        with contextlib.suppress(OSError):  # every process of the scope moves, v2 needs an empty parent
            _write(host / "cgroup.procs", pid)
    _write(own / "cgroup.subtree_control", "+memory +pids")
    with contextlib.suppress(OSError):
        _write(own / "cgroup.subtree_control", "+cpu")
    return own
