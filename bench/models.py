"""Local model speed on this machine, and the overhead of corral's adapter over a raw llama_cpp call.

    .venv/bin/python bench/models.py [--runs 7] [--only qwen2.5-coder-0.5b]

For each installed local model: load time, generation speed (tokens/s on a free-text answer), and the latency
of a grammar-constrained tool call through ``LocalModel.request`` against ``Llama.create_chat_completion``
with the very same messages and grammar on the same loaded model. Raw and adapter runs are interleaved so
that load from other processes hits both alike; medians are reported. Temperature 0: both produce the same
tokens, so the difference is our overhead (message conversion, schema and grammar, output checks, the
worker thread).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import time
from typing import Any

from corral.models import KNOWN_WEIGHTS, LocalModel, ModelSettings, ToolDefinition, UserMessage, part_files
from corral.models._local import _grammar, chat_messages, envelope_schema

RUN_SQL = ToolDefinition(
    name="run_sql",
    description="Run a read-only SQL query on the shop database (SQLite) and return the rows.",
    parameters={
        "type": "object",
        "properties": {"query": {"type": "string", "description": "one SQLite SELECT statement"}},
        "required": ["query"],
    },
)
QUESTION = "How many orders were placed in 2024? The orders table has columns id, customer_id, created_at."
FREE_TEXT = "Explain in three sentences what a SQL index is."
SETTINGS = ModelSettings(temperature=0.0, seed=1, max_tokens=96)

# What the design notes measured on this machine class, for comparison.
ANCHORS = {
    "qwen2.5-coder-0.5b": "~0.5-1 s per short SQL answer on 2 cores",
    "qwen2.5-coder-1.5b": "~1-2 s per short SQL answer on 2 cores",
}


def _raw_call(llama: Any, chat: list[dict[str, str]], grammar: Any) -> dict[str, Any]:
    result: dict[str, Any] = llama.create_chat_completion(
        messages=chat, max_tokens=SETTINGS.max_tokens, temperature=0.0, seed=1, grammar=grammar
    )
    return result


async def bench_model(name: str, runs: int) -> dict[str, Any]:
    model = LocalModel(name, n_ctx=4096)
    started = time.perf_counter()
    llama = model.load()
    load_s = time.perf_counter() - started
    messages = [UserMessage(content=QUESTION)]

    # Generation speed: a free-text answer, tokens per second of the whole call (prompt cached after run 1).
    await model.request([UserMessage(content=FREE_TEXT)], settings=SETTINGS)  # warm-up
    speeds = []
    for _ in range(runs):
        response = await model.request([UserMessage(content=FREE_TEXT)], settings=SETTINGS)
        speeds.append(response.usage.output_tokens / response.usage.latency_s)

    # Overhead: the same tool call, raw vs through the adapter, interleaved.
    chat = chat_messages(messages, [RUN_SQL], None)
    grammar = _grammar(json.dumps(envelope_schema([RUN_SQL], None)))
    await model.request(messages, tools=[RUN_SQL], settings=SETTINGS)  # warm-up both paths
    await asyncio.to_thread(_raw_call, llama, chat, grammar)
    raw_s: list[float] = []
    ours_s: list[float] = []
    raw_text = ours_text = ""
    for i in range(runs):
        # Alternate which goes first (ABBA), so a drift in machine load or cache state does not favour one.
        for which in ("raw", "ours") if i % 2 == 0 else ("ours", "raw"):
            t0 = time.perf_counter()
            if which == "raw":
                raw = await asyncio.to_thread(_raw_call, llama, chat, grammar)
                raw_s.append(time.perf_counter() - t0)
                raw_text = raw["choices"][0]["message"]["content"]
            else:
                ours = await model.request(messages, tools=[RUN_SQL], settings=SETTINGS)
                ours_s.append(time.perf_counter() - t0)
                calls = ours.message.tool_calls
                ours_text = json.dumps(calls[0].arguments) if calls else ""
    raw_med, ours_med = statistics.median(raw_s), statistics.median(ours_s)

    # The same overhead measured without the noise of other processes: time spent in our code around the
    # llama_cpp call (total minus the inner call), relative to the inner call, per request.
    inner: list[float] = []
    original = llama.create_chat_completion

    def timed(**kwargs: Any) -> Any:
        t0 = time.perf_counter()
        try:
            return original(**kwargs)
        finally:
            inner.append(time.perf_counter() - t0)

    llama.create_chat_completion = timed
    own: list[float] = []
    try:
        for _ in range(runs):
            t0 = time.perf_counter()
            await model.request(messages, tools=[RUN_SQL], settings=SETTINGS)
            total = time.perf_counter() - t0
            own.append((total - inner[-1]) / inner[-1] * 100)
    finally:
        del llama.create_chat_completion  # back to the class's method
    return {
        "model": name,
        "load_s": load_s,
        "tokens_per_s": statistics.median(speeds),
        "tool_call_s": ours_med,
        "raw_s": raw_med,
        "overhead_pct": (ours_med / raw_med - 1) * 100,
        "overhead_ms": (ours_med - raw_med) * 1000,
        "best_pct": (min(ours_s) / min(raw_s) - 1) * 100,
        "best_ours": min(ours_s),
        "best_raw": min(raw_s),
        "own_pct": statistics.median(own),
        "own_ms": statistics.median(own) / 100 * statistics.median(inner) * 1000,
        "sample_raw": raw_text,
        "sample_ours": ours_text,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--only", default=None)
    args = parser.parse_args()
    print(
        f"machine: {os.cpu_count()} cores; load average {os.getloadavg()[0]:.2f} at start; runs={args.runs}"
    )
    for name, weights in sorted(KNOWN_WEIGHTS.items()):
        if args.only and name != args.only:
            continue
        if any(p is None for p in part_files(weights)):
            print(f"\n{name}: NOT INSTALLED (parts missing) - skipped")
            continue
        r = asyncio.run(bench_model(name, args.runs))
        print(f"\n{name}")
        print(f"  load                         {r['load_s']:.2f} s")
        print(f"  generation (free text)       {r['tokens_per_s']:.1f} tokens/s (median)")
        print(f"  tool call via LocalModel     {r['tool_call_s']:.3f} s (median)")
        print(f"    anchor (design notes)      {ANCHORS.get(name, '-')}")
        print(f"  same call, raw llama_cpp     {r['raw_s']:.3f} s (median)")
        print(
            f"  best of {args.runs}: ours {r['best_ours']:.3f} s, raw {r['best_raw']:.3f} s "
            f"({r['best_pct']:+.1f} %)"
        )
        print(
            f"  overhead, end to end         {r['overhead_pct']:+.1f} % ({r['overhead_ms']:+.1f} ms), "
            "target <= 5 %"
        )
        print(
            f"  overhead, own code only      {r['own_pct']:+.2f} % "
            f"({r['own_ms']:.1f} ms around the llama call)"
        )
        print(f"  raw reply:     {r['sample_raw'][:100]}")
        print(f"  adapter reply: {r['sample_ours'][:100]}")
    print(f"\nload average {os.getloadavg()[0]:.2f} at end (other processes share the 2 cores)")


if __name__ == "__main__":
    main()
