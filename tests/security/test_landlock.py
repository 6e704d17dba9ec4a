"""What the Landlock backend guarantees where it cannot do what bubblewrap does (no user or PID namespace).

The whole attack suite also runs against this backend (the ``pool`` fixture is parametrized over both); these
tests pin what is specific to it: the job is an ordinary process of the worker's uid, so it must not be able
to signal, trace or read the worker, reach it through an abstract unix socket, or leave processes behind.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from corral.sandbox import SandboxPool, SandboxUsageError, check
from corral.sandbox._landlock import abi

from .conftest import Sandbox

pytestmark = [pytest.mark.sandbox]

SRC = Path(__file__).resolve().parents[2] / "src"


@pytest.fixture
def landlock(pool: SandboxPool) -> SandboxPool:
    if pool.backend != "landlock":
        pytest.skip("Landlock backend only")
    return pool


def test_job_cannot_signal_trace_or_read_the_worker(landlock: SandboxPool, sandbox: Sandbox) -> None:
    code = textwrap.dedent(
        """
        import ctypes, errno, os, signal
        libc = ctypes.CDLL(None, use_errno=True)
        worker = os.getppid()
        for sig in (0, signal.SIGKILL):
            try:
                os.kill(worker, sig)
                print('signalled', sig)
            except OSError as exc:
                print('kill', sig, errno.errorcode[exc.errno])
        rc = libc.ptrace(16, worker, 0, 0)
        print('ptrace', rc, errno.errorcode[ctypes.get_errno()])
        for path in (f'/proc/{worker}/mem', f'/proc/{worker}/environ', '/proc/1/cmdline'):
            try:
                open(path, 'rb').read(1)
                print('read', path)
            except OSError as exc:
                print('open', errno.errorcode[exc.errno])
        """
    )
    before = landlock.worker_pids
    result = sandbox.run(code)
    lines = result.stdout.splitlines()
    assert lines[:3] == ["kill 0 EPERM", "kill 9 EPERM", "ptrace -1 EPERM"], result.stdout + result.stderr
    # Landlock closes /proc but the job's own entry (EACCES); hidepid=invisible hides what the job may not
    # trace, which includes the non-dumpable worker (ENOENT).
    assert len(lines) == 6 and all(line in ("open EACCES", "open ENOENT") for line in lines[3:]), lines
    assert landlock.worker_pids == before


def test_abstract_unix_socket_outside_the_job_is_unreachable(landlock: SandboxPool, sandbox: Sandbox) -> None:
    name = f"\0corral-test-{os.getpid()}-{time.monotonic_ns()}"
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(name)
    server.listen(1)
    server.settimeout(0.3)
    try:
        code = (
            "import socket\ns = socket.socket(socket.AF_UNIX)\n"
            f"try:\n    s.connect({name!r})\n    print('ESCAPED')\n"
            "except OSError as exc:\n    print('BLOCKED', exc.errno)\n"
        )
        result = sandbox.run(code)
        assert result.stdout.strip() == "BLOCKED 1", result.stdout + result.stderr  # EPERM: scoped
        with pytest.raises(TimeoutError):
            server.accept()
    finally:
        server.close()


def test_host_system_v_ipc_is_unreachable(landlock: SandboxPool, sandbox: Sandbox) -> None:
    """No IPC namespace: System V IPC and POSIX message queues are denied by the seccomp filter instead."""
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    key = 0x0C0A0000 | (os.getpid() & 0xFFFF)
    segment = libc.shmget(key, 4096, 0o1000 | 0o666)  # IPC_CREAT, world-writable: only DAC would stop a job
    assert segment >= 0, os.strerror(ctypes.get_errno())
    try:
        code = textwrap.dedent(
            f"""
            import ctypes, errno
            libc = ctypes.CDLL(None, use_errno=True)
            for what, call in [('shmget', lambda: libc.shmget({key}, 0, 0)),
                               ('shmat', lambda: libc.shmat({segment}, None, 0)),
                               ('msgget', lambda: libc.msgget(0, 0o1000 | 0o600)),
                               ('mq_open', lambda: libc.syscall(240, b'q', 0o100 | 2, 0o600, None))]:
                rc = call()
                print(what, errno.errorcode.get(ctypes.get_errno()) if rc in (-1, 2**64 - 1) else rc)
            """
        )
        result = sandbox.run(code)
        assert result.stdout.splitlines() == [
            "shmget EPERM",
            "shmat EPERM",
            "msgget EPERM",
            "mq_open EPERM",
        ], result.stdout + result.stderr
    finally:
        libc.shmctl(segment, 0, None)  # IPC_RMID


def test_processes_left_by_a_job_are_killed_before_the_next(landlock: SandboxPool, sandbox: Sandbox) -> None:
    """No PID namespace takes a job's daemons down with it: the worker kills every process of its uid."""
    code = textwrap.dedent(
        """
        import os, time
        pid = os.fork()
        if pid == 0:
            os.setsid()
            daemon = os.fork()
            if daemon:
                print(daemon, flush=True)
                os._exit(0)
            time.sleep(60)
            os._exit(0)
        os.waitpid(pid, 0)
        """
    )
    result = sandbox.run(code)
    assert result.ok, result.stderr
    daemon = int(result.stdout)
    try:
        uid = int(Path(f"/proc/{daemon}/status").read_text().split("Uid:")[1].split()[0])
    except (OSError, IndexError):
        uid = -1  # gone (the pid may also have been reused by another user's process since)
    assert uid not in landlock.worker_uids, f"the job's daemon {daemon} outlived the job"
    # The job's whole directory (scratch and tmp filesystems, input links) goes too, in the background.
    assert landlock._landlock is not None
    deadline = time.monotonic() + 5
    while list(landlock._landlock.base.glob("*/j*")) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert not list(landlock._landlock.base.glob("*/j*"))


@pytest.mark.parametrize("version", [1, 3, 4, 6, 7])
def test_landlock_alone_denies_files_and_tcp(version: int) -> None:
    """The ruleset on its own (no seccomp), as each ABI would build it: rights a kernel does not know are
    masked out, files outside the rules are denied from ABI 1, TCP bind and connect from ABI 4."""
    if abi() < version:
        pytest.skip(f"this kernel has Landlock ABI {abi()} < {version}")
    server = socket.create_server(("127.0.0.1", 0))
    port = server.getsockname()[1]
    code = textwrap.dedent(
        f"""
        import ctypes, errno, os, socket, sys
        from corral.sandbox._landlock import restrict_self
        ctypes.CDLL(None).prctl(38, 1, 0, 0, 0)
        restrict_self(read_exec=[sys.base_prefix, '/usr'], read_only=[], read_write=[], read_fds=[],
                      devices=[], max_abi={version})
        for what, attempt in [
            ('file', lambda: open('/etc/hostname').read()),
            ('connect', lambda: socket.create_connection(('127.0.0.1', {port}), timeout=2)),
            ('bind', lambda: socket.socket().bind(('127.0.0.1', 0))),
        ]:
            try:
                attempt()
                print(what, 'ESCAPED')
            except OSError as exc:
                print(what, errno.errorcode[exc.errno])
        """
    )
    try:
        proc = subprocess.run(
            [sys.executable, "-c", code],
            env={"PYTHONPATH": str(SRC), "PATH": "/usr/bin:/bin"},
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    finally:
        server.close()
    if version >= 4:
        assert proc.stdout.splitlines() == ["file EACCES", "connect EACCES", "bind EACCES"], proc.stderr
    else:  # the seccomp filter alone keeps jobs off TCP on such kernels
        assert proc.stdout.splitlines() == ["file EACCES", "connect ESCAPED", "bind ESCAPED"], proc.stderr


def test_backend_can_be_forced_and_is_checked(monkeypatch: pytest.MonkeyPatch) -> None:
    assert check("landlock").backend == "landlock"
    monkeypatch.setenv("CORRAL_SANDBOX_BACKEND", "landlock")
    report = check()
    assert report.backend == "landlock" and "forced" in report.reason
    monkeypatch.setenv("CORRAL_SANDBOX_BACKEND", "nsjail")
    assert not check().can_run
    with pytest.raises(SandboxUsageError, match="unknown sandbox backend"):
        SandboxPool(1, backend="nsjail").start()


@pytest.mark.skipif(os.geteuid() != 0, reason="mounts a tmpfs as the dead host's would have (root)")
def test_directories_of_a_dead_host_are_removed() -> None:
    from corral.sandbox import _landlock_host

    dead_pid = 4_194_305  # above the kernel's PID_MAX_LIMIT: certainly not a running process
    base = Path(f"/tmp/corral-landlock-{dead_pid}-test{os.getpid()}")
    (base / "200000" / "j1" / "work").mkdir(parents=True)
    _landlock_host._mount("tmpfs", str(base / "200000" / "j1" / "work"), "tmpfs", 0, "size=65536")
    try:
        assert str(base) in _landlock_host.remove_stale()
        assert not base.exists()
        assert str(base) not in Path("/proc/self/mountinfo").read_text()
    finally:
        _landlock_host._umount(str(base / "200000" / "j1" / "work"))
        import shutil

        shutil.rmtree(base, ignore_errors=True)


def test_before_landlock_abi_6_connect_is_denied_by_seccomp() -> None:
    """Without Landlock's scoping (ABI < 6) abstract unix sockets of the host stay out through seccomp."""
    from corral.sandbox._seccomp import build_filter

    program = build_filter(deny_ipc=True, deny_connect=True)
    code = textwrap.dedent(
        f"""
        import ctypes, errno, socket
        from corral.sandbox import _worker
        _worker._load_seccomp({program!r})
        s = socket.socket(socket.AF_UNIX)
        try:
            s.connect('\\0corral-nothing')
        except OSError as exc:
            print('connect', errno.errorcode[exc.errno])
        a, b = socket.socketpair()
        print('socketpair works', a.send(b'x'), b.recv(1))
        """
    )
    proc = subprocess.run(
        [sys.executable, "-c", code],
        env={"PYTHONPATH": str(SRC), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.stdout.splitlines() == ["connect EPERM", "socketpair works 1 b'x'"], proc.stderr


def test_job_cannot_change_metadata_of_files_outside_its_directories(
    landlock: SandboxPool, sandbox: Sandbox, tmp_path: Path
) -> None:
    """Landlock (ABI <= 7) does not govern chmod, chown, utime or xattrs: rootless, where the job is the user
    who owns the file, only seccomp stops them (as root the worker's own uid owns nothing of the host's)."""
    tmp_path.chmod(0o755)
    target = tmp_path / "owned.txt"
    target.write_text("x")
    target.chmod(0o600)
    before = target.stat()
    # Straight through the C library: rootless, Python's own os functions would take a /tmp path to the
    # job's own tmp directory (a convenience of that mode, not a boundary).
    code = textwrap.dedent(
        f"""
        import ctypes, errno, os
        libc = ctypes.CDLL(None, use_errno=True)
        path = {str(target).encode()!r}
        for what, call in [('chmod', lambda: libc.chmod(path, 0o777)),
                           ('chown', lambda: libc.chown(path, os.getuid(), os.getgid())),
                           ('utime', lambda: libc.utimes(path, None)),
                           ('setxattr', lambda: libc.setxattr(path, b'user.x', b'1', 1, 0))]:
            if call() == 0:
                print(what, 'ESCAPED')
            else:
                print(what, errno.errorcode[ctypes.get_errno()])
        """
    )
    result = sandbox.run(code)
    lines = result.stdout.splitlines()
    assert len(lines) == 4 and not any("ESCAPED" in line for line in lines), result.stdout + result.stderr
    after = target.stat()
    assert (after.st_mode, after.st_mtime_ns) == (before.st_mode, before.st_mtime_ns)


def test_job_cannot_connect_to_a_unix_socket_of_the_host(
    landlock: SandboxPool, sandbox: Sandbox, tmp_path: Path
) -> None:
    """A pathname socket open to the job's uid (rootless: the user's own, like a D-Bus session bus, which
    would run commands for it): Landlock (ABI <= 7) does not govern connect(); the job must not reach it."""
    tmp_path.chmod(0o755)
    path = tmp_path / "bus"
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(str(path))
    path.chmod(0o777)
    server.listen(1)
    server.settimeout(0.3)
    try:
        code = (
            "import socket\ns = socket.socket(socket.AF_UNIX)\n"
            f"try:\n    s.connect({str(path)!r})\n    print('ESCAPED')\n"
            "except OSError as exc:\n    print('BLOCKED', exc.errno)\n"
        )
        result = sandbox.run(code)
        assert result.stdout.startswith("BLOCKED"), result.stdout + result.stderr
        with pytest.raises(TimeoutError):
            server.accept()
    finally:
        server.close()
