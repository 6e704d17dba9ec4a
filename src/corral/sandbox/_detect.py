"""What this machine offers for isolation, and whether the sandbox can run code at all (fail closed)."""

from __future__ import annotations

import contextlib
import os
import platform
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from corral.sandbox._cgroup import cgroup_version
from corral.sandbox.errors import SandboxUnavailable

_TEST_UID = 65533  # "nogroup"-like uid used only to probe that an unprivileged bwrap works


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


def check() -> SandboxReport:
    """Probe the machine and pick a backend. Never raises; see :func:`require` for the failing variant."""
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
    items.append(
        CheckItem(
            "root",
            os.geteuid() == 0,
            "running as root: each worker gets its own unprivileged uid"
            if os.geteuid() == 0
            else "not root: workers cannot get their own uids or cgroups",
            "run the host process as root (the worker uid switch and the cgroups need it)",
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
        )
    )
    userns_ok = False
    if bwrap and os.geteuid() == 0:
        userns_ok, detail = _userns_works(bwrap)
        items.append(
            CheckItem(
                "user namespaces",
                userns_ok,
                detail,
                "sysctl -w kernel.unprivileged_userns_clone=1 (Debian) or "
                "user.max_user_namespaces > 0; or install gVisor's runsc",
            )
        )
    cg = cgroup_version()
    items.append(
        CheckItem(
            "cgroups",
            cg is not None,
            f"cgroup v{cg} with memory and pids" if cg else "no memory+pids cgroup hierarchy",
            "mount cgroup v2 (or v1 memory and pids) writable by root",
        )
    )
    landlock = None
    with contextlib.suppress(OSError):
        landlock = _landlock_abi()
    items.append(
        CheckItem(
            "landlock",
            landlock is not None,
            f"ABI {landlock}" if landlock else "not available",
            "",
            required=False,
        )
    )
    runsc = shutil.which("runsc")
    items.append(
        CheckItem(
            "gvisor",
            runsc is not None,
            f"runsc at {runsc} (not used yet: only the bubblewrap backend is implemented)"
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
    required_ok = all(i.ok for i in items if i.required)
    backend = "bubblewrap" if required_ok and userns_ok else None
    if backend is None and bwrap and not userns_ok and os.geteuid() == 0:
        items.append(
            CheckItem(
                "fallback",
                False,
                "without user namespaces the Landlock + seccomp + uid + cgroup fallback would be next, "
                "and gVisor after it; neither is implemented yet, so the sandbox refuses to run code "
                "(fail closed)",
                "enable unprivileged user namespaces",
            )
        )
    return SandboxReport(backend, items)


_cached: SandboxReport | None = None


def require() -> SandboxReport:
    """The report, probed once per process; raises :class:`SandboxUnavailable` naming what is missing."""
    global _cached
    if _cached is None or not _cached.can_run:
        _cached = check()
    if not _cached.can_run:
        raise SandboxUnavailable(
            "cannot run model-written code on this machine, and corral never runs it unisolated: "
            + _cached.missing()
        )
    return _cached
