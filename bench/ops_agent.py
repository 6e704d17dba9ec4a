"""The observability agent: how long a diagnosis takes, what it journals, and what redaction costs.

- diagnosis: a real server leaking sockets in CLOSE_WAIT is diagnosed N times (default 5) with the default
  settings and no model (the detectors decide); printed: the median wall time, the part spent waiting
  between watch samples (by design: ``samples`` × ``interval_s`` per watch), and the rest (tools, journal,
  detectors), with the journal's steps and bytes per diagnosis (SQLite, WAL);
- redaction: the default rules over a 4 MiB log of realistic lines (half of them carry a secret), line by
  line as the tools hand it over and as one string, in MB/s (median of 5), beside a plain ``str.replace``
  pass over the same text as the floor.

There is no peer agent to compare with on this machine (no observability agent among the anchors); the
figures are absolute. Usage: ``python bench/ops_agent.py [--runs N]``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from corral.apps.ops_agent import CoreStore, DiagnoseRequest, OpsAgent, OpsTools, Redactor
from corral.durable import Runtime, SqliteJournal

SERVER = """
import socket
s = socket.socket(); s.bind(("127.0.0.1", 0)); s.listen(128); print(s.getsockname()[1], flush=True)
kept = []
while True:
    c, _ = s.accept(); c.recv(10); kept.append(c)
"""


def diagnosis(runs: int) -> None:
    server = subprocess.Popen([sys.executable, "-c", SERVER], stdout=subprocess.PIPE, text=True)
    try:
        assert server.stdout is not None
        port = int(server.stdout.readline())
        for _ in range(20):
            with socket.create_connection(("127.0.0.1", port)) as c:
                c.sendall(b"x")
        time.sleep(0.3)
        walls, rows, sizes, waits = [], [], [], []
        with tempfile.TemporaryDirectory() as tmp:
            for i in range(runs):
                journal = Path(tmp) / f"j{i}.sqlite"
                runtime = Runtime(SqliteJournal(journal))
                agent = OpsAgent(tools=OpsTools(store=CoreStore(Path(tmp) / "cores")))
                request = DiagnoseRequest(symptom="connections pile up", pid=server.pid, remediate=False)
                start = time.perf_counter()
                report = asyncio.run(agent.diagnose(request, runtime=runtime, run_id="bench"))
                walls.append(time.perf_counter() - start)
                assert report.cause is not None and report.cause.kind == "close_wait_leak"
                watches = sum(1 for e in report.evidence if e.tool == "watch_processes")
                waits.append(watches * (request.samples - 1) * request.interval_s)
                rows.append(len(runtime.steps("bench")))
                runtime.close()
                sizes.append(sum(p.stat().st_size for p in Path(tmp).glob(f"j{i}.sqlite*")))
    finally:
        server.kill()
        server.wait()
        if server.stdout is not None:
            server.stdout.close()
    wall, wait = statistics.median(walls), statistics.median(waits)
    print(f"diagnosis of a CLOSE_WAIT leak, {runs} runs, load {os.getloadavg()[0]:.1f}")
    print(f"  wall time        median {wall:.2f} s (min {min(walls):.2f}, max {max(walls):.2f})")
    print(f"  waiting between watch samples  {wait:.2f} s")
    print(f"  the rest (tools, journal, detectors)  median {wall - wait:.2f} s")
    print(
        f"  journal          {statistics.median(rows):.0f} steps, {statistics.median(sizes) / 1024:.0f} KiB"
    )


def redaction() -> None:
    lines = [
        "2026-12-01T12:00:00Z INFO GET /api/orders/1234 200 in 35 ms from 10.0.0.7",
        "2026-12-01T12:00:01Z WARN login for ada@example.com failed: password=hunter2 rejected",
        "2026-12-01T12:00:02Z DEBUG calling postgres://app:s3cret@db:5432/shop "
        "with Authorization: Bearer abc123def456",
        "2026-12-01T12:00:03Z ERROR Traceback (most recent call last): ValueError: bad input",
    ]
    many = lines * (4 * 2**20 // sum(len(x) + 1 for x in lines))
    text = "\n".join(many)
    r = Redactor(max_chars=len(text) + 1)
    times, whole, floor = [], [], []
    for _ in range(5):
        start = time.perf_counter()
        r.scrub(many)  # as the log tools hand it over: one string per line
        times.append(time.perf_counter() - start)
        start = time.perf_counter()
        r.text(text)
        whole.append(time.perf_counter() - start)
        start = time.perf_counter()
        text.replace("hunter2", "[redacted]")
        floor.append(time.perf_counter() - start)
    mb = len(text) / 2**20
    rate = mb / statistics.median(times)
    print(f"redaction of a {mb:.1f} MiB log, default rules, line by line: median {rate:.1f} MB/s")
    print(f"  the same log as one string: median {mb / statistics.median(whole):.1f} MB/s")
    print(f"  floor (one str.replace pass): {mb / statistics.median(floor):.0f} MB/s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    diagnosis(args.runs)
    redaction()


if __name__ == "__main__":
    main()
