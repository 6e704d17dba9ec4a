"""The agent loop's own cost per step, beside the anchors' figure measured in the same run.

A step is one ReAct round trip, as in ``../shared/bench/anchors/steps.py``: one model turn that asks for one
tool call, and that tool call. The model is scripted (no LLM cost) and the journal is SQLite in WAL mode with
``synchronous=NORMAL``, the default. Printed per run length N:

- ``total``: wall time of the whole run divided by N (what the anchors report);
- ``loop``: the same minus the time spent inside the scripted model's ``request`` — the loop's own
  overhead (durable steps, argument validation, guards, events, the tool's thread);

and, for each anchor installed in ``/work/anchors-venv``, its ``us_per_step`` from ``steps.py``.

Usage: ``python bench/agent_loop.py [N ...] [--no-anchors]`` (default: 50 200). Target: loop <= 250 us per
step and at least 10x below Pydantic AI and LangGraph with their SQLite durability.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from corral.agents import Agent
from corral.durable import RunContext, Runtime, SqliteJournal
from corral.guards import Guards
from corral.models import (
    AssistantMessage,
    Message,
    Model,
    ModelResponse,
    ScriptedModel,
    ToolCall,
    ToolDefinition,
    ToolResultMessage,
)
from corral.tools import Tool

ANCHOR_PYTHON = Path("/work/anchors-venv/bin/python")
ANCHOR_SCRIPT = Path(__file__).resolve().parents[2] / "shared" / "bench" / "anchors" / "steps.py"
if not ANCHOR_SCRIPT.exists():
    ANCHOR_SCRIPT = Path("/work/shared/bench/anchors/steps.py")
ANCHORS = ("pai", "pai_dbos", "lg", "lg_sqlite")
REPEATS = 5


class TimedModel(Model):
    """Wraps a model and adds up the time spent inside it, so the loop's own time can be isolated."""

    def __init__(self, model: Model) -> None:
        self.model = model
        self.name = model.name
        self.seconds = 0.0

    async def request(self, messages: Sequence[Message], **options: Any) -> ModelResponse:
        started = time.perf_counter()
        try:
            return await self.model.request(messages, **options)
        finally:
            self.seconds += time.perf_counter() - started


class BenchModel(Model):
    """The anchors' scripted model, ours: counts tool results and asks for one more call until n.

    Like their ``FunctionModel``, it builds the response directly; ``ScriptedModel`` would also run the
    adapters' output checks and estimate tokens over the whole conversation on every call, which is the
    model layer's cost, not the loop's (``--scripted`` measures with it anyway).
    """

    def __init__(self, n: int) -> None:
        self.n = n
        self.name = "bench"

    async def request(self, messages: Sequence[Message], **options: Any) -> ModelResponse:
        done = sum(1 for m in messages if isinstance(m, ToolResultMessage))
        if done < self.n:
            call = ToolCall(id=f"c{done}", name="step", arguments={"i": done})
            return ModelResponse(message=AssistantMessage(tool_calls=[call]), finish_reason="tool_calls")
        return ModelResponse(message=AssistantMessage(content="done"))


def step(i: int) -> int:
    """The anchors' tool: add one."""
    return i + 1


async def step_async(i: int) -> int:
    """The same tool, async (runs on the event loop: no thread)."""
    return i + 1


def measure(n: int, journal_dir: str, tool: object, *, scripted: bool = False) -> tuple[float, float]:
    """(total seconds, seconds inside the model) of one run of n steps."""

    def script(messages: Sequence[Message], tools: Sequence[ToolDefinition]) -> Any:
        done = sum(1 for m in messages if isinstance(m, ToolResultMessage))
        return ("step", {"i": done}) if done < n else "done"

    model = TimedModel(ScriptedModel(script) if scripted else BenchModel(n))
    guards = Guards(max_steps=n + 1, max_identical_calls=n + 1)
    agent = Agent(model, tools=[tool], guards=guards)  # type: ignore[list-item]
    journal = SqliteJournal(os.path.join(journal_dir, f"bench-{n}-{time.monotonic_ns()}.sqlite"))
    runtime = Runtime(journal)
    started = time.perf_counter()
    result = agent.run_sync("go", runtime=runtime)
    total = time.perf_counter() - started
    journal.close()
    assert result.output == "done" and result.tool_calls == n, result
    return total, model.seconds


async def _journal_only(ctx: RunContext, n: int) -> int:
    # What the loop journals per step, and nothing else: the run clock, a model step, a tool step.
    for i in range(n):
        ctx.now()
        await ctx.step("model:bench", dict, turn=i)
        await ctx.step("tool:step", dict, content=str(i))
    return n


def measure_floor(n: int, journal_dir: str) -> float:
    """Seconds for n steps' worth of journal rows alone (the durable layer's share of a step)."""
    journal = SqliteJournal(os.path.join(journal_dir, f"floor-{n}-{time.monotonic_ns()}.sqlite"))
    started = time.perf_counter()
    Runtime(journal).run_sync(_journal_only, n)
    total = time.perf_counter() - started
    journal.close()
    return total


def anchor(system: str, n: int) -> str:
    if not ANCHOR_PYTHON.exists() or not ANCHOR_SCRIPT.exists():
        return "anchor not installed"
    proc = subprocess.run(
        [str(ANCHOR_PYTHON), str(ANCHOR_SCRIPT), system, str(n)],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or ["?"])[-1]
        return f"anchor failed: {last[:100]}"
    fields = proc.stdout.split()
    return f"{float(fields[-1]):9.0f} us/step" if fields else "anchor printed nothing"


def main() -> None:
    sizes = [int(a) for a in sys.argv[1:] if a.isdigit()] or [50, 200]
    skip_anchors = "--no-anchors" in sys.argv
    print(f"corral agent loop: one model turn + one tool call per step; median of {REPEATS} runs")
    print("(loop = total minus the time inside the model; journal = the same journal rows written alone)")
    print(f"{'N':>5}  {'tool':<7} {'total us/step':>14} {'loop us/step':>13}")
    with tempfile.TemporaryDirectory() as tmp:
        for n in sizes:
            for label, tool in (("sync", step), ("async", Tool(step_async, name="step"))):
                runs = [measure(n, tmp, tool) for _ in range(REPEATS)]
                total = statistics.median(t for t, _ in runs) / n * 1e6
                loop = statistics.median(t - m for t, m in runs) / n * 1e6
                print(f"{n:>5}  {label:<7} {total:>14.0f} {loop:>13.0f}")
            floor = statistics.median(measure_floor(n, tmp) for _ in range(REPEATS)) / n * 1e6
            print(f"{n:>5}  {'journal':<7} {floor:>14.0f} {floor:>13.0f}")
    print()
    if skip_anchors:
        return
    print("anchors (same machine, same run; ../shared/bench/anchors/steps.py):")
    for n in sizes:
        for system in ANCHORS:
            print(f"{n:>5}  {system:<10} {anchor(system, n)}")


if __name__ == "__main__":
    main()
