"""Run functions and a process entry point for the tests that kill or cancel a run in another process.

``python tests/durable/_proc_flows.py JOURNAL FLOW RUN_ID [ARG]`` executes one run and prints how it ended.
The module is imported as ``durable._proc_flows`` both here and by pytest, so a worker in the test process
finds the run's function again by its stored path.
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
from pathlib import Path

if __name__ == "__main__":  # pragma: no cover - the child process
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from corral.durable import RunContext, Runtime, SqliteJournal


def effect(i: int) -> int:
    time.sleep(0.001)
    return i


async def many_steps(ctx: RunContext, n: int) -> int:
    """n side-effect steps of about a millisecond each."""
    total = 0
    for i in range(n):
        total += await ctx.step("effect", effect, i)
    return total


def block_in_child(seconds: float) -> str:
    if os.environ.get("CORRAL_TEST_CHILD") == "1":
        time.sleep(seconds)  # the child blocks here until it is killed
    return f"done by {os.getpid()}"


async def two_steps(ctx: RunContext) -> str:
    """One quick step, then one that blocks only in the child process."""
    await ctx.step("one", lambda: 1)
    return await ctx.step("block", block_in_child, 60.0)


def main() -> None:  # pragma: no cover - the child process
    from durable import _proc_flows

    journal, flow, run_id = sys.argv[1:4]
    args = [int(a) for a in sys.argv[4:]]
    rt = Runtime(SqliteJournal(journal))
    try:
        result = asyncio.run(rt.run(getattr(_proc_flows, flow), *args, run_id=run_id))
        print(f"ok {result}", flush=True)
    except Exception as exc:
        print(f"{type(exc).__name__} {exc}", flush=True)
    finally:
        rt.close()


if __name__ == "__main__":  # pragma: no cover
    main()
