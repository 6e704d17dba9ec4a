"""Starts one worker of the Landlock backend: a short-lived root step, then ``exec`` of the worker as its uid.

The fallback for hosts without unprivileged user namespaces. Executed as a script (``python -I -S -c <source>
<json>``) by the host, as root. Root may create a mount namespace with or without user namespaces, so this
process builds the worker's view of the filesystem much as bubblewrap would: a fresh tmpfs root with ``/usr``
and the interpreter read-only, a few files of ``/etc``, a minimal ``/dev``, a ``/proc`` that hides other
users' processes (``hidepid=invisible``), the worker's cgroup directories, site-packages at
``/opt/corral/site-N``, and ``/work``, ``/tmp`` and ``/data`` as links into ``/run/corral/cur``, a root-owned
directory the host points at each job's fresh directory (the host mounts the job's scratch and tmp
filesystems there; mounts here are slaves of the host's, so they arrive). Then ``pivot_root`` into it, join
the worker's cgroups, lower the OOM score, drop to the worker's uid (no supplementary groups), ask for SIGKILL
when the host dies, and exec the worker's interpreter directly. Each job then confines itself with Landlock
and seccomp before the job's code runs (see ``_landlock.py`` and ``_worker.py``).

Rootless (``"rootless": true``: a host that is not root, on a machine without user namespaces) there is no
mount namespace to make and no uid to switch to: it only asks for SIGKILL when the host dies and execs the
worker, which sees the host's filesystem; each job's Landlock ruleset is what confines it.
"""

from __future__ import annotations

import ctypes
import json
import os
import sys

MS_RDONLY = 1
MS_NOSUID = 2
MS_NODEV = 4
MS_NOEXEC = 8
MS_REMOUNT = 32
MS_BIND = 4096
MS_REC = 16384
MS_SLAVE = 1 << 19
CLONE_NEWNS = 0x00020000
PR_SET_PDEATHSIG = 1
SYS_PIVOT_ROOT = 155
MNT_DETACH = 2


def main() -> None:
    config = json.loads(sys.argv[1])
    libc = ctypes.CDLL(None, use_errno=True)
    libc.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong, ctypes.c_char_p]
    libc.syscall.restype = ctypes.c_long

    def check(rc: int, what: str) -> None:
        if rc != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"{what}: {os.strerror(err)}")

    def mount(src: str | None, target: str, fstype: str | None, flags: int, data: str | None = None) -> None:
        rc = libc.mount(
            src.encode() if src else None,
            target.encode(),
            fstype.encode() if fstype else None,
            flags,
            data.encode() if data else None,
        )
        check(rc, f"mount {src or fstype} on {target}")

    if config.get("rootless"):
        libc.prctl(PR_SET_PDEATHSIG, 9, 0, 0, 0)
        if os.getppid() != int(config["host_pid"]):
            raise SystemExit("corral sandbox launcher: the host is gone")
        os.chdir(config["worker_dir"] + "/home")
        argv = config["argv"]
        os.execve(argv[0], argv, config["env"])
    root = config["stage"]

    def bind_ro(src: str, inside: str) -> None:
        target = root + inside
        src = os.path.realpath(src)
        if os.path.isdir(src):
            os.makedirs(target, 0o755, exist_ok=True)
        else:
            os.makedirs(os.path.dirname(target), 0o755, exist_ok=True)
            with open(target, "a"):
                pass
        mount(src, target, None, MS_BIND | MS_REC)
        mount(None, target, None, MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID | MS_NODEV)

    def symlink(dest: str, inside: str) -> None:
        os.makedirs(os.path.dirname(root + inside), 0o755, exist_ok=True)
        os.symlink(dest, root + inside)

    for procs in config["cgroup_procs"]:
        with open(procs, "w") as f:
            f.write(str(os.getpid()))
    try:
        with open("/proc/self/oom_score_adj", "w") as f:
            f.write(str(config["oom_score_adj"]))
    except OSError:
        pass
    check(libc.unshare(CLONE_NEWNS), "unshare(CLONE_NEWNS)")
    mount(None, "/", None, MS_REC | MS_SLAVE)
    mount("tmpfs", root, "tmpfs", MS_NOSUID | MS_NODEV, "size=1048576,nr_inodes=4096,mode=0755")
    bind_ro("/usr", "/usr")
    for top in ("/bin", "/sbin", "/lib", "/lib64", "/lib32", "/libx32"):
        if os.path.islink(top):
            symlink(os.readlink(top), top)
        elif os.path.isdir(top):
            bind_ro(top, top)
    for etc in ("/etc/ld.so.cache", "/etc/alternatives", "/etc/localtime"):
        if os.path.exists(etc):
            bind_ro(etc, etc)
    for host, inside in config["binds"]:
        bind_ro(host, inside)
    for cgroup in config["cgroup_dirs"]:
        bind_ro(cgroup, cgroup)
    os.makedirs(root + "/dev", 0o755)
    for dev in ("null", "zero", "full", "random", "urandom"):
        bind_ro(f"/dev/{dev}", f"/dev/{dev}")
        mount(None, f"{root}/dev/{dev}", None, MS_REMOUNT | MS_BIND | MS_NOSUID)  # writable, like /dev/null
    symlink("/proc/self/fd", "/dev/fd")
    for number, name in enumerate(("stdin", "stdout", "stderr")):
        symlink(f"/proc/self/fd/{number}", f"/dev/{name}")
    symlink("/tmp", "/dev/shm")
    os.makedirs(root + "/proc", 0o555)
    mount("proc", root + "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, "hidepid=invisible")
    os.makedirs(root + "/run/corral", 0o755)
    mount(config["worker_dir"], root + "/run/corral", None, MS_BIND | MS_REC)
    for name in ("work", "tmp", "data"):
        symlink(f"/run/corral/cur/{name}", f"/{name}")
    os.makedirs(root + "/.old", 0o700)
    mount(None, root, None, MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NODEV)
    check(int(libc.syscall(SYS_PIVOT_ROOT, root.encode(), (root + "/.old").encode())), "pivot_root")
    os.chdir("/")
    check(libc.umount2(b"/.old", MNT_DETACH), "umount old root")
    uid = int(config["uid"])
    os.setgroups([])
    os.setresgid(uid, uid, uid)
    os.setresuid(uid, uid, uid)
    if os.geteuid() == 0 or os.getuid() == 0:
        raise SystemExit("corral sandbox launcher: could not drop root")
    # Set after the uid change (which clears it); a host that died in between is caught by the check.
    libc.prctl(PR_SET_PDEATHSIG, 9, 0, 0, 0)
    if os.getppid() != int(config["host_pid"]):
        raise SystemExit("corral sandbox launcher: the host is gone")
    os.chdir("/run/corral/home")
    argv = config["argv"]
    os.execve(argv[0], argv, config["env"])


if __name__ == "__main__":
    main()
