"""Runs one diagnosis on a SQLite journal (argv: journal, pid, run id); the test SIGKILLs it midway."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

from corral.apps.ops_agent import CoreStore, DiagnoseRequest, OpsAgent, OpsTools
from corral.durable import Runtime, SqliteJournal

journal, pid, run_id = Path(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
agent = OpsAgent(tools=OpsTools(store=CoreStore(journal.parent / "cores")))
request = DiagnoseRequest(
    symptom="connections pile up", pid=pid, core_dumps="never", remediate=True, samples=4, interval_s=1.5
)
asyncio.run(agent.diagnose(request, runtime=Runtime(SqliteJournal(journal)), run_id=run_id))
