"""Kill the whole host process (SIGKILL) again and again while a supervised team works: everything resumes
from the journal, each message is handled once, and completed model and tool calls are not repeated."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

SCRIPT = r"""
import asyncio, json, sys
from pathlib import Path
from corral.agents import Child, Supervisor, System
from corral.durable import SqliteJournal

journal_path, effects_path, total = Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3])

def effect(line):
    with effects_path.open("a") as f:
        f.write(line + "\n")
        f.flush()
        import os; os.fsync(f.fileno())

async def feeder(ctx, state, msg):
    for i in range(total):  # all queued in one commit: a kill sends all or none
        ctx.send("worker", i)
    return "fed"

async def worker(ctx, state, msg):
    n = msg.body
    def model():
        effect(f"model {n}")
        return f"plan {n}"
    async def tool(plan):
        await asyncio.sleep(0.004)
        effect(f"tool {n}")
        return f"done {plan}"
    plan = await ctx.run.step("model", model)
    result = await ctx.run.step("tool", tool, plan)
    ctx.send("sink", result)
    return (state or 0) + 1

async def sink(ctx, state, msg):
    return [*(state or []), msg.body]

async def main():
    journal = SqliteJournal(journal_path)
    system = System(journal, {"feeder": feeder, "worker": worker, "sink": sink})
    tree = Supervisor("root", [Child("feeder", "feeder"), Child("worker", "worker"), Child("sink", "sink")])
    fresh = "feeder" not in system._store.load_rows()
    await system.start(tree)
    if fresh:
        await system.send("feeder", "go")
    await system.idle()
    print(json.dumps({"sink": system.state("sink"), "worker": system.state("worker")}))
    await system.close()

asyncio.run(main())
"""


@pytest.mark.slow
def test_sigkill_of_the_host_resumes_everything_from_the_journal(tmp_path: Path) -> None:
    script = tmp_path / "team.py"
    script.write_text(SCRIPT)
    journal, effects, total = tmp_path / "j.db", tmp_path / "effects.txt", 60
    args = [sys.executable, str(script), str(journal), str(effects), str(total)]
    kills = 0
    for extra, jitter in ((5, 0.0), (9, 0.003), (4, 0.001), (12, 0.002), (7, 0.0)):
        # Kill only once this run has made progress of its own: a kill during start-up would test nothing.
        before = len(effects.read_text().splitlines()) if effects.exists() else 0
        proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 60
        while proc.poll() is None and time.monotonic() < deadline:
            if effects.exists() and len(effects.read_text().splitlines()) >= before + extra:
                time.sleep(jitter)
                os.kill(proc.pid, signal.SIGKILL)
                kills += 1
                break
            time.sleep(0.001)
        proc.wait()
    assert kills >= 4  # the work really was interrupted, mid-way, several times
    done = subprocess.run(args, capture_output=True, text=True, timeout=120, check=True)
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["sink"] == [f"done plan {i}" for i in range(total)]  # each once, in order
    assert result["worker"] == total
    counts = Counter(effects.read_text().splitlines())
    assert {line.split()[1] for line in counts} == {str(i) for i in range(total)}
    repeated = sum(c - 1 for c in counts.values())
    # Only a call in flight at a kill can run again (at-least-once for that one step): at most one per kill.
    assert repeated <= kills, counts.most_common(5)
