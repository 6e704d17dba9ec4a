"""The pool of warm workers and the host side of running one job.

Threads, not asyncio, carry the host side: a job is a blocking exchange on one socket, the pool is shared by
synchronous and asynchronous callers, and the async API wraps it with ``asyncio.to_thread``.
"""

from __future__ import annotations

import base64
import concurrent.futures
import contextlib
import ctypes
import errno
import itertools
import json
import os
import queue
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import threading
import time
import weakref
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from corral.sandbox import _command_job, _detect, _launcher, _protocol, _worker, sqljob
from corral.sandbox._cgroup import JOB_SLOTS, NoCgroup, WorkerCgroup, prepare_delegated_v2
from corral.sandbox._cgroup import remove_stale as remove_stale_cgroups
from corral.sandbox._collect import collect
from corral.sandbox._landlock import abi as landlock_abi
from corral.sandbox._landlock_host import JobDirs, LandlockHost
from corral.sandbox._seccomp import build_filter
from corral.sandbox._types import LimitName, Limits, RunResult, SkippedFile
from corral.sandbox.errors import (
    SandboxBusy,
    SandboxCrashed,
    SandboxError,
    SandboxUnavailable,
    SandboxUsageError,
)

#: Libraries every worker imports before it serves jobs (one that is not installed is skipped). psycopg is
#: here because importing it costs a PostgreSQL query ~180 ms per job, and a worker ~8 MB once.
DEFAULT_PRELOAD = (
    "numpy",
    "pandas",
    "duckdb",
    "sqlite3",
    "matplotlib",
    "json",
    "csv",
    "math",
    "statistics",
    "psycopg",
)

#: The environment a job sees: nothing of the host's.
JOB_ENV = {
    "PATH": "/usr/bin:/bin",
    "HOME": "/work",
    "TMPDIR": "/tmp",
    "LANG": "C.UTF-8",
    "MPLBACKEND": "Agg",
    "MPLCONFIGDIR": "/tmp/matplotlib",
    "OMP_NUM_THREADS": "1",
    "OPENBLAS_NUM_THREADS": "1",
    # pyarrow's jemalloc starts a background thread; a worker must stay single-threaded (see _worker.serve).
    "JE_ARROW_MALLOC_CONF": "background_thread:false",
    "MKL_NUM_THREADS": "1",
}

InputValue = bytes | str | os.PathLike[str]

_UID_BASE = 200_000
_uid_counter = itertools.count()
_pool_counter = itertools.count()
_used_uids: set[int] = set()
_rootless_workers: set[int] = set()  # host pids of rootless workers' bwrap: their uid is the host's own
_live_pools: weakref.WeakSet[SandboxPool] = weakref.WeakSet()
_WORKER_SLACK_BYTES = 48 * 1024 * 1024  # idle-memory growth after a job that still counts as normal
_TEARDOWN_WAIT_S = 2.0  # how long a worker may take to return to idle after a job before it is recycled
_START_TIMEOUT = 120.0
_MAX_INPUTS = 200  # the kernel passes at most 253 descriptors per message (SCM_MAX_FD); two are the pipes
_BACKSTOP_SECONDS = 10.0  # the host kills a worker that overruns a job's wall limit by this much


_STAGE_PREFIX = "corral-sandbox-stage-"


def remove_stale_stages() -> list[str]:
    """Remove staging directories of pools whose host process is gone (a SIGKILLed host cannot clean up).

    Their mounts lived in the launcher's private mount namespace, which died with it, so on the host they are
    empty directories: only ``rmdir`` them, never delete recursively.
    """
    removed: list[str] = []
    for stage in Path(tempfile.gettempdir()).glob(f"{_STAGE_PREFIX}*-*"):
        try:
            host_pid = int(stage.name[len(_STAGE_PREFIX) :].split("-")[0])
        except ValueError:
            continue
        if host_pid == os.getpid() or Path(f"/proc/{host_pid}").exists():
            continue
        with contextlib.suppress(OSError):
            for child in stage.iterdir():
                child.rmdir()
            stage.rmdir()
            removed.append(str(stage))
    return removed


# The wire format is the worker's own (length-prefixed JSON plus passed descriptors); receiving is not: the
# host trusts nothing a worker sends, and parses it with one strict parser (see _protocol).
_send = _worker._send


def _runtime_dirs() -> tuple[str, list[tuple[str, str]], list[str]]:
    """The interpreter's real path, (host dir, sandbox dir) pairs to bind read-only, the worker's sys.path.

    Discovered from ``sys`` at run time, never hard-coded: CI runs from another clone with its own venv. The
    interpreter's prefix keeps its path (libpython is found through an absolute rpath); site-packages
    directories move to neutral paths so that nothing of the repository's location (the venv often sits inside
    it) shows.
    """
    exe = os.path.realpath(sys.executable)
    prefix = os.path.realpath(sys.base_prefix)
    binds: list[tuple[str, str]] = [(prefix, prefix)]
    site: list[str] = []
    for entry in sys.path:
        if os.path.basename(entry) not in ("site-packages", "dist-packages") or not os.path.isdir(entry):
            continue
        real = os.path.realpath(entry)
        if real == prefix or real.startswith(prefix + "/"):
            if real not in site:
                site.append(real)
            continue
        target = f"/opt/corral/site-{len(binds)}"
        if (real, target) not in binds and real not in {b[0] for b in binds}:
            binds.append((real, target))
            site.append(target)
    if not exe.startswith(prefix + "/"):
        binds.append((os.path.dirname(exe), os.path.dirname(exe)))
    for host, inside in binds:
        if inside.split("/")[1] in ("work", "data", "tmp", "dev", "proc"):
            raise SandboxUnavailable(
                f"the Python runtime at {host} lies under /{inside.split('/')[1]}, which the sandbox "
                "mounts over; install Python (or the virtualenv) elsewhere"
            )
    # System directories are bound by bwrap itself.
    return exe, [b for b in binds if not (b[0] == "/usr" or b[0].startswith("/usr/"))], site


#: Device nodes a job may open. /dev holds these, the fd/std* links and an empty shm directory (where each job
#: mounts its own tmpfs), and is read-only: no job can leave, replace or chmod anything there for another.
DEVICES = ("null", "zero", "full", "random", "urandom")


def _dev_argv() -> list[str]:
    """bubblewrap arguments for the worker's /dev (not ``--dev``, which adds ptys and a writable tmpfs)."""
    argv = ["--perms", "0755", "--size", "65536", "--tmpfs", "/dev"]
    for name in DEVICES:
        argv += ["--dev-bind", f"/dev/{name}", f"/dev/{name}"]
    argv += ["--symlink", "/proc/self/fd", "/dev/fd"]
    for number, name in enumerate(("stdin", "stdout", "stderr")):
        argv += ["--symlink", f"/proc/self/fd/{number}", f"/dev/{name}"]
    return [*argv, "--dir", "/dev/shm", "--remount-ro", "/dev"]


def _open_input(value: InputValue, *, copy: bool = False) -> int:
    """An fd the job may read but not write: the file itself when safe, else a sealed in-memory copy.

    The host is root: a path is opened without following a final symlink and without blocking (a FIFO would
    hang the open), and only a regular file is accepted, checked on the opened descriptor (no race).
    """
    if isinstance(value, bytes):
        return _sealed_memfd(value)
    path = os.fspath(value)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
    except OSError as exc:
        why = "is a symbolic link" if exc.errno == errno.ELOOP else f"cannot be opened ({exc.strerror})"
        raise SandboxUsageError(f"sandbox input {path!r} {why}; give a regular file") from None
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode):
        os.close(fd)
        raise SandboxUsageError(f"sandbox input {path!r} is not a regular file")
    os.set_blocking(fd, True)
    # The job reopens its inputs by path (/proc/self/fd/N), which checks the file's mode bits against the
    # job's uid: a world-writable file would be writable from inside. Give it a sealed copy instead.
    # Rootless, the job's uid maps to the host user, who may own the file: a reopen would be writable, and
    # without mount privileges no read-only detached mount can be made. Always a sealed copy then.
    if st.st_mode & stat.S_IWOTH or copy:
        with os.fdopen(fd, "rb") as f:
            return _sealed_memfd(f.read())
    return _anonymous(fd, path)


_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long
_SYS_OPEN_TREE = 428
_OPEN_TREE_CLONE = 1
_AT_EMPTY_PATH = 0x1000
_SYS_MOUNT_SETATTR = 442
_MOUNT_ATTR_RDONLY = 1


def _anonymous(fd: int, path: str) -> int:
    """The same file opened through a detached, read-only mount of its grandparent directory: the job's
    ``/proc/self/fd`` shows ``/<directory>/<file>`` rather than the whole host path, and no reopen can write
    it. (Not just ``/<file>``: DuckDB resolves the link and, when the resolved path's directory exists in the
    job, insists on finding the file there.) Falls back to ``fd`` where the kernel or privileges do not allow
    it, or when the name no longer is the file checked."""
    absolute = os.path.abspath(path)
    inner = os.path.join(os.path.basename(os.path.dirname(absolute)), os.path.basename(absolute))
    try:
        top = os.path.dirname(os.path.dirname(absolute))
        parent = os.open(top, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError:
        return fd
    try:
        flags = _OPEN_TREE_CLONE | os.O_CLOEXEC | _AT_EMPTY_PATH
        tree = int(_libc.syscall(_SYS_OPEN_TREE, parent, b"", flags))
    finally:
        os.close(parent)
    if tree < 0:
        return fd
    try:
        attr = (ctypes.c_uint64 * 4)(_MOUNT_ATTR_RDONLY, 0, 0, 0)
        if _libc.syscall(
            _SYS_MOUNT_SETATTR, tree, b"", _AT_EMPTY_PATH, ctypes.byref(attr), ctypes.sizeof(attr)
        ):
            return fd
        reopened = os.open(inner, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=tree)
    except OSError:
        return fd
    finally:
        os.close(tree)
    new, old = os.fstat(reopened), os.fstat(fd)
    if (new.st_dev, new.st_ino) != (old.st_dev, old.st_ino):
        os.close(reopened)
        return fd
    os.set_blocking(reopened, True)
    os.close(fd)
    return reopened


def _sealed_memfd(data: bytes) -> int:
    import fcntl

    fd = os.memfd_create("corral-input", os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
    os.fchmod(fd, 0o444)  # a job reopening /proc/self/fd/N for writing gets EACCES, not just a sealed file
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]
    fcntl.fcntl(
        fd,
        fcntl.F_ADD_SEALS,
        fcntl.F_SEAL_WRITE | fcntl.F_SEAL_GROW | fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_SEAL,
    )
    return fd


def _socket_fd(name: str, sock: socket.socket) -> int:
    """A duplicate of ``sock``'s descriptor for the job, refused unless it is an AF_UNIX stream socket.

    Only AF_UNIX: the job's seccomp filter stops it from *creating* network sockets, not from using one it is
    given, so handing it a TCP socket would give it the network. The host relays to the world instead.
    """
    if sock.family != socket.AF_UNIX or sock.type != socket.SOCK_STREAM:
        raise SandboxUsageError(
            f"sandbox socket {name!r} must be an AF_UNIX stream socket (one end of socket.socketpair()), "
            f"not {sock.family.name}/{sock.type.name}: a job never gets a network socket"
        )
    return os.dup(sock.fileno())


def _fds_of(config: Mapping[str, Any]) -> list[int]:
    """The descriptors in a worker configuration's cgroup entries."""
    found: list[int] = []
    pending: list[object] = list(config.values())
    while pending:
        value = pending.pop()
        if isinstance(value, list):
            pending.extend(value)
        elif isinstance(value, int):
            found.append(value)
    return found


def _check_input_name(name: str) -> None:
    if not name or "/" in name or name in (".", "..") or "\0" in name or len(name) > 200:
        raise SandboxUsageError(f"sandbox input name {name!r} must be a plain file name (no '/')")


@dataclass(eq=False)
class _Worker:
    slot: int
    uid: int
    proc: subprocess.Popen[bytes]
    sock: socket.socket
    cgroup: WorkerCgroup | NoCgroup
    log: Any
    rootless: bool = False
    """Runs as the host's own uid (a rootless backend): never wait for "no process of this uid"."""
    name: str = ""
    idle_memory: int = 0
    idle_pids: int = 0
    idle_resident: int = 0
    jobs: int = 0
    broken: bool = False
    limits_set: tuple[int, int, float] | None = None
    """The (memory, pids, cores) limits the cgroups hold now."""

    def log_tail(self) -> str:
        """The last lines the worker (or bwrap) printed, for error messages."""
        try:
            self.log.seek(0, os.SEEK_END)
            size = self.log.tell()
            self.log.seek(max(0, size - 6000))
            text: str = self.log.read().decode(errors="replace").strip()
            return text or "(no output)"
        except (OSError, ValueError):
            return "(output unavailable)"

    def kill(self, *, graceful: float = 1.0) -> None:
        """Stop the worker: first by closing its socket (it exits, and bubblewrap reaps it), then by force."""
        with contextlib.suppress(OSError):
            self.sock.close()
        with contextlib.suppress(subprocess.TimeoutExpired):
            # An orderly exit lets each bwrap process reap its child; killing first would leave zombies for
            # the host's init to collect, which can take a second.
            self.proc.wait(timeout=graceful)
        self.cgroup.kill_all()
        with contextlib.suppress(OSError):
            self.proc.kill()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=5)
        self.cgroup.remove()
        if self.proc.returncode is not None:
            _rootless_workers.discard(self.proc.pid)  # reaped: its pid may be reused by anyone
        # Killed processes leave zombies until their new parent reaps them; wait so that "closed" means gone.
        # (Rootless, bwrap's exit took its PID namespace down: the host's uid is the host's own.)
        deadline = time.monotonic() + 5
        while not self.rootless and _processes_of(self.uid) and time.monotonic() < deadline:
            time.sleep(0.01)
        with contextlib.suppress(OSError):
            self.log.close()


@dataclass(frozen=True)
class _Before:
    """The job slot's counters before a job, to measure the job by."""

    slot: int
    oom: tuple[int, int]
    cpu_ns: int
    throttled: int


@dataclass
class _Job:
    kind: str
    limits: Limits
    code: str = ""
    sql: dict[str, Any] | None = None
    inputs: Mapping[str, InputValue] = field(default_factory=dict)
    sockets: Mapping[str, socket.socket] = field(default_factory=dict)
    command: dict[str, Any] | None = None
    """A vetted executable's path, device, inode and argv (see ``_command.py``)."""


class SandboxPool:
    """Warm sandbox workers, one per core by default, each its own unprivileged uid, memory and pids cgroup.

    Workers start lazily on the first job (or :meth:`start`); a worker is replaced after
    ``max_jobs_per_worker`` jobs or after anything unusual (a crash, a protocol error, leftover processes or
    memory). At most ``max_queue`` callers wait for a worker; the next one, or one that waited
    ``queue_timeout`` seconds, gets :class:`SandboxBusy`. Use as a context manager, or call :meth:`close`.
    ``backend`` ("bubblewrap", "landlock", or ``None``: ``$CORRAL_SANDBOX_BACKEND``, else the best this
    machine offers, see :func:`corral.sandbox.check`) picks how jobs are isolated.
    """

    def __init__(
        self,
        size: int | None = None,
        *,
        max_queue: int | None = None,
        queue_timeout: float = 30.0,
        max_jobs_per_worker: int = 500,
        preload: tuple[str, ...] = DEFAULT_PRELOAD,
        limits: Limits | None = None,
        backend: str | None = None,
    ) -> None:
        self.size = size or max(1, len(os.sched_getaffinity(0)))
        if self.size < 1:
            raise SandboxUsageError("a sandbox pool needs at least one worker")
        self.max_queue = max_queue if max_queue is not None else 16 * self.size
        self.queue_timeout = queue_timeout
        self.max_jobs_per_worker = max_jobs_per_worker
        self.preload = preload
        self.default_limits = limits or Limits()
        self._backend_request = backend
        #: The backend the pool runs jobs with, once started: "bubblewrap" or "landlock" (see ``check``).
        self.backend: str | None = None
        self._landlock: LandlockHost | None = None
        self._id = next(_pool_counter)
        self._lock = threading.Lock()
        self._idle: queue.Queue[_Worker] = queue.Queue()
        self._all: set[_Worker] = set()
        self._waiting = 0
        self._starting = 0
        self._started = False
        self._closed = False
        self._stage: str | None = None
        self._start_error: BaseException | None = None
        self._generation = itertools.count()
        self._seccomp = b""
        self._seccomp_command = b""
        self._delegated: Path | None = None
        """Rootless: the cgroup v2 directory delegated to this user, when there is one."""
        self._threads: list[threading.Thread] = []
        self._spawner: threading.Thread | None = None
        _live_pools.add(self)
        self._spawn_requests: queue.Queue[
            tuple[list[str], dict[str, Any], concurrent.futures.Future[subprocess.Popen[bytes]]] | None
        ] = queue.Queue()

    # -- lifecycle ------------------------------------------------------------------------------------------

    def start(self) -> None:
        """Start the workers now (and wait until they are ready) instead of on the first job."""
        with self._lock:
            if self._closed:
                raise SandboxUsageError("this sandbox pool is closed; create a new one")
            if self._started:
                return
            report = _detect.require(self._backend_request)
            self.backend = report.backend
            landlock = self.backend == "landlock"
            if self.backend == "rootless" and any(i.name == "cgroups" and i.ok for i in report.items):
                with contextlib.suppress(OSError):
                    self._delegated = prepare_delegated_v2()
            # The Landlock backend run rootless: the job is the host user, and Landlock (ABI <= 7) governs
            # neither connecting to the user's pathname unix sockets (a D-Bus session bus or a systemd
            # user manager would run commands for it) nor file metadata: both are denied outright.
            alone = landlock and self._rootless
            self._seccomp, self._seccomp_command = (
                build_filter(
                    deny_ipc=landlock,
                    deny_connect=landlock and (landlock_abi() < 6 or alone),
                    deny_memfd=self._rootless and self._delegated is None,
                    deny_metadata=alone,
                    notify_exec=notify,  # the variant for vetted commands (see _command_job.py)
                )
                for notify in (False, True)
            )
            remove_stale_cgroups()
            remove_stale_stages()
            self._stage = tempfile.mkdtemp(prefix=f"{_STAGE_PREFIX}{os.getpid()}-")
            if self.backend == "landlock":
                self._landlock = LandlockHost.create(rootless=self._rootless)
            self._started = True
        errors: list[BaseException] = []
        threads = [
            threading.Thread(target=self._spawn, args=(slot, errors), daemon=True)
            for slot in range(self.size)
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        if errors and self._idle.qsize() == 0:
            self.close()
            raise SandboxUnavailable(f"no sandbox worker could start: {errors[0]}") from errors[0]

    def close(self) -> None:
        """Stop every worker, remove their cgroups and the staging directory. Idempotent."""
        with self._lock:
            self._closed = True
            workers = list(self._all)
            self._all.clear()
        killers = [threading.Thread(target=w.kill) for w in workers]
        for t in killers:
            t.start()
        for t in killers:
            t.join()
        for t in self._threads:
            t.join(timeout=_START_TIMEOUT)
        with self._lock:
            late = list(self._all)
            self._all.clear()
        for w in late:
            w.kill()
        if self._spawner is not None:
            self._spawn_requests.put(None)
            self._spawner.join(timeout=5)
            self._spawner = None
        if self._stage:
            with contextlib.suppress(OSError):
                os.rmdir(self._stage)
            self._stage = None
        if self._landlock is not None:
            self._landlock.close()
            self._landlock = None

    def __enter__(self) -> SandboxPool:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def _rootless(self) -> bool:
        """Workers run as the host's own uid, without cgroups unless delegated: the rootless backend, or the
        Landlock backend started by a host that is not root."""
        return self.backend == "rootless" or (self.backend == "landlock" and os.geteuid() != 0)

    @property
    def worker_pids(self) -> list[int]:
        """Host pids of the workers' bubblewrap processes (for diagnostics and tests)."""
        with self._lock:
            return sorted(w.proc.pid for w in self._all)

    @property
    def worker_uids(self) -> list[int]:
        with self._lock:
            return sorted(w.uid for w in self._all)

    def _spawn(self, slot: int, errors: list[BaseException] | None = None) -> None:
        try:
            worker = self._start_worker(slot)
        except BaseException as exc:
            self._start_error = exc
            if errors is not None:
                errors.append(exc)
            return
        finally:
            with self._lock:
                self._starting = max(0, self._starting - 1)
        with self._lock:
            if self._closed:
                closed = True
            else:
                closed = False
                self._all.add(worker)
        if closed:
            worker.kill()
        else:
            self._idle.put(worker)

    def _popen(self, argv: list[str], **kwargs: Any) -> subprocess.Popen[bytes]:
        """Popen on the pool's long-lived spawner thread.

        bubblewrap's --die-with-parent is PR_SET_PDEATHSIG, which fires when the parent *thread* exits: a
        worker started from a short-lived thread would be killed with it. One thread that lives as long as the
        pool starts them all.
        """
        future: concurrent.futures.Future[subprocess.Popen[bytes]] = concurrent.futures.Future()
        with self._lock:
            if self._spawner is None:
                self._spawner = threading.Thread(
                    target=self._spawner_loop, name="corral-sandbox-spawner", daemon=True
                )
                self._spawner.start()
        self._spawn_requests.put((argv, kwargs, future))
        return future.result()

    def _spawner_loop(self) -> None:
        while True:
            item = self._spawn_requests.get()
            if item is None:
                return
            argv, kwargs, future = item
            try:
                future.set_result(subprocess.Popen(argv, **kwargs))
            except BaseException as exc:
                future.set_exception(exc)

    def _start_worker(self, slot: int) -> _Worker:
        assert self._stage is not None
        exe, binds, site = _runtime_dirs()
        rootless = self._rootless
        name = f"corral-{os.getpid()}-p{self._id}-w{slot}-g{next(self._generation)}"
        cgroup: WorkerCgroup | NoCgroup
        if rootless:
            uid = os.getuid()
            cgroup = NoCgroup()
            if self._delegated is not None:
                cgroup = WorkerCgroup.create(name, delegated=self._delegated)
        else:
            uid = _UID_BASE + (os.getpid() % 20_000) * 50 + next(_uid_counter) % 50
            _used_uids.add(uid)
            cgroup = WorkerCgroup.create(name)
        host_sock, worker_sock = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        log = tempfile.TemporaryFile()  # noqa: SIM115 - lives as long as the worker, closed in _Worker.kill
        cgroup_fds: dict[str, Any] = {}
        try:
            cgroup_fds = cgroup.open_job_fds()
            worker_config = {
                "fd": worker_sock.fileno(),
                "sys_path": site,
                "env": JOB_ENV,
                "preload": list(self.preload),
                "seccomp": base64.b64encode(self._seccomp).decode(),
                "sqljob": Path(sqljob.__file__).read_text(),
                "command": Path(_command_job.__file__).read_text(),
                "seccomp_command": base64.b64encode(self._seccomp_command).decode(),
                **cgroup_fds,
            }
            argv = [
                shutil.which("bwrap") or "/usr/bin/bwrap",
                "--unshare-all",
                "--die-with-parent",
                "--new-session",
                "--cap-drop",
                "ALL",
                "--clearenv",
                "--hostname",
                "sandbox",
                "--ro-bind",
                "/usr",
                "/usr",
            ]
            for top in ("/bin", "/sbin", "/lib", "/lib64", "/lib32", "/libx32"):
                if os.path.islink(top):
                    argv += ["--symlink", os.readlink(top), top]
                elif os.path.isdir(top):
                    argv += ["--ro-bind", top, top]
            for etc in ("/etc/ld.so.cache", "/etc/alternatives", "/etc/localtime"):
                if os.path.exists(etc):
                    argv += ["--ro-bind", etc, etc]
            argv += ["--proc", "/proc", *_dev_argv()]
            argv += [
                "--size",
                str(16 * 1024 * 1024),
                "--tmpfs",
                "/tmp",
                "--dir",
                "/work",
                "--dir",
                "/data",
            ]
            for index, (host, inside) in enumerate(binds):
                # Rootless, the runtime is this user's own: bound straight from where it is.
                argv += ["--ro-bind", host if rootless else os.path.join(self._stage, str(index)), inside]
            argv += ["--remount-ro", "/", "--chdir", "/"]
            for key, value in JOB_ENV.items():
                argv += ["--setenv", key, value]
            argv += [exe, "-I", "-S", "-c", Path(_worker.__file__).read_text(), json.dumps(worker_config)]
            launch_config = {
                "stage": self._stage,
                "binds": [host for host, _inside in binds],
                "cgroup_procs": cgroup.procs_files,
                "oom_score_adj": -900,
                "uid": uid,
                "argv": argv,
            }
            launcher = [
                sys.executable,
                "-I",
                "-S",
                "-c",
                Path(_launcher.__file__).read_text(),
                json.dumps(launch_config),
            ]
            if self._landlock is not None:
                launcher = self._landlock.launch_argv(
                    key=str(uid) if not rootless else name,
                    uid=uid,
                    exe=exe,
                    binds=binds,
                    cgroup_procs=cgroup.procs_files,
                    cgroup_dirs=[str(d) for d in cgroup.dirs],
                    stage=self._stage,
                    worker_source=Path(_worker.__file__).read_text(),
                    worker_config=worker_config,
                    env=JOB_ENV,
                )
            elif rootless:
                launcher = argv
                if cgroup.procs_files:  # a delegated cgroup to join first
                    rootless_config = {"rootless": True, "cgroup_procs": cgroup.procs_files, "argv": argv}
                    launcher = [sys.executable, "-I", "-S", "-c", Path(_launcher.__file__).read_text()]
                    launcher.append(json.dumps(rootless_config))
            proc = self._popen(
                launcher,
                pass_fds=[worker_sock.fileno(), *_fds_of(cgroup_fds)],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                env={"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"},
                start_new_session=True,
            )
        except BaseException:
            host_sock.close()
            worker_sock.close()
            log.close()
            for fd in _fds_of(cgroup_fds):
                os.close(fd)
            cgroup.remove()
            raise
        worker_sock.close()
        for fd in _fds_of(cgroup_fds):
            os.close(fd)
        worker = _Worker(slot, uid, proc, host_sock, cgroup, log, rootless=rootless, name=name)
        if rootless:
            _rootless_workers.add(proc.pid)
        host_sock.settimeout(_START_TIMEOUT)
        try:
            raw, _none = _protocol.receive(host_sock, _protocol.HELLO_BYTES, 0)
            hello = _protocol.parse_hello(raw)
            if not hello.ready:
                raise SandboxCrashed(f"worker refused to serve: {hello.error or '(no reason given)'}")
        except (OSError, EOFError, ValueError, SandboxError) as exc:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=2)
            log.seek(0)
            detail = log.read()[-2000:].decode(errors="replace").strip()
            worker.kill()
            raise SandboxUnavailable(
                f"sandbox worker failed to start ({exc}); its output: {detail or '(none)'}"
            ) from exc
        worker.idle_memory = cgroup.memory_usage()
        worker.idle_pids = cgroup.pids_current()
        worker.idle_resident = cgroup.resident()
        return worker

    def _retire(self, worker: _Worker) -> None:
        """Kill ``worker`` and start its replacement in the background."""
        with self._lock:
            self._all.discard(worker)
            closed = self._closed
            if not closed:
                self._starting += 1
        worker.kill()
        if not closed:
            t = threading.Thread(target=self._spawn, args=(worker.slot,), daemon=True)
            self._threads = [x for x in self._threads if x.is_alive()] + [t]
            t.start()

    # -- running jobs ---------------------------------------------------------------------------------------

    def _acquire(self, queue_timeout: float | None) -> _Worker:
        with self._lock:
            if self._closed:
                raise SandboxUsageError("this sandbox pool is closed; create a new one")
            if self._waiting >= self.max_queue:
                raise SandboxBusy(
                    f"sandbox busy: all {self.size} workers are running jobs and {self._waiting} callers are "
                    f"already queued (max_queue={self.max_queue}); retry later or enlarge the pool"
                )
            self._waiting += 1
        timeout = self.queue_timeout if queue_timeout is None else queue_timeout
        deadline = time.monotonic() + timeout
        try:
            while True:
                remaining = deadline - time.monotonic()
                try:
                    return self._idle.get(timeout=max(0.0, min(remaining, 0.5)))
                except queue.Empty:
                    pass
                with self._lock:
                    dead = not self._all and self._starting == 0
                if dead and self._start_error is not None:
                    raise SandboxUnavailable(f"no sandbox worker is running: {self._start_error}")
                if remaining <= 0:
                    raise SandboxBusy(
                        f"sandbox busy: waited {timeout:.1f} s for one of {self.size} workers; "
                        "retry later, raise queue_timeout or enlarge the pool"
                    ) from None
        finally:
            with self._lock:
                self._waiting -= 1

    def _run(self, job: _Job, queue_timeout: float | None = None) -> RunResult:
        count = len(job.inputs) + len(job.sockets)
        if count > _MAX_INPUTS:
            raise SandboxUsageError(
                f"a sandbox job takes at most {_MAX_INPUTS} input files and sockets (they travel as "
                f"descriptors in one message), not {count}; combine them or pass files in batches"
            )
        for name in [*job.inputs, *job.sockets]:
            _check_input_name(name)
        if set(job.inputs) & set(job.sockets):
            raise SandboxUsageError(
                f"sandbox names used both as input and socket: {set(job.inputs) & set(job.sockets)}"
            )
        self.start()
        fds: list[int] = []
        try:
            for value in job.inputs.values():
                fds.append(_open_input(value, copy=self._rootless))
            for name, sock in job.sockets.items():
                fds.append(_socket_fd(name, sock))
            worker = self._acquire(queue_timeout)
            while not self._healthy(worker):
                self._retire(worker)
                worker = self._acquire(queue_timeout)
            try:
                result = self._run_on(worker, job, fds)
            except BaseException:
                worker.broken = True
                raise
            finally:
                if worker.broken or worker.jobs >= self.max_jobs_per_worker:
                    self._retire(worker)
                else:
                    self._idle.put(worker)
            return result
        finally:
            for fd in fds:
                os.close(fd)

    def _run_on(self, worker: _Worker, job: _Job, fds: list[int]) -> RunResult:
        limits = job.limits
        cg = worker.cgroup
        worker.jobs += 1
        slot = worker.jobs % JOB_SLOTS  # the broker counts the same way; the message says it too
        try:
            wanted = (limits.memory_bytes, limits.pids, limits.cpu_cores)
            if worker.limits_set != wanted:  # most jobs run with the same limits: no cgroup writes then
                worker.limits_set = None
                cg.set_limits(
                    memory_bytes=worker.idle_memory + limits.memory_bytes,
                    pids=worker.idle_pids + limits.pids,
                    job_memory=limits.memory_bytes,
                    job_pids=limits.pids + 1,  # the slot's zygote lives there too
                )
                cg.set_cpu(limits.cpu_cores)
                worker.limits_set = wanted
            throttled_before = cg.throttled()
            cg.reset_peak(slot)
            oom_before = (cg.oom_kills(), cg.oom_kills(slot))
            cpu_before = cg.job_cpu_ns(slot)
        except (OSError, ValueError) as exc:
            worker.broken = True
            raise SandboxCrashed(
                f"could not set the limits of sandbox worker uid {worker.uid} ({exc}); it was replaced, "
                "the job may be retried"
            ) from exc
        message = {
            "id": worker.jobs,
            "kind": job.kind,
            "code": job.code,
            "sql": job.sql,
            "command": job.command,
            # Sockets are linked under /data like files (the worker does not tell them apart).
            "inputs": [*job.inputs, *job.sockets],
            "limits": limits.to_wire(),
            "env": JOB_ENV,
            "slot": slot,
            # The most CPU time per second the job's tree can get: when the broker next needs to look.
            "cpu_rate": limits.cpu_cores if cg.cpu is not None else float(os.cpu_count() or 1),
            # No cgroup (rootless without delegation): memory and processes are limited by rlimits.
            "rlimits": isinstance(cg, NoCgroup),
        }
        job_dirs: JobDirs | None = None
        try:
            if self._landlock is not None:
                try:
                    key = worker.name if worker.rootless else str(worker.uid)
                    job_dirs = self._landlock.prepare_job(key, worker.uid, worker.jobs, limits)
                except OSError as exc:
                    worker.broken = True
                    raise SandboxCrashed(f"could not prepare the job's directories: {exc}") from exc
            try:
                worker.sock.settimeout(limits.wall_seconds + _BACKSTOP_SECONDS)
                _send(worker.sock, message, fds)
                raw, scratch = _protocol.receive(
                    worker.sock, _protocol.max_reply_bytes(limits.output_bytes), max_fds=1
                )
            except (OSError, EOFError) as exc:
                worker.broken = True
                raise SandboxCrashed(
                    f"sandbox worker uid {worker.uid} failed during a job ({type(exc).__name__}: {exc}); "
                    f"it was replaced, the job may be retried. Worker output: {worker.log_tail()}"
                ) from exc
            except SandboxCrashed:
                worker.broken = True
                raise
            try:
                answer = _protocol.parse_reply(
                    raw, scratch, job_id=worker.jobs, output_bytes=limits.output_bytes
                )
                files: dict[str, bytes] = {}
                skipped: list[SkippedFile] = []
                if scratch:
                    files, skipped = collect(
                        scratch[0],
                        max_files=limits.result_files,
                        max_file_bytes=limits.result_file_bytes,
                        max_total_bytes=limits.scratch_bytes,
                    )
            except SandboxCrashed:
                worker.broken = True
                raise
            finally:
                for fd in scratch:
                    os.close(fd)
        finally:
            if job_dirs is not None and self._landlock is not None:
                if worker.broken:
                    worker.cgroup.kill_all()  # nothing of the job may run while its directory goes
                self._landlock.finish_job_later(job_dirs)
        reply = answer.reply
        if reply.setup_error is not None:
            worker.broken = True
            raise SandboxCrashed(f"sandbox job setup failed in worker uid {worker.uid}: {reply.setup_error}")
        before = _Before(slot, oom_before, cpu_before, throttled_before)
        return self._result(worker, limits, answer, files, skipped, before)

    def _result(
        self,
        worker: _Worker,
        limits: Limits,
        answer: _protocol.Answer,
        files: dict[str, bytes],
        skipped: list[SkippedFile],
        before: _Before,
    ) -> RunResult:
        """The job's result: how it ended from the reply, what it used from the kernel's cgroup counters."""
        cg = worker.cgroup
        reply = answer.reply
        try:
            if isinstance(cg, NoCgroup):
                # No cgroup to read: the broker's count from /proc (outside the job, which cannot reach it).
                cpu = (reply.cpu_ns or 0) / 1e9
            else:
                cpu = max(0, cg.job_cpu_ns(before.slot) - before.cpu_ns) / 1e9
            peak = cg.peak(before.slot)
            worker_oom = cg.oom_kills() > before.oom[0]
            job_oom = cg.oom_kills(before.slot) > before.oom[1]
            throttled = cg.throttled() > before.throttled
        except (OSError, ValueError) as exc:
            worker.broken = True
            raise SandboxCrashed(f"could not read the job's cgroup counters: {exc}") from exc
        exit_code: int | None = None
        sig: int | None = None
        if reply.exit is not None:
            exit_code = reply.exit
        elif reply.wstatus is not None:
            if os.WIFEXITED(reply.wstatus):
                exit_code = os.WEXITSTATUS(reply.wstatus)
            elif os.WIFSIGNALED(reply.wstatus):
                sig = os.WTERMSIG(reply.wstatus)
        if reply.killed_for == "protocol":
            exit_code, sig = None, signal.SIGKILL  # it wrote to its status channel: stopped, a failed run
        limit: LimitName | None = None
        if reply.killed_for == "wall":
            limit = "wall"
        elif (worker_oom or job_oom) and sig == signal.SIGKILL:
            limit = "memory"
        elif sig in (signal.SIGXCPU, signal.SIGKILL) and cpu >= limits.cpu_seconds * 0.9:
            limit = "cpu"
        elif sig == signal.SIGXFSZ:
            limit = "file_size"
        if worker_oom and not job_oom:
            worker.broken = True  # the OOM killer may have hit more than the job; start clean
        return RunResult(
            stdout=answer.stdout.decode(errors="replace"),
            stderr=answer.stderr.decode(errors="replace"),
            exit_code=exit_code,
            signal=sig,
            limit=limit,
            files=files,
            skipped=tuple(skipped),
            stdout_truncated=reply.stdout_total > len(answer.stdout),
            stderr_truncated=reply.stderr_total > len(answer.stderr),
            cpu_seconds=cpu,
            peak_memory_bytes=peak,
            wall_seconds=reply.wall,
            throttled=throttled,
        )

    def _healthy(self, worker: _Worker) -> bool:
        """Whether the worker is as clean as when it started: no processes or memory left by earlier jobs.

        Checked before a job rather than after the previous one, because the worker tears a finished job's
        namespaces down (and the kernel frees their tmpfs memory) after replying, off the caller's critical
        path.
        """
        try:
            # Generous: on a loaded machine a finished job's teardown (its exit, its tmpfs freed) can take
            # well over half a second, and recycling a clean worker costs a cold start; a dirty one is rare.
            deadline = time.monotonic() + _TEARDOWN_WAIT_S
            while True:
                # +1: the previous job's first process may still be exiting; the worker reaps it before it
                # reads the next job, so it never overlaps a job.
                pids_ok = worker.cgroup.pids_current() <= worker.idle_pids + 1
                memory_ok = worker.cgroup.resident() <= worker.idle_resident + _WORKER_SLACK_BYTES
                if pids_ok and memory_ok:
                    return True
                if time.monotonic() > deadline:
                    return False
                time.sleep(0.01)
        except OSError:
            return False

    # -- public job API -------------------------------------------------------------------------------------

    def run_python_sync(
        self,
        code: str,
        *,
        inputs: Mapping[str, InputValue] | None = None,
        limits: Limits | None = None,
        queue_timeout: float | None = None,
        sockets: Mapping[str, socket.socket] | None = None,
    ) -> RunResult:
        """Run ``code`` in a fresh sandboxed process and wait. See :func:`corral.sandbox.run_python_sync`."""
        if not isinstance(code, str):
            raise SandboxUsageError(f"sandbox code must be a str, not {type(code).__name__}")
        job = _Job(
            "python",
            limits or self.default_limits,
            code=code,
            inputs=dict(inputs or {}),
            sockets=dict(sockets or {}),
        )
        return self._run(job, queue_timeout)

    async def run_python(
        self,
        code: str,
        *,
        inputs: Mapping[str, InputValue] | None = None,
        limits: Limits | None = None,
        queue_timeout: float | None = None,
        sockets: Mapping[str, socket.socket] | None = None,
    ) -> RunResult:
        """Async variant of :meth:`run_python_sync` (the wait happens in a thread)."""
        import asyncio

        return await asyncio.to_thread(
            self.run_python_sync,
            code,
            inputs=inputs,
            limits=limits,
            queue_timeout=queue_timeout,
            sockets=sockets,
        )

    def run_sql_job(
        self,
        sql: dict[str, Any],
        inputs: Mapping[str, InputValue],
        limits: Limits | None,
        queue_timeout: float | None = None,
    ) -> RunResult:
        """Run a prepared SQL job (see ``corral.sandbox._sql``)."""
        return self._run(
            _Job("sql", limits or self.default_limits, sql=sql, inputs=dict(inputs)), queue_timeout
        )


def _processes_by_uid() -> dict[int, list[int]]:
    """Real uid -> pids of live (non-zombie) processes, from /proc/*/status.

    Zombies are skipped: bubblewrap's monitor exits without reaping its PID-1 helper, which the host's init
    then reaps within about a second; a zombie runs nothing and holds no resources but its pid.
    """
    found: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/status", encoding="ascii", errors="replace") as f:
                zombie = False
                for line in f:
                    if line.startswith("State:"):
                        zombie = line.split()[1] == "Z"
                    elif line.startswith("Uid:"):
                        if not zombie:
                            found.setdefault(int(line.split()[1]), []).append(int(entry))
                        break
        except OSError:
            continue
    return found


def _processes_of(uid: int) -> list[int]:
    return _processes_by_uid().get(uid, [])


def leftovers() -> list[str]:
    """Processes and cgroups of this process's pools that outlived their worker (open pools excepted)."""
    live_uids: set[int] = set()
    live_cgroups: set[Path] = set()
    for pool in list(_live_pools):
        with pool._lock:
            for w in pool._all:
                live_uids.add(w.uid)
                live_cgroups.update(w.cgroup.dirs)
    found: list[str] = []
    by_uid = _processes_by_uid()
    for uid, pids in by_uid.items():
        if uid in _used_uids and uid not in live_uids:
            found.extend(f"process {pid} (uid {uid})" for pid in pids)
    live_pids = {w.proc.pid for pool in list(_live_pools) for w in list(pool._all)}
    alive = {pid for pids in by_uid.values() for pid in pids}
    found.extend(f"rootless worker process {pid}" for pid in _rootless_workers - live_pids if pid in alive)
    prefix = f"corral-{os.getpid()}-"
    cgroot = Path("/sys/fs/cgroup")
    roots = (
        [cgroot]
        if (cgroot / "cgroup.controllers").exists()
        else [cgroot / n for n in ("memory", "pids", "cpu", "cpuacct")]
    )
    for root in roots:
        if root.is_dir():
            found.extend(
                f"cgroup {p}" for p in root.rglob(prefix + "*") if p.is_dir() and p not in live_cgroups
            )
    return found


_default: SandboxPool | None = None
_default_lock = threading.Lock()


def default_pool() -> SandboxPool:
    """The process-wide pool, created on first use and closed when the interpreter exits."""
    global _default
    with _default_lock:
        if _default is None or _default._closed:
            import atexit

            _default = SandboxPool()
            atexit.register(_default.close)
        return _default


def shutdown_default_pool() -> None:
    """Close the process-wide pool now (it is recreated on next use)."""
    global _default
    with _default_lock:
        pool, _default = _default, None
    if pool is not None:
        pool.close()
