"""Starts one worker: a short-lived root step, then ``exec`` of bubblewrap as the worker's own unprivileged uid.

Executed as a script (``python -I -S -c <source> <json>``) by the host, as root. Why it exists: the
interpreter and site-packages may live under ``/root`` (mode 700), which an unprivileged uid cannot traverse,
and nothing on the host may be chmod-ed. So this process enters a private mount namespace (nothing propagates
back to the host), mounts a small tmpfs on an empty staging directory and bind-mounts each runtime directory
read-only into it; the staging tmpfs is world-traversable, so bubblewrap — started after the switch to the
worker's uid — can bind those directories into the worker's sandbox at their original paths. It also joins the
worker's cgroups and lowers its OOM score while it still can (root), then drops every privilege and execs
bwrap. Rootless (``"rootless": true``) it only joins the worker's delegated cgroup and execs bwrap.
"""

# ruff: noqa: E501
from __future__ import annotations

import ctypes
import json
import os
import sys

MS_RDONLY = 1
MS_NOSUID = 2
MS_NODEV = 4
MS_REMOUNT = 32
MS_BIND = 4096
MS_REC = 16384
MS_PRIVATE = 1 << 18
CLONE_NEWNS = 0x00020000


def main() -> None:
    config = json.loads(sys.argv[1])
    libc = ctypes.CDLL(None, use_errno=True)
    libc.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong, ctypes.c_char_p]

    def mount(src: str | None, target: str, fstype: str | None, flags: int, data: str | None = None) -> None:
        rc = libc.mount(
            src.encode() if src else None,
            target.encode(),
            fstype.encode() if fstype else None,
            flags,
            data.encode() if data else None,
        )
        if rc != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"mount {src or fstype} on {target}: {os.strerror(err)}")

    if config.get("rootless"):
        # Rootless with a delegated cgroup v2 subtree: join the worker's cgroup, nothing to stage or drop.
        for procs in config["cgroup_procs"]:
            with open(procs, "w") as f:
                f.write(str(os.getpid()))
        os.execv(config["argv"][0], config["argv"])
    if libc.unshare(CLONE_NEWNS) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"unshare(CLONE_NEWNS): {os.strerror(err)}")
    mount(None, "/", None, MS_REC | MS_PRIVATE)
    stage = config["stage"]
    mount("tmpfs", stage, "tmpfs", MS_NOSUID | MS_NODEV, "size=65536,nr_inodes=256,mode=0755")
    for index, src in enumerate(config["binds"]):
        target = os.path.join(stage, str(index))
        os.mkdir(target, 0o755)
        mount(src, target, None, MS_BIND | MS_REC)
        mount(None, target, None, MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID | MS_NODEV)
    for procs in config["cgroup_procs"]:
        with open(procs, "w") as f:
            f.write(str(os.getpid()))
    try:
        # Lowering needs CAP_SYS_RESOURCE, which a container may withhold; jobs raise theirs to 1000 anyway.
        with open("/proc/self/oom_score_adj", "w") as f:
            f.write(str(config["oom_score_adj"]))
    except OSError:
        pass
    uid = int(config["uid"])
    os.setgroups([])
    os.setresgid(uid, uid, uid)
    os.setresuid(uid, uid, uid)
    if os.geteuid() == 0 or os.getuid() == 0:
        raise SystemExit("corral sandbox launcher: could not drop root")
    argv = config["argv"]
    os.execv(argv[0], argv)


if __name__ == "__main__":
    main()
