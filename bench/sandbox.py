"""Sandbox start-up cost side by side: a bare process, one bubblewrap sandbox per job, and corral's warm pool.

Run as root from the repository: ``.venv/bin/python bench/sandbox.py`` (``--quick`` for fewer repetitions).
Prints medians (p50) and p90 in milliseconds, throughput in jobs/s, and the published figures of other
sandboxes for reference (not measured here).

``--against DIR`` (the ``src`` directory of another checkout, e.g. ``git worktree add /tmp/base <commit>``)
also measures the warm pool of that code in the same run: both are run in turn, in fresh processes, for
``--rounds`` rounds, and the medians over rounds are printed side by side with their ratios.

``--rootless`` measures the root backend's warm pool and the rootless backend's (the same figures, run as the
unprivileged user ``corral-test``, created when missing, as the attack suite does) in turn, in fresh
processes, for ``--rounds`` rounds: medians over rounds side by side, with their ratios.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable

from corral.sandbox import Limits, SandboxPool

PANDAS_JOB = """
import numpy as np
import pandas as pd
rng = np.random.default_rng(0)
df = pd.DataFrame({"k": rng.integers(0, 100, 100_000), "v": rng.random(100_000)})
print(df.groupby("k")["v"].agg(["sum", "mean"]).shape)
"""

REFERENCES = [
    ("Docker container start (published)", 195.0),
    ("Firecracker microVM boot (published)", 125.0),
    ("E2B sandbox from a snapshot (published)", 80.0),
]


def timed(fn: Callable[[], object], n: int) -> list[float]:
    out = []
    for _ in range(n):
        start = time.perf_counter()
        fn()
        out.append((time.perf_counter() - start) * 1000)
    return out


def p(values: list[float], q: float) -> float:
    return (
        statistics.quantiles(values, n=100, method="inclusive")[int(q) - 1] if len(values) > 1 else values[0]
    )


def bwrap_per_job(python: str, code: str) -> None:
    argv = [
        "bwrap",
        "--unshare-all",
        "--die-with-parent",
        "--ro-bind",
        "/usr",
        "/usr",
        "--symlink",
        "usr/lib",
        "/lib",
        "--symlink",
        "usr/lib64",
        "/lib64",
        "--symlink",
        "usr/bin",
        "/bin",
        "--proc",
        "/proc",
        "--dev",
        "/dev",
        "--tmpfs",
        "/tmp",
        "--ro-bind",
        "/etc/ld.so.cache",
        "/etc/ld.so.cache",
        "--clearenv",
        python,
        "-c",
        code,
    ]
    root = os.geteuid() == 0  # bwrap as an unprivileged uid, never as root
    subprocess.run(
        argv,
        check=True,
        user=65534 if root else None,
        group=65534 if root else None,
        extra_groups=[] if root else None,
    )


def pool_figures(quick: bool) -> dict[str, float]:
    """The warm pool's figures: trivial and pandas p50/p90 (ms), trivial jobs/s with 2 callers per worker."""
    n_jobs = 50 if quick else 300
    with SandboxPool() as pool:
        for _ in range(10):
            pool.run_python_sync("pass")
        trivial = timed(lambda: pool.run_python_sync("pass"), n_jobs)
        pandas_pool = timed(lambda: pool.run_python_sync(PANDAS_JOB), max(20, n_jobs // 10))
        done = 0
        lock = threading.Lock()
        stop = time.perf_counter() + (3.0 if quick else 6.0)

        def client() -> None:
            nonlocal done
            while time.perf_counter() < stop:
                pool.run_python_sync("pass", limits=Limits())
                with lock:
                    done += 1

        started = time.perf_counter()
        clients = [threading.Thread(target=client) for _ in range(pool.size * 2)]
        for t in clients:
            t.start()
        for t in clients:
            t.join()
        throughput = done / (time.perf_counter() - started)
    return {
        "trivial p50": p(trivial, 50),
        "trivial p90": p(trivial, 90),
        "pandas p50": p(pandas_pool, 50),
        "pandas p90": p(pandas_pool, 90),
        "jobs/s": throughput,
    }


def compare(against: str, rounds: int, quick: bool) -> None:
    """This checkout's warm pool against another's, in turn, in fresh processes; medians over rounds."""
    here = os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir, "src")
    runs: dict[str, list[dict[str, float]]] = {"this": [], "other": []}
    for _ in range(rounds):
        for name, src in (("other", against), ("this", here)):
            argv = [sys.executable, __file__, "--pool-json"] + (["--quick"] if quick else [])
            env = dict(os.environ, PYTHONPATH=os.path.abspath(src))
            out = subprocess.run(argv, check=True, capture_output=True, text=True, env=env).stdout
            runs[name].append(json.loads(out.strip().splitlines()[-1]))
    print(f"load average before/after: {os.getloadavg()[0]:.1f} (1 min), {rounds} rounds each, alternating")
    print(f"{'warm pool figure':22} {'this':>9} {'other':>9} {'this/other':>11}")
    for key in runs["this"][0]:
        mine = statistics.median(r[key] for r in runs["this"])
        theirs = statistics.median(r[key] for r in runs["other"])
        print(f"{key:22} {mine:9.1f} {theirs:9.1f} {mine / theirs:11.2f}")
    print("(ms, lower is better; jobs/s, higher is better)")


def compare_rootless(rounds: int, quick: bool) -> None:
    """The root backend's warm pool against the rootless one's, as an unprivileged user, in turn."""
    sys.path.insert(
        0, os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir, "tests", "security")
    )
    from unprivileged import argv_as_user  # the suite's helper: same user, same environment

    argv = [sys.executable, os.path.abspath(__file__), "--pool-json"] + (["--quick"] if quick else [])
    runs: dict[str, list[dict[str, float]]] = {"root": [], "rootless": []}
    load = os.getloadavg()[0]
    for _ in range(rounds):
        for name, command in (("root", argv), ("rootless", argv_as_user(argv, env={"HOME": "/tmp"}))):
            out = subprocess.run(command, check=True, capture_output=True, text=True, cwd="/tmp").stdout
            runs[name].append(json.loads(out.strip().splitlines()[-1]))
    print(f"load average before/after: {load:.1f}/{os.getloadavg()[0]:.1f} (1 min), {rounds} rounds each")
    print(f"{'warm pool figure':22} {'rootless':>9} {'root':>9} {'rootless/root':>14}")
    for key in runs["root"][0]:
        mine = statistics.median(r[key] for r in runs["rootless"])
        theirs = statistics.median(r[key] for r in runs["root"])
        print(f"{key:22} {mine:9.1f} {theirs:9.1f} {mine / theirs:14.2f}")
    print("(ms, lower is better; jobs/s, higher is better)")
    print("targets: trivial p50 <= 10 ms, pandas p50 <= 60 ms, >= 100 jobs/s")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="fewer repetitions")
    parser.add_argument("--against", metavar="SRC", help="also measure the warm pool of the code in SRC")
    parser.add_argument("--rounds", type=int, default=5, help="rounds of the comparison (default 5)")
    parser.add_argument("--rootless", action="store_true", help="root backend against rootless (run as root)")
    parser.add_argument("--pool-json", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.pool_json:
        print(json.dumps(pool_figures(args.quick)))
        return
    if args.rootless:
        compare_rootless(args.rounds, args.quick)
        return
    if args.against:
        compare(args.against, args.rounds, args.quick)
        return
    n_small = 10 if args.quick else 30
    rows: list[tuple[str, float, float]] = []

    bare = timed(lambda: subprocess.run([sys.executable, "-c", "pass"], check=True), n_small)
    rows.append(("python -c pass, bare process (our interpreter)", p(bare, 50), p(bare, 90)))
    system_python = "/usr/bin/python3" if os.path.exists("/usr/bin/python3") else None
    if system_python:
        bare_sys = timed(lambda: subprocess.run([system_python, "-c", "pass"], check=True), n_small)
        rows.append(("python3 -c pass, bare process (/usr/bin/python3)", p(bare_sys, 50), p(bare_sys, 90)))
    pandas_bare = timed(
        lambda: subprocess.run([sys.executable, "-c", PANDAS_JOB], check=True, capture_output=True),
        max(5, n_small // 3),
    )
    rows.append(("pandas group-by, bare fresh process", p(pandas_bare, 50), p(pandas_bare, 90)))
    if shutil.which("bwrap") and system_python:
        per_job = timed(lambda: bwrap_per_job(system_python, "pass"), n_small)
        rows.append(("python3 -c pass, one bwrap sandbox per job", p(per_job, 50), p(per_job, 90)))

    def fresh_worker_job() -> None:
        with SandboxPool(1, preload=("pandas", "numpy")) as one:
            one.run_python_sync(PANDAS_JOB)

    per_run_pandas = timed(fresh_worker_job, max(3, n_small // 6))
    rows.append(
        ("pandas group-by, fresh corral worker per job", p(per_run_pandas, 50), p(per_run_pandas, 90))
    )

    figures = pool_figures(args.quick)
    rows.append(("trivial job, corral warm pool", figures["trivial p50"], figures["trivial p90"]))
    rows.append(("pandas group-by 100k rows, corral warm pool", figures["pandas p50"], figures["pandas p90"]))
    throughput = figures["jobs/s"]
    workers = max(1, len(os.sched_getaffinity(0)))  # SandboxPool's default size

    print(f"{'what':58} {'p50 ms':>8} {'p90 ms':>8}")
    for name, p50, p90 in rows:
        print(f"{name:58} {p50:8.1f} {p90:8.1f}")
    for name, ms in REFERENCES:
        print(f"{name:58} {ms:8.1f} {'':>8}")
    print(f"throughput, trivial jobs on {os.cpu_count()} cores ({workers} workers): {throughput:.0f} jobs/s")
    print("targets: trivial p50 <= 10 ms, pandas p50 <= 60 ms, >= 100 jobs/s")


if __name__ == "__main__":
    main()
