"""Prompt and reply speed of the local model by thread count, on an idle machine and with one core busy: the
measurement behind ``corral.models._threads`` (each call uses the cores idle just before it).

    python bench/local_threads.py            # the embedded 0.5B model, 500-token prompt, then 30 tokens

Each configuration loads the model in a fresh process (llama.cpp fixes its thread pool per context) and
reports the median of 3 rounds. "One core busy" runs a spinning process beside it. The load average is
printed with the figures: the machine is shared.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

_CHILD = r"""
import json, statistics, sys, time
from corral.models import LocalModel
threads = int(sys.argv[1])
llama = LocalModel(n_threads=threads).load()
import llama_cpp
llama_cpp.llama_set_n_threads(llama.ctx, threads, threads)
text = open(sys.argv[2]).read()
tokens = llama.tokenize(text.encode())[:500]
prompt, reply = [], []
for _ in range(3):
    llama.reset()
    t = time.perf_counter(); llama.eval(tokens); prompt.append(len(tokens) / (time.perf_counter() - t))
    t = time.perf_counter()
    for _ in range(30):
        llama.eval([llama.sample()])
    reply.append(30 / (time.perf_counter() - t))
print(json.dumps({"prompt": statistics.median(prompt), "reply": statistics.median(reply)}))
"""


def _measure(threads: int) -> dict[str, float]:
    text = ROOT / "src" / "corral" / "apps" / "data_agent" / "_schema.py"
    done = subprocess.run(
        [sys.executable, "-c", _CHILD, str(threads), str(text)], capture_output=True, text=True, check=True
    )
    result: dict[str, float] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def main() -> None:
    cores = len(os.sched_getaffinity(0))
    print(f"{cores} cores, load before: {os.getloadavg()[0]:.1f}")
    print(f"{'machine':<16} {'threads':>7} {'prompt tok/s':>13} {'reply tok/s':>12}")
    for busy in (False, True):
        spinner = subprocess.Popen([sys.executable, "-c", "while True: pass"]) if busy else None
        try:
            time.sleep(0.5 if busy else 0)
            for threads in sorted({1, cores}):
                r = _measure(threads)
                label = "one core busy" if busy else "idle"
                print(f"{label:<16} {threads:>7} {r['prompt']:>13.0f} {r['reply']:>12.1f}", flush=True)
        finally:
            if spinner is not None:
                spinner.kill()
                spinner.wait()
    print(f"load after: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
