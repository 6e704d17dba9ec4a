"""The warm worker: runs in bubblewrap as an unprivileged uid, starts a fresh namespaced process per job.

This file is executed as a script (``python -I -S -c <source>``) inside the worker's sandbox; it imports
nothing from corral (the repository is not visible in there), only the standard library and the preloaded data
libraries. The host speaks to it over one AF_UNIX stream socket: 4-byte big-endian length + JSON, with file
descriptors attached to the length prefix (input files host→worker, the job's scratch directory worker→host).

Per job: the job's process was cloned ahead of time (``_spawn_spare``) straight into new user, mount, PID,
network, IPC, UTS and cgroup namespaces — PID 1 of its own PID namespace — has mapped its uid and mounted its
own /proc, and waits for a job. When one arrives (``run_job``) it mounts size-capped tmpfs on /work (scratch),
/tmp and /dev/shm and a read-only /data of links to the input descriptors, sends the host the scratch
directory's fd, sets rlimits, drops every capability, sets no_new_privs, non-dumpable and the seccomp filter,
and executes the job's code; it reports "done" with its exit code and CPU time. The worker enforces the wall
clock (SIGKILL), drains stdout/stderr with a cap, replies, then reaps the job and clones the next one.
"""

from __future__ import annotations

import base64
import contextlib
import ctypes
import json
import os
import resource
import selectors
import signal
import socket
import struct
import sys
import time
import traceback
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


class SetupError(Exception):
    pass


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


class Worker:
    def __init__(self, sock: socket.socket, config: dict[str, Any]) -> None:
        self.sock = sock
        self.seccomp = base64.b64decode(config["seccomp"])
        self.uid = os.getuid()
        self.gid = os.getgid()
        self.pending = 0
        self.spare: tuple[int, socket.socket] | None = None
        # The Landlock backend (no user namespaces): jobs are plain forks that confine themselves.
        self.landlock: dict[str, Any] | None = config.get("landlock")
        if self.landlock is not None:
            namespace: dict[str, Any] = {"__name__": "corral_landlock"}
            exec(compile(self.landlock["source"], "<landlock>", "exec"), namespace)
            self.landlock["restrict_self"] = namespace["restrict_self"]

    # -- the job's side -------------------------------------------------------------------------------------

    def _child(
        self, job: dict[str, Any], status: socket.socket, out_w: int, err_w: int, input_fds: list[int]
    ) -> None:
        """The job's half of the job process: per-job mounts, limits, privilege drop, then the job's code."""
        limits = job["limits"]
        workdir = "/work"
        try:
            if self.landlock is not None:
                workdir = _landlock_setup(job, input_fds)
            else:
                self._mount_job(job, input_fds)
            scratch = os.open(workdir, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
            socket.send_fds(status, [b"S"], [scratch])
            os.close(scratch)
            null = os.open("/dev/null", os.O_RDONLY)
            os.dup2(null, 0)
            os.dup2(out_w, 1)
            os.dup2(err_w, 2)
            for fd in {out_w, err_w} - {0, 1, 2}:
                os.close(fd)
            keep = {0, 1, 2, status.fileno(), *input_fds}
            for name in os.listdir("/proc/self/fd"):
                if int(name) not in keep:
                    with contextlib.suppress(OSError):
                        os.close(int(name))
            cpu = max(1, int(limits["cpu_seconds"] + 0.999))
            # Soft limit: SIGXCPU (a job may catch it); hard limit one second later: SIGKILL from the kernel,
            # which even PID 1 of a namespace cannot ignore.
            resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu + 1))
            resource.setrlimit(resource.RLIMIT_FSIZE, (limits["file_size_bytes"], limits["file_size_bytes"]))
            resource.setrlimit(resource.RLIMIT_NOFILE, (limits["open_files"], limits["open_files"]))
            resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
            with open("/proc/self/oom_score_adj", "w") as f:
                f.write("1000")  # when the memory cgroup overflows, the job dies, not the worker
            os.chdir(workdir)
            os.environ.clear()
            os.environ.update(job["env"])
            _drop_capabilities()
            _prctl(PR_SET_DUMPABLE, 0)
            if self.landlock is not None:
                _prctl(PR_SET_NO_NEW_PRIVS, 1)
                ll = self.landlock
                ll["restrict_self"](
                    read_exec=ll["read_exec"],
                    read_only=[*ll["read_only"], f"/proc/{os.getpid()}", "/data"],
                    read_write=["/work", "/tmp"],
                    read_fds=input_fds,
                    devices=ll["devices"],
                )
            _load_seccomp(self.seccomp)
        except BaseException as exc:
            try:
                payload = json.dumps({"setup_error": f"{type(exc).__name__}: {exc}"}).encode()
                status.sendall(b"E" + struct.pack(">I", len(payload)) + payload)
            finally:
                os._exit(125)
        _execute(job, status)

    def _mount_job(self, job: dict[str, Any], input_fds: list[int]) -> None:
        """The bubblewrap backend's per-job mounts: fresh tmpfs on /work, /tmp, /dev/shm; /data links."""
        limits = job["limits"]
        common = MS_NOSUID | MS_NODEV
        inodes = limits["scratch_inodes"]
        scratch_opts = (
            f"size={limits['scratch_bytes']},nr_inodes={inodes},mode=0700,uid={JOB_UID},gid={JOB_UID}"
        )
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

    def _spare_main(self, status: socket.socket) -> None:
        """The job process before it has a job: all that does not depend on the job, done ahead of time."""
        try:
            _prctl(PR_SET_PDEATHSIG, signal.SIGKILL)  # the worker gone means no job will ever come
            if self.landlock is not None:
                _prctl(PR_SET_DUMPABLE, 1)  # for its own /proc/self files; turned off again before the job
                raise _NoNamespaces
            # Writing /proc/self/{uid,gid}_map needs a dumpable process; turned off again before the job.
            _prctl(PR_SET_DUMPABLE, 1)
            _write("/proc/self/setgroups", "deny")
            _write("/proc/self/uid_map", f"{JOB_UID} {self.uid} 1")
            _write("/proc/self/gid_map", f"{JOB_UID} {self.gid} 1")
            _mount(None, "/", None, MS_REC | MS_PRIVATE)
            _mount("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC)
            socket.sethostname("sandbox")
        except _NoNamespaces:
            pass
        except BaseException as exc:
            with contextlib.suppress(BaseException):
                payload = json.dumps({"setup_error": f"{type(exc).__name__}: {exc}"}).encode()
                status.sendall(b"E" + struct.pack(">I", len(payload)) + payload)
            os._exit(125)
        try:
            job, fds = _recv(status)
        except BaseException:
            os._exit(0)
        self._child(job, status, fds[0], fds[1], fds[2:])

    def _spawn_spare(self) -> None:
        """Clone the next job's process now, so that a job does not wait for the clone.

        The clone copies the page tables of a worker with pandas loaded: the slowest step of starting a job.
        """
        parent, child = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        pid = _clone(JOB_NAMESPACES if self.landlock is None else 0)
        if pid == 0:
            try:
                # Nothing of the worker's channel to the host may survive into the job.
                self.sock.close()
                parent.close()
                self._spare_main(child)
            finally:
                os._exit(125)
        child.close()
        self.spare = (pid, parent)

    def _take_spare(self) -> tuple[int, socket.socket]:
        if self.spare is None:
            self._spawn_spare()
        assert self.spare is not None
        spare, self.spare = self.spare, None
        return spare

    # -- the worker's side ----------------------------------------------------------------------------------

    def run_job(self, job: dict[str, Any], input_fds: list[int]) -> tuple[dict[str, Any], list[int]]:
        started = time.monotonic()
        limits = job["limits"]
        out_r, out_w = os.pipe()
        err_r, err_w = os.pipe()
        pid, status_parent = self._take_spare()
        try:
            _send(status_parent, job, [out_w, err_w, *input_fds])
        except OSError:
            # The spare died (it should not); reap it and start the job in a fresh one.
            status_parent.close()
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, 0)
            pid, status_parent = self._take_spare()
            _send(status_parent, job, [out_w, err_w, *input_fds])
        self.pending = pid
        os.close(out_w)
        os.close(err_w)
        cap = limits["output_bytes"]
        outputs = {out_r: bytearray(), err_r: bytearray()}
        totals = {out_r: 0, err_r: 0}
        sel = selectors.DefaultSelector()
        for fd in (out_r, err_r):
            os.set_blocking(fd, False)
            sel.register(fd, selectors.EVENT_READ)
        status_parent.setblocking(False)
        sel.register(status_parent, selectors.EVENT_READ)
        reaped: tuple[int, Any] | None = None
        pidfd = -1
        if self.landlock is not None:
            # No PID namespace takes the job's children down with it: when the job's process ends, kill them.
            pidfd = os.pidfd_open(pid)
            sel.register(pidfd, selectors.EVENT_READ)
        status = _Status()
        scratch_fds: list[int] = []
        killed_for: str | None = None
        deadline = started + limits["wall_seconds"]
        open_streams = 3

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
        # path), or when all its streams are closed (it died: a signal, a limit).
        while open_streams and not status.final:
            timeout = deadline - time.monotonic()
            if timeout <= 0 and killed_for is None:
                killed_for = "wall"
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            events = sel.select(timeout=max(timeout, 0.05) if killed_for is None else 0.5)
            if not events and killed_for is not None and time.monotonic() > deadline + 5:
                break  # a stream held open by something unkillable: give up, the host recycles us
            for key, _ in events:
                if key.fileobj == pidfd:
                    sel.unregister(pidfd)
                    _, wstatus, ru = os.wait4(pid, 0)
                    reaped = (wstatus, ru)
                    _kill_all_but_self()
                    continue
                if key.fileobj is status_parent:
                    try:
                        data, fds, _f, _a = socket.recv_fds(status_parent, 65536, 4)
                    except BlockingIOError:
                        continue
                    # Only the very first message (sent before the job's code ran) may carry the scratch fd;
                    # anything the job's code sends later is not trusted with a descriptor.
                    if (
                        fds
                        and status.buf == b""
                        and status.count == 0
                        and data[:1] == b"S"
                        and not scratch_fds
                    ):
                        scratch_fds.append(fds[0])
                        fds = fds[1:]
                    for fd in fds:
                        os.close(fd)
                    if not data:
                        sel.unregister(status_parent)
                        open_streams -= 1
                        continue
                    status.feed(data)
                    continue
                if not drain(key.fd):
                    sel.unregister(key.fd)
                    open_streams -= 1
        if status.final:
            for fd in (out_r, err_r):
                drain(fd)
        wall = time.monotonic() - started
        sel.close()
        if pidfd >= 0:
            os.close(pidfd)
        status_parent.close()
        os.close(out_r)
        os.close(err_r)
        report = status.report or {}
        result = {
            "id": job["id"],
            "stdout": base64.b64encode(bytes(outputs[out_r])).decode(),
            "stderr": base64.b64encode(bytes(outputs[err_r])).decode(),
            "stdout_total": totals[out_r],
            "stderr_total": totals[err_r],
            "wall": wall,
            "killed_for": killed_for,
            "setup_error": report.get("setup_error") or None,
        }
        if status.final and "exit" in report and killed_for is None:
            # Normal end: the job said how it ended; make sure it does (a lying job is simply killed).
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            result.update(exit=report["exit"], cpu=report.get("cpu", 0.0))
        else:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            if reaped is None:
                _, wstatus, ru = os.wait4(pid, 0)
            else:
                wstatus, ru = reaped
            self.pending = 0
            result.update(wstatus=wstatus, cpu=ru.ru_utime + ru.ru_stime)
        if self.landlock is not None:
            # Every process of this uid but the worker is the job's: kill and reap them all before replying,
            # so that the host removes the job's directory with nothing of the job still running.
            _kill_all_but_self(reap=True)
            self.pending = 0
        return result, scratch_fds

    def serve(self) -> None:
        _prctl(PR_SET_DUMPABLE, 0)
        if self.landlock is not None:
            _prctl(PR_SET_CHILD_SUBREAPER, 1)  # orphans of a job come back to the worker, which reaps them
        # Jobs are cloned without the C library's fork handlers, which is only safe single-threaded: refuse to
        # serve rather than risk a job deadlocking on a lock another thread held at the clone.
        threads = sorted(os.listdir("/proc/self/task"))
        if len(threads) != 1:
            names = []
            for t in threads:
                with open(f"/proc/self/task/{t}/comm") as comm:
                    names.append(comm.read().strip())
            _send(
                self.sock,
                {"ready": False, "error": f"worker has {len(threads)} threads after preload: {names}"},
            )
            os._exit(1)
        # Move every object the preload created to the permanent generation: a job's garbage collection then
        # never walks (and so never copies-on-write) the worker's pages.
        import gc

        gc.collect()
        gc.freeze()
        self._spawn_spare()
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
            # Reap the job while the host reads the result: its teardown (address space, namespaces) happens
            # off the caller's critical path, and always before the next job starts. Then clone the next one.
            if self.pending:
                os.waitpid(self.pending, 0)
                self.pending = 0
            self._spawn_spare()


class _NoNamespaces(Exception):
    """The Landlock backend's job process has no namespaces to set up."""


def _landlock_setup(job: dict[str, Any], input_fds: list[int]) -> str:
    """The Landlock backend's per-job files: ``/work``, ``/tmp`` and ``/data`` are links to the job's fresh
    directory, whose filesystems the host mounted; here only the links to the inputs are made."""
    for name, fd in zip(job["inputs"], input_fds, strict=True):
        os.symlink(f"/proc/self/fd/{fd}", f"/data/{name}")
    os.chmod("/data/", 0o500)
    return "/work"


def _kill_all_but_self(*, reap: bool = False) -> None:
    """SIGKILL every process this uid may signal but the worker itself (only the job's), and reap them."""
    for _ in range(100):
        try:
            os.kill(-1, signal.SIGKILL)
        except ProcessLookupError:
            alive = False
        else:
            alive = True
        if not reap:
            return
        while True:
            try:
                os.waitpid(-1, 0)
            except ChildProcessError:
                break
        if not alive:
            return


class _Status:
    """The job's status stream: S (scratch fd attached), then D (exit code, CPU) or E<len><json> (error)."""

    def __init__(self) -> None:
        self.buf = b""
        self.count = 0
        self.report: dict[str, Any] | None = None
        self.final = False

    def feed(self, data: bytes) -> None:
        self.count += 1
        self.buf += data
        if len(self.buf) > 1 << 16:
            self.final, self.buf = True, b""  # a job flooding its status channel gets killed and reaped
            return
        while self.buf and not self.final:
            tag = self.buf[:1]
            if tag == b"S":
                self.buf = self.buf[1:]
            elif tag == b"D":
                if len(self.buf) < _DONE.size:
                    return
                _tag, _n, code, cpu = _DONE.unpack(self.buf[: _DONE.size])
                self.report = {"exit": code, "cpu": cpu}
                self.final = True
            elif tag == b"E":
                if len(self.buf) < 5:
                    return
                (n,) = struct.unpack(">I", self.buf[1:5])
                if len(self.buf) < 5 + n:
                    return
                try:
                    report = json.loads(self.buf[5 : 5 + n])
                except ValueError:
                    report = {}
                self.report = report if isinstance(report, dict) else {}
                self.final = True
            else:
                self.final, self.buf = True, b""


# Bound before any job code runs: a job that monkey-patches os, struct or json cannot break its own report
# (and if it breaks it anyway, the worker falls back to waiting for the exit status).
_DONE = struct.Struct(">cIid")
_os_write = os.write
_os_exit = os._exit
_getrusage = resource.getrusage


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
            _run_sql(job["sql"])
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
    try:
        own = _getrusage(resource.RUSAGE_SELF)
        kids = _getrusage(resource.RUSAGE_CHILDREN)
        cpu = own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime
        _os_write(status_fd, _DONE.pack(b"D", 12, code, cpu))
    except BaseException:
        pass
    _os_exit(code)


def _jsonable(value: object) -> object:
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        return value if value == value and value not in (float("inf"), float("-inf")) else str(value)
    if isinstance(value, (bytes, bytearray, memoryview)):
        return "0x" + bytes(value).hex()
    return str(value)


def _run_sql(spec: dict[str, Any]) -> None:
    """Runs a query inside the job, after the privilege drop, writing ``/work/.sql-result.json``."""
    out: dict[str, Any] = {"columns": [], "types": [], "rows": [], "row_count": 0, "error": None}
    max_rows = spec["max_rows"]
    try:
        if spec.get("copy_to"):
            # A read-write grant works on a private copy; the host writes it back after the job.
            src_name = "/data/" + spec["copy_to"].rsplit("/", 1)[1]
            with open(src_name, "rb") as src, open(spec["copy_to"], "wb") as dst:
                while chunk := src.read(1 << 20):
                    dst.write(chunk)
        if spec["engine"] == "sqlite":
            import sqlite3

            path = spec["path"]
            if spec["read_only"]:
                # SQLite resolves symlinks itself, and /data entries are links to descriptors whose host path
                # does not exist in here; so a read-only query runs on an in-memory image of the file, with
                # query_only on (nothing the query does can reach the file anyway).
                with open(path, "rb") as f:
                    image = f.read()
                con = sqlite3.connect(":memory:", isolation_level=None)
                if image:
                    con.deserialize(image)
                con.execute("PRAGMA query_only = ON")
            else:
                con = sqlite3.connect(f"file:{path}?mode=rw", uri=True, isolation_level=None)
            # No ATTACH of any other file; no extensions (this interpreter's sqlite3 may not even offer them).
            con.setlimit(sqlite3.SQLITE_LIMIT_ATTACHED, 0)
            if hasattr(con, "enable_load_extension"):
                con.enable_load_extension(False)
            try:
                cur = con.execute(spec["query"])
                out["columns"] = [d[0] for d in cur.description] if cur.description else []
                rows: list[Any] = []
                total = 0
                for row in cur:
                    total += 1
                    if len(rows) < max_rows:
                        rows.append(row)
                out["row_count"] = total
                out["types"] = _sqlite_types(rows, len(out["columns"]))
                out["rows"] = [[_jsonable(v) for v in row] for row in rows]
            finally:
                con.close()
        else:
            import duckdb

            config: dict[str, str | bool | int | float | list[str]] = {
                "threads": 1,
                "autoinstall_known_extensions": False,
                "autoload_known_extensions": False,
            }
            files = spec.get("files") or []
            if spec["engine"] == "duckdb":
                dcon = duckdb.connect(spec["path"], read_only=spec["read_only"], config=config)
            else:
                dcon = duckdb.connect(":memory:", config=config)
            if files:
                allowed = ", ".join("'" + f["path"].replace("'", "''") + "'" for f in files)
                dcon.execute(f"SET allowed_paths = [{allowed}]")
            # Only the source files stay reachable; then the configuration is frozen for the query.
            dcon.execute("SET enable_external_access = false")
            for f in files:
                reader = "read_parquet" if f["format"] == "parquet" else "read_csv_auto"
                name = f["name"].replace('"', '""')
                path = f["path"].replace("'", "''")
                dcon.execute(f"CREATE VIEW \"{name}\" AS SELECT * FROM {reader}('{path}')")
            dcon.execute("SET lock_configuration = true")
            try:
                dcur = dcon.execute(spec["query"])
                desc = dcur.description or []
                out["columns"] = [d[0] for d in desc]
                out["types"] = [str(d[1]) for d in desc]
                drows = dcur.fetchmany(max_rows) if desc else []
                total = len(drows)
                if desc and len(drows) == max_rows:
                    while batch := dcur.fetchmany(10000):
                        total += len(batch)
                out["row_count"] = total
                out["rows"] = [[_jsonable(v) for v in row] for row in drows]
            finally:
                dcon.close()
    except Exception as exc:
        out["error"] = f"{type(exc).__name__}: {exc}"
    with open("/work/.sql-result.json", "w", encoding="utf-8") as result_file:
        json.dump(out, result_file)


def _sqlite_types(rows: list[Any], width: int) -> list[str]:
    names = {int: "INTEGER", float: "REAL", str: "TEXT", bytes: "BLOB", type(None): "NULL"}
    types = []
    for i in range(width):
        seen = "NULL"
        for row in rows:
            if row[i] is not None:
                seen = names.get(type(row[i]), type(row[i]).__name__)
                break
        types.append(seen)
    return types


def main() -> None:
    config = json.loads(sys.argv[1])
    sys.path[:0] = config["sys_path"]
    os.environ.update(config["env"])
    sock = socket.socket(fileno=int(config["fd"]))
    # Preload what jobs use, so a job's fork starts with them imported (the point of a warm worker).
    for name in config["preload"]:
        with contextlib.suppress(Exception):
            __import__(name)
    if "matplotlib" in sys.modules:
        import matplotlib

        matplotlib.use("Agg")
        with contextlib.suppress(Exception):
            import matplotlib.pyplot
    Worker(sock, config).serve()


if __name__ == "__main__":
    main()
