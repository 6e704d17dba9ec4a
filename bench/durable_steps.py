"""Durable per-step cost of corral against the anchors, resume time, parked runs, and the crash test at scale.

A "step" is what an agent does per turn: one recorded "model" step (returns an assistant message asking for a
tool) plus one recorded "tool" step (returns a small result) — the same work the anchors' ``steps.py`` does.

    .venv/bin/python bench/durable_steps.py                 # everything but the 1,000-kill crash test
    .venv/bin/python bench/durable_steps.py --kills 1000    # also SIGKILL 1,000 processes
    .venv/bin/python bench/durable_steps.py --quick         # fewer repetitions, no FULL at 2,000 steps
    .venv/bin/python bench/durable_steps.py --ab /tmp/base/src   # per-step cost against another checkout
                                                                 # of corral, interleaved (A/B)

The anchors run in their own virtual environment (``--anchors-venv`` or ``$CORRAL_ANCHORS_VENV``, default
``/work/anchors-venv``) with ``/work/shared/bench/anchors/steps.py`` (``--anchors-script``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from corral.durable import RunContext, RunStatus, Runtime, SqliteJournal, Worker
from corral.durable.testing import crash_test

ANCHORS = {"lg_sqlite": "LangGraph + SqliteSaver (sync)", "pai_dbos": "Pydantic AI + DBOS (SQLite)"}
INSTALL = (
    "python3 -m venv {venv} && "
    "{venv}/bin/pip install langgraph langgraph-checkpoint-sqlite pydantic-ai-slim dbos"
)


def model_turn(i: int) -> dict[str, Any]:
    return {
        "role": "assistant",
        "content": "",
        "tool_calls": [{"id": f"c{i}", "name": "step", "arguments": {"i": i}}],
        "usage": {"input_tokens": 120 + i, "output_tokens": 12},
    }


def tool_call(i: int) -> dict[str, Any]:
    return {"tool_call_id": f"c{i}", "content": str(i + 1)}


async def agent_like(ctx: RunContext, n: int, keyed: bool, timings: bool) -> int:
    """n rounds of model step + tool step; with ``timings`` records each round's wall time (bench only)."""
    done = 0
    for i in range(n):
        t = time.perf_counter()
        turn = await ctx.step("model", model_turn, i)
        call = turn["tool_calls"][0]
        key = f"{ctx.run_id}/{call['id']}" if keyed else None
        result = await ctx.step("tool:step", tool_call, call["arguments"]["i"], key=key)
        done += int(result["content"]) > 0
        if timings:
            _ROUNDS.append(time.perf_counter() - t)
    return done


_ROUNDS: list[float] = []


def per_step(directory: Path, n: int, synchronous: str, keyed: bool, reps: int) -> tuple[float, float]:
    """(median of per-round times, mean = total / n) in microseconds, medians over ``reps`` runs."""
    medians, means = [], []
    for r in range(reps):
        path = directory / f"steps-{synchronous}-{n}-{keyed}-{r}.sqlite"
        rt = Runtime(SqliteJournal(path, synchronous=synchronous))  # type: ignore[arg-type]
        rt.run_sync(agent_like, 5, keyed, True)  # warm-up on this file: a journal normally exists already
        _ROUNDS.clear()
        t = time.perf_counter()
        assert rt.run_sync(agent_like, n, keyed, True) == n
        total = time.perf_counter() - t
        rt.close()
        medians.append(statistics.median(_ROUNDS) * 1e6)
        means.append(total / n * 1e6)
        path.unlink()
    return statistics.median(medians), statistics.median(means)


def flatness(directory: Path, n: int = 4000, chunk: int = 500) -> list[float]:
    """Median round time (us) of consecutive chunks of one long run: growth with length would show."""
    path = directory / "flat.sqlite"
    rt = Runtime(SqliteJournal(path))
    rt.run_sync(agent_like, 5, False, False)
    _ROUNDS.clear()
    rt.run_sync(agent_like, n, False, True)
    rt.close()
    return [statistics.median(_ROUNDS[i : i + chunk]) * 1e6 for i in range(0, n, chunk)]


def anchor(venv: Path, script: Path, system: str, n: int, reps: int) -> float | str:
    python = venv / "bin" / "python"
    if not python.exists() or not script.exists():
        return "anchor not installed: " + INSTALL.format(venv=venv)
    results = []
    for _ in range(reps):
        proc = subprocess.run(
            [str(python), str(script), system, str(n)],
            capture_output=True,
            text=True,
            timeout=900,
            check=False,
        )
        if proc.returncode != 0:
            last = proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else proc.returncode
            return f"anchor failed: {last}"
        fields = proc.stdout.split()
        results.append(float(fields[-1]))
    return statistics.median(results)


def resume_after_kill(directory: Path, n: int, reps: int) -> tuple[float, float]:
    """Kill a process in the middle of step n of an n-step run; (median ms to open + resume to completion,
    median ms of the resume alone)."""
    totals, resumes = [], []
    for r in range(reps):
        path = directory / f"resume-{r}.sqlite"
        pid = os.fork()
        if pid == 0:
            try:
                os.environ["CORRAL_BENCH_VICTIM"] = str(os.getpid())
                rt = Runtime(SqliteJournal(path))
                asyncio.run(rt.run(killed_at, n, run_id="victim"))
            finally:
                os._exit(1)
        _, status = os.waitpid(pid, 0)
        assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL
        t0 = time.perf_counter()
        rt = Runtime(SqliteJournal(path))
        rt.register(killed_at)
        t1 = time.perf_counter()
        result = asyncio.run(rt.resume("victim"))
        t2 = time.perf_counter()
        assert result == n and rt.get_run("victim").status is RunStatus.COMPLETED
        assert len(rt.steps("victim")) == 2 * n
        rt.close()
        totals.append((t2 - t0) * 1000)
        resumes.append((t2 - t1) * 1000)
    return statistics.median(totals), statistics.median(resumes)


def _die_at_last(i: int, n: int) -> dict[str, Any]:
    if i == n - 1 and os.environ.get("CORRAL_BENCH_VICTIM") == str(os.getpid()):
        os.kill(os.getpid(), signal.SIGKILL)
    return model_turn(i)


async def killed_at(ctx: RunContext, n: int) -> int:
    """n rounds; the victim process (forked by the bench) SIGKILLs itself inside the model step of round n."""
    done = 0
    for i in range(n):
        await ctx.step("model", _die_at_last, i, n)
        await ctx.step("tool:step", tool_call, i)
        done += 1
    return done


async def parked(ctx: RunContext, i: int) -> str:
    decision = await ctx.wait("approval")
    return f"{i}: {decision}"


def many_parked(directory: Path, n: int) -> dict[str, float]:
    path = directory / "parked.sqlite"
    rt = Runtime(SqliteJournal(path))
    threads = threading.active_count()
    t0 = time.perf_counter()
    ids = [rt.start(parked, i) for i in range(n)]
    worker = Worker(rt, concurrency=256)
    assert asyncio.run(worker.run_until_idle()) == n
    t1 = time.perf_counter()
    waiting = len(rt.list_runs(status=RunStatus.WAITING, limit=n + 1))
    threads_parked = threading.active_count()
    for run_id in ids:
        rt.send_signal(run_id, "approval", "ok")
    t2 = time.perf_counter()
    assert asyncio.run(worker.run_until_idle()) == n
    t3 = time.perf_counter()
    completed = len(rt.list_runs(status=RunStatus.COMPLETED, limit=n + 1))
    rt.close()
    return {
        "runs": n,
        "waiting": waiting,
        "threads_before": threads,
        "threads_parked": threads_parked,
        "park_s": t1 - t0,
        "signal_s": t2 - t1,
        "resume_s": t3 - t2,
        "completed": completed,
        "file_mb": path.stat().st_size / 1e6,
    }


def per_step_json(sizes: list[int], reps: int) -> None:
    """Print {"plain": {n: median}, "keyed": {n: median}} for NORMAL (the ``--ab`` child's job)."""
    directory = Path(tempfile.mkdtemp(prefix="corral-bench-ab-"))
    out: dict[str, dict[int, float]] = {"plain": {}, "keyed": {}}
    for keyed in (False, True):
        for n in sizes:
            out["keyed" if keyed else "plain"][n] = per_step(directory, n, "normal", keyed, reps)[0]
    print(json.dumps(out))


def ab(baseline_src: Path, sizes: list[int], rounds: int) -> None:
    """Per-step medians of this checkout (A) and of ``baseline_src`` (B), in alternating child processes so
    that both see the same machine load; prints each side's median over rounds and the ratio A / B."""
    here = Path(__file__).resolve().parents[1] / "src"
    results: dict[str, list[dict[str, dict[str, float]]]] = {"A": [], "B": []}
    for r in range(rounds):
        for side in ("A", "B") if r % 2 == 0 else ("B", "A"):
            src = here if side == "A" else baseline_src
            env = {**os.environ, "PYTHONPATH": str(src)}
            proc = subprocess.run(
                [sys.executable, __file__, "--per-step-json", "--sizes", ",".join(map(str, sizes))],
                capture_output=True,
                text=True,
                env=env,
                check=True,
                timeout=900,
            )
            results[side].append(json.loads(proc.stdout.strip().splitlines()[-1]))
    print(f"== per-step cost, A = {here} vs B = {baseline_src}, {rounds} alternating rounds (us, medians) ==")
    for kind in ("plain", "keyed"):
        for n in sizes:
            a = statistics.median(x[kind][str(n)] for x in results["A"])
            b = statistics.median(x[kind][str(n)] for x in results["B"])
            print(f"  NORMAL {kind:5} {n:>5} steps   A {a:7.1f}   B {b:7.1f}   A/B {a / b:5.3f}")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", default="50,200,2000")
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="1 repetition, FULL only up to 200 steps")
    parser.add_argument("--kills", type=int, default=0, help="SIGKILL this many processes (crash test)")
    parser.add_argument("--parked", type=int, default=10_000)
    parser.add_argument(
        "--anchors-venv", type=Path, default=Path(os.environ.get("CORRAL_ANCHORS_VENV", "/work/anchors-venv"))
    )
    parser.add_argument("--anchors-script", type=Path, default=Path("/work/shared/bench/anchors/steps.py"))
    parser.add_argument("--anchor-sizes", default="50,200", help="anchors are slow: sizes to run them at")
    parser.add_argument("--no-anchors", action="store_true")
    parser.add_argument("--ab", type=Path, help="only compare per-step cost with the corral at this src dir")
    parser.add_argument("--ab-rounds", type=int, default=6)
    parser.add_argument("--per-step-json", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    reps = 1 if args.quick else args.reps
    sizes = [int(s) for s in args.sizes.split(",")]
    if args.per_step_json:
        per_step_json(sizes, 3)
        return
    if args.ab is not None:
        ab(args.ab, sizes if args.sizes != "50,200,2000" else [200, 2000], args.ab_rounds)
        return
    anchor_sizes = [int(s) for s in args.anchor_sizes.split(",")]
    directory = Path(tempfile.mkdtemp(prefix="corral-bench-"))
    print(f"python {sys.version.split()[0]}, {os.cpu_count()} cpus, journal files in {directory}\n")

    print("== per-step cost: one 'model' step + one 'tool' step, SQLite WAL journal (microseconds) ==")
    ours: dict[tuple[str, int], float] = {}  # mean = total / n, the anchors' measure
    ours_median: dict[tuple[str, int], float] = {}
    rows = []
    for sync in ("normal", "full"):
        for keyed in (False, True):
            for n in sizes:
                if sync == "full" and (keyed or (args.quick and n > 200)):
                    continue
                r = reps if sync == "normal" else max(1, min(reps, 3 if n <= 200 else 1))
                med, mean = per_step(directory, n, sync, keyed, r)
                if not keyed:
                    ours[(sync, n)] = mean
                    ours_median[(sync, n)] = med
                label = f"{sync.upper():6} {'keyed tool' if keyed else 'plain':10}"
                rows.append(f"  {label} {n:>5} steps   median {med:9.1f}   mean {mean:9.1f}   (reps {r})")
                print(rows[-1], flush=True)
    print()

    chunks = flatness(directory)
    print(
        "  one 4,000-step run, median us per round of each 500-round chunk: "
        + ", ".join(f"{c:.0f}" for c in chunks)
    )
    print()

    print("== anchors (same machine, same run; their steps.py prints us/step) ==")
    table = []
    for system, title in ANCHORS.items():
        for n in anchor_sizes:
            value = (
                "skipped (--no-anchors)"
                if args.no_anchors
                else anchor(args.anchors_venv, args.anchors_script, system, n, 1 if args.quick else 3)
            )
            if isinstance(value, str):
                print(f"  {title:32} {n:>5}: {value}")
                continue
            mine = ours.get(("normal", n))
            ratio = f"{value / mine:8.1f}x" if mine else "   n/a"
            table.append((title, n, value, mine))
            print(
                f"  {title:32} {n:>5}: {value:10.1f} us/step   corral NORMAL {mine or 0:8.1f}   ratio {ratio}"
            )
    print()

    print("== resume of a 1,000-step run killed inside step 1,000 ==")
    total, alone = resume_after_kill(directory, 1000, reps)
    print(f"  open journal + resume to completion: median {total:.1f} ms   (resume alone {alone:.1f} ms)")
    print()

    print(f"== {args.parked:,} runs parked in ctx.wait, then signalled ==")
    p = many_parked(directory, args.parked)
    print(
        f"  parked {p['waiting']:,} in {p['park_s']:.2f} s; threads before {p['threads_before']}, "
        f"while parked "
        f"{p['threads_parked']}; {p['runs']:,} signals in {p['signal_s']:.2f} s; resumed to completion in "
        f"{p['resume_s']:.2f} s ({p['completed']:,} completed); journal {p['file_mb']:.1f} MB"
    )
    print()

    if args.kills:
        print(f"== crash test: {args.kills:,} SIGKILLs of processes running 200-step runs ==")
        (directory / "crash").mkdir()
        report = crash_test(directory / "crash", kills=args.kills, steps=200, max_delay=0.03, seed=7)
        print(
            f"  {report.kills:,} kills over {report.runs} runs in {report.seconds:.1f} s; "
            f"steps re-executed after "
            f"a kill inside them: {report.reexecuted_steps}; counter {report.counter} == distinct keys "
            f"{report.distinct_keys}; no recorded step ran twice"
        )
        print()

    print("== summary (targets: <= 100 us/step NORMAL, flat 50 -> 2,000, >= 10x below each anchor) ==")
    for label, figures in (("median", ours_median), ("mean", ours)):
        values = [(n, figures[("normal", n)]) for n in sizes if ("normal", n) in figures]
        line = ", ".join(f"{n}: {v:.1f}" for n, v in values)
        growth = (
            f"; {values[-1][0]} vs {values[0][0]} steps: {values[-1][1] / values[0][1]:.2f}x"
            if values
            else ""
        )
        print(f"  corral NORMAL {label} us/step by run length: {line}{growth}")
    for title, n, value, mine in table:
        if mine:
            print(f"  {title} at {n} steps: {value:.0f} us/step = {value / mine:.1f}x corral's mean")


if __name__ == "__main__":
    main()
