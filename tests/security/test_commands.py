"""Attacks through a vetted command: hostile input for gdb, and a program (python3) that turns on its sandbox.

``/usr/bin/python3`` stands in for a program taken over by its input: it is a vetted executable that runs
whatever code it is given, so each test below is what a compromised gdb could try.
"""

from __future__ import annotations

import os
import random
import shutil
import struct
import textwrap

import pytest

from corral.sandbox import (
    Limits,
    RunResult,
    SandboxPool,
    SandboxUnavailable,
    SandboxUsageError,
    run_command_sync,
    vet_executable,
)

from .conftest import AS_ROOT, Secrets

MiB = 1024 * 1024
PYTHON = os.path.realpath("/usr/bin/python3")
GDB = "/usr/bin/gdb"

needs_python = pytest.mark.skipif(not os.path.isfile(PYTHON), reason="no system /usr/bin/python3")
needs_gdb = pytest.mark.skipif(not os.path.isfile(GDB), reason="gdb is not installed")


class Commands:
    """Runs a command on the pool, then proves the pool still serves (a Python job and a command)."""

    def __init__(self, pool: SandboxPool) -> None:
        self.pool = pool

    def run(
        self, argv: list[str], *, allow: list[str], inputs: dict[str, bytes] | None = None, **limits: float
    ) -> RunResult:
        result = run_command_sync(
            argv, allow=allow, inputs=inputs, limits=Limits(**limits) if limits else None, pool=self.pool
        )
        canary = self.pool.run_python_sync("print('alive', 6 * 7)")
        assert canary.ok and canary.stdout == "alive 42\n", f"the pool stopped serving: {canary}"
        echo = run_command_sync(["/usr/bin/echo", "still"], allow=["/usr/bin/echo"], pool=self.pool)
        assert echo.ok and echo.stdout == "still\n", f"commands stopped working: {echo}"
        return result

    def python(self, code: str, *, inputs: dict[str, bytes] | None = None, **limits: float) -> RunResult:
        return self.run(
            [PYTHON, "-I", "-S", "-c", textwrap.dedent(code)], allow=[PYTHON], inputs=inputs, **limits
        )


@pytest.fixture
def commands(pool: SandboxPool) -> Commands:
    if pool.backend == "landlock":
        with pytest.raises(SandboxUnavailable, match="Landlock sandbox backend cannot run commands"):
            run_command_sync(["/usr/bin/echo", "x"], allow=["/usr/bin/echo"], pool=pool)
        pytest.skip("the Landlock backend refuses commands (checked above)")
    return Commands(pool)


# -- the vetting on the host ---------------------------------------------------------------------------------


def test_only_vetted_allowlisted_programs_run(tmp_path: object) -> None:
    with pytest.raises(SandboxUsageError, match="absolute path"):
        vet_executable("echo")
    copy = shutil.copy("/usr/bin/echo", f"{tmp_path}/echo")
    with pytest.raises(SandboxUsageError, match="outside /usr/"):
        vet_executable(copy)  # a program anybody could have put in a writable place
    link = f"{tmp_path}/link"
    os.symlink("/usr/bin/echo", link)
    assert vet_executable(link).path == "/usr/bin/echo"  # judged by what it resolves to
    with pytest.raises(SandboxUsageError, match="not executable"):
        vet_executable("/usr/lib/os-release" if os.path.isfile("/usr/lib/os-release") else "/usr/share/dict")
    with pytest.raises(SandboxUsageError, match="not a regular file"):
        vet_executable("/usr/bin")
    setuid = next(
        (p for p in ("/usr/bin/su", "/usr/bin/passwd", "/usr/bin/mount") if os.path.isfile(p)), None
    )
    if setuid and os.stat(setuid).st_mode & 0o4000:
        with pytest.raises(SandboxUsageError, match="set-user-ID"):
            vet_executable(setuid)
    with pytest.raises(SandboxUsageError, match="not in this command's allowlist"):
        run_command_sync(["/usr/bin/echo", "x"], allow=["/usr/bin/true"])
    with pytest.raises(SandboxUsageError, match="a list of paths"):
        run_command_sync(["/usr/bin/echo", "x"], allow="/usr/bin/echo")
    with pytest.raises(SandboxUsageError, match="NUL"):
        run_command_sync(["/usr/bin/echo", "a\0b"], allow=["/usr/bin/echo"])


def test_a_program_swapped_after_vetting_does_not_start(pool: SandboxPool) -> None:
    """The worker checks the file it executes is the one the host vetted (device and inode)."""
    from corral.sandbox._pool import _Job
    from corral.sandbox.errors import SandboxCrashed

    if pool.backend == "landlock":
        pytest.skip("no commands on the Landlock backend")
    vetted = vet_executable("/usr/bin/echo")
    other = vet_executable("/usr/bin/true")
    forged = {
        "path": vetted.path,
        "device": other.device,
        "inode": other.inode,
        "argv": ["/usr/bin/echo", "x"],
    }
    with pytest.raises(SandboxCrashed, match="not the file the host vetted"):
        pool._run(_Job("command", Limits(), command=forged))
    assert run_command_sync(["/usr/bin/echo", "ok"], allow=["/usr/bin/echo"], pool=pool).stdout == "ok\n"


# -- the program cannot start another ------------------------------------------------------------------------


@needs_python
def test_the_program_cannot_execute_another_program(commands: Commands) -> None:
    code = """
        import ctypes, os, subprocess, sys
        def attempt(name, fn):
            try:
                fn()
                print(name, 'RAN')
            except OSError as exc:
                print(name, exc.errno)
        attempt('execv-sh', lambda: os.execv('/bin/sh', ['sh', '-c', 'echo escaped']))
        attempt('execv-self', lambda: os.execv(sys.executable, [sys.executable, '-c', 'print(1)']))
        loader = '/lib64/ld-linux-x86-64.so.2'
        attempt('loader', lambda: os.execv(loader, ['ld.so', '/bin/sh', '-c', 'echo escaped']))
        fd = os.open('/usr/bin/sh', os.O_PATH)
        attempt('fexecve', lambda: os.execve(fd, ['sh', '-c', 'echo escaped'], {}))
        attempt('subprocess', lambda: subprocess.run(['/bin/echo', 'escaped'], check=True))
        attempt('posix_spawn', lambda: os.waitpid(os.posix_spawn('/bin/echo', ['echo', 'escaped'], {}), 0))
        print('system', ctypes.CDLL(None).system(b'echo escaped'))
        pid = os.fork()
        if pid == 0:
            try:
                os.execv('/bin/echo', ['echo', 'escaped-from-child'])
            except OSError as exc:
                os._exit(exc.errno)
        print('child', os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]))
    """
    result = commands.python(code)
    assert result.ok, result
    assert "escaped" not in result.stdout and "RAN" not in result.stdout, result.stdout
    lines = dict(line.split(" ", 1) for line in result.stdout.splitlines())
    for name in ("execv-sh", "execv-self", "loader", "fexecve", "subprocess", "posix_spawn"):
        assert lines[name] == "1", (name, result.stdout)  # EPERM
    assert lines["child"] == "1", result.stdout
    assert lines["system"] != "0", result.stdout


def test_a_shell_cannot_run_commands(commands: Commands) -> None:
    result = commands.run(
        ["/bin/sh", "-c", "echo inside; /bin/echo escaped; cat /etc/hostname"], allow=["/bin/sh"]
    )
    assert result.stdout == "inside\n", result
    assert "Operation not permitted" in result.stderr, result


# -- the program is confined like a Python job ---------------------------------------------------------------


@needs_python
def test_the_program_writes_only_to_scratch_and_tmp(commands: Commands) -> None:
    code = """
        import os
        for path in ['/usr/evil', '/etc/evil', '/evil', '/data/evil', '/proc/evil', '/dev/evil', '/opt/evil']:
            try:
                open(path, 'w').write('x')
                print('WROTE', path)
            except OSError as exc:
                print('denied', path, exc.errno)
        open('/work/result.txt', 'w').write('ok')
        open('/tmp/t', 'w').write('ok')
        fds = []
        for fd in sorted(os.listdir('/proc/self/fd')):
            try:
                os.fstat(int(fd))
                fds.append(fd)
            except OSError:
                pass  # the descriptor listdir used, closed by now
        core = os.readlink('/data/core').rsplit('/', 1)[1]
        print(fds == ['0', '1', '2', core], os.getcwd(), os.getuid())
    """
    result = commands.python(code, inputs={"core": b"not really a core"})
    assert result.ok, result
    assert "WROTE" not in result.stdout, result.stdout
    assert result.files == {"result.txt": b"ok"}
    # Its descriptors: stdio and its input; nothing of the supervisor's (status channel, listener).
    assert result.stdout.splitlines()[-1] == "True /work 1000", result.stdout


@needs_python
def test_the_program_reads_no_host_secret(commands: Commands, planted: Secrets) -> None:
    code = f"""
        import os
        secrets = [{str(planted.root_file)!r}, {str(planted.world_file)!r}, '/etc/shadow', '/root', '/home']
        for path in secrets:
            try:
                print('READ', open(path).read()[:100])
            except OSError as exc:
                print('denied', exc.errno)
        print({planted.env_name!r} in os.environ)
    """
    result = commands.python(code)
    assert result.ok, result
    assert planted.value not in result.stdout and "READ" not in result.stdout, result.stdout
    assert result.stdout.splitlines()[-1] == "False"


@needs_python
def test_the_program_has_no_network(commands: Commands) -> None:
    code = """
        import socket
        for family, kind, target in [
            (socket.AF_INET, socket.SOCK_STREAM, ('127.0.0.1', 22)),
            (socket.AF_INET, socket.SOCK_DGRAM, ('8.8.8.8', 53)),
            (socket.AF_INET6, socket.SOCK_STREAM, ('::1', 22)),
            (socket.AF_INET, socket.SOCK_STREAM, ('169.254.169.254', 80)),
        ]:
            try:
                s = socket.socket(family, kind)
                s.settimeout(2)
                s.connect(target)
                print('CONNECTED', target)
            except OSError as exc:
                print('denied', exc.errno)
    """
    result = commands.python(code)
    assert result.ok, result
    assert result.stdout.splitlines() == ["denied 1"] * 4, result.stdout


@needs_python
def test_the_program_cannot_touch_its_supervisor(commands: Commands) -> None:
    """PID 1 of the job is the supervisor that answers execve: signals, ptrace and its memory are closed."""
    code = """
        import ctypes, os, signal
        for sig in (signal.SIGKILL, signal.SIGSTOP, signal.SIGTERM, signal.SIGINT, signal.SIGUSR1,
                    signal.SIGCHLD):
            os.kill(1, sig)
        libc = ctypes.CDLL(None, use_errno=True)
        print('ptrace', libc.ptrace(16, 1, 0, 0), ctypes.get_errno())  # PTRACE_ATTACH
        for name in ('mem', 'environ', 'fd'):
            try:
                data = os.listdir('/proc/1/fd') if name == 'fd' else open(f'/proc/1/{name}', 'rb').read(16)
                print('READ', name, data)
            except OSError as exc:
                print('denied', name, exc.errno)
        try:
            os.execv('/bin/echo', ['echo', 'escaped'])  # the supervisor still answers: still refused
        except OSError as exc:
            print('exec', exc.errno)
    """
    result = commands.python(code)
    assert result.ok, result
    assert "READ" not in result.stdout and "escaped" not in result.stdout, result.stdout
    assert "ptrace -1 1" in result.stdout and "exec 1" in result.stdout, result.stdout


@needs_python
def test_a_fork_bomb_is_contained(commands: Commands) -> None:
    code = """
        import os, time
        while True:
            try:
                os.fork()
            except OSError:
                time.sleep(0.01)
    """
    result = commands.python(code, pids=32, wall_seconds=3, cpu_seconds=30)
    assert result.limit in ("wall", "cpu"), result


@needs_python
def test_huge_output_is_capped_and_drained(commands: Commands) -> None:
    code = """
        import os, sys
        chunk = b'x' * (1 << 20)
        for _ in range(64):
            os.write(1, chunk)
            os.write(2, chunk)
        print('done', file=sys.stderr)
    """
    result = commands.python(code, output_bytes=256 * 1024)
    assert result.exit_code == 0, result
    assert len(result.stdout) == 256 * 1024 and result.stdout_truncated and result.stderr_truncated


@needs_python
def test_limits_stop_the_program_and_are_named(commands: Commands) -> None:
    wall = commands.python("import time; time.sleep(30)", wall_seconds=0.5)
    assert wall.limit == "wall" and wall.exit_code is None, wall
    cpu = commands.python("while True: pass", cpu_seconds=1, wall_seconds=20)
    assert cpu.limit == "cpu", cpu
    fsize = commands.run(
        ["/bin/sh", "-c", "while :; do echo xxxxxxxxxxxxxxxx; done > /work/big"],
        allow=["/bin/sh"],
        file_size_bytes=1 * MiB,
    )
    assert fsize.limit == "file_size" and fsize.signal == 25, fsize
    crash = commands.python("import os, signal; os.kill(os.getpid(), signal.SIGSEGV)")
    assert crash.exit_code is None and crash.signal == 11 and crash.limit is None, crash


@needs_python
def test_a_memory_hog_is_stopped_by_the_memory_limit(commands: Commands) -> None:
    result = commands.python(
        "blocks = []\nwhile True:\n    blocks.append(bytearray(16 << 20))",
        memory_bytes=128 * MiB,
        wall_seconds=20,
    )
    if not AS_ROOT:  # rootless, no cgroup: RLIMIT_DATA of the program itself, the allocation fails
        assert result.exit_code == 1 and "MemoryError" in result.stderr, result
        return
    assert result.limit == "memory" and result.signal == 9, result


# -- gdb on hostile input ------------------------------------------------------------------------------------


def _elf_header(
    kind: int, phoff: int, phnum: int, shoff: int = 0, shnum: int = 0, shstrndx: int = 0
) -> bytes:
    ident = b"\x7fELF" + bytes([2, 1, 1, 0]) + bytes(8)
    return ident + struct.pack(
        "<HHIQQQIHHHHHH", kind, 62, 1, 0, phoff, shoff, 0, 64, 56, phnum, 64, shnum, shstrndx
    )


def _note(name: bytes, kind: int, desc: bytes) -> bytes:
    def pad(b: bytes) -> bytes:
        return b + bytes(-len(b) % 4)

    return struct.pack("<III", len(name) + 1, len(desc), kind) + pad(name + b"\0") + pad(desc)


def _hostile_core(secret_paths: list[str]) -> bytes:
    """An ELF core whose notes lie: a file table naming host secrets with absurd counts, a PT_LOAD of 2^63
    bytes past the end of the file, a prstatus of garbage."""
    files = struct.pack("<QQ", 0xFFFFFFFF, 4096)  # claims 4 billion mappings
    for i in range(len(secret_paths)):
        files += struct.pack("<QQQ", 0x400000 + i * 4096, 0x401000 + i * 4096, 0)
    files += b"".join(p.encode() + b"\0" for p in secret_paths)
    notes = (
        _note(b"CORE", 1, os.urandom(336))
        + _note(b"CORE", 0x46494C45, files)
        + _note(b"CORE", 6, os.urandom(64))
    )
    phoff, phnum = 64, 2
    data_off = phoff + 56 * phnum
    ph_note = struct.pack("<IIQQQQQQ", 4, 4, data_off, 0, 0, len(notes), 0, 4)
    ph_load = struct.pack("<IIQQQQQQ", 1, 5, data_off + len(notes), 0x400000, 0, 1 << 62, 1 << 63, 4096)
    return _elf_header(4, phoff, phnum) + ph_note + ph_load + notes


def _hostile_exe() -> bytes:
    """An ELF executable whose section table claims 65535 entries beyond the end, with a bad string index."""
    return _elf_header(2, 64, 0xFFFF, shoff=1 << 40, shnum=0xFFFF, shstrndx=0xFFFE) + os.urandom(4096)


def _gdb(commands: Commands, inputs: dict[str, bytes], *files: str) -> RunResult:
    argv = [GDB, "-batch", "-nx", "-iex", "set auto-load off", "-ex", "thread apply all bt 40", *files]
    return commands.run(
        argv, allow=[GDB], inputs=inputs, wall_seconds=30, cpu_seconds=30, memory_bytes=512 * MiB
    )


@needs_gdb
def test_gdb_on_hostile_cores_and_programs_stays_contained(commands: Commands, planted: Secrets) -> None:
    rng = random.Random(16)
    core = _hostile_core([str(planted.root_file), str(planted.world_file), "/etc/shadow"])
    cases: dict[str, dict[str, bytes]] = {
        "random bytes": {"core": rng.randbytes(1 * MiB)},
        "lying core": {"core": core},
        "lying core, hostile program": {"core": core, "exe": _hostile_exe()},
        "truncated ELF": {"core": core[:70]},
    }
    for seed in range(3):  # the lying core with bytes flipped at random
        mutated = bytearray(core)
        for _ in range(40):
            mutated[rng.randrange(64, len(mutated))] = rng.randrange(256)
        cases[f"mutated {seed}"] = {"core": bytes(mutated)}
    for name, inputs in cases.items():
        files = ["/data/exe", "/data/core"] if "exe" in inputs else ["-c", "/data/core"]
        result = _gdb(commands, inputs, *files)
        # gdb may refuse the input or even crash on it; the sandbox holds either way and ends it in time.
        assert result.limit in (None, "memory", "cpu"), (name, result)
        assert planted.value not in result.stdout + result.stderr, name
        assert result.wall_seconds < 30, (name, result)


@needs_gdb
def test_gdb_cannot_run_a_shell(commands: Commands) -> None:
    """gdb's own ways to start programs (shell, pipe, a shell for ``run``) all hit the execve refusal."""
    argv = [
        GDB,
        "-batch",
        "-nx",
        "-ex",
        "shell echo escaped",
        "-ex",
        "pipe print 1 | cat",
        "-ex",
        "python import os; os.system('echo escaped')",
    ]
    result = commands.run(argv, allow=[GDB])
    assert "escaped" not in result.stdout, result
    assert "Cannot execute /bin/sh: Operation not permitted" in result.stderr, result
