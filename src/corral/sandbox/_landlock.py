"""Landlock for the fallback backend: the job-side half, standard library only.

Used in two places: by the host (``abi()``, to detect and report), and inside the warm worker, which executes
this file's source (the repository is not importable in there) to confine each job's process right before the
job's code runs. Landlock is driven through raw system calls (x86_64 numbers: ``landlock_create_ruleset``
444, ``landlock_add_rule`` 445, ``landlock_restrict_self`` 446), and rights the running kernel's ABI does not
know are masked out as the kernel documentation describes, so one ruleset works on ABI 1 to 7.

What a confined job may do: read (and execute, where a runtime needs it) the interpreter's prefix,
site-packages, ``/usr`` and a few files of ``/etc``; read its input files; read and write only its own fresh
scratch and tmp directories (and ``/dev/null``); nothing else on the filesystem. With ABI >= 4 it may neither
bind nor connect TCP sockets; with ABI >= 6 it can neither signal nor reach through abstract unix sockets any
process outside its own Landlock domain (the worker, the host, other jobs).
"""

from __future__ import annotations

import ctypes
import os
import stat

SYS_LANDLOCK_CREATE_RULESET = 444
SYS_LANDLOCK_ADD_RULE = 445
SYS_LANDLOCK_RESTRICT_SELF = 446
LANDLOCK_CREATE_RULESET_VERSION = 1
LANDLOCK_RULE_PATH_BENEATH = 1

FS_EXECUTE = 1 << 0
FS_WRITE_FILE = 1 << 1
FS_READ_FILE = 1 << 2
FS_READ_DIR = 1 << 3
FS_REMOVE_DIR = 1 << 4
FS_REMOVE_FILE = 1 << 5
FS_MAKE_CHAR = 1 << 6
FS_MAKE_DIR = 1 << 7
FS_MAKE_REG = 1 << 8
FS_MAKE_SOCK = 1 << 9
FS_MAKE_FIFO = 1 << 10
FS_MAKE_BLOCK = 1 << 11
FS_MAKE_SYM = 1 << 12
FS_REFER = 1 << 13  # ABI 2
FS_TRUNCATE = 1 << 14  # ABI 3
FS_IOCTL_DEV = 1 << 15  # ABI 5
NET_BIND_TCP = 1 << 0  # ABI 4
NET_CONNECT_TCP = 1 << 1  # ABI 4
SCOPE_ABSTRACT_UNIX_SOCKET = 1 << 0  # ABI 6
SCOPE_SIGNAL = 1 << 1  # ABI 6

#: Rights a rule on a file (not a directory) may carry.
FILE_RIGHTS = FS_EXECUTE | FS_WRITE_FILE | FS_READ_FILE | FS_TRUNCATE | FS_IOCTL_DEV
READ = FS_READ_FILE | FS_READ_DIR
READ_EXEC = READ | FS_EXECUTE
READ_WRITE = (
    READ
    | FS_WRITE_FILE
    | FS_REMOVE_DIR
    | FS_REMOVE_FILE
    | FS_MAKE_DIR
    | FS_MAKE_REG
    | FS_MAKE_SOCK
    | FS_MAKE_FIFO
    | FS_MAKE_SYM
    | FS_REFER
    | FS_TRUNCATE
)


class _RulesetAttr(ctypes.Structure):
    _fields_ = [
        ("handled_access_fs", ctypes.c_uint64),
        ("handled_access_net", ctypes.c_uint64),
        ("scoped", ctypes.c_uint64),
    ]


class _PathBeneathAttr(ctypes.Structure):
    _pack_ = 1
    _fields_ = [("allowed_access", ctypes.c_uint64), ("parent_fd", ctypes.c_int32)]


def _libc() -> ctypes.CDLL:
    libc = ctypes.CDLL(None, use_errno=True)
    libc.syscall.restype = ctypes.c_long
    return libc


def abi() -> int:
    """The kernel's Landlock ABI version, or 0 when Landlock is not available (not built in, or disabled)."""
    rc = int(
        _libc().syscall(
            SYS_LANDLOCK_CREATE_RULESET, None, ctypes.c_size_t(0), LANDLOCK_CREATE_RULESET_VERSION
        )
    )
    return rc if rc > 0 else 0


def fs_rights(version: int) -> int:
    """Every filesystem right the given ABI knows (the ones a ruleset can handle, i.e. deny by default)."""
    rights = (1 << 13) - 1
    if version >= 2:
        rights |= FS_REFER
    if version >= 3:
        rights |= FS_TRUNCATE
    if version >= 5:
        rights |= FS_IOCTL_DEV
    return rights


def restrict_self(
    *,
    read_exec: list[str],
    read_only: list[str],
    read_write: list[str],
    read_fds: list[int],
    devices: list[str],
    max_abi: int | None = None,
) -> int:
    """Confine the calling process (and its future children) for good; return the ABI used.

    ``read_exec`` paths may be read and executed, ``read_only`` paths read, ``read_write`` directories fully
    used, ``read_fds`` (open files) read, ``devices`` read and written as files. Paths that do not exist are
    skipped. Raises ``OSError`` when Landlock is unavailable or refuses: the caller must not run the job then.
    ``no_new_privs`` must already be set. ``max_abi`` pretends the kernel is older (tests of the masking).
    """
    libc = _libc()
    version = abi() if max_abi is None else min(abi(), max_abi)
    if version < 1:
        raise OSError(38, "Landlock is not available in this kernel")
    handled = fs_rights(version)
    attr = _RulesetAttr(handled, 0, 0)
    size = 8
    if version >= 4:
        attr.handled_access_net = NET_BIND_TCP | NET_CONNECT_TCP  # no rule: every TCP bind/connect is denied
        size = 16
    if version >= 6:
        attr.scoped = SCOPE_ABSTRACT_UNIX_SOCKET | SCOPE_SIGNAL
        size = 24
    ruleset = int(libc.syscall(SYS_LANDLOCK_CREATE_RULESET, ctypes.byref(attr), ctypes.c_size_t(size), 0))
    if ruleset < 0:
        err = ctypes.get_errno()
        raise OSError(err, f"landlock_create_ruleset: {os.strerror(err)}")
    try:

        def add(fd: int, access: int, what: str) -> None:
            mode = os.fstat(fd).st_mode
            allowed = access & handled
            if not stat.S_ISDIR(mode):
                allowed &= FILE_RIGHTS
            rule = _PathBeneathAttr(allowed, fd)
            if libc.syscall(
                SYS_LANDLOCK_ADD_RULE, ruleset, LANDLOCK_RULE_PATH_BENEATH, ctypes.byref(rule), 0
            ):
                err = ctypes.get_errno()
                raise OSError(err, f"landlock_add_rule {what}: {os.strerror(err)}")

        groups = ((read_exec, READ_EXEC), (read_only, READ), (read_write, READ_WRITE))
        for paths, access in groups:
            for path in paths:
                try:
                    fd = os.open(path, os.O_PATH | os.O_CLOEXEC)
                except FileNotFoundError:
                    continue
                try:
                    add(fd, access, path)
                finally:
                    os.close(fd)
        for path in devices:
            try:
                fd = os.open(path, os.O_PATH | os.O_CLOEXEC)
            except FileNotFoundError:
                continue
            try:
                add(fd, FS_READ_FILE | FS_WRITE_FILE, path)
            finally:
                os.close(fd)
        for fd in read_fds:
            try:
                add(fd, FS_READ_FILE, f"input fd {fd}")
            except OSError as exc:
                # EBADFD: a memfd lives on an internal filesystem, which Landlock does not restrict at all.
                if exc.errno != 77:
                    raise
        if libc.syscall(SYS_LANDLOCK_RESTRICT_SELF, ruleset, 0):
            err = ctypes.get_errno()
            raise OSError(err, f"landlock_restrict_self: {os.strerror(err)}")
    finally:
        os.close(ruleset)
    return version
