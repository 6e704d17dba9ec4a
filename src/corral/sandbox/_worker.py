"""The warm worker: runs in bubblewrap as an unprivileged uid, starts a fresh namespaced process per job.

This file is executed as a script (``python -I -S -c <source>``) inside the worker's sandbox; it imports
nothing from corral (the repository is not visible in there), only the standard library and the preloaded data
libraries. The host speaks to it over one AF_UNIX stream socket: 4-byte big-endian length + JSON, with file
descriptors attached to the length prefix (input files host→worker, the job's scratch directory worker→host).

Three processes make a worker, split so that no job ever inherits another job's data:

- two **zygotes**, one per job slot, forked after the preload and before the first job. A zygote never
  receives a job, its code, its inputs or its output: it keeps one job process cloned and waiting in its
  slot's job cgroup (the next one once the previous has exited), and reports pids and exit statuses. Every job
  is cloned from a zygote, so every job starts from the same memory.
- the **broker** talks to the host: it receives a job, hands it to the ready job process of the job's slot,
  drains the job's output, enforces the wall clock and the CPU time of the slot's cgroup, and replies.

Per job: the job's process was cloned by a zygote ahead of time, straight into new user, mount, PID, network,
IPC, UTS and cgroup namespaces — PID 1 of its own PID namespace — and into its slot's job cgroup (memory, pids
and CPU time of its whole process tree); it has mapped its uid, mounted its own /proc and waits (its /dev is
the worker's: read-only, five device nodes). When a job arrives it mounts size-capped tmpfs on /work
(scratch), /tmp and /dev/shm and a read-only /data of links to the input descriptors, sets rlimits, drops
every capability, sets no_new_privs, non-dumpable and the seccomp filter, reseeds every random generator from
the kernel, sends "ready" with the scratch directory's fd, and executes the job's code. Its status channel
then carries exactly one fixed-size record ("done", exit code); anything else is a broken protocol and ends
the job.
"""

from __future__ import annotations

import base64
import contextlib
import ctypes
import json
import math
import os
import resource
import selectors
import signal
import socket
import struct
import sys
import time
import traceback
import types
from typing import Any

LIBC = ctypes.CDLL(None, use_errno=True)
LIBC.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong, ctypes.c_char_p]
LIBC.prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]
LIBC.syscall.restype = ctypes.c_long
# The same C library through PyDLL: calls keep holding the GIL, which the clone below needs (like os.fork).
PYLIBC = ctypes.PyDLL(None, use_errno=True)
PYLIBC.syscall.restype = ctypes.c_long
PYLIBC.syscall.argtypes = [
    ctypes.c_long,
    ctypes.c_ulong,
    ctypes.c_ulong,
    ctypes.c_ulong,
    ctypes.c_ulong,
    ctypes.c_ulong,
]

CLONE_NEWNS = 0x00020000
CLONE_NEWCGROUP = 0x02000000
CLONE_NEWUTS = 0x04000000
CLONE_NEWIPC = 0x08000000
CLONE_NEWUSER = 0x10000000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000
MS_RDONLY = 1
MS_NOSUID = 2
MS_NODEV = 4
MS_NOEXEC = 8
MS_REMOUNT = 32
MS_BIND = 4096
MS_REC = 16384
MS_PRIVATE = 1 << 18
PR_SET_PDEATHSIG = 1
PR_SET_CHILD_SUBREAPER = 36
PR_SET_DUMPABLE = 4
PR_CAPBSET_DROP = 24
PR_SET_NO_NEW_PRIVS = 38
PR_SET_SECCOMP = 22
PR_CAP_AMBIENT = 47
PR_CAP_AMBIENT_CLEAR_ALL = 4
SECCOMP_MODE_FILTER = 2
SYS_CAPSET = 126
SYS_CLONE = 56
JOB_NAMESPACES = (
    CLONE_NEWUSER | CLONE_NEWNS | CLONE_NEWPID | CLONE_NEWNET | CLONE_NEWIPC | CLONE_NEWUTS | CLONE_NEWCGROUP
)
JOB_UID = 1000


def _check(rc: int, what: str) -> None:
    if rc != 0:
        err = ctypes.get_errno()
        raise SetupError(f"{what}: {os.strerror(err)}")


def _mount(src: str | None, target: str, fstype: str | None, flags: int, data: str | None = None) -> None:
    rc = LIBC.mount(
        src.encode() if src else None,
        target.encode(),
        fstype.encode() if fstype else None,
        flags,
        data.encode() if data else None,
    )
    _check(rc, f"mount {fstype or src} on {target}")


def _prctl(option: int, arg: int = 0) -> None:
    _check(LIBC.prctl(option, arg, 0, 0, 0), f"prctl({option})")


def _drop_capabilities() -> None:
    for cap in range(64):
        if LIBC.prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) != 0:
            break  # EINVAL past the last capability the kernel knows
    LIBC.prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0)

    class Header(ctypes.Structure):
        _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]

    class Data(ctypes.Structure):
        _fields_ = [
            ("effective", ctypes.c_uint32),
            ("permitted", ctypes.c_uint32),
            ("inheritable", ctypes.c_uint32),
        ]

    header = Header(0x20080522, 0)
    data = (Data * 2)()
    _check(LIBC.syscall(SYS_CAPSET, ctypes.byref(header), ctypes.byref(data)), "capset")


def _load_seccomp(program: bytes) -> None:
    class SockFprog(ctypes.Structure):
        _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]

    buf = ctypes.create_string_buffer(program, len(program))
    fprog = SockFprog(len(program) // 8, ctypes.cast(buf, ctypes.c_void_p))
    _prctl(PR_SET_NO_NEW_PRIVS, 1)
    _check(LIBC.prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, ctypes.addressof(fprog), 0, 0), "seccomp")


def _write(path: str, text: str) -> None:
    fd = os.open(path, os.O_WRONLY)
    try:
        os.write(fd, text.encode())
    finally:
        os.close(fd)


def _send(sock: socket.socket, obj: object, fds: list[int] | None = None) -> None:
    payload = json.dumps(obj).encode()
    head = struct.pack(">I", len(payload))
    if fds:
        socket.send_fds(sock, [head], fds)
    else:
        sock.sendall(head)
    sock.sendall(payload)


def _recv_exact(sock: socket.socket, n: int) -> bytes:
    chunks = []
    while n:
        chunk = sock.recv(min(n, 1 << 20))
        if not chunk:
            raise EOFError("the other end closed the socket")
        chunks.append(chunk)
        n -= len(chunk)
    return b"".join(chunks)


def _recv(sock: socket.socket) -> tuple[dict[str, Any], list[int]]:
    head, fds, _flags, _addr = socket.recv_fds(sock, 4, 64)
    if not head:
        raise EOFError
    if len(head) < 4:
        head += _recv_exact(sock, 4 - len(head))
    (size,) = struct.unpack(">I", head)
    return json.loads(_recv_exact(sock, size)), fds


def _clone(flags: int) -> int:
    """fork(2) into new namespaces in one step: the child is PID 1 of its PID namespace, no middle process.

    Done like ``os.fork`` (Python's before/after-fork hooks around the call) but with the raw clone system
    call, which takes namespace flags. Safe because the worker is single-threaded when it calls this.
    """
    ctypes.pythonapi.PyOS_BeforeFork()
    pid = PYLIBC.syscall(SYS_CLONE, flags | signal.SIGCHLD, 0, 0, 0, 0)
    if pid == 0:
        ctypes.pythonapi.PyOS_AfterFork_Child()
        return 0
    ctypes.pythonapi.PyOS_AfterFork_Parent()
    if pid < 0:
        err = ctypes.get_errno()
        raise OSError(err, f"clone: {os.strerror(err)}")
    return int(pid)


#: Zygote -> broker records: tag ("P" spare ready, its socket attached; "X" exited), pid, wait status.
_ZYGOTE_MSG = struct.Struct(">cii")
#: Job cgroups a worker uses in turn (see corral/sandbox/_cgroup.py).
JOB_SLOTS = 2
#: Longest setup-error text a job process may report (before its code runs).
_MAX_SETUP_ERROR = 4000


def _rootless_limits(limits: dict[str, Any], nproc_base: int = 0) -> None:
    """Memory and process limits without a cgroup (the rootless backend without delegation).

    RLIMIT_DATA, not RLIMIT_AS: address space reserved by the preloaded libraries and thread stacks would make
    a tight RLIMIT_AS break threads; RLIMIT_DATA counts private writable memory (the heap, anonymous maps),
    so an allocation past it fails with MemoryError. It is per process, on top of what the process holds
    already. RLIMIT_NPROC is counted per user namespace and uid (Linux >= 5.14): the job is uid 1000 of a
    user namespace of its own, so it counts this job's processes only, not the host user's. Without a user
    namespace (rootless Landlock) it counts every task of the host user: ``nproc_base`` is their number
    when the job process was made, and the job may add ``pids`` to it.
    """
    held = {"VmData:": 0}
    with open("/proc/self/status", encoding="ascii") as f:
        for line in f:
            if line.split(maxsplit=1)[0] in held:
                held[line.split()[0]] = int(line.split()[1]) * 1024
    memory = held["VmData:"] + int(limits["memory_bytes"])
    resource.setrlimit(resource.RLIMIT_DATA, (memory, memory))
    # Not RLIMIT_AS, even on top of the current size: DuckDB reserves address space it never touches, and
    # failed. Shared anonymous maps are therefore unbounded here (docs/sandbox.md's table says so).
    nproc = nproc_base + int(limits["pids"])
    resource.setrlimit(resource.RLIMIT_NPROC, (nproc, nproc))


def _user_tasks() -> int:
    """How many tasks (threads) the kernel counts against this uid's RLIMIT_NPROC, from ``/proc``."""
    uid, count = os.getuid(), 0
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        with contextlib.suppress(OSError, ValueError, IndexError):
            if os.stat(f"/proc/{entry}").st_uid != uid:  # cheaper than reading every status file
                continue
            with open(f"/proc/{entry}/status", encoding="ascii", errors="replace") as f:
                text = f.read()
            if int(text.split("\nUid:")[1].split()[0]) == uid:
                count += int(text.split("\nThreads:")[1].split()[0])
    return count


_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def _tree(root: int) -> dict[int, int]:
    """``root`` and its descendants, each with its CPU ticks (with its reaped children's), from ``/proc``."""
    children: dict[int, list[int]] = {}
    times: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as f:
                fields = f.read().rsplit(b")", 1)[1].split()
        except (OSError, IndexError):
            continue
        pid = int(entry)
        children.setdefault(int(fields[1]), []).append(pid)
        times[pid] = sum(int(x) for x in fields[11:15])  # utime stime cutime cstime
    tree, frontier = {root: times.get(root, 0)}, [root]
    while frontier:
        for pid in children.get(frontier.pop(), []):
            if pid not in tree:
                tree[pid] = times[pid]
                frontier.append(pid)
    return tree


def _ticks(pid: int) -> int:
    """CPU ticks of one process, with its reaped children's (0 once it is gone)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return sum(int(x) for x in f.read().rsplit(b")", 1)[1].split()[11:15])
    except (OSError, IndexError, ValueError):
        return 0


def _tree_cpu_ns(root: int) -> int:
    """CPU time of ``root`` and its descendants, with their reaped children, from ``/proc`` (no cgroup)."""
    return sum(_tree(root).values()) * 1_000_000_000 // _CLOCK_TICKS


class SetupError(Exception):
    pass


class _NoNamespaces(Exception):
    """The Landlock backend's job process has no namespaces to set up."""


# -- the zygote: never holds job data ------------------------------------------------------------------------


class Zygote:
    """Keeps one job process ready for its job slot; sees no job, only pids and exit statuses.

    Runs single-threaded in a loop on its socket to the broker and a SIGCHLD wake-up descriptor. It clones a
    job process (announced as ``P`` with the process's end of its status socket) at start and each time the
    previous one has exited (announced as ``X`` with its wait status) — never two at once, so a slot's job
    cgroup holds one job at a time. Orphans of a job (Landlock backend: the zygote is their subreaper) are
    reaped silently. The socket closing means the broker is gone: the zygote exits, its children with it.
    """

    def __init__(
        self, sock: socket.socket, config: dict[str, Any], landlock: dict[str, Any] | None, slot: int
    ) -> None:
        self.sock = sock
        self.slot = slot
        self.config = config
        self.landlock = landlock
        self.seccomp = base64.b64decode(config["seccomp"])
        self.seccomp_command = base64.b64decode(config.get("seccomp_command", ""))
        self.uid = os.getuid()
        self.gid = os.getgid()
        self.current = 0
        self.procs_path: str | None = (config.get("cgroup_procs") or [None] * JOB_SLOTS)[slot]
        join: list[list[int]] = config.get("cgroup_join") or []
        # The zygote lives in its job slot's cgroup, so that its job processes are born there: moving a
        # process between cgroups costs an RCU grace period (milliseconds), a clone costs nothing more.
        for number, fds in enumerate(join):
            for fd in fds:
                if number == slot:
                    os.write(fd, b"0")
                os.close(fd)

    def serve(self) -> None:
        wake_r, wake_w = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        wake_w.setblocking(False)
        signal.set_wakeup_fd(wake_w.fileno(), warn_on_full_buffer=False)
        signal.signal(signal.SIGCHLD, lambda *_: None)
        self.wake = (wake_r, wake_w)
        sel = selectors.DefaultSelector()
        sel.register(self.sock, selectors.EVENT_READ)
        sel.register(wake_r, selectors.EVENT_READ)
        self._spawn()
        while True:
            for key, _ in sel.select():
                if key.fileobj is wake_r:
                    with contextlib.suppress(BlockingIOError):
                        wake_r.recv(4096)
                    continue
                with contextlib.suppress(InterruptedError):
                    if not self.sock.recv(1):
                        os._exit(0)  # the broker is gone: so are we, and our children with us
            self._reap()

    def _reap(self) -> None:
        while True:
            try:
                pid, wstatus = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            if pid == self.current:
                if self.landlock is not None:
                    self._clear_slot()
                self.sock.sendall(_ZYGOTE_MSG.pack(b"X", pid, wstatus))
                self._spawn()  # the slot is free again

    def _clear_slot(self) -> None:
        """Without a PID namespace a job's processes outlive its first one: kill and reap every process of
        the slot's cgroup but the zygote, so that its exit is reported (and the next job process made) only
        once nothing of the job runs."""
        me = os.getpid()
        for _ in range(5000):
            if self.procs_path is None:
                # No cgroup (rootless): the zygote is the subreaper of everything the job started, so the
                # job's processes are its descendants, orphans included; with no child left (the usual
                # case, known without reading /proc) there are none.
                try:
                    os.waitid(os.P_ALL, 0, os.WEXITED | os.WNOHANG | os.WNOWAIT)
                except ChildProcessError:
                    return
                pids = [pid for pid in _tree(me) if pid != me]
            else:
                with open(self.procs_path, "rb") as f:
                    pids = [int(p) for p in f.read().split() if int(p) != me]
            if not pids:
                return
            for pid in pids:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            with contextlib.suppress(ChildProcessError):
                while os.waitpid(-1, os.WNOHANG)[0]:
                    pass
            time.sleep(0.0005)
        os._exit(1)  # something of the job would not die: give the worker up

    def _spawn(self) -> None:
        parent, child = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        pid = _clone(JOB_NAMESPACES if self.landlock is None else 0)
        if pid == 0:
            try:
                signal.set_wakeup_fd(-1)
                signal.signal(signal.SIGCHLD, signal.SIG_DFL)
                # Nothing of the zygote's channels may survive into the job.
                for sock in (self.sock, parent, *self.wake):
                    sock.close()
                JobProcess(self, child).main()
            finally:
                os._exit(125)
        child.close()
        self.current = pid
        socket.send_fds(self.sock, [_ZYGOTE_MSG.pack(b"P", pid, 0)], [parent.fileno()])
        parent.close()


# -- the job process: cloned from the zygote, waits for one job, runs it -------------------------------


class JobProcess:
    def __init__(self, zygote: Zygote, status: socket.socket) -> None:
        self.z = zygote
        self.status = status
        self.user_tasks = 0

    def _report_setup_error(self, exc: BaseException) -> None:
        text = f"{type(exc).__name__}: {exc}".encode(errors="replace")[:_MAX_SETUP_ERROR]
        with contextlib.suppress(BaseException):
            self.status.sendall(b"E" + struct.pack(">H", len(text)) + text)

    def main(self) -> None:
        """Everything that does not depend on the job, done ahead of time; then wait for the job."""
        try:
            _prctl(PR_SET_PDEATHSIG, signal.SIGKILL)  # the zygote gone means no job will ever come
            # Its own /proc/self files (and, with namespaces, the uid map) need a dumpable process; turned off
            # again before the job's code runs.
            _prctl(PR_SET_DUMPABLE, 1)
            if self.z.landlock is not None:
                raise _NoNamespaces
            _write("/proc/self/setgroups", "deny")
            _write("/proc/self/uid_map", f"{JOB_UID} {self.z.uid} 1")
            _write("/proc/self/gid_map", f"{JOB_UID} {self.z.gid} 1")
            _mount(None, "/", None, MS_REC | MS_PRIVATE)
            _mount("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC)
            socket.sethostname("sandbox")
        except _NoNamespaces:
            if self.z.landlock is not None and self.z.landlock.get("rootless"):
                self.user_tasks = _user_tasks()  # counted ahead of the job: off its critical path
        except BaseException as exc:
            self._report_setup_error(exc)
            os._exit(125)
        try:
            job, fds = _recv(self.status)
        except BaseException:
            os._exit(0)
        self.run(job, fds[0], fds[1], fds[2:])

    def run(self, job: dict[str, Any], out_w: int, err_w: int, input_fds: list[int]) -> None:
        """Per-job cgroup and mounts, limits, privilege drop, then the job's code."""
        limits = job["limits"]
        status = self.status
        dirs = {name: name for name in _JOB_DIRS}
        command = None
        try:
            if self.z.landlock is not None:
                dirs = _landlock_setup(job, input_fds, self.z.landlock)
            else:
                _mount_job(job, input_fds)
            workdir = dirs["/work"]
            scratch = os.open(workdir, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
            null = os.open("/dev/null", os.O_RDONLY)
            os.dup2(null, 0)
            os.dup2(out_w, 1)
            os.dup2(err_w, 2)
            keep = {0, 1, 2, status.fileno(), scratch, *input_fds}
            for name in os.listdir("/proc/self/fd"):
                if int(name) not in keep:
                    with contextlib.suppress(OSError):
                        os.close(int(name))
            # Per process, a backstop behind the job cgroup's CPU time (which the broker enforces on the whole
            # tree, and so first): SIGXCPU (a job may catch it), SIGKILL from the kernel one second later. It
            # counts from the clone, so what this process used before its job is added.
            own = resource.getrusage(resource.RUSAGE_SELF)
            cpu = max(1, math.ceil(own.ru_utime + own.ru_stime + limits["cpu_seconds"]))
            resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu + 1))
            resource.setrlimit(resource.RLIMIT_FSIZE, (limits["file_size_bytes"], limits["file_size_bytes"]))
            resource.setrlimit(resource.RLIMIT_NOFILE, (limits["open_files"], limits["open_files"]))
            resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
            if job.get("rlimits"):
                _rootless_limits(limits, self.user_tasks)
            with open("/proc/self/oom_score_adj", "w") as f:
                f.write("1000")  # when a memory cgroup overflows, the job dies, not the worker
            os.chdir(workdir)
            os.environ.clear()
            os.environ.update(job["env"])
            remapped = dirs["/work"] != "/work"
            if remapped:  # rootless Landlock: the job's directories are not at /work, /tmp, /data
                os.environ.update(
                    HOME=dirs["/work"], TMPDIR=dirs["/tmp"], MPLCONFIGDIR=dirs["/tmp"] + "/matplotlib"
                )
            _drop_capabilities()
            _prctl(PR_SET_DUMPABLE, 0)
            if self.z.landlock is not None:
                _prctl(PR_SET_NO_NEW_PRIVS, 1)
                ll = self.z.landlock
                ll["restrict_self"](
                    read_exec=ll["read_exec"],
                    read_only=[*ll["read_only"], f"/proc/{os.getpid()}", dirs["/data"]],
                    read_write=[dirs["/work"], dirs["/tmp"]],
                    read_fds=input_fds,
                    devices=ll["devices"],
                )
            if job["kind"] == "command":  # a vetted executable: see corral/sandbox/_command_job.py
                if self.z.landlock is not None:
                    raise SetupError("commands need a backend with namespaces")
                command = sys.modules["corral_command"].start(job, input_fds, self.z.seccomp_command)
            _load_seccomp(self.z.seccomp)
            if remapped:
                _remap_paths(dirs)
            _reseed()
            # Ready: the scratch directory goes with it, the last thing sent before the job's code runs; from
            # here on the status channel carries exactly one "done" record.
            socket.send_fds(status, [b"S"], [scratch])
            os.close(scratch)
        except BaseException as exc:
            self._report_setup_error(exc)
            os._exit(125)
        if command is not None:
            command.supervise(status.fileno())
        _execute(job, status)


def _mount_job(job: dict[str, Any], input_fds: list[int]) -> None:
    """The bubblewrap backend's per-job mounts: fresh tmpfs on /work, /tmp, /dev/shm; /data links."""
    limits = job["limits"]
    common = MS_NOSUID | MS_NODEV
    inodes = limits["scratch_inodes"]
    scratch_opts = f"size={limits['scratch_bytes']},nr_inodes={inodes},mode=0700,uid={JOB_UID},gid={JOB_UID}"
    _mount("tmpfs", "/work", "tmpfs", common, scratch_opts)
    _mount("tmpfs", "/tmp", "tmpfs", common, f"size={limits['tmp_bytes']},nr_inodes={inodes},mode=1777")
    _mount(
        "tmpfs",
        "/dev/shm",
        "tmpfs",
        common | MS_NOEXEC,
        f"size={limits['tmp_bytes']},nr_inodes={inodes},mode=1777",
    )
    _mount("tmpfs", "/data", "tmpfs", common | MS_NOEXEC, "size=65536,nr_inodes=1024,mode=0755")
    for name, fd in zip(job["inputs"], input_fds, strict=True):
        os.symlink(f"/proc/self/fd/{fd}", f"/data/{name}")
    _mount(None, "/data", None, MS_REMOUNT | MS_RDONLY | common | MS_NOEXEC)


#: The directories a job has: scratch, temporary files, inputs.
_JOB_DIRS = ("/work", "/tmp", "/data")


def _landlock_setup(job: dict[str, Any], input_fds: list[int], landlock: dict[str, Any]) -> dict[str, str]:
    """The Landlock backend's per-job files: the job's fresh directory, made by the host, holds ``work``,
    ``tmp`` and ``data``; here only the links to the inputs are made. As root ``/work``, ``/tmp`` and
    ``/data`` are links into it (the worker has a mount namespace of its own); rootless there is no such
    namespace, and the job's directories are where the host made them (their real paths, not the ``cur``
    link the host moves to the next job's)."""
    root = os.path.realpath(landlock["job_root"]) if landlock.get("rootless") else ""
    dirs = {name: root + name for name in _JOB_DIRS}
    for name, fd in zip(job["inputs"], input_fds, strict=True):
        os.symlink(f"/proc/self/fd/{fd}", f"{dirs['/data']}/{name}")
    os.chmod(dirs["/data"], 0o500)
    return dirs


def _remap_paths(dirs: dict[str, str]) -> None:
    """Rootless Landlock: ``/work``, ``/tmp`` and ``/data`` given to Python's file functions mean the job's
    own directories (no mount namespace can put them there). A convenience for code written for the other
    backends, not a boundary: Landlock is, and a job calling the kernel directly reaches the same places."""
    import builtins
    import functools
    import io

    # The job's real directories may lie under /tmp themselves: a path already there is left alone.
    own = os.path.dirname(os.path.dirname(dirs["/work"])) + "/"
    dirs = {**dirs, "/dev/shm": dirs["/tmp"]}  # as on the root Landlock backend

    def real(path: Any) -> Any:
        text = os.fspath(path) if isinstance(path, (str, bytes, os.PathLike)) else None
        name = os.fsdecode(text) if text is not None else ""
        if name.startswith(own):
            return path
        for prefix, target in dirs.items():
            if name == prefix or name.startswith(prefix + "/"):
                mapped = target + name[len(prefix) :]
                return os.fsencode(mapped) if isinstance(text, bytes) else mapped
        return path

    def wrap(fn: Any, count: int) -> Any:
        @functools.wraps(fn)
        def remapped(*args: Any, **kwargs: Any) -> Any:
            for key in ("path", "file", "src", "dst"):
                if key in kwargs:
                    kwargs[key] = real(kwargs[key])
            return fn(*(real(a) if i < count else a for i, a in enumerate(args)), **kwargs)

        return remapped

    builtins.open = io.open = wrap(io.open, 1)
    ones = ("open", "stat", "lstat", "access", "listdir", "scandir", "mkdir", "remove", "unlink", "rmdir")
    for name in (*ones, "readlink", "chdir", "truncate", "utime", "chmod", "mkfifo"):
        setattr(os, name, wrap(getattr(os, name), 1))
    for name in ("rename", "replace", "symlink", "link"):
        setattr(os, name, wrap(getattr(os, name), 2))
    sqljob: Any = sys.modules.get("corral_sqljob")
    if sqljob is not None:  # DuckDB opens its files itself: the SQL job module hands it the real paths
        sqljob.real_path = real
        sqljob.RESULT_PATH = real(sqljob.RESULT_PATH)


def _reseed() -> None:
    """Every random generator the preload seeded gets fresh kernel entropy: no two jobs share a stream."""
    import random

    random.seed(os.urandom(32))
    numpy = sys.modules.get("numpy")
    if numpy is not None:
        with contextlib.suppress(Exception):
            # The legacy global generator's whole state (624 words) from the kernel.
            state = numpy.frombuffer(os.urandom(2496), dtype=numpy.uint32)
            numpy.random.set_state(("MT19937", state, 0))
    tempfile = sys.modules.get("tempfile")
    if tempfile is not None:
        tempfile._name_sequence = None  # type: ignore[attr-defined]  # its name generator re-creates itself from `random`


# -- the broker: talks to the host, runs one job at a time ---------------------------------------------------


class _Status:
    """The job's status stream, parsed strictly: the job process is hostile once its code runs.

    Before the job's code: ``S`` with the scratch directory's fd attached (ready), or ``E`` + 2-byte length +
    text (setup failed). After ``S``: exactly ``D`` + one byte (exit code), or for a command job ``K`` + one
    byte (the signal, 1-64, that ended the program). Anything else — another tag, a descriptor, a second
    record, more bytes — is a broken protocol: the job is killed for it.
    """

    def __init__(self, *, signals: bool = False) -> None:
        self.signals = signals
        """A command's supervisor may report ``K`` + the signal that ended the program instead of ``D``."""
        self.killed: int | None = None
        self.buf = b""
        self.phase = "setup"
        self.scratch_seen = False
        self.exit: int | None = None
        self.setup_error: str | None = None
        self.violation = False

    @property
    def final(self) -> bool:
        return (
            self.exit is not None or self.killed is not None or self.setup_error is not None or self.violation
        )

    def feed(self, data: bytes, fds: list[int]) -> int | None:
        """Take bytes and descriptors from the job; return the scratch fd when this message carried it."""
        scratch: int | None = None
        if fds:
            if self.phase == "setup" and not self.scratch_seen and not self.buf and data[:1] == b"S":
                scratch, fds = fds[0], fds[1:]
                self.scratch_seen = True
            else:
                self.violation = True
            for fd in fds:
                os.close(fd)
        if self.final:
            if data:
                self.violation = True
            return scratch
        self.buf += data
        while self.buf and not self.final:
            tag = self.buf[:1]
            if self.phase == "setup" and tag == b"S" and self.scratch_seen:
                self.phase = "running"
                self.buf = self.buf[1:]
            elif self.phase == "setup" and tag == b"E":
                if len(self.buf) < 3:
                    break
                (n,) = struct.unpack(">H", self.buf[1:3])
                if n > _MAX_SETUP_ERROR:
                    self.violation = True
                elif len(self.buf) >= 3 + n:
                    self.setup_error = self.buf[3 : 3 + n].decode(errors="replace") or "unknown"
                    self.buf = self.buf[3 + n :]
                else:
                    break
            elif self.phase == "running" and tag == b"D":
                if len(self.buf) < 2:
                    break
                self.exit = self.buf[1]
                self.buf = self.buf[2:]
            elif self.phase == "running" and tag == b"K" and self.signals:
                if len(self.buf) < 2:
                    break
                if not 1 <= self.buf[1] <= 64:
                    self.violation = True
                self.killed = self.buf[1]
                self.buf = self.buf[2:]
            else:
                self.violation = True
        if self.buf and (self.exit is not None or self.killed is not None or self.setup_error is not None):
            self.violation = True  # bytes after the last record
        return scratch


def _read_status(sock: socket.socket, status: _Status, scratch_fds: list[int]) -> str:
    """Feed what the job's status socket holds now to ``status``: "read", "nothing" (yet), or "end"."""
    try:
        data, fds, _flags, _addr = socket.recv_fds(sock, 4096, 4)
    except BlockingIOError:
        return "nothing"
    except OSError:
        return "end"
    if not data and not fds:
        return "end"
    scratch = status.feed(data, fds)
    if scratch is not None:
        scratch_fds.append(scratch)
    return "read"


def _read_counter(fd: int) -> int:
    """A cgroup counter through a descriptor the host opened: ``cpuacct.usage`` (ns) or v2 ``cpu.stat``."""
    text = os.pread(fd, 4096, 0).decode("ascii", "replace")
    if text[:1].isdigit():
        return int(text.split()[0])
    for line in text.splitlines():
        key, _, value = line.partition(" ")
        if key == "usage_usec":
            return int(value) * 1000
    return 0


class Broker:
    """The worker's side facing the host: one job at a time, each in a job process from the zygote."""

    def __init__(
        self,
        sock: socket.socket,
        zygotes: list[tuple[int, socket.socket]],
        config: dict[str, Any],
        landlock: bool,
    ) -> None:
        self.sock = sock
        self.zygotes = zygotes  # (pid, socket) per job slot
        self.landlock = landlock
        self.cpu_fds: list[int | None] = config.get("cgroup_cpu") or [None, None]
        self.spares: dict[int, tuple[int, socket.socket]] = {}  # job slot -> (pid, status socket)
        self.exits: dict[int, int] = {}

    # -- the zygote ----------------------------------------------------------------------------------------

    def _zygote_message(self, slot: int) -> None:
        zygote = self.zygotes[slot][1]
        data, fds, _flags, _addr = socket.recv_fds(zygote, _ZYGOTE_MSG.size, 1)
        if not data:
            os._exit(1)  # a zygote died: so does the worker, and the host replaces it
        if len(data) < _ZYGOTE_MSG.size:
            data += _recv_exact(zygote, _ZYGOTE_MSG.size - len(data))
        tag, pid, value = _ZYGOTE_MSG.unpack(data)
        if tag == b"P" and fds:
            self.spares[slot] = (pid, socket.socket(fileno=fds[0]))
        elif tag == b"X":
            self.exits[pid] = value

    def _take_spare(self, slot: int) -> tuple[int, socket.socket]:
        """The slot's ready job process (its zygote makes the next one once this one has exited)."""
        while slot not in self.spares:
            self._zygote_message(slot)
        return self.spares.pop(slot)

    def _hand_over(self, slot: int, job: dict[str, Any], fds: list[int]) -> tuple[int, socket.socket, int]:
        """Give ``job`` to the slot's ready job process: its pid, status socket, and a pidfd taken before
        the job is sent (after, the process may have run, exited and been reaped, its pid free for reuse)."""
        pid, status_sock = self._take_spare(slot)
        pidfd = -1
        try:
            pidfd = os.pidfd_open(pid)
            _send(status_sock, job, fds)
        except OSError:
            if pidfd >= 0:
                os.close(pidfd)
            status_sock.close()
            self._wait_exit(pid, slot)
            raise
        return pid, status_sock, pidfd

    def _wait_exit(self, pid: int, slot: int) -> int:
        while pid not in self.exits:
            self._zygote_message(slot)
        return self.exits[pid]

    # -- the job's process tree ----------------------------------------------------------------------------

    def _cpu_ns(self, slot: int, pid: int, *, started: bool = True) -> int:
        """CPU time of the slot's job cgroup, or without one of the slot's zygote and its descendants.
        Before the job's code has started (``started`` False) the job process has no children: its time and
        the zygote's, two reads instead of a walk of ``/proc``."""
        fd = self.cpu_fds[slot]
        if fd is not None:
            return _read_counter(fd)
        if not started:
            return sum(_ticks(p) for p in (self.zygotes[slot][0], pid)) * 1_000_000_000 // _CLOCK_TICKS
        # From the slot's zygote, not the job's first process: once that has ended and the zygote reaped it,
        # its time (with its reaped children's) is the zygote's; and without a PID namespace the job's
        # orphans are the zygote's too (it is their subreaper).
        return _tree_cpu_ns(self.zygotes[slot][0])

    def _kill_tree(self, pid: int, pidfd: int, slot: int) -> None:
        """SIGKILL the job's first process. With namespaces its PID namespace goes with it; without, the
        slot's zygote kills the rest before it reports the exit, and this waits for that report. Through its
        pidfd: once the zygote has reaped it, its pid may name another process (without a PID namespace, any
        of the host user's)."""
        with contextlib.suppress(ProcessLookupError):
            signal.pidfd_send_signal(pidfd, signal.SIGKILL)
        if self.landlock:
            self._wait_exit(pid, slot)

    def run_job(self, job: dict[str, Any], input_fds: list[int]) -> tuple[dict[str, Any], list[int]]:
        started = time.monotonic()
        limits = job["limits"]
        out_r, out_w = os.pipe()
        err_r, err_w = os.pipe()
        slot = int(job["slot"])
        try:
            pid, status_sock, pidfd = self._hand_over(slot, job, [out_w, err_w, *input_fds])
        except OSError:
            # The job process died before its job (it should not); start the job in a fresh one.
            pid, status_sock, pidfd = self._hand_over(slot, job, [out_w, err_w, *input_fds])
        os.close(out_w)
        os.close(err_w)
        cap = limits["output_bytes"]
        outputs = {out_r: bytearray(), err_r: bytearray()}
        totals = {out_r: 0, err_r: 0}
        sel = selectors.DefaultSelector()
        for fd in (out_r, err_r):
            os.set_blocking(fd, False)
            sel.register(fd, selectors.EVENT_READ)
        status_sock.setblocking(False)
        sel.register(status_sock, selectors.EVENT_READ)
        sel.register(pidfd, selectors.EVENT_READ)
        # While this job runs, the other slot's zygote reports the previous job's exit and the next process.
        self.exits.clear()  # statuses of earlier jobs are no longer waited for
        following = (slot + 1) % JOB_SLOTS
        following_zygote = self.zygotes[following][1]
        sel.register(following_zygote, selectors.EVENT_READ)
        status = _Status(signals=job["kind"] == "command")
        scratch_fds: list[int] = []
        killed_for: str | None = None
        deadline = started + limits["wall_seconds"]
        cpu_limit = limits["cpu_seconds"] * 1e9
        cpu_rate = max(0.01, float(job.get("cpu_rate") or 1.0))  # most CPU-seconds per second the tree gets
        cpu_start = cpu_seen = self._cpu_ns(slot, pid, started=False)
        cpu_check = started + limits["cpu_seconds"] / cpu_rate
        dead = False

        def drain(fd: int) -> bool:
            """Read what is available; False at EOF."""
            while True:
                try:
                    chunk = os.read(fd, 1 << 16)
                except BlockingIOError:
                    return True
                if not chunk:
                    return False
                room = cap - len(outputs[fd])
                if room > 0:
                    outputs[fd] += chunk[:room]
                totals[fd] += len(chunk)
                if len(chunk) < (1 << 16):
                    return True

        # The job is over when it reports "done" (normal end; its teardown then happens off the critical
        # path), breaks its protocol, or its first process ends (a signal, a limit).
        while not status.final and not dead:
            now = time.monotonic()
            if now >= cpu_check and killed_for is None:
                cpu_seen = max(cpu_seen, self._cpu_ns(slot, pid))
                used = cpu_seen - cpu_start
                if used >= cpu_limit:
                    killed_for = "cpu"
                    self._kill_tree(pid, pidfd, slot)
                else:
                    cpu_check = now + (cpu_limit - used) / 1e9 / cpu_rate
            if now >= deadline and killed_for is None:
                killed_for = "wall"
                self._kill_tree(pid, pidfd, slot)
            timeout = max(0.0, min(deadline, cpu_check) - now) if killed_for is None else 5.0
            events = sel.select(timeout=timeout)
            if not events and killed_for is not None:
                break  # killed, yet nothing ends: give up on this job, the host recycles the worker
            for key, _ in events:
                if key.fileobj == pidfd:
                    dead = True
                elif key.fileobj is following_zygote:
                    self._zygote_message(following)
                elif key.fileobj is status_sock:
                    if _read_status(status_sock, status, scratch_fds) == "end":
                        sel.unregister(status_sock)
                elif not drain(key.fd):
                    sel.unregister(key.fd)
        if dead:
            # The job's first process ended, maybe an instant after it wrote to its status channel, and the
            # loop above stopped at the first event: whatever it wrote is in the socket, and is judged too.
            while not status.final and _read_status(status_sock, status, scratch_fds) == "read":
                pass
        # Without a cgroup the tree's CPU time is read from /proc while the tree still exists.
        cpu_end = max(cpu_seen, self._cpu_ns(slot, pid)) if self.cpu_fds[slot] is None else None
        if status.violation:
            killed_for = killed_for or "protocol"
        # Always, "done" too: the record is written by a process the job's code controls, so it ends the
        # job only because the job is killed here; otherwise a job that wrote it early would run on, past its
        # limits, after its reply.
        self._kill_tree(pid, pidfd, slot)
        for fd in (out_r, err_r):
            with contextlib.suppress(OSError):
                drain(fd)
        wall = time.monotonic() - started
        sel.close()
        os.close(pidfd)
        status_sock.close()
        os.close(out_r)
        os.close(err_r)
        stderr = bytes(outputs[err_r])
        if status.violation:
            note = b"\n[sandbox: the job wrote to its status channel and was stopped]\n"
            stderr = stderr[: max(0, cap - len(note))] + note
        result: dict[str, Any] = {
            "id": job["id"],
            "stdout": base64.b64encode(bytes(outputs[out_r])).decode(),
            "stderr": base64.b64encode(stderr).decode(),
            "stdout_total": totals[out_r],
            "stderr_total": max(totals[err_r], len(stderr)),
            "wall": wall,
            "killed_for": killed_for,
            "setup_error": status.setup_error,
            "exit": None,
            "wstatus": None,
        }
        with contextlib.suppress(OSError, ValueError):
            # For diagnostics where the host reads its cgroup; the only count without one (rootless).
            result["cpu_ns"] = max(0, (self._cpu_ns(slot, pid) if cpu_end is None else cpu_end) - cpu_start)
        if status.exit is not None and killed_for is None:
            # Normal end: the job said how it ended, and was killed right after (a lying job only lies about
            # its own exit code). Its teardown goes on while the next job runs, in the other job slot.
            result["exit"] = status.exit
        else:
            wstatus = self._wait_exit(pid, slot)
            # A command's supervisor reports the signal that ended the program (a limit's kill, a crash).
            killed = status.killed is not None and killed_for is None
            result["wstatus"] = status.killed if killed else wstatus
        return result, scratch_fds

    def serve(self) -> None:
        for slot in range(JOB_SLOTS):  # ready when both slots have their first job process
            while slot not in self.spares:
                self._zygote_message(slot)
        _send(self.sock, {"ready": True, "pid": os.getpid()})
        while True:
            try:
                job, fds = _recv(self.sock)
            except EOFError:
                os._exit(0)  # the host is done with us; skip the interpreter's slow finalization
            try:
                result, out_fds = self.run_job(job, fds)
            finally:
                for fd in fds:
                    os.close(fd)
            _send(self.sock, result, out_fds)
            for fd in out_fds:
                os.close(fd)
            # The finished job is torn down (address space, namespaces) in its slot, and its zygote clones
            # the slot's next job process then, while the next job runs in the other slot.


# Bound before any job code runs: a job that monkey-patches os or resource cannot break its own report (and if
# it breaks it anyway, the broker falls back to the job process's exit status).
_os_write = os.write
_os_exit = os._exit


def _execute(job: dict[str, Any], status: socket.socket) -> None:
    """The job after the privilege drop: run its code as ``__main__``, report "done", exit."""
    import io

    sys.stdin = io.TextIOWrapper(io.FileIO(0, "r", closefd=False), encoding="utf-8")
    sys.stdout = io.TextIOWrapper(
        io.FileIO(1, "w", closefd=False), encoding="utf-8", errors="backslashreplace"
    )
    sys.stderr = io.TextIOWrapper(
        io.FileIO(2, "w", closefd=False), encoding="utf-8", errors="backslashreplace", line_buffering=True
    )
    status_fd = os.dup(status.fileno())
    status.detach()
    code = 0
    try:
        if job["kind"] == "sql":
            sys.modules["corral_sqljob"].run(job["sql"])
        else:
            namespace = {"__name__": "__main__", "__builtins__": __builtins__}
            exec(compile(job["code"], "<job>", "exec"), namespace)
    except SystemExit as exc:
        if exc.code is None:
            code = 0
        elif isinstance(exc.code, int):
            code = exc.code & 0xFF
        else:
            print(exc.code, file=sys.stderr)
            code = 1
    except BaseException:
        traceback.print_exc()
        code = 1
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    except BaseException:
        code = code or 1
    with contextlib.suppress(BaseException):
        _os_write(status_fd, b"D" + bytes([code & 0xFF]))
    _os_exit(code)


def main() -> None:
    config = json.loads(sys.argv[1])
    sys.path[:0] = config["sys_path"]
    os.environ.update(config["env"])
    sock = socket.socket(fileno=int(config["fd"]))
    # corral's SQL job module, under the name job code imports it by (see corral/sandbox/sqljob.py).
    sqljob = types.ModuleType("corral_sqljob")
    exec(compile(config["sqljob"], "corral_sqljob", "exec"), sqljob.__dict__)
    sys.modules["corral_sqljob"] = sqljob
    command = types.ModuleType("corral_command")
    exec(compile(config.get("command", ""), "corral_command", "exec"), command.__dict__)
    sys.modules["corral_command"] = command
    # Preload what jobs use, so a job's clone starts with them imported (the point of a warm worker).
    for name in config["preload"]:
        with contextlib.suppress(Exception):
            __import__(name)
    if "matplotlib" in sys.modules:
        import matplotlib

        matplotlib.use("Agg")
        with contextlib.suppress(Exception):
            import matplotlib.pyplot
    # Pay numpy's one-time set-up of its global generator here, not in every job's reseed; and the first-use
    # costs of the common paths (lazy imports, caches), which a job would otherwise pay every time.
    _reseed()
    _warm_up()
    landlock: dict[str, Any] | None = config.get("landlock")
    if landlock is not None:
        # The Landlock backend (no user namespaces): jobs are plain clones that confine themselves.
        namespace: dict[str, Any] = {"__name__": "corral_landlock"}
        exec(compile(landlock["source"], "<landlock>", "exec"), namespace)
        landlock["restrict_self"] = namespace["restrict_self"]
    _prctl(PR_SET_DUMPABLE, 0)
    # Jobs are cloned without the C library's fork handlers, which is only safe single-threaded: refuse to
    # serve rather than risk a job deadlocking on a lock another thread held at the clone.
    threads = sorted(os.listdir("/proc/self/task"))
    if len(threads) != 1:
        names = []
        for t in threads:
            with open(f"/proc/self/task/{t}/comm") as comm:
                names.append(comm.read().strip())
        _send(sock, {"ready": False, "error": f"worker has {len(threads)} threads after preload: {names}"})
        os._exit(1)
    # Move every object the preload created to the permanent generation: a job's garbage collection then
    # never walks (and so never copies-on-write) the zygote's pages.
    import gc

    gc.collect()
    gc.freeze()
    zygotes: list[tuple[int, socket.socket]] = []
    for slot in range(JOB_SLOTS):
        zygotes.append(_start_zygote(sock, config, landlock, slot, [z for _pid, z in zygotes]))
    for fds in config.get("cgroup_join") or []:
        for fd in fds:
            os.close(fd)
    Broker(sock, zygotes, config, landlock is not None).serve()


def _warm_up() -> None:
    """Run the preloaded libraries' common paths once, on our own data, before the zygotes are forked.

    A zygote never runs a job, so whatever a library sets up lazily on first use (submodule imports, caches,
    compiled kernels) would otherwise be paid by every job. Nothing here starts a thread.
    """
    import io

    pd = sys.modules.get("pandas")
    if pd is not None:
        with contextlib.suppress(Exception):
            frame = pd.read_csv(io.StringIO("k,v,d\n1,2.5,2024-01-01\n2,3.5,2024-01-02\n1,4.0,2024-01-03\n"))
            frame["d"] = pd.to_datetime(frame["d"])
            grouped = frame.groupby("k")["v"].agg(["sum", "mean", "count"])
            frame.merge(grouped, left_on="k", right_index=True).sort_values("v").to_csv(io.StringIO())
            frame.describe()
            frame.pivot_table(index="k", values="v", aggfunc="sum")
            numpy = sys.modules["numpy"]
            rng = numpy.random.default_rng(0)
            pd.DataFrame({"k": rng.integers(0, 10, 1000), "v": rng.random(1000)}).groupby("k")["v"].sum()
    plt = sys.modules.get("matplotlib.pyplot")
    if plt is not None:
        with contextlib.suppress(Exception):
            figure, axes = plt.subplots()
            axes.bar(["a", "b"], [1, 2])
            axes.plot([1, 2], [3, 4])
            figure.savefig(io.BytesIO(), format="png")
            plt.close(figure)
    sqlite3 = sys.modules.get("sqlite3")
    if sqlite3 is not None:
        with contextlib.suppress(Exception):
            sqlite3.connect(":memory:").execute("select 1").fetchall()


def _start_zygote(
    sock: socket.socket,
    config: dict[str, Any],
    landlock: dict[str, Any] | None,
    slot: int,
    others: list[socket.socket],
) -> tuple[int, socket.socket]:
    """Fork one job slot's zygote (before any job: it never holds job data); its pid and socket."""
    broker_end, zygote_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    broker_pid = os.getpid()
    pid = os.fork()
    if pid == 0:
        try:
            _prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
            if os.getppid() != broker_pid:
                os._exit(0)
            for channel in (sock, broker_end, *others):
                channel.close()
            for fd in config.get("cgroup_cpu") or []:
                if fd is not None:
                    os.close(fd)
            if landlock is not None:
                _prctl(PR_SET_CHILD_SUBREAPER, 1)  # a job's orphans come back to the zygote, which reaps them
            Zygote(zygote_end, config, landlock, slot).serve()
        finally:
            os._exit(1)
    zygote_end.close()
    return pid, broker_end


if __name__ == "__main__":
    main()
