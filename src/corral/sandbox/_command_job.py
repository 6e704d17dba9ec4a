"""Inside the sandbox: start one vetted executable and let it ``execve`` exactly once.

Executed from source inside the worker (like ``sqljob``), so it uses the standard library only. The job's
process (PID 1 of the job's namespaces, our code, set up exactly like a Python job's up to its seccomp filter)
becomes the **supervisor** of the command:

1. it forks the **command process**, which marks only stdin/stdout/stderr and the input descriptors
   inheritable, opens the executable (``O_PATH``) and checks that it is the file the host vetted (device and
   inode), loads the command's seccomp filter — the job filter, but with ``execve``/``execveat`` answered by
   the filter's *listener* (``SECCOMP_RET_USER_NOTIF``) instead of ``EPERM`` — hands the listener to the
   supervisor and calls ``execveat`` on the executable;
2. the supervisor loads the ordinary job filter (execve denied) on itself, and answers the listener: the
   first notification, the command process's own ``execveat``, issued by our code before anything untrusted
   has run, is let through (``SECCOMP_USER_NOTIF_FLAG_CONTINUE``); every later one, from the program or any
   process it forks, fails with ``EPERM``. The decision depends on no pointer argument (which a racing
   thread could change), only on order: nothing but our code can make the first call. If the supervisor is
   gone, the kernel fails every notified call with ``ENOSYS``: closed, not open;
3. when the command process ends, the supervisor reports its exit code (``D``) or the signal that killed it
   (``K``) on the status channel and exits; being PID 1, its exit takes every leftover process with it.

The program cannot reach the supervisor: it has no capability, ``ptrace`` and ``process_vm_*`` are denied by
its filter, the supervisor is not dumpable (``/proc/1/mem`` is closed to it), and PID 1 of a namespace
ignores every signal it has no handler for (it keeps one: ``SIGCHLD``, which only wakes it; Python's
``SIGINT`` handler is removed).
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import math
import os
import resource
import select
import signal
import socket
import struct
from typing import Any

_LIBC = ctypes.CDLL(None, use_errno=True)
_LIBC.syscall.restype = ctypes.c_long
_LIBC.ioctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_void_p]

_SYS_SECCOMP = 317
_SECCOMP_SET_MODE_FILTER = 1
_SECCOMP_FILTER_FLAG_NEW_LISTENER = 8
_PR_SET_NO_NEW_PRIVS = 38
# _IOWR('!', 0, struct seccomp_notif) and _IOWR('!', 1, struct seccomp_notif_resp), x86_64 sizes.
_NOTIF_SIZE = 80
_NOTIF_RECV = 0xC0000000 | (_NOTIF_SIZE << 16) | (0x21 << 8) | 0
_RESP = struct.Struct("<QqiI")  # id, val, error, flags
_NOTIF_SEND = 0xC0000000 | (_RESP.size << 16) | (0x21 << 8) | 1
_FLAG_CONTINUE = 1
_EXEC_CALLS = (59, 322)  # execve, execveat
_MAX_ERROR = 4000


class CommandSetupError(Exception):
    """The command could not be started (the job reports it as a setup error)."""


class Supervisor:
    """The job's PID 1 once the command process runs: answers its execve notifications, reports its end."""

    def __init__(self, pid: int, listener: int, wake: int) -> None:
        self.pid = pid
        self.listener = listener
        self.wake = wake
        self.first = True

    def _answer(self) -> None:
        notif = ctypes.create_string_buffer(_NOTIF_SIZE)  # zeroed, as the kernel requires
        if _LIBC.ioctl(self.listener, _NOTIF_RECV, notif) != 0:
            return  # ENOENT: the caller died before its call was read
        call_id, pid, _flags, nr = struct.unpack_from("<QIIi", notif.raw)
        allow = self.first and pid == self.pid and nr in _EXEC_CALLS
        self.first = False  # whatever came first, nothing after it is ever let through
        refuse = _RESP.pack(call_id, 0, -errno.EPERM, 0)
        reply = _RESP.pack(call_id, 0, 0, _FLAG_CONTINUE) if allow else refuse
        # ENOENT when the caller died meanwhile: fine. A kernel before 5.5 refuses CONTINUE (EINVAL): then the
        # execve fails (the program does not start) rather than waiting for the wall clock.
        if _LIBC.ioctl(self.listener, _NOTIF_SEND, ctypes.create_string_buffer(reply, _RESP.size)) and allow:
            _LIBC.ioctl(self.listener, _NOTIF_SEND, ctypes.create_string_buffer(refuse, _RESP.size))

    def supervise(self, status_fd: int) -> None:
        """Serve the listener until the command process ends; report how it ended; exit. Never returns."""
        poller = select.poll()
        poller.register(self.listener, select.POLLIN)
        poller.register(self.wake, select.POLLIN)
        while True:
            while True:
                try:
                    pid, wstatus = os.waitpid(-1, os.WNOHANG)
                except ChildProcessError:
                    os._exit(125)  # the command process vanished unreaped: cannot happen, do not guess
                if pid == 0:
                    break
                if pid == self.pid:
                    self._report(status_fd, wstatus)
            for fd, events in poller.poll():
                if fd == self.listener:
                    if events & select.POLLIN:
                        self._answer()
                    elif events & (select.POLLHUP | select.POLLERR | select.POLLNVAL):
                        poller.unregister(self.listener)  # no process uses the filter any more
                else:
                    with contextlib.suppress(BlockingIOError):
                        os.read(self.wake, 4096)

    @staticmethod
    def _report(status_fd: int, wstatus: int) -> None:
        if os.WIFSIGNALED(wstatus):
            record = b"K" + bytes([os.WTERMSIG(wstatus) & 0x7F])
        else:
            record = b"D" + bytes([os.WEXITSTATUS(wstatus) & 0xFF])
        try:
            os.write(status_fd, record)
        finally:
            os._exit(0)


def start(job: dict[str, Any], input_fds: list[int], program: bytes) -> Supervisor:
    """Fork the command process (see the module docstring); return once its filter's listener is ours.

    Called in the job's process after its privileges are dropped and before its own seccomp filter is
    loaded (a filter loaded first would be inherited, and its ``EPERM`` for execve would win).
    """
    if not program:
        raise CommandSetupError("the worker has no seccomp filter for commands")
    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_r, False)
    os.set_blocking(wake_w, False)
    signal.signal(signal.SIGCHLD, lambda *_: None)
    signal.set_wakeup_fd(wake_w, warn_on_full_buffer=False)
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    pid = os.fork()
    if pid == 0:
        ours.close()
        _command_process(job, input_fds, program, theirs)  # never returns
    theirs.close()
    # PID 1 of a namespace gets a signal from inside it only when it has a handler: the program must not be
    # able to raise KeyboardInterrupt (Python's SIGINT handler) in its supervisor. SIGCHLD only wakes it.
    for number in signal.valid_signals():
        if number != signal.SIGCHLD and callable(signal.getsignal(number)):
            signal.signal(number, signal.SIG_DFL)
    data, fds, _flags, _addr = socket.recv_fds(ours, _MAX_ERROR + 1, 1)
    ours.close()
    if data != b"L" or len(fds) != 1:
        for fd in fds:
            os.close(fd)
        reason = data[1:].decode(errors="replace") if data[:1] == b"E" else "it died before it started"
        raise CommandSetupError(f"the command could not start: {reason}")
    return Supervisor(pid, fds[0], wake_r)


def _command_process(
    job: dict[str, Any], input_fds: list[int], program: bytes, channel: socket.socket
) -> None:
    """The forked child: checks, its filter, the listener to the supervisor, then the one execve."""
    spec = job["command"]
    sent = False
    try:
        signal.set_wakeup_fd(-1)
        # An ignored signal stays ignored across execve, and Python ignores SIGPIPE and SIGXFSZ: the program
        # gets every signal at its default (a file-size limit must kill it, a closed pipe must end it).
        for number in signal.valid_signals():
            with contextlib.suppress(OSError, ValueError):
                signal.signal(number, signal.SIG_DFL)
        signal.pthread_sigmask(signal.SIG_SETMASK, [])
        keep = {0, 1, 2, *input_fds}
        for name in os.listdir("/proc/self/fd"):
            fd = int(name)
            with contextlib.suppress(OSError):  # the descriptor listdir itself used
                os.set_inheritable(fd, fd in keep)
        limits = job["limits"]
        # A backstop one second past the limit: the broker kills the tree when its CPU time (the cgroup's
        # count) is spent, and names the limit; the kernel's own per-process count may run a little ahead.
        cpu = max(1, math.ceil(limits["cpu_seconds"])) + 1
        resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu + 1))
        if job.get("rlimits"):
            # Rootless without a cgroup: the job's RLIMIT_DATA counted the preloaded worker's heap on top of
            # the limit; the program starts small, so it gets the limit itself.
            memory = int(limits["memory_bytes"])
            resource.setrlimit(resource.RLIMIT_DATA, (memory, memory))
        exe = os.open(spec["path"], os.O_PATH | os.O_CLOEXEC)
        st = os.fstat(exe)
        if (st.st_dev, st.st_ino) != (spec["device"], spec["inode"]):
            raise CommandSetupError(f"{spec['path']} is not the file the host vetted")
        listener = _load_filter(program)
        socket.send_fds(channel, [b"L"], [listener])
        sent = True
        os.close(listener)
        channel.close()
        os.execve(exe, spec["argv"], job["env"])
    except BaseException as exc:
        text = f"{type(exc).__name__}: {exc}".encode(errors="replace")[:_MAX_ERROR]
        try:
            if sent:  # past the point of no return: the program's stderr says why, the exit code is 127
                os.write(2, b"sandbox: could not execute the command: " + text + b"\n")
            else:
                channel.sendall(b"E" + text)
        finally:
            os._exit(127)
    os._exit(127)


def _load_filter(program: bytes) -> int:
    class SockFprog(ctypes.Structure):
        _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]

    buf = ctypes.create_string_buffer(program, len(program))
    fprog = SockFprog(len(program) // 8, ctypes.cast(buf, ctypes.c_void_p))
    if _LIBC.prctl(_PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_NO_NEW_PRIVS)")
    fd = int(
        _LIBC.syscall(
            _SYS_SECCOMP, _SECCOMP_SET_MODE_FILTER, _SECCOMP_FILTER_FLAG_NEW_LISTENER, ctypes.byref(fprog)
        )
    )
    if fd < 0:
        err = ctypes.get_errno()
        raise OSError(err, f"seccomp(SECCOMP_FILTER_FLAG_NEW_LISTENER): {os.strerror(err)}")
    return fd
