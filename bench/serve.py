"""`corral serve` under load: the runs page with 10,000 runs, and the live timeline's latency.

A SQLite journal (WAL, synchronous=NORMAL) gets N finished runs (default 10,000: agents, workflows and
data-agent questions with their usage and cost in their output, over 30 days). The server runs in this
process (uvicorn on 127.0.0.1, one thread) and is asked over real HTTP, with the token:

- runs page: ``GET /runs`` (the HTML page, 50 runs) and ``GET /api/runs`` (JSON), unfiltered and with each
  filter (status, agent/workflow name, date range, cost range) — p50 and p95 of R requests each. Beside
  it, the floor: the journal's own ``list_runs`` of every run (what each filtered request reads).
- live timeline: a run that commits S steps, one every 50 ms, watched over ``/api/runs/{id}/events``; for
  each step, the time from its commit (the journal's ``ended_at``) to its event arriving: at a Python
  client, and at Debian's Chromium (an ``EventSource`` in a page, timed with ``Date.now()``) when
  Playwright and /usr/bin/chromium are there. The server polls the journal every ``--poll`` seconds
  (default 0.1), which bounds the wait from above.

Usage: ``python bench/serve.py [--runs N] [--requests R] [--steps S] [--poll SECONDS]``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import statistics
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx

from corral.apps.server import ServerConfig, TokenStore, create_app
from corral.durable import RunContext, RunRecord, RunStatus, Runtime, SqliteJournal

CHROMIUM = Path("/usr/bin/chromium")


def fill(journal: SqliteJournal, n: int) -> None:
    """N finished runs of three kinds, spread over 30 days, with usage and cost in their output."""
    rng = random.Random(7)
    now = time.time()
    kinds = [
        ("corral.agents._agent:run_agent", lambda i: ["support", f"question {i}"]),
        ("corral.agents.workflow._run:run_workflow", lambda i: ["essay", {"topic": f"t{i}"}]),
        ("corral.apps.data_agent._run:ask_run", lambda i: [f"How many albums? {i}", "chinook.sqlite"]),
    ]
    statuses = [RunStatus.COMPLETED] * 8 + [RunStatus.FAILED, RunStatus.WAITING]
    for i in range(n):
        function, args = kinds[i % 3]
        created = now - rng.uniform(0, 30 * 86400)
        status = rng.choice(statuses)
        usage = {
            "requests": 3,
            "input_tokens": rng.randint(200, 4000),
            "output_tokens": rng.randint(20, 400),
            "latency_s": 1.0,
            "cost_usd": round(rng.uniform(0, 0.05), 5),
        }
        output = None if status is RunStatus.WAITING else json.dumps({"status": "completed", "usage": usage})
        journal.create_run(
            RunRecord(
                run_id=f"run-{i:05d}",
                function=function,
                input=json.dumps({"args": args(i), "kwargs": {}}),
                status=status,
                created_at=created,
                updated_at=created + 5,
                output=output,
                waiting_for="approval:ap-x" if status is RunStatus.WAITING else None,
            )
        )


class Server:
    def __init__(self, config: ServerConfig) -> None:
        import uvicorn

        self.server = uvicorn.Server(
            uvicorn.Config(create_app(config), host="127.0.0.1", port=0, log_level="warning")
        )
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> str:
        self.thread.start()
        while not self.server.started:
            time.sleep(0.02)
        return f"http://127.0.0.1:{self.server.servers[0].sockets[0].getsockname()[1]}"

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(10)


def quantiles(samples: list[float]) -> tuple[float, float]:
    ordered = sorted(samples)
    return statistics.median(ordered), ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]


def time_requests(client: httpx.Client, path: str, params: dict[str, Any], count: int) -> tuple[float, float]:
    samples = []
    for _ in range(count):
        start = time.perf_counter()
        response = client.get(path, params=params)
        samples.append((time.perf_counter() - start) * 1000)
        assert response.status_code == 200, response.text[:200]
    return quantiles(samples)


async def stepper(ctx: RunContext, steps: int, gap: float) -> int:
    for i in range(steps):
        await ctx.step(f"tick:{i}", lambda i=i: i)
        await asyncio.sleep(gap)  # not journaled: only pacing the bench
    return steps


def run_stepper(journal_path: Path, run_id: str, steps: int, gap: float) -> None:
    rt = Runtime(SqliteJournal(journal_path))
    rt.run_sync(stepper, steps, gap, run_id=run_id)
    rt.close()


def python_latency(base: str, token: str, journal_path: Path, steps: int, gap: float) -> list[float]:
    run_id = f"live-py-{time.time_ns()}"
    rt = Runtime(SqliteJournal(journal_path))
    rt.start(stepper, steps, gap, run_id=run_id)  # exists (pending) so the stream can open first
    rt.close()
    arrivals: dict[int, float] = {}
    worker = threading.Thread(target=lambda: (time.sleep(0.3), run_stepper(journal_path, run_id, steps, gap)))
    with httpx.Client(base_url=base, headers={"Authorization": f"Bearer {token}"}, timeout=60) as client:
        worker.start()
        with client.stream("GET", f"/api/runs/{run_id}/events") as response:
            event = None
            for line in response.iter_lines():
                if line.startswith("event: "):
                    event = line[7:]
                elif line.startswith("data: ") and event == "step":
                    data = json.loads(line[6:])
                    if data["status"] == "ok":
                        arrivals[data["position"]] = time.time()
                elif line.startswith("data: ") and event == "end":
                    break
    worker.join()
    committed = {s.position: s.ended_at for s in SqliteJournal(journal_path).load_steps(run_id)}
    return [(arrivals[p] - committed[p]) * 1000 for p in arrivals if committed.get(p)]


def browser_latency(base: str, token: str, journal_path: Path, steps: int, gap: float) -> list[float] | str:
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        return "playwright not installed"
    if not CHROMIUM.exists():
        return "no /usr/bin/chromium"
    run_id = f"live-br-{time.time_ns()}"
    rt = Runtime(SqliteJournal(journal_path))
    rt.start(stepper, steps, gap, run_id=run_id)
    rt.close()
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox"])
        page = browser.new_page()
        page.goto(base + "/login")
        page.fill("#token", token)
        page.click("button[type=submit]")
        page.wait_for_url("**/runs")
        page.goto(f"{base}/runs/{run_id}")  # the run page: its own EventSource renders the timeline
        page.wait_for_selector("#live")
        # A second listener on the same stream records arrival times for the bench.
        page.evaluate(
            """(runId) => { window.arrived = {}; const s = new EventSource(`/api/runs/${runId}/events`);
               s.addEventListener('step', (e) => { const d = JSON.parse(e.data);
                 if (d.status === 'ok') window.arrived[d.position] = Date.now() / 1000; });
               s.addEventListener('end', () => { window.done = true; s.close(); }); }""",
            run_id,
        )
        # Playwright's sync API holds this thread's event loop: the run executes in another thread.
        with ThreadPoolExecutor(1) as pool:
            pool.submit(run_stepper, journal_path, run_id, steps, gap).result()
        # Polled from here: the page's CSP forbids the eval that wait_for_function would need.
        deadline = time.monotonic() + 60
        while not page.evaluate("window.done === true"):
            assert time.monotonic() < deadline, "the stream did not end"
            time.sleep(0.05)
        arrived = page.evaluate("window.arrived")
        browser.close()
    committed = {s.position: s.ended_at for s in SqliteJournal(journal_path).load_steps(run_id)}
    return [(t - committed[int(p)]) * 1000 for p, t in arrived.items() if committed.get(int(p))]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runs", type=int, default=10_000)
    parser.add_argument("--requests", type=int, default=30)
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--poll", type=float, default=0.1)
    args = parser.parse_args()
    load = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp)
        journal_path = home / "journal.db"
        journal = SqliteJournal(journal_path)
        start = time.perf_counter()
        fill(journal, args.runs)
        print(f"journal: {args.runs} runs written in {time.perf_counter() - start:.1f} s; load {load:.2f}")
        floor = []
        for _ in range(args.requests):
            t = time.perf_counter()
            journal.list_runs(limit=1_000_000)
            floor.append((time.perf_counter() - t) * 1000)
        journal.close()
        config = ServerConfig(
            journal=journal_path,
            token_file=home / "token",
            chart_dir=home / "charts",
            poll_interval=args.poll,
        )
        token = TokenStore(config.token_file).rotate()
        since = time.strftime("%Y-%m-%d", time.gmtime(time.time() - 7 * 86400))
        cases: list[tuple[str, str, dict[str, Any]]] = [
            ("page, no filter", "/runs", {}),
            ("page, status=failed", "/runs", {"status": "failed"}),
            ("page, agent name", "/runs", {"label": "workflow essay"}),
            ("page, last 7 days", "/runs", {"since": since}),
            ("page, cost >= $0.04", "/runs", {"min_cost": 0.04}),
            ("page 100 (offset 4,950)", "/runs", {"page": 100}),
            ("api, no filter", "/api/runs", {}),
            (
                "api, all filters",
                "/api/runs",
                {"status": "completed", "label": "agent", "min_cost": 0.01, "max_cost": 0.03},
            ),
        ]
        with Server(config) as base:
            headers = {"Authorization": f"Bearer {token}"}
            with httpx.Client(base_url=base, headers=headers, timeout=30) as client:
                print(f"\nruns page over {args.runs} runs, {args.requests} requests each (ms)")
                print(f"  {'request':<28} {'p50':>8} {'p95':>8}")
                f50, f95 = quantiles(floor)
                print(f"  {'floor: journal.list_runs(all)':<28} {f50:8.1f} {f95:8.1f}")
                for name, path, params in cases:
                    client.get(path, params=params)  # warm
                    p50, p95 = time_requests(client, path, params, args.requests)
                    print(f"  {name:<28} {p50:8.1f} {p95:8.1f}")
            gap = 0.05
            print(
                f"\nlive timeline: {args.steps} steps, one per {gap * 1000:.0f} ms; server polls every "
                f"{args.poll * 1000:.0f} ms (ms from step commit to event arrival)"
            )
            py = python_latency(base, token, journal_path, args.steps, gap)
            p50, p95 = quantiles(py)
            print(f"  {'python SSE client':<28} p50 {p50:7.1f}  p95 {p95:7.1f}  (n={len(py)})")
            br = browser_latency(base, token, journal_path, args.steps, gap)
            if isinstance(br, str):
                print(f"  {'chromium EventSource':<28} skipped: {br}")
            else:
                p50, p95 = quantiles(br)
                print(f"  {'chromium EventSource':<28} p50 {p50:7.1f}  p95 {p95:7.1f}  (n={len(br)})")


if __name__ == "__main__":
    main()
