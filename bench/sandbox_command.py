"""The cost of a vetted command in the sandbox, side by side with a Python job and with running it bare.

Run as root from the repository: ``.venv/bin/python bench/sandbox_command.py`` (``-n`` repetitions, default
30). Prints medians (p50) and p90 in milliseconds, measured on one warm pool of one worker:

- a trivial Python job, and ``/usr/bin/true`` as a command (the command's own overhead: fork, its seccomp
  filter and listener, one notified execve, the program's start);
- ``/usr/bin/true`` started bare by ``subprocess`` (no isolation), for scale;
- gdb printing every thread's backtrace of a small core (``gcore`` of a ``sleep``): as a sandbox command, and
  as the ops agent ran it before (its own ``bwrap --unshare-all`` as ``nobody``, rlimits), and bare.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from corral.sandbox import Limits, SandboxPool, run_command_sync

GDB = "/usr/bin/gdb"
GDB_ARGS = ["-batch", "-nx", "-iex", "set auto-load off", "-ex", "thread apply all bt 40"]


def measure(fn: Callable[[], object], n: int) -> tuple[float, float]:
    fn()  # warm
    times = []
    for _ in range(n):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1000)
    times.sort()
    return statistics.median(times), times[int(0.9 * (len(times) - 1))]


def small_core(where: Path) -> Path:
    sleeper = subprocess.Popen(["/usr/bin/sleep", "60"])
    try:
        subprocess.run(
            ["gcore", "-o", str(where / "core"), str(sleeper.pid)], capture_output=True, check=True
        )
    finally:
        sleeper.kill()
        sleeper.wait()
    core = where / f"core.{sleeper.pid}"
    os.chmod(core, 0o444)
    os.chmod(where, 0o755)
    return core


def private_bwrap(core: Path) -> list[str]:
    """The ops agent's former isolation of gdb: its own bwrap, the system read-only, as nobody."""
    bwrap = shutil.which("bwrap") or "/usr/bin/bwrap"
    hidden = [a for d in ("/tmp", "/root", "/home", "/run") for a in ("--tmpfs", d)]
    view = [
        "--ro-bind",
        "/",
        "/",
        *hidden,
        "--proc",
        "/proc",
        "--dev",
        "/dev",
        "--ro-bind",
        str(core),
        "/tmp/core",
    ]
    return [
        bwrap,
        "--unshare-all",
        "--die-with-parent",
        "--new-session",
        *view,
        "--",
        GDB,
        *GDB_ARGS,
        "-c",
        "/tmp/core",
    ]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("-n", type=int, default=30)
    n = parser.parse_args().n
    print(f"load average: {os.getloadavg()[0]:.1f}, {n} repetitions")
    rows: list[tuple[str, tuple[float, float]]] = []
    with SandboxPool(1) as pool, tempfile.TemporaryDirectory() as tmp:
        rows.append(("trivial Python job, warm pool", measure(lambda: pool.run_python_sync("pass"), n)))
        true = ["/usr/bin/true"]
        rows.append(
            (
                "/usr/bin/true as a command, warm pool",
                measure(lambda: run_command_sync(true, allow=true, pool=pool), n),
            )
        )
        rows.append(("/usr/bin/true bare (subprocess)", measure(lambda: subprocess.run(true, check=True), n)))
        if os.path.isfile(GDB) and shutil.which("gcore"):
            core = small_core(Path(tmp))
            limits = Limits(wall_seconds=60, cpu_seconds=60, memory_bytes=1 << 30)

            def in_sandbox() -> None:
                argv = [GDB, *GDB_ARGS, "-c", "/data/core"]
                result = run_command_sync(argv, allow=[GDB], inputs={"core": core}, limits=limits, pool=pool)
                assert "#0" in result.stdout, result

            def nobody() -> None:
                done = subprocess.run(
                    private_bwrap(core), capture_output=True, user=65534, group=65534, check=False
                )
                assert b"#0" in done.stdout, done.stderr

            rows.append(("gdb backtraces of a core, sandbox command", measure(in_sandbox, n)))
            rows.append(("gdb backtraces, own bwrap as nobody (before)", measure(nobody, n)))
            bare = [GDB, *GDB_ARGS, "-c", str(core)]
            rows.append(
                ("gdb backtraces, bare", measure(lambda: subprocess.run(bare, capture_output=True), n))
            )
    width = max(len(name) for name, _ in rows)
    print(f"{'what':<{width}}  {'p50 ms':>8}  {'p90 ms':>8}")
    for name, (p50, p90) in rows:
        print(f"{name:<{width}}  {p50:8.1f}  {p90:8.1f}")
    print(f"load average after: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
