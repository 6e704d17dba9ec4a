"""The host's side of the Landlock backend: per-worker directories, per-job filesystems, worker launch.

Without user namespaces a job cannot mount its own ``/work`` and ``/tmp``; the host (root) does it instead.
Per pool it makes one base directory (mode 711, bind-mounted on itself and made a shared mount, so that
mounts below it reach the workers' slave mount namespaces); per worker a root-owned directory (``/run/corral``
in the worker's view) holding the worker's home; per job a directory ``j<N>`` with a fresh size- and
inode-capped tmpfs on ``work`` and on ``tmp`` (owned by the worker's uid, mode 700) and an empty ``data``
directory for the links to the inputs, and the link ``cur`` pointed at it, through which the job's
``/work``, ``/tmp`` and ``/data`` resolve. After the job (the worker has killed every other process of its
uid by then) the host unmounts both filesystems and removes the directory.

Rootless (the host is not root, and has no user namespaces: the reason this backend was chosen) nothing can
be mounted and no uid switched to: the base directory is the user's own (mode 700), a worker's directory is
named after the worker, a job's ``work``, ``tmp`` and ``data`` are plain directories (no size or inode
cap), and the worker runs as the user, with the host's filesystem in view; Landlock alone keeps each job to
its runtime and its own directories.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import ctypes
import json
import os
import shutil
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from corral.sandbox import _landlock, _launcher_landlock
from corral.sandbox._types import Limits

MS_NOSUID = 2
MS_NODEV = 4
MS_BIND = 4096
MS_SHARED = 1 << 20
MNT_DETACH = 2

_libc = ctypes.CDLL(None, use_errno=True)
_libc.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong, ctypes.c_char_p]
_libc.umount2.argtypes = [ctypes.c_char_p, ctypes.c_int]

#: Files a job may read besides the runtime: the loader's cache, numpy's alternatives, the timezone.
READ_ONLY_FILES = ["/etc/ld.so.cache", "/etc/alternatives", "/etc/localtime"]
#: Devices a job may open (read and write as files; no ioctl rights, no creation).
DEVICES = ["/dev/null", "/dev/zero", "/dev/full", "/dev/urandom", "/dev/random"]
#: System directories a job may read and execute from (shared libraries, zoneinfo, fonts).
SYSTEM_DIRS = ["/usr", "/lib", "/lib64", "/lib32", "/libx32", "/bin", "/sbin"]


def _mount(src: str | None, target: str, fstype: str | None, flags: int, data: str | None = None) -> None:
    rc = _libc.mount(
        src.encode() if src else None,
        target.encode(),
        fstype.encode() if fstype else None,
        flags,
        data.encode() if data else None,
    )
    if rc != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"mount {fstype or src} on {target}: {os.strerror(err)}")


def _umount(target: str) -> None:
    if _libc.umount2(target.encode(), MNT_DETACH) != 0:
        err = ctypes.get_errno()
        if err not in (22, 2):  # EINVAL: not a mount point; ENOENT: gone
            raise OSError(err, f"umount {target}: {os.strerror(err)}")


@dataclass
class JobDirs:
    """One job's directory on the host: ``root`` (root-owned) holding ``work``, ``tmp`` and ``data``."""

    root: Path

    @property
    def work(self) -> Path:
        return self.root / "work"

    @property
    def tmp(self) -> Path:
        return self.root / "tmp"

    @property
    def data(self) -> Path:
        return self.root / "data"


class LandlockHost:
    """Directories and mounts of one pool of the Landlock backend."""

    def __init__(self, base: Path, *, rootless: bool = False) -> None:
        self.base = base
        self.rootless = rootless
        # Unmounting costs an RCU grace period (~10 ms): done off the caller's critical path, in order.
        self._finisher = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="corral-landlock")

    @classmethod
    def create(cls, *, rootless: bool = False) -> LandlockHost:
        remove_stale()
        base = Path(tempfile.mkdtemp(prefix=f"corral-landlock-{os.getpid()}-"))
        if rootless:
            return cls(base, rootless=True)  # mode 700: the user's own, nothing to mount
        base.chmod(0o711)
        try:
            _mount(str(base), str(base), None, MS_BIND)
            _mount(None, str(base), None, MS_SHARED)
        except OSError:
            _umount(str(base))
            base.rmdir()
            raise
        return cls(base)

    def close(self) -> None:
        self._finisher.shutdown(wait=True)
        _remove_base(self.base)

    def worker_dir(self, key: str, uid: int) -> Path:
        """The worker's root-owned directory (``/run/corral`` inside) with its home (``home``) in it; named
        after the worker's uid as root, after the worker rootless (every worker has the user's uid)."""
        top = self.base / key
        top.mkdir(mode=0o711, exist_ok=True)
        home = top / "home"
        home.mkdir(mode=0o700, exist_ok=True)
        if not self.rootless:
            os.chown(home, uid, uid)
        return top

    def launch_argv(
        self,
        *,
        key: str,
        uid: int,
        exe: str,
        binds: list[tuple[str, str]],
        cgroup_procs: list[str],
        cgroup_dirs: list[str],
        stage: str,
        worker_source: str,
        worker_config: dict[str, Any],
        env: dict[str, str],
    ) -> list[str]:
        """The command line that starts a worker: the Landlock launcher, as root, with its configuration."""
        worker_dir = self.worker_dir(key, uid)
        run = str(worker_dir) if self.rootless else "/run/corral"  # rootless: no view of its own
        home = run + "/home"
        worker_env = dict(env, HOME=home, TMPDIR=home, MPLCONFIGDIR=home + "/matplotlib")
        landlock = {
            "source": Path(_landlock.__file__).read_text(),
            "read_exec": [*(host if self.rootless else inside for host, inside in binds), *SYSTEM_DIRS],
            # Its own cgroup's limits too: DuckDB and others size themselves from them.
            "read_only": [*READ_ONLY_FILES, *(own_cgroup_dirs() if self.rootless else cgroup_dirs)],
            "devices": DEVICES,
            "rootless": self.rootless,
            "job_root": run + "/cur",
        }
        worker_config = dict(worker_config, env=worker_env, landlock=landlock)
        if self.rootless:  # site-packages from where they are (no bind mounts)
            real = {inside: host for host, inside in binds}
            worker_config["sys_path"] = [real.get(p, p) for p in worker_config["sys_path"]]
        launch_config = {
            "stage": stage,
            "binds": binds,
            "cgroup_procs": cgroup_procs,
            "cgroup_dirs": cgroup_dirs,
            "worker_dir": str(worker_dir),
            "oom_score_adj": -900,
            "uid": uid,
            "host_pid": os.getpid(),
            "rootless": self.rootless,
            "env": worker_env,
            "argv": [exe, "-I", "-S", "-c", worker_source, json.dumps(worker_config)],
        }
        return [
            sys.executable,
            "-I",
            "-S",
            "-c",
            Path(_launcher_landlock.__file__).read_text(),
            json.dumps(launch_config),
        ]

    def prepare_job(self, key: str, uid: int, number: int, limits: Limits) -> JobDirs:
        """A fresh directory for one job: size-capped tmpfs on work and tmp owned by the worker's uid (plain
        directories rootless)."""
        top = self.base / key
        dirs = JobDirs(top / f"j{number}")
        if dirs.root.exists():
            self.finish_job(dirs)
        dirs.root.mkdir(mode=0o711)
        try:
            inodes = limits.scratch_inodes
            flags = MS_NOSUID | MS_NODEV
            for path, size in ((dirs.work, limits.scratch_bytes), (dirs.tmp, limits.tmp_bytes)):
                path.mkdir(mode=0o700)
                if not self.rootless:
                    options = f"size={size},nr_inodes={inodes},mode=0700,uid={uid},gid={uid}"
                    _mount("tmpfs", str(path), "tmpfs", flags, options)
            dirs.data.mkdir(mode=0o700)
            if not self.rootless:
                os.chown(dirs.data, uid, uid)
            link = top / ".cur"
            with contextlib.suppress(FileNotFoundError):
                link.unlink()
            link.symlink_to(dirs.root.name)
            os.replace(link, top / "cur")
        except BaseException:
            self.finish_job(dirs)
            raise
        return dirs

    def finish_job_later(self, dirs: JobDirs) -> None:
        """:meth:`finish_job` in the background (the job's processes are all gone by then)."""
        with contextlib.suppress(RuntimeError):  # shut down: close() removes everything anyway
            self._finisher.submit(self.finish_job, dirs)

    def finish_job(self, dirs: JobDirs) -> None:
        """Unmount the job's filesystems (their contents go with them) and remove its directory."""
        if not self.rootless:
            for path in (dirs.work, dirs.tmp):
                with contextlib.suppress(OSError):
                    _umount(str(path))
        _rmtree(dirs.root)


def own_cgroup_dirs() -> list[str]:
    """This process's cgroup directories (v1: one per hierarchy, v2: one), which a rootless worker inherits:
    what its jobs may read of cgroups (DuckDB sizes itself from the CPU quota and memory limit)."""
    dirs: list[str] = []
    with contextlib.suppress(OSError):
        for line in Path("/proc/self/cgroup").read_text().splitlines():
            _number, controllers, path = line.split(":", 2)
            names = [c for c in controllers.split(",") if c and not c.startswith("name=")]
            if not controllers:  # v2: mounted alone, or beside v1 hierarchies as "unified"
                names = ["unified"] if os.path.isdir("/sys/fs/cgroup/unified") else [""]
            for name in names:
                directory = os.path.normpath(f"/sys/fs/cgroup/{name}/{path}")
                if os.path.isdir(directory) and directory not in dirs:
                    dirs.append(directory)
    return dirs


def _rmtree(path: Path) -> None:
    """Remove a job's tree, also where the job took its own permissions away (rootless, the job's files are
    the user's: a directory it made mode 000 stops a plain removal)."""

    def unlock(_function: Any, failed: str, _exc: Any) -> None:
        with contextlib.suppress(OSError):
            os.chmod(os.path.dirname(failed), 0o700)
            if os.path.isdir(failed) and not os.path.islink(failed):
                os.chmod(failed, 0o700)
                shutil.rmtree(failed, ignore_errors=True)
            else:
                os.unlink(failed)

    if path.exists():
        shutil.rmtree(path, onerror=unlock)


def _remove_base(base: Path) -> None:
    for path in sorted(base.glob("*/j*/*"), reverse=True):
        with contextlib.suppress(OSError):
            _umount(str(path))
    with contextlib.suppress(OSError):
        _umount(str(base))
    with contextlib.suppress(OSError):
        _rmtree(base)


def remove_stale() -> list[str]:
    """Remove the directories and mounts of pools whose host process is gone (it was SIGKILLed)."""
    removed: list[str] = []
    for base in Path(tempfile.gettempdir()).glob("corral-landlock-*-*"):
        try:
            host_pid = int(base.name.split("-")[2])
        except (IndexError, ValueError):
            continue
        if host_pid == os.getpid() or Path(f"/proc/{host_pid}").exists() or not base.is_dir():
            continue
        _remove_base(base)
        removed.append(str(base))
    return removed
