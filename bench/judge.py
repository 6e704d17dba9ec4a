"""The data agent's judge on the dev sets: accuracy with and without it, and its false-fail rate.

    nice python bench/judge.py                          # 0.5B model, the three dev sets, judge on
    nice python bench/judge.py --sets chinook:14,clinic:8,dabench-dev-sample:8   # the first N of each
    nice python bench/judge.py --reports /tmp/evals --label before   # summarise `corral eval --out` reports

Each set runs once with the judge on. The agent records every result the judge saw and its verdict, so one
run gives both columns: *before the judge* is the result the judge first saw — what the agent answers with
``--no-judge``, since nothing before the judge depends on it — and *with the judge* is the final answer
(after its revision, if it failed the result). A *false fail* is a fail on a result that matched the gold;
the false-fail rate is over the correct results the judge gave a verdict on. Skips (the deterministic checks
were conclusive) are counted apart. Prints a Markdown table and writes the full reports as JSON.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
from pathlib import Path
from typing import Any

from corral.apps.data_agent import run_eval
from corral.models import resolve_model

ROOT = Path(__file__).resolve().parents[1]
SETS = ("chinook", "clinic", "dabench-dev-sample")


def row(name: str, report: dict[str, Any]) -> str:
    """One set's line of the table, from its JSON report."""
    j = report["judge"]
    correct_seen = j["false_fails"] + j["passes"] - j["missed"]
    return (
        f"| {name} | {report['questions']} | {j['accuracy_before_judge'] * 100:.0f}% | "
        f"{report['accuracy'] * 100:.0f}% | {j['judged']} | {j['skipped']} | {j['fails']} | "
        f"{j['false_fails']}/{correct_seen} ({j['false_fail_rate'] * 100:.0f}%) | {j['caught']} |"
    )


HEADER = (
    "| set | questions | accuracy without the judge | with the judge | verdicts | skipped | fails | "
    "false fails (rate) | fails on wrong results |\n|---|---|---|---|---|---|---|---|---|"
)


def total(reports: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The sets together, as one report."""
    n = sum(r["questions"] for r in reports.values())
    keys = ("judged", "skipped", "passes", "fails", "false_fails", "caught", "missed")
    judge = {k: sum(r["judge"][k] for r in reports.values()) for k in keys}
    correct_seen = judge["false_fails"] + judge["passes"] - judge["missed"]
    judge["false_fail_rate"] = judge["false_fails"] / correct_seen if correct_seen else 0.0
    judge["accuracy_before_judge"] = (
        sum(r["judge"]["accuracy_before_judge"] * r["questions"] for r in reports.values()) / n
    )
    accuracy = sum(r["accuracy"] * r["questions"] for r in reports.values()) / n
    return {"questions": n, "accuracy": accuracy, "judge": judge}


async def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", default="local")
    parser.add_argument("--sets", default=",".join(SETS), help="names, each with :N for its first N")
    parser.add_argument("--limit", type=int, default=None)
    parser.add_argument("--reports", type=Path, default=None, help="summarise <label>-<set>.json reports")
    parser.add_argument("--label", default="judge")
    parser.add_argument("--out", type=Path, default=Path("."))
    args = parser.parse_args()
    reports: dict[str, dict[str, Any]] = {}
    llm = None if args.reports else resolve_model(args.model)
    for spec in args.sets.split(","):
        name, _, first = spec.partition(":")
        if args.reports is not None:
            reports[name] = json.loads((args.reports / f"{args.label}-{name}.json").read_text())
            continue
        limit = int(first) if first else args.limit
        ran = await run_eval(ROOT / "evals" / f"{name}.jsonl", limit=limit, model_instance=llm)
        reports[name] = ran.to_json()
        (args.out / f"{args.label}-{name}.json").write_text(json.dumps(reports[name], indent=2, default=str))
    model = next(iter(reports.values()))["model"]
    load = " ".join(f"{x:.1f}" for x in os.getloadavg())
    source = f"from {args.reports}" if args.reports else f"load average at the end {load}"
    print(f"model {model} · {source}")
    print()
    print(HEADER)
    for name, report in reports.items():
        print(row(name, report))
    print(row("all", total(reports)))


if __name__ == "__main__":
    asyncio.run(main())
