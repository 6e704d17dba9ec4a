"""Run a command as a dedicated unprivileged user, with this checkout's Python environment.

The suite runs as root; the rootless backend is tested by running pytest (or ``corral``) again as the user
``corral-test`` (created here, idempotently, as a system user with no home and no login shell). The
environment already built is used in place: when the interpreter lives below a directory that user cannot
traverse (the Python of this machine is under ``/root``, mode 700), the command runs in a private mount
namespace where that directory is replaced by an empty world-traversable tmpfs with only the runtime's
directory bound back, read-only. Nothing on the host is chmod-ed or copied.
"""

from __future__ import annotations

import os
import pwd
import shlex
import subprocess
import sys
from pathlib import Path

USER = "corral-test"


def ensure_user() -> pwd.struct_passwd:
    """The unprivileged test user (created when missing; needs root)."""
    try:
        return pwd.getpwnam(USER)
    except KeyError:
        subprocess.run(
            ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", USER],
            check=True,
            capture_output=True,
        )
        return pwd.getpwnam(USER)


def _blocked(path: str, uid: int, gid: int) -> tuple[str, str] | None:
    """The first ancestor of ``path`` that ``uid`` cannot traverse, and its child on the way to ``path``."""
    parts = Path(path).parts
    for depth in range(2, len(parts)):
        ancestor = os.path.join(*parts[:depth])
        st = os.stat(ancestor)
        if st.st_mode & 0o001 or (st.st_uid == uid and st.st_mode & 0o100):
            continue
        if st.st_gid == gid and st.st_mode & 0o010:
            continue
        return ancestor, os.path.join(ancestor, parts[depth])
    return None


def argv_as_user(argv: list[str], *, env: dict[str, str] | None = None) -> list[str]:
    """``argv`` run as :data:`USER` (see the module's docstring), with ``env`` set for it."""
    user = ensure_user()
    script: list[str] = ["set -e", "mount --make-rprivate /"]
    for path in (os.path.realpath(sys.base_prefix), os.path.realpath(sys.prefix)):
        found = _blocked(path, user.pw_uid, user.pw_gid)
        if found is None:
            continue
        closed, child = found
        stage = f"/tmp/corral-unprivileged-{os.getpid()}-{abs(hash(child))}"
        script += [
            f"mkdir -p {stage}",
            f"mount --bind -o ro {shlex.quote(child)} {stage}",
            f"mount -t tmpfs -o mode=0755,size=64k tmpfs {shlex.quote(closed)}",
            f"mkdir -p {shlex.quote(child)}",
            f"mount --move {stage} {shlex.quote(child)}",
            f"rmdir {stage} || true",
        ]
    variables = {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", **(env or {})}
    run = ["runuser", "-u", USER, "--", "env", "-i", *(f"{k}={v}" for k, v in variables.items()), *argv]
    script.append("exec " + " ".join(shlex.quote(a) for a in run))
    return ["unshare", "--mount", "--propagation", "private", "--", "sh", "-c", "\n".join(script)]
