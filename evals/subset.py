"""A smaller question set for slow models: every ``step``-th answerable question in file order, plus every
unanswerable one (``"gold": "cannot_answer"``), written next to the set so its relative paths still hold.

    python evals/subset.py evals/chinook.jsonl              # -> evals/chinook.half.jsonl (every other one)
    corral eval evals/chinook.half.jsonl --model local:qwen2.5-coder-1.5b

The 1.5B comparison in docs/data-agent.md ran on these subsets of clinic (all 23: its unanswerable
questions are 6 of 23, so ``--step 1``), Chinook and the DABench sample.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def subset(lines: list[str], step: int) -> list[str]:
    rows = [line for line in lines if line.strip()]
    answerable = [r for r in rows if json.loads(r).get("gold") != "cannot_answer"]
    unanswerable = [r for r in rows if json.loads(r).get("gold") == "cannot_answer"]
    return answerable[::step] + unanswerable


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("set", type=Path)
    parser.add_argument("--step", type=int, default=2)
    args = parser.parse_args()
    out = args.set.with_suffix(".half.jsonl" if args.step == 2 else f".every{args.step}.jsonl")
    kept = subset(args.set.read_text(encoding="utf-8").splitlines(), args.step)
    out.write_text("".join(line + "\n" for line in kept), encoding="utf-8")
    print(f"{out}: {len(kept)} questions")


if __name__ == "__main__":
    main()
