"""Data agent vs a single-shot baseline, on the same questions, the same local model and the same machine.

    python bench/data_agent.py                          # 0.5B model, evals/chinook.jsonl
    python bench/data_agent.py --models local,local:qwen2.5-coder-1.5b --limit 20

Every system runs every query in the sandbox. The baselines make one model call and one query: ``baseline``
with the classic prompt (schema DDL + question), ``baseline-rich`` with the agent's own prompt over the whole
schema with sample values; the agent narrows the schema, corrects errors, sanity-checks and judges.
Prints execution accuracy by difficulty and the median seconds per question, with the targets side by side,
and writes the full reports as JSON.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from pathlib import Path
from typing import Any

from corral.apps.data_agent import run_eval
from corral.models import resolve_model

ROOT = Path(__file__).resolve().parents[1]
TARGET_POINTS = 25.0  # agent accuracy minus single-shot accuracy, in points, with the 0.5B model
TARGET_MEDIAN_S = 15.0


def _row(name: str, report: dict[str, Any]) -> str:
    by = report["accuracy_by_difficulty"]
    cells = " ".join(f"{by.get(d, 0) * 100:6.0f}%" for d in ("easy", "medium", "hard"))
    return f"{name:<34} {cells} {report['accuracy'] * 100:6.0f}% {report['median_seconds']:8.1f}"


async def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--set", default=str(ROOT / "evals" / "chinook.jsonl"))
    parser.add_argument("--models", default="local")
    parser.add_argument("--limit", type=int, default=None)
    parser.add_argument("--systems", default="baseline,baseline-rich,agent")
    parser.add_argument("--out", default="data_agent_bench.json")
    args = parser.parse_args()

    results: dict[str, Any] = {"set": args.set, "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    lines = []
    for name in args.models.split(","):
        model = resolve_model(name)
        for system in args.systems.split(","):
            report = await run_eval(
                args.set,
                limit=args.limit,
                system=system,
                model_instance=model,
                progress=lambda i, n, line, s=system, m=name: print(f"[{m} {s}] {i}/{n} {line}", flush=True),
            )
            data = report.to_json()
            results[f"{name}/{system}"] = data
            lines.append(_row(f"{system} · {model.name}", data))
        agent = results.get(f"{name}/agent")
        for base_name in ("baseline", "baseline-rich"):
            base = results.get(f"{name}/{base_name}")
            if agent is None or base is None:
                continue
            points = (agent["accuracy"] - base["accuracy"]) * 100
            lines.append(
                f"{'':<34} agent - {base_name}: {points:+.0f} points (target >= +{TARGET_POINTS:.0f})"
            )
        if agent is not None:
            lines.append(
                f"{'':<34} agent median {agent['median_seconds']:.1f} s (target <= {TARGET_MEDIAN_S:.0f} s)"
            )
    header = f"{'system · model':<34} {'easy':>7} {'medium':>7} {'hard':>7} {'all':>7} {'median s':>8}"
    print()
    print(f"execution accuracy on {args.set}")
    print(header)
    for line in lines:
        print(line)
    print("peer agent (Pydantic AI over llama.cpp's OpenAI-compatible server): not measured")
    _write(Path(args.out), results)


def _write(out: Path, results: dict[str, Any]) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2, default=str), encoding="utf-8")
    print(f"reports: {out}")


if __name__ == "__main__":
    asyncio.run(main())
