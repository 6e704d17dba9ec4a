"""Seconds per `corral ask`, cold (a fresh process each time) and warm (through the resident process), with
where the time went, on questions of evals/chinook.jsonl and the local model.

    python bench/ask_speed.py                              # 0.5B model, 8 questions, cold then warm
    python bench/ask_speed.py --modes warm,warm-nocache --ids chinook-01,chinook-17

Each question is a real `corral ask ... --json` command, timed from outside (wall seconds, process start
included). ``cold`` passes ``--no-resident``; ``warm`` uses a resident started before the first timed
question and warmed by one untimed question that is not among the timed ones; ``warm-nocache`` is the same
with the KV cache off (``CORRAL_LOCAL_KV_CACHE=off``). The breakdown (model prompt reading and reply
writing, queries) comes from each run's journaled steps. The machine's load average is printed with every
figure: it is shared.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from corral.apps.data_agent._timings import run_timings, summarise
from corral.durable import Runtime

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_IDS = "chinook-01,chinook-06,chinook-12,chinook-17,chinook-20,chinook-27,chinook-29,chinook-31"
CORRAL = [str(Path(sys.executable).parent / "corral")]


def _load() -> str:
    return " ".join(f"{x:.1f}" for x in os.getloadavg())


def _questions(path: Path, ids: list[str]) -> list[dict[str, Any]]:
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    by_id = {r["id"]: r for r in rows}
    return [by_id[i] for i in ids]


def _ask(q: dict[str, Any], env: dict[str, str], *extra: str) -> tuple[float, dict[str, Any]]:
    db = str((ROOT / "evals" / q["db"]).resolve())
    started = time.perf_counter()
    done = subprocess.run(
        [*CORRAL, "ask", q["question"], "--db", db, "--json", "--quiet", *extra],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    seconds = time.perf_counter() - started
    try:
        out = json.loads(done.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        out = {"status": "failed", "answer": done.stderr[-300:], "run_id": ""}
    return seconds, out


def _resident(env: dict[str, str], command: str) -> None:
    subprocess.run([*CORRAL, "resident", command], env=env, capture_output=True, check=False)


def run_mode(
    mode: str, questions: list[dict[str, Any]], base: dict[str, str], warmup: dict[str, Any]
) -> dict[str, Any]:
    env = dict(base)
    if mode == "warm-nocache":
        env["CORRAL_LOCAL_KV_CACHE"] = "off"
    extra: tuple[str, ...] = ("--no-resident",) if mode == "cold" else ()
    if mode != "cold":
        _resident(env, "stop")
        _resident(env, "start")
        _ask(warmup, env)  # untimed, and not one of the timed questions: loads the model in the resident
    results = []
    for q in questions:
        load = _load()
        seconds, out = _ask(q, env, *extra)
        row = {"id": q["id"], "difficulty": q["difficulty"], "seconds": seconds, "load": load}
        results.append({**row, **out})
        print(f"  {mode:<12} {q['id']:<11} {seconds:6.1f} s  {out.get('status')}  load {load}", flush=True)
    if mode != "cold":
        _resident(env, "stop")
    rt = Runtime.open(env["CORRAL_JOURNAL"])
    try:
        timings = [run_timings(rt.journal, r["run_id"]) for r in results if r.get("run_id")]
    finally:
        rt.close()
    easy = [r["seconds"] for r in results if r["difficulty"] == "easy"]
    return {
        "mode": mode,
        "median_s": statistics.median(r["seconds"] for r in results),
        "median_easy_s": statistics.median(easy) if easy else None,
        "breakdown_s": summarise(timings),
        "cached_tokens": sum(s.cached_tokens for t in timings for s in t.steps),
        "input_tokens": sum(s.input_tokens for t in timings for s in t.steps),
        "results": results,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--set", default=str(ROOT / "evals" / "chinook.jsonl"))
    parser.add_argument("--ids", default=DEFAULT_IDS)
    parser.add_argument("--model", default="local")
    parser.add_argument("--modes", default="cold,warm")
    parser.add_argument("--out", default="bench-ask-speed.json")
    args = parser.parse_args()
    questions = _questions(Path(args.set), args.ids.split(","))
    rows = [json.loads(line) for line in Path(args.set).read_text().splitlines() if line.strip()]
    warmup = next(r for r in rows if r["id"] not in args.ids.split(","))
    work = Path(tempfile.mkdtemp(prefix="corral-speed-"))
    base = {**os.environ, "CORRAL_MODEL": args.model, "CORRAL_JOURNAL": str(work / "journal.sqlite")}
    base["XDG_RUNTIME_DIR"] = str(work)  # a resident of its own, not the user's
    print(f"{len(questions)} questions, model {args.model}, load before: {_load()}")
    reports = [run_mode(mode, questions, base, warmup) for mode in args.modes.split(",")]
    head = f"{'mode':<13} {'median s':>9} {'easy s':>7} {'prompt s':>9} {'reply s':>8} {'queries s':>9}"
    print(f"\n{head} cached")
    for r in reports:
        b = r["breakdown_s"]
        easy = f"{r['median_easy_s']:.1f}" if r["median_easy_s"] is not None else "-"
        print(
            f"{r['mode']:<13} {r['median_s']:9.1f} {easy:>7} {b['prompt_s']:9.1f} {b['generation_s']:8.1f}"
            f" {b['query_s']:9.1f} {r['cached_tokens']}/{r['input_tokens']} tok"
        )
    print(f"load after: {_load()}  (targets, 0.5B model: warm median <= 10 s, easy <= 5 s; cold <= 15 s)")
    Path(args.out).write_text(json.dumps(reports, indent=2, default=str))


if __name__ == "__main__":
    main()
