"""A workflow node's own cost, beside the agent loop's per-step cost and LangGraph's per node, same run.

A workflow of N visits of one node; each visit makes one model call (a scripted model, no LLM cost) and
takes its edge. Per node, median of REPEATS runs on a SQLite journal (WAL, synchronous=NORMAL):

- ``total``: wall time of the run divided by N;
- ``journal``: the same journal rows (the model step and the node boundary) written by a bare run function;
- ``own``: total minus the time inside the model minus ``journal`` — the workflow's own overhead per node
  (target: at most 100 us).

Then the agent loop's own overhead per step beyond its journal rows (``bench/agent_loop.py``'s measure),
and LangGraph's per-node time for a graph of the same shape (one node that calls the same scripted model
and loops N times), without a checkpointer and with ``SqliteSaver`` (``durability="sync"``): install them
with ``pip install -e '.[bench]'``.

Usage: ``python bench/workflows.py [N ...]`` (default: 50 200).
"""

from __future__ import annotations

import importlib.util
import os
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pydantic import BaseModel

sys.path.insert(0, str(Path(__file__).resolve().parent))

from agent_loop import measure as measure_agent
from agent_loop import measure_floor as agent_floor
from agent_loop import step as agent_tool
from corral.agents import End, Workflow
from corral.durable import RunContext, Runtime, SqliteJournal
from corral.models import (
    AssistantMessage,
    Message,
    Model,
    ModelResponse,
    UserMessage,
    durable_request,
)

REPEATS = 7


class Count(BaseModel):
    """The workflow's state: how many visits so far."""

    n: int = 0
    limit: int = 0


class BenchModel(Model):
    """A scripted model that answers at once, and adds up the time spent inside it."""

    name = "bench"

    def __init__(self) -> None:
        self.seconds = 0.0

    async def request(self, messages: Sequence[Message], **options: Any) -> ModelResponse:
        started = time.perf_counter()
        response = ModelResponse(message=AssistantMessage(content="ok"))
        self.seconds += time.perf_counter() - started
        return response


PROMPT = [UserMessage(content="go")]


def build(n: int, model: BenchModel) -> Workflow[Count]:
    wf = Workflow(f"bench-{n}", state=Count)

    @wf.node(next=["visit", End], max_visits=n)
    async def visit(ctx: RunContext, state: Count) -> Any:
        await durable_request(ctx, model, PROMPT)
        state.n += 1
        return End(state.n) if state.n == state.limit else "visit"

    return wf


def measure(n: int, journal_dir: str) -> tuple[float, float]:
    """(total seconds, seconds inside the model) of one workflow run of n nodes."""
    model = BenchModel()
    wf = build(n, model)
    journal = SqliteJournal(os.path.join(journal_dir, f"wf-{n}-{time.monotonic_ns()}.sqlite"))
    started = time.perf_counter()
    result = wf.run_sync(Count(limit=n), runtime=Runtime(journal))
    total = time.perf_counter() - started
    journal.close()
    assert result.output == n, result
    return total, model.seconds


def _same(value: Any) -> Any:
    return value


async def _rows_only(ctx: RunContext, n: int) -> int:
    # What a workflow run journals, and nothing else: the graph once, then per node a model step and the
    # node's boundary.
    await ctx.step("workflow:bench", _same, {"nodes": {}})
    model = BenchModel()
    for _ in range(n):
        await durable_request(ctx, model, PROMPT)
        await ctx.step("node:visit", _same, "visit")
    return n


def measure_floor(n: int, journal_dir: str) -> float:
    journal = SqliteJournal(os.path.join(journal_dir, f"floor-{n}-{time.monotonic_ns()}.sqlite"))
    started = time.perf_counter()
    Runtime(journal).run_sync(_rows_only, n)
    total = time.perf_counter() - started
    journal.close()
    return total


def langgraph_per_node(n: int, journal_dir: str, *, checkpoint: bool) -> float | None:
    """Seconds per node of a LangGraph graph of the same shape, or None if LangGraph is not installed."""
    if importlib.util.find_spec("langgraph") is None:
        return None
    from typing import TypedDict

    from langgraph.graph import END, StateGraph

    class S(TypedDict):
        n: int

    def fake_model() -> str:
        return "ok"

    def visit(state: S) -> S:
        fake_model()
        return {"n": state["n"] + 1}

    graph = StateGraph(S)
    graph.add_node("visit", visit)
    graph.set_entry_point("visit")
    graph.add_conditional_edges("visit", lambda s: END if s["n"] >= n else "visit")
    config: dict[str, Any] = {"recursion_limit": n + 10}
    options: dict[str, Any] = {}
    if checkpoint:
        from langgraph.checkpoint.sqlite import SqliteSaver

        path = os.path.join(journal_dir, f"lg-{n}-{time.monotonic_ns()}.sqlite")
        options["checkpointer"] = SqliteSaver(sqlite3.connect(path, check_same_thread=False))
        config["configurable"] = {"thread_id": "t1"}
    app = graph.compile(**options)
    started = time.perf_counter()
    invoke_options = {"durability": "sync"} if checkpoint else {}
    out = app.invoke({"n": 0}, config, **invoke_options)
    total = time.perf_counter() - started
    assert out["n"] == n, out
    return total / n


def _us(seconds: float | None) -> str:
    return "not installed (pip install -e '.[bench]')" if seconds is None else f"{seconds * 1e6:8.0f}"


def main() -> None:
    sizes = [int(a) for a in sys.argv[1:] if a.isdigit()] or [50, 200]
    print(f"load average: {os.getloadavg()[0]:.2f} (2 cores); median of {REPEATS} runs, us per node or step")
    print(f"{'N':>5}  {'what':<34} {'total':>8} {'journal':>8} {'own':>8}")
    with tempfile.TemporaryDirectory() as tmp:
        for n in sizes:
            # Each run is paired with a journal-only run taken right after it, so load changes hit both.
            runs = [(*measure(n, tmp), measure_floor(n, tmp)) for _ in range(REPEATS)]
            total = statistics.median(t for t, _, _ in runs) / n
            floor = statistics.median(f for _, _, f in runs) / n
            own = statistics.median(t - m - f for t, m, f in runs) / n
            print(f"{n:>5}  {'corral workflow node':<34} {_us(total)} {_us(floor)} {_us(own)}")
            loops = [(*measure_agent(n, tmp, agent_tool), agent_floor(n, tmp)) for _ in range(REPEATS)]
            loop_total = statistics.median(t for t, _, _ in loops) / n
            loop_floor = statistics.median(f for _, _, f in loops) / n
            loop_own = statistics.median(t - m - f for t, m, f in loops) / n
            label = "corral agent loop step (sync tool)"
            print(f"{n:>5}  {label:<34} {_us(loop_total)} {_us(loop_floor)} {_us(loop_own)}")
            for checkpoint, name in (
                (False, "LangGraph node, no checkpointer"),
                (True, "LangGraph node + SqliteSaver"),
            ):
                timings = [langgraph_per_node(n, tmp, checkpoint=checkpoint) for _ in range(REPEATS)]
                per_node = (
                    None if timings[0] is None else statistics.median(t for t in timings if t is not None)
                )
                print(f"{n:>5}  {name:<34} {_us(per_node)}")


if __name__ == "__main__":
    main()
