"""A worker process for the approval crash tests: ``python _approval_worker.py MODE JOURNAL WORKDIR``.

It builds the agent ``crash-approvals`` (reads freely, asks before it writes) and then serves the journal
(MODE ``serve``, until killed) or runs what is runnable and exits (MODE ``once``). The write's side effect
is a line appended to WORKDIR/effects.log, outside every process, so the test counts it across kills.
While WORKDIR/hang exists and WORKDIR/resume does not, the write first creates WORKDIR/inside and sleeps,
to be SIGKILLed there.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from corral.agents import Agent
from corral.durable import Runtime, SqliteJournal, Worker
from corral.guards import ApprovalPolicy, sql_writes
from corral.models import Message, ScriptedModel, ToolDefinition, ToolResultMessage
from corral.tools import tool

MODE, JOURNAL, WORKDIR = sys.argv[1], sys.argv[2], Path(sys.argv[3])


@tool
def run_sql(sql: str) -> str:
    """Run SQL on the users table."""
    if sql.lower().startswith("select"):
        return '["ada", "bob"]'
    if (WORKDIR / "hang").exists() and not (WORKDIR / "resume").exists():
        (WORKDIR / "inside").touch()
        time.sleep(120)
    with open(WORKDIR / "effects.log", "a", encoding="utf-8") as f:
        f.write(sql + "\n")
    return "1 row changed"


def reply(messages: Sequence[Message], tools: Sequence[ToolDefinition]) -> object:
    results = [m.content for m in messages if isinstance(m, ToolResultMessage)]
    if len(results) == 0:
        return ("run_sql", {"sql": "SELECT name FROM users"})
    if len(results) == 1:
        return ("run_sql", {"sql": "DELETE FROM users WHERE name = 'bob'"})
    return f"done: {results[-1]}"


Agent(
    ScriptedModel(reply),
    tools=[run_sql],
    approvals=[ApprovalPolicy(tools="run_sql", ask=sql_writes())],
    name="crash-approvals",
)

runtime = Runtime(SqliteJournal(JOURNAL), lease_seconds=5.0)
worker = Worker(runtime, poll_interval=0.05)
if MODE == "serve":
    asyncio.run(worker.serve())
else:
    executed = asyncio.run(worker.run_until_idle())
    print(json.dumps({"executed": executed, "failed": worker.failed}))
