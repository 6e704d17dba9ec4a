"""The host's side of the Landlock backend: per-worker directories, per-job filesystems, worker launch.

Without user namespaces a job cannot mount its own ``/work`` and ``/tmp``; the host (root) does it instead.
Per pool it makes one base directory (mode 711, bind-mounted on itself and made a shared mount, so that
mounts below it reach the workers' slave mount namespaces); per worker a root-owned directory (``/run/corral``
in the worker's view) holding the worker's home; per job a directory ``j<N>`` with a fresh size- and
inode-capped tmpfs on ``work`` and on ``tmp`` (owned by the worker's uid, mode 700) and an empty ``data``
directory for the links to the inputs, and the link ``cur`` pointed at it, through which the job's
``/work``, ``/tmp`` and ``/data`` resolve. After the job (the worker has killed every other process of its
uid by then) the host unmounts both filesystems and removes the directory.
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

    def __init__(self, base: Path) -> None:
        self.base = base
        # Unmounting costs an RCU grace period (~10 ms): done off the caller's critical path, in order.
        self._finisher = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="corral-landlock")

    @classmethod
    def create(cls) -> LandlockHost:
        remove_stale()
        base = Path(tempfile.mkdtemp(prefix=f"corral-landlock-{os.getpid()}-"))
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

    def worker_dir(self, uid: int) -> Path:
        """The worker's root-owned directory (``/run/corral`` inside) with its home (``home``) in it."""
        top = self.base / str(uid)
        top.mkdir(mode=0o711, exist_ok=True)
        home = top / "home"
        home.mkdir(mode=0o700, exist_ok=True)
        os.chown(home, uid, uid)
        return top

    def launch_argv(
        self,
        *,
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
        worker_dir = self.worker_dir(uid)
        home = "/run/corral/home"
        worker_env = dict(env, HOME=home, TMPDIR=home, MPLCONFIGDIR=home + "/matplotlib")
        worker_config = dict(
            worker_config,
            env=worker_env,
            landlock={
                "source": Path(_landlock.__file__).read_text(),
                "read_exec": [*(inside for _host, inside in binds), *SYSTEM_DIRS],
                # Its own cgroup's limits too: DuckDB and others size themselves from them.
                "read_only": [*READ_ONLY_FILES, *cgroup_dirs],
                "devices": DEVICES,
            },
        )
        launch_config = {
            "stage": stage,
            "binds": binds,
            "cgroup_procs": cgroup_procs,
            "cgroup_dirs": cgroup_dirs,
            "worker_dir": str(worker_dir),
            "oom_score_adj": -900,
            "uid": uid,
            "host_pid": os.getpid(),
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

    def prepare_job(self, uid: int, number: int, limits: Limits) -> JobDirs:
        """A fresh directory for one job: size-capped tmpfs on work and tmp owned by the worker's uid."""
        top = self.base / str(uid)
        dirs = JobDirs(top / f"j{number}")
        if dirs.root.exists():
            self.finish_job(dirs)
        dirs.root.mkdir(mode=0o711)
        try:
            inodes = limits.scratch_inodes
            flags = MS_NOSUID | MS_NODEV
            for path, size in ((dirs.work, limits.scratch_bytes), (dirs.tmp, limits.tmp_bytes)):
                path.mkdir(mode=0o700)
                options = f"size={size},nr_inodes={inodes},mode=0700,uid={uid},gid={uid}"
                _mount("tmpfs", str(path), "tmpfs", flags, options)
            dirs.data.mkdir(mode=0o700)
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
        for path in (dirs.work, dirs.tmp):
            with contextlib.suppress(OSError):
                _umount(str(path))
        shutil.rmtree(dirs.root, ignore_errors=True)


def _remove_base(base: Path) -> None:
    for path in sorted(base.glob("*/j*/*"), reverse=True):
        with contextlib.suppress(OSError):
            _umount(str(path))
    with contextlib.suppress(OSError):
        _umount(str(base))
    shutil.rmtree(base, ignore_errors=True)


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
