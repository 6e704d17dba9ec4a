"""The seccomp filter every job runs under, assembled as classic BPF by hand.

Built here (no libseccomp binding needed in our interpreter) and handed to the worker as bytes; the worker
loads it in each job's process right before the model's code runs. The filter is a deny list on top of the
namespaces, dropped capabilities and cgroups: each entry closes a kernel surface a job has no business
touching.

Denied with ``EPERM``: ptrace and cross-process memory access, bpf, perf_event_open, userfaultfd, the keyring,
mount/umount/pivot_root/chroot and the new mount API, unshare/setns and ``clone`` with namespace flags,
io_uring, kexec, kernel modules, pidfd_open, execve (a job has no reason to start programs: ``os.system`` and
ctypes ``system()`` fail), sockets of any family but ``AF_UNIX``, the ``TIOCSTI``/``TIOCLINUX`` ioctls, and a
few admin calls. ``clone3`` gets ``ENOSYS`` so the C library falls back to ``clone``, whose flags a classic
filter can inspect. System calls of another ABI (x32, or a foreign architecture) kill the process.
"""

from __future__ import annotations

import platform
import struct

from corral.sandbox.errors import SandboxUnavailable

# Offsets in struct seccomp_data: int nr; u32 arch; u64 ip; u64 args[6] (little-endian: low word first).
_NR, _ARCH, _ARG0, _ARG1 = 0, 4, 16, 24

_BPF_LD_W_ABS = 0x20
_BPF_JEQ_K = 0x15
_BPF_JGE_K = 0x35
_BPF_JSET_K = 0x45
_BPF_RET_K = 0x06

_RET_KILL_PROCESS = 0x80000000
_RET_ALLOW = 0x7FFF0000
_RET_ERRNO = 0x00050000
_RET_USER_NOTIF = 0x7FC00000
_EPERM = 1
_ENOSYS = 38
_AUDIT_ARCH_X86_64 = 0xC000003E
_X32_SYSCALL_BIT = 0x40000000

_AF_UNIX = 1
_TIOCSTI = 0x5412
_TIOCLINUX = 0x541C
# CLONE_NEWNS | NEWCGROUP | NEWUTS | NEWIPC | NEWUSER | NEWPID | NEWNET | NEWTIME
_CLONE_NS_FLAGS = (
    0x00020000 | 0x02000000 | 0x04000000 | 0x08000000 | 0x10000000 | 0x20000000 | 0x40000000 | 0x80
)

#: x86_64 numbers of the system calls denied outright, by name (the names are what tests and docs refer to).
DENIED_X86_64: dict[str, int] = {
    "ptrace": 101,
    "syslog": 103,
    "personality": 135,
    "vhangup": 153,
    "pivot_root": 155,
    "chroot": 161,
    "acct": 163,
    "mount": 165,
    "umount2": 166,
    "swapon": 167,
    "swapoff": 168,
    "reboot": 169,
    "iopl": 172,
    "ioperm": 173,
    "init_module": 175,
    "delete_module": 176,
    "quotactl": 179,
    "lookup_dcookie": 212,
    "kexec_load": 246,
    "add_key": 248,
    "request_key": 249,
    "keyctl": 250,
    "unshare": 272,
    "perf_event_open": 298,
    "fanotify_init": 300,
    "name_to_handle_at": 303,
    "open_by_handle_at": 304,
    "setns": 308,
    "process_vm_readv": 310,
    "process_vm_writev": 311,
    "kcmp": 312,
    "finit_module": 313,
    "kexec_file_load": 320,
    "bpf": 321,
    "userfaultfd": 323,
    "io_uring_setup": 425,
    "io_uring_enter": 426,
    "io_uring_register": 427,
    "open_tree": 428,
    "move_mount": 429,
    "fsopen": 430,
    "fsconfig": 431,
    "fsmount": 432,
    "fspick": 433,
    "pidfd_getfd": 438,
    # A pidfd names any process of the caller's PID namespace by number, hidepid notwithstanding (on the
    # Landlock backend: every host process), and PIDFD_GET_INFO then tells its uid: a job needs none.
    "pidfd_open": 434,
    "process_madvise": 440,
    "mount_setattr": 442,
    "execve": 59,
    "execveat": 322,
}
#: Denied too when jobs share the host's IPC namespace (the Landlock backend): System V IPC and POSIX message
#: queues, which neither Landlock nor a mount view confines (a job could reach the host's segments).
DENIED_IPC_X86_64: dict[str, int] = {
    "shmget": 29,
    "shmat": 30,
    "shmctl": 31,
    "semget": 64,
    "semop": 65,
    "semctl": 66,
    "shmdt": 67,
    "msgget": 68,
    "msgsnd": 69,
    "msgrcv": 70,
    "msgctl": 71,
    "semtimedop": 220,
    "mq_open": 240,
    "mq_unlink": 241,
    "mq_timedsend": 242,
    "mq_timedreceive": 243,
    "mq_notify": 244,
    "mq_getsetattr": 245,
}
#: Denied too when a job runs as the host user itself with only Landlock around it (the Landlock backend run
#: rootless): Landlock (ABI <= 7) does not govern a file's mode, owner, times or extended attributes, and by
#: path these calls reach any file of the user's (``chmod 777 ~/.ssh``). On descriptors (fchmod, fsetxattr…)
#: they stay allowed: opening a file needs Landlock's leave.
DENIED_METADATA_X86_64: dict[str, int] = {
    "chmod": 90,
    "chown": 92,
    "lchown": 94,
    "utime": 132,
    "setxattr": 188,
    "lsetxattr": 189,
    "removexattr": 197,
    "lremovexattr": 198,
    "utimes": 235,
    "fchownat": 260,
    "futimesat": 261,
    "fchmodat": 268,
    "utimensat": 280,
    "fchmodat2": 452,
    "setxattrat": 463,
    "removexattrat": 466,
}
_CLONE = 56
_CLONE3 = 435
_SOCKET = 41
_SOCKETPAIR = 53
_IOCTL = 16


def _insn(code: int, k: int, jt: int = 0, jf: int = 0) -> tuple[int, int, int, int]:
    return (code, jt, jf, k)


def build_filter(
    machine: str | None = None,
    *,
    deny_ipc: bool = False,
    deny_connect: bool = False,
    deny_memfd: bool = False,
    notify_exec: bool = False,
    deny_metadata: bool = False,
) -> bytes:
    """The filter as packed ``struct sock_filter`` records, ready for ``PR_SET_SECCOMP``.

    ``notify_exec`` is the variant for a vetted command (see ``_command_job.py``): execve and execveat go to
    the filter's listener (``SECCOMP_RET_USER_NOTIF``), whose supervisor lets the first one through and
    refuses every later one, instead of failing with ``EPERM``. Everything else is the same filter.

    Raises :class:`SandboxUnavailable` on an architecture whose system call numbers this module does not
    carry: a wrong table would silently let calls through, so it refuses instead.
    """
    machine = machine or platform.machine()
    if machine not in ("x86_64", "AMD64"):
        raise SandboxUnavailable(
            f"the sandbox's seccomp filter knows x86_64 system call numbers only, not {machine!r}; "
            "running model-written code without it would be unsafe, so the sandbox refuses"
        )
    # Symbolic program: ("jeq"/"jset"/"jge", k, true_label, false_label) or ("ld", offset) or ("ret", value)
    # or ("label", name). Resolved to relative jumps below; every jump goes forward, as BPF requires.
    prog: list[tuple[object, ...]] = [
        ("ld", _ARCH),
        ("jeq", _AUDIT_ARCH_X86_64, None, "kill"),
        ("ld", _NR),
        ("jge", _X32_SYSCALL_BIT, "kill", None),
    ]
    denied = {
        **DENIED_X86_64,
        **(DENIED_IPC_X86_64 if deny_ipc else {}),
        **(DENIED_METADATA_X86_64 if deny_metadata else {}),
    }
    if deny_connect:
        denied["connect"] = 42  # a Landlock ABI < 6 cannot keep a job from the host's abstract unix sockets
    if deny_memfd:
        denied["memfd_create"] = 319  # rootless without a cgroup: memfd pages would count against no limit
    if notify_exec:
        for name in ("execve", "execveat"):
            prog.append(("jeq", denied.pop(name), "notify", None))
    for nr in sorted(denied.values()):
        prog.append(("jeq", nr, "eperm", None))
    prog += [
        ("jeq", _CLONE3, "enosys", None),
        ("jeq", _CLONE, "clone", None),
        ("jeq", _SOCKET, "socket", None),
        ("jeq", _SOCKETPAIR, "socket", None),
        ("jeq", _IOCTL, "ioctl", None),
        ("ret", _RET_ALLOW),
        ("label", "clone"),
        ("ld", _ARG0),
        ("jset", _CLONE_NS_FLAGS, "eperm", None),
        ("ret", _RET_ALLOW),
        ("label", "socket"),
        ("ld", _ARG0),
        ("jeq", _AF_UNIX, None, "eperm"),
        ("ret", _RET_ALLOW),
        ("label", "ioctl"),
        # The kernel truncates the ioctl request to 32 bits, so comparing the low word is exact.
        ("ld", _ARG1),
        ("jeq", _TIOCSTI, "eperm", None),
        ("jeq", _TIOCLINUX, "eperm", None),
        ("ret", _RET_ALLOW),
        ("label", "eperm"),
        ("ret", _RET_ERRNO | _EPERM),
        *([("label", "notify"), ("ret", _RET_USER_NOTIF)] if notify_exec else []),
        ("label", "enosys"),
        ("ret", _RET_ERRNO | _ENOSYS),
        ("label", "kill"),
        ("ret", _RET_KILL_PROCESS),
    ]
    labels: dict[str, int] = {}
    index = 0
    for op in prog:
        if op[0] == "label":
            labels[str(op[1])] = index
        else:
            index += 1
    out: list[tuple[int, int, int, int]] = []
    for op in prog:
        kind = op[0]
        if kind == "label":
            continue
        here = len(out)
        if kind == "ld":
            out.append(_insn(_BPF_LD_W_ABS, int(str(op[1]))))
        elif kind == "ret":
            out.append(_insn(_BPF_RET_K, int(str(op[1]))))
        else:
            code = {"jeq": _BPF_JEQ_K, "jge": _BPF_JGE_K, "jset": _BPF_JSET_K}[str(kind)]

            def rel(label: object, here: int = here) -> int:
                if label is None:
                    return 0
                offset = labels[str(label)] - here - 1
                if not 0 <= offset <= 255:
                    raise AssertionError(f"seccomp jump to {label} out of range: {offset}")
                return offset

            out.append(_insn(code, int(str(op[1])), rel(op[2]), rel(op[3])))
    return b"".join(struct.pack("<HBBI", *insn) for insn in out)
