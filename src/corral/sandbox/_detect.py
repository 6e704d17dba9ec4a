"""What this machine offers for isolation, and whether the sandbox can run code at all (fail closed)."""

from __future__ import annotations

import contextlib
import os
import platform
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from corral.sandbox._cgroup import cgroup_version, delegated_v2
from corral.sandbox.errors import SandboxError, SandboxUnavailable, SandboxUsageError

_TEST_UID = 65533  # "nogroup"-like uid used only to probe that an unprivileged bwrap works

#: The backends in order of preference; ``$CORRAL_SANDBOX_BACKEND`` or ``SandboxPool(backend=)`` forces one.
BACKENDS = ("bubblewrap", "rootless", "landlock")
BACKEND_ENV = "CORRAL_SANDBOX_BACKEND"


@dataclass(frozen=True)
class CheckItem:
    """One probed capability: what it is, whether it works, and how to fix it when it does not."""

    name: str
    ok: bool
    detail: str
    fix: str = ""
    required: bool = True


@dataclass(frozen=True)
class SandboxReport:
    """The outcome of :func:`check`: the backend that would run code (or ``None``) and every probe."""

    backend: str | None
    items: list[CheckItem] = field(default_factory=list)
    reason: str = ""
    """Why this backend (or why none)."""

    limits: list[CheckItem] = field(default_factory=list)
    """Which resource limits hold with this backend, and how (the rootless backend lacks some)."""

    @property
    def can_run(self) -> bool:
        """True when model-written code can run isolated here."""
        return self.backend is not None

    def missing(self) -> str:
        """The failed required probes as one sentence each, with their fixes."""
        return "; ".join(
            f"{i.name}: {i.detail}" + (f" (fix: {i.fix})" if i.fix else "")
            for i in self.items
            if i.required and not i.ok
        )


def _landlock_abi() -> int | None:
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    libc.syscall.restype = ctypes.c_long
    # landlock_create_ruleset(NULL, 0, LANDLOCK_CREATE_RULESET_VERSION) returns the ABI version.
    abi = int(libc.syscall(444, None, ctypes.c_size_t(0), ctypes.c_uint32(1)))
    return abi if abi > 0 else None


def _userns_works(bwrap: str) -> tuple[bool, str]:
    root = os.geteuid() == 0
    try:
        proc = subprocess.run(
            [
                bwrap,
                "--unshare-all",
                "--ro-bind",
                "/usr",
                "/usr",
                "--symlink",
                "usr/bin",
                "/bin",
                "--symlink",
                "usr/lib",
                "/lib",
                "--symlink",
                "usr/lib64",
                "/lib64",
                "--",
                "/usr/bin/true",
            ],
            # As an unprivileged uid, like the workers (Popen switches in C; no preexec_fn in a threaded host)
            user=_TEST_UID if root else None,
            group=_TEST_UID if root else None,
            extra_groups=[] if root else None,
            capture_output=True,
            timeout=10,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return False, str(exc)
    if proc.returncode == 0:
        return True, "an unprivileged uid can create user, mount, PID and network namespaces"
    return False, proc.stderr.decode(errors="replace").strip() or f"bwrap exited {proc.returncode}"


def requested_backend(backend: str | None = None) -> str:
    """The backend asked for: ``backend``, else ``$CORRAL_SANDBOX_BACKEND``, else "auto"."""
    wanted = (backend or os.environ.get(BACKEND_ENV, "") or "auto").strip().lower()
    if wanted not in ("auto", *BACKENDS):
        raise SandboxUsageError(
            f"unknown sandbox backend {wanted!r} (from {'backend=' if backend else BACKEND_ENV}); "
            f"use one of: auto, {', '.join(BACKENDS)}"
        )
    return wanted


def check(backend: str | None = None) -> SandboxReport:
    """Probe the machine and pick a backend. Never raises; see :func:`require` for the failing variant.

    "auto" (the default), as root, picks bubblewrap when an unprivileged uid can create user namespaces, else
    Landlock when the kernel has it; as any other user, rootless when it can create user namespaces, else
    Landlock (rootless: weaker limits, see ``limits``); else none (fail closed). ``backend`` (or
    ``$CORRAL_SANDBOX_BACKEND``) forces one. ``limits`` of the report say which resource limits hold with
    the chosen backend.
    """
    try:
        wanted = requested_backend(backend)
    except (SandboxError, SandboxUsageError) as exc:
        return SandboxReport(None, [CheckItem("backend", False, str(exc))], str(exc))
    items: list[CheckItem] = []
    arch = platform.machine()
    items.append(
        CheckItem(
            "platform",
            platform.system() == "Linux" and arch == "x86_64",
            f"{platform.system()} {arch}",
            "the sandbox supports Linux on x86_64 only (its seccomp filter carries x86_64 numbers)",
        )
    )
    root = os.geteuid() == 0
    items.append(
        CheckItem(
            "root",
            True,
            "running as root: each worker gets its own unprivileged uid"
            if root
            else f"not root (uid {os.geteuid()}): rootless mode: workers run as this user inside user "
            "namespaces, each job as uid 1000 of its own user namespace, with no capabilities",
            required=False,
        )
    )
    bwrap = shutil.which("bwrap")
    version = ""
    if bwrap:
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            version = subprocess.run(
                [bwrap, "--version"], capture_output=True, text=True, check=False
            ).stdout.strip()
    items.append(
        CheckItem(
            "bubblewrap",
            bwrap is not None,
            version or "bwrap not found on PATH",
            "apt-get install -y bubblewrap",
            required=wanted == "bubblewrap",
        )
    )
    userns_ok = False
    if bwrap:
        userns_ok, detail = _userns_works(bwrap)
        items.append(
            CheckItem(
                "user namespaces",
                userns_ok,
                detail,
                "sysctl -w kernel.unprivileged_userns_clone=1 (Debian) or "
                "user.max_user_namespaces > 0; or install gVisor's runsc",
                required=wanted in ("bubblewrap", "rootless"),
            )
        )
    cg = cgroup_version()
    delegated = None if root else delegated_v2()
    if root:
        items.append(
            CheckItem(
                "cgroups",
                cg is not None,
                f"cgroup v{cg} with memory and pids" if cg else "no memory+pids cgroup hierarchy",
                "mount cgroup v2 (or v1 memory and pids) writable by root",
            )
        )
    else:
        items.append(
            CheckItem(
                "cgroups",
                delegated is not None,
                f"cgroup v2 subtree delegated to this user at {delegated}"
                if delegated
                else f"cgroup v{cg or '?'}: nothing delegated to this user; rlimits and the wall clock limit "
                "jobs instead (see limits)",
                "on cgroup v2: start corral in a delegated user scope, "
                "systemd-run --user --scope -p Delegate=yes corral …",
                required=False,
            )
        )
    landlock = None
    with contextlib.suppress(OSError):
        landlock = _landlock_abi()
    items.append(
        CheckItem(
            "landlock",
            landlock is not None,
            f"ABI {landlock}" + ("" if landlock >= 6 else _LANDLOCK_GAPS.get(landlock, ""))
            if landlock
            else "not available",
            "a kernel >= 5.13 with CONFIG_SECURITY_LANDLOCK and 'landlock' in the lsm= boot parameter",
            required=wanted == "landlock",
        )
    )
    if not root and landlock is not None:
        items[-1] = CheckItem(
            "landlock",
            landlock >= 6,
            f"ABI {landlock}: the rootless fallback where user namespaces are off (no mount view, plain "
            "directories and rlimits: see limits)"
            if landlock >= 6
            else f"ABI {landlock}: rootless, a job would be this user with no scoping of signals (ABI >= 6)",
            "a kernel >= 6.12 (Landlock ABI 6) for the rootless fallback",
            required=wanted == "landlock",
        )
    runsc = shutil.which("runsc")
    items.append(
        CheckItem(
            "gvisor",
            runsc is not None,
            f"runsc at {runsc} (not used yet: the gVisor backend is not implemented)"
            if runsc
            else "runsc not installed",
            "",
            required=False,
        )
    )
    items.append(
        CheckItem(
            "seccomp",
            Path("/proc/self/status").read_text().find("Seccomp:") >= 0,
            "the kernel supports seccomp filters",
            "a kernel built with CONFIG_SECCOMP_FILTER",
        )
    )
    common_ok = all(
        i.ok for i in items if i.required and i.name not in ("bubblewrap", "user namespaces", "landlock")
    )
    bwrap_ok = common_ok and bwrap is not None and userns_ok and root
    rootless_ok = common_ok and bwrap is not None and userns_ok and not root
    # Rootless, a job is the host user itself: only Landlock's scoping (ABI >= 6) keeps it from signalling
    # the user's other processes.
    landlock_ok = common_ok and landlock is not None and (root or landlock >= 6)
    chosen: str | None = None
    if wanted == "bubblewrap":
        chosen = "bubblewrap" if bwrap_ok else None
        reason = "forced by configuration" + (
            "" if bwrap_ok else "; it cannot run here" + ("" if root else " (it needs root; use rootless)")
        )
    elif wanted == "rootless":
        chosen = "rootless" if rootless_ok else None
        reason = "forced by configuration" + (
            "" if rootless_ok else "; it cannot run here" + (" (as root, use bubblewrap)" if root else "")
        )
    elif wanted == "landlock":
        chosen = "landlock" if landlock_ok else None
        reason = "forced by configuration" + ("" if landlock_ok else "; it cannot run here")
    elif bwrap_ok:
        chosen, reason = "bubblewrap", "bubblewrap works with unprivileged user namespaces"
    elif rootless_ok:
        chosen = "rootless"
        reason = "not root: bubblewrap in unprivileged user namespaces as this user" + (
            ", limits by a delegated cgroup" if delegated else ", limits by rlimits and the wall clock"
        )
    elif landlock_ok:
        chosen = "landlock"
        reason = (
            "fallback: "
            + ("bubblewrap is not installed" if bwrap is None else "no unprivileged user namespaces")
            + f"; Landlock ABI {landlock} + seccomp + "
            + ("a dedicated uid + cgroups instead" if root else "rlimits, as this user (rootless)")
        )
    else:
        reason = "no backend can run here"
        if common_ok:
            items.append(
                CheckItem(
                    "fallback",
                    False,
                    "neither bubblewrap with user namespaces nor Landlock is available (gVisor is not "
                    "implemented), so the sandbox refuses to run code (fail closed)",
                    "apt-get install -y bubblewrap and enable unprivileged user namespaces, or boot a kernel "
                    "with Landlock",
                )
            )
    return SandboxReport(chosen, items, reason, limits_of(chosen, delegated=delegated is not None, root=root))


def limits_of(backend: str | None, *, delegated: bool, root: bool = False) -> list[CheckItem]:
    """Which of a job's limits hold with ``backend``, and what enforces each (``ok`` False: weaker).
    ``root``: whether the host runs as root (the Landlock backend runs either way; rootless it has no cgroup,
    and ``delegated`` is not used by it)."""
    if backend is None:
        return []
    if backend == "landlock" and not root:
        return _landlock_rootless_limits()
    cgroup = backend != "rootless" or delegated
    same = [
        CheckItem("wall", True, "wall clock: the broker SIGKILLs the job's tree"),
        CheckItem("scratch", True, "size- and inode-capped tmpfs per job"),
        CheckItem("file size", True, "RLIMIT_FSIZE"),
        CheckItem("open files", True, "RLIMIT_NOFILE"),
        CheckItem("output", True, "stdout/stderr capped by the broker"),
    ]
    if cgroup:
        return [
            CheckItem("memory", True, "job cgroup memory limit for the whole tree (OOM kill)"),
            CheckItem(
                "pids", True, "job cgroup pids limit" + ("" if backend == "landlock" else " + PID namespace")
            ),
            CheckItem("cpu time", True, "job cgroup CPU time of the whole tree; RLIMIT_CPU behind it"),
            CheckItem("cpu cores", True, "CFS bandwidth of the worker's cgroup"),
            *same,
        ]
    return [
        CheckItem(
            "memory",
            False,
            "RLIMIT_DATA per process: an allocation past it is a MemoryError, not an OOM kill; a tree of n "
            "processes may hold n times the limit; shared anonymous maps are not bounded (memfd_create is "
            "denied); peak memory is not measured",
        ),
        CheckItem("pids", True, "RLIMIT_NPROC counted in the job's own user namespace + PID namespace"),
        CheckItem(
            "cpu time",
            False,
            "the tree's CPU time read from /proc by the broker (SIGKILL), RLIMIT_CPU per process behind it; "
            "children auto-reaped (SIGCHLD ignored) drop out of the count: the wall clock bounds them",
        ),
        CheckItem("cpu cores", False, "not limited (no CPU bandwidth control without a cgroup)"),
        *same,
    ]


def _landlock_rootless_limits() -> list[CheckItem]:
    """The Landlock backend run by a host that is not root: no mounts, no cgroup, no uid of its own."""
    return [
        CheckItem(
            "memory",
            False,
            "RLIMIT_DATA per process: an allocation past it is a MemoryError, not an OOM kill; a tree of n "
            "processes may hold n times the limit; memfd_create is denied; peak memory is not measured",
        ),
        CheckItem(
            "pids",
            False,
            "RLIMIT_NPROC counts every process of this user: set to the user's count when the job's "
            "process was made plus the limit, so the user's other new processes eat into it",
        ),
        CheckItem(
            "cpu time",
            False,
            "the job tree's CPU time (orphans included: the zygote is their subreaper) read from /proc by "
            "the broker (SIGKILL), RLIMIT_CPU per process behind it",
        ),
        CheckItem("cpu cores", False, "not limited (no CPU bandwidth control without a cgroup)"),
        CheckItem("wall", True, "wall clock: the broker SIGKILLs the job's tree"),
        CheckItem(
            "scratch",
            False,
            "plain directories of this user's (no tmpfs can be mounted): neither their total size nor "
            "their inodes are capped, only each file (RLIMIT_FSIZE); /tmp, /work, /data are the job's "
            "own directories by another path",
        ),
        CheckItem("file size", True, "RLIMIT_FSIZE"),
        CheckItem("open files", True, "RLIMIT_NOFILE"),
        CheckItem("output", True, "stdout/stderr capped by the broker"),
    ]


_LANDLOCK_GAPS = {
    1: " (before ABI 4 no TCP rules: seccomp alone keeps jobs off the network; before ABI 6 no scoping: "
    "a job can signal its own worker, and connect() is denied outright to keep abstract sockets out)",
    2: " (before ABI 4 no TCP rules; before ABI 6 no scoping: a job can signal its own worker)",
    3: " (before ABI 4 no TCP rules; before ABI 6 no scoping: a job can signal its own worker)",
    4: " (before ABI 6 no scoping: a job can signal its own worker; connect() is denied outright)",
    5: " (before ABI 6 no scoping: a job can signal its own worker; connect() is denied outright)",
}

_cached: dict[str, SandboxReport] = {}


def require(backend: str | None = None) -> SandboxReport:
    """The report, probed once per process and backend; raises :class:`SandboxUnavailable` naming what is
    missing."""
    wanted = requested_backend(backend)
    report = _cached.get(wanted)
    if report is None or not report.can_run:
        report = _cached[wanted] = check(wanted)
    if not report.can_run:
        raise SandboxUnavailable(
            "cannot run model-written code on this machine, and corral never runs it unisolated: "
            + (report.missing() or report.reason)
        )
    return report
