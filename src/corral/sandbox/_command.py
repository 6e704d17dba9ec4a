"""Vetted executables: run one trusted program on untrusted input, with a Python job's isolation.

Some untrusted input is best read by an existing program (``gdb`` on a core dump). Such a program runs in
the sandbox as a *command job*: the same worker, namespaces, mounts, read-only ``/data`` inputs, ``/work``
scratch, limits, output caps and status channel as a Python job, and the same seccomp filter except that
its first ``execve`` — the one that starts the program — is let through and every later one is refused
(``_command_job.py`` says how). Which program may run is decided on the host, before anything reaches a
worker: see :func:`vet_executable`.
"""

from __future__ import annotations

import asyncio
import os
import stat
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from corral.sandbox._pool import InputValue, SandboxPool, _Job, default_pool
from corral.sandbox._types import Limits, RunResult
from corral.sandbox.errors import SandboxUnavailable, SandboxUsageError

_MAX_ARGS = 1024
_MAX_ARGV_BYTES = 128 * 1024


@dataclass(frozen=True)
class VettedExecutable:
    """A program the host checked: its resolved path and the file's identity (device, inode)."""

    path: str
    device: int
    inode: int


def _visible_roots() -> tuple[str, ...]:
    """Directories the sandbox binds read-only at their own paths, where a command's program may live."""
    roots = ["/usr/"]
    for top in ("/bin", "/sbin"):
        if os.path.isdir(top) and not os.path.islink(top):
            roots.append(top + "/")
    return tuple(roots)


def _refuse(path: str, why: str) -> SandboxUsageError:
    return SandboxUsageError(f"{path!r} cannot be a sandbox command: {why}")


def vet_executable(path: str | os.PathLike[str]) -> VettedExecutable:
    """Check that ``path`` names a program the sandbox may run, and pin which file it is.

    The rules: an absolute path; resolved (symbolic links followed) it lies under a directory the sandbox
    binds read-only at the same path (``/usr``, and ``/bin``/``/sbin`` where they are not links to it); a
    regular file, executable, without set-user-ID or set-group-ID bits; the file and every directory above it
    owned by root and writable by nobody else (so that no other user can swap the program). Raises
    :class:`~corral.sandbox.errors.SandboxUsageError` naming the broken rule.
    """
    given = os.fspath(path)
    if not isinstance(given, str) or not os.path.isabs(given) or "\0" in given:
        raise _refuse(str(given), "give an absolute path")
    real = os.path.realpath(given)
    if not real.startswith(_visible_roots()):
        raise _refuse(
            given, f"it resolves to {real}, outside {', '.join(_visible_roots())} (not in the sandbox)"
        )
    try:
        st = os.stat(real)
    except OSError as exc:
        raise _refuse(given, f"{exc.strerror}") from None
    if not stat.S_ISREG(st.st_mode):
        raise _refuse(given, "not a regular file")
    if st.st_mode & 0o111 == 0:
        raise _refuse(given, "not executable")
    if st.st_mode & (stat.S_ISUID | stat.S_ISGID):
        raise _refuse(given, "it is set-user-ID or set-group-ID")
    current = real
    while True:
        info = st if current == real else os.stat(current)
        if info.st_uid != 0:
            raise _refuse(given, f"{current} is not owned by root")
        if info.st_mode & 0o022:
            raise _refuse(given, f"{current} is writable by its group or by others")
        if current == "/":
            break
        current = os.path.dirname(current)
    return VettedExecutable(real, st.st_dev, st.st_ino)


def _check_argv(argv: Sequence[str]) -> list[str]:
    if isinstance(argv, (str, bytes)) or not argv:
        raise SandboxUsageError("a sandbox command's argv must be a non-empty list of str")
    args = list(argv)
    if len(args) > _MAX_ARGS:
        raise SandboxUsageError(f"a sandbox command takes at most {_MAX_ARGS} arguments, not {len(args)}")
    for arg in args:
        if not isinstance(arg, str) or "\0" in arg:
            raise SandboxUsageError(f"sandbox command argument {arg!r} must be a str without NUL")
    if sum(len(a.encode(errors="surrogateescape")) + 1 for a in args) > _MAX_ARGV_BYTES:
        raise SandboxUsageError(f"a sandbox command's arguments exceed {_MAX_ARGV_BYTES} bytes")
    return args


def run_command_sync(
    argv: Sequence[str],
    *,
    allow: Iterable[str | os.PathLike[str]],
    inputs: Mapping[str, InputValue] | None = None,
    limits: Limits | None = None,
    pool: SandboxPool | None = None,
    queue_timeout: float | None = None,
) -> RunResult:
    """Run the program ``argv[0]`` with arguments ``argv[1:]`` in the sandbox and wait for the result.

    ``allow`` is the caller's allowlist: ``argv[0]`` must resolve to the same file as one of its entries,
    and each entry used must pass :func:`vet_executable`. Inputs appear read-only as ``/data/<name>`` (give
    the program those paths), the working directory is the empty scratch ``/work``, whose regular files
    come back in :attr:`RunResult.files`; stdin is empty; the environment is the sandbox's (``PATH``,
    ``HOME=/work``, ``LANG=C.UTF-8``). No network; the program can start no other program (``execve``
    fails with ``EPERM``); every limit of :class:`Limits` applies to its whole process tree, as to a
    Python job's. A program killed by a signal has ``exit_code`` ``None`` and ``signal`` set.

    Raises :class:`~corral.sandbox.errors.SandboxUnavailable` on the Landlock backend, which cannot run
    commands (its jobs have no namespaces to confine a program's children), and
    :class:`~corral.sandbox.errors.SandboxUsageError` for a program the allowlist or the vetting refuses.
    """
    args = _check_argv(argv)
    if isinstance(allow, (str, bytes, os.PathLike)):
        raise SandboxUsageError("allow= takes a list of paths, not one path")
    program = vet_executable(args[0])
    allowed = [os.fspath(entry) for entry in allow]
    if not any(
        vet_executable(entry) == program for entry in allowed if os.path.realpath(entry) == program.path
    ):
        raise SandboxUsageError(
            f"{args[0]!r} is not in this command's allowlist ({', '.join(allowed) or 'empty'})"
        )
    chosen = pool or default_pool()
    chosen.start()
    if chosen.backend == "landlock":
        raise SandboxUnavailable(
            "the Landlock sandbox backend cannot run commands: a command's supervisor must be PID 1 of the "
            "job's own PID namespace, which Landlock jobs lack; use the bubblewrap or rootless backend"
        )
    spec = {"path": program.path, "device": program.device, "inode": program.inode, "argv": args}
    job = _Job("command", limits or chosen.default_limits, command=spec, inputs=dict(inputs or {}))
    return chosen._run(job, queue_timeout)


async def run_command(
    argv: Sequence[str],
    *,
    allow: Iterable[str | os.PathLike[str]],
    inputs: Mapping[str, InputValue] | None = None,
    limits: Limits | None = None,
    pool: SandboxPool | None = None,
    queue_timeout: float | None = None,
) -> RunResult:
    """Async :func:`run_command_sync`. Cancelling the caller does not stop the program; its limits do."""
    return await asyncio.to_thread(
        run_command_sync,
        argv,
        allow=allow,
        inputs=inputs,
        limits=limits,
        pool=pool,
        queue_timeout=queue_timeout,
    )
