"""Secrets in logs, the environment, the command line and a core dump never reach a model or the journal.

A real process starts with secrets in its environment, its command line, a log file it writes, and its
memory; it then deadlocks, so the agent reads its environment and log, watches it, and takes a core dump
for backtraces. Afterwards every model request and every byte of the SQLite journal (and its WAL) is
scanned for each secret, and the core store for the secrets in the clear.
"""

from __future__ import annotations

import asyncio
import functools
import json
import secrets
import sqlite3
from collections.abc import Sequence
from pathlib import Path

import pytest

from corral.apps.ops_agent import CoreStore, DiagnoseRequest, OpsAgent, OpsTools
from corral.durable import Runtime, SqliteJournal
from corral.models import Message, ScriptedModel, ToolDefinition

from . import faults
from .conftest import needs_gdb

pytestmark = pytest.mark.slow

SECRETIVE = """
import datetime, json, sys, threading, time
now = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
settings = json.load(open("settings.json"))      # read from a file the agent has no reason to open
SECRET_IN_MEMORY = settings["key"]               # an API key the process holds
with open("service.log", "a") as log:
    log.write(f"{now} INFO connecting with password={settings['password']}\\n")
    log.write(f"{now} INFO user {settings['email']} logged in\\n")
    log.write(f"{now} DEBUG Authorization: Bearer {settings['bearer']}\\n")
a, b = threading.Lock(), threading.Lock()
def one():
    with a:
        time.sleep(0.3)
        with b: pass
def two():
    with b:
        time.sleep(0.3)
        with a: pass
ts = [threading.Thread(target=one), threading.Thread(target=two)]
for t in ts: t.start()
print("ready", flush=True)
for t in ts: t.join()
"""


def answer(messages: Sequence[Message], tools: Sequence[ToolDefinition]) -> str:
    system = str(getattr(messages[0], "content", ""))
    if "triage" in system:
        return '{"areas": ["threads"]}'
    if "pick the root cause" in system:
        return '{"id": "H1"}'
    return "The process is deadlocked: two threads wait on each other's locks."


@needs_gdb
async def test_no_secret_in_model_requests_or_the_journal(tmp_path: Path) -> None:
    word = secrets.token_hex(8)
    planted = {
        "memory": f"sk-live{word}memkey0123456789",
        "password": f"pw-{word}-hunter2",
        "email": f"alice.{word}@example.com",
        "bearer": f"tok{word}BEARERabcdefghijkl",
        "env_db": f"dbpass{word}",
        "env_token": f"envtok{word}",
        "cmdline": f"cli{word}flag",
    }
    env = {
        "DATABASE_URL": f"postgres://app:{planted['env_db']}@db.internal:5432/shop",
        "API_TOKEN": planted["env_token"],
    }
    src = faults.script(tmp_path, "billing.py", SECRETIVE)
    (tmp_path / "settings.json").write_text(
        json.dumps(
            {
                "key": planted["memory"],
                "password": planted["password"],
                "email": planted["email"],
                "bearer": planted["bearer"],
            }
        )
    )
    argv = [faults.PY, str(src), "--password", planted["cmdline"]]
    store = CoreStore(tmp_path / "cores")
    model = ScriptedModel(answer)
    journal_file = tmp_path / "journal.sqlite"
    runtime = Runtime(SqliteJournal(journal_file))
    agent = OpsAgent(model=model, tools=OpsTools(store=store))
    proc = faults.start(argv, cwd=tmp_path, env=env)
    with faults.running(proc):
        await asyncio.sleep(0.5)
        report = await agent.diagnose(
            DiagnoseRequest(
                symptom="billing hangs", pid=proc.pid, core_dumps="allow", remediate=False, interval_s=0.5
            ),
            runtime=runtime,
            run_id="secrets",
        )
    runtime.close()

    # The scenario did what it should: the evidence came from every source, and a core was taken.
    tools = {e.tool for e in report.evidence}
    assert {"environment", "read_log", "watch_processes", "processes", "backtraces"} <= tools, tools
    assert report.cause is not None and report.cause.kind == "deadlock"
    assert model.calls
    env_seen = next(e.data for e in report.evidence if e.tool == "environment")
    assert env_seen["API_TOKEN"] == "[redacted]" and env_seen["DATABASE_URL"] == "[redacted]"
    logged = str(next(e.data for e in report.evidence if e.tool == "read_log"))
    assert "[email]" in logged and "password=[redacted]" in logged

    requests = "\n".join(str(getattr(m, "content", "")) for call in model.calls for m in call.messages)
    with sqlite3.connect(journal_file) as db:
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        tables = [r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
        rows = "\n".join(str(row) for t in tables for row in db.execute(f'SELECT * FROM "{t}"'))
    raw = b"".join(p.read_bytes() for p in tmp_path.glob("journal.sqlite*"))  # noqa: ASYNC240
    stored = b"".join(p.read_bytes() for p in store.root.iterdir() if p.suffix == ".enc")
    assert stored, "no core was stored"
    assert "secrets" in rows and len(rows) > 1000  # the scan reads the real journal
    for name, secret in planted.items():
        assert secret not in requests, f"{name} reached a model"
        assert secret not in rows and secret.encode() not in raw, f"{name} is in the journal"
        assert secret.encode() not in stored, f"{name} is stored in the clear with the core"
    # The core itself holds them (so the test is real): decrypted, the secret in memory is there.
    plain = store.decrypt_to(
        next(p.name.split(".")[0] for p in store.root.glob("*.enc")), tmp_path / "core.plain"
    )
    assert planted["memory"].encode() in plain.read_bytes()


@pytest.mark.sandbox
@needs_gdb
async def test_core_strings_are_read_in_the_sandbox_and_redacted(tmp_path: Path) -> None:
    from corral.sandbox import SandboxPool, check, run_python_sync

    if not check().can_run:
        pytest.skip("no sandbox backend here")
    word = secrets.token_hex(8)
    key = f"sk-live{word}memkey0123456789"
    holder = faults.start(
        [faults.PY, "-c", f"import time; k = {key!r}; print('ready', flush=True); time.sleep(60)"],
        cwd=tmp_path,
    )
    store = CoreStore(tmp_path / "cores")
    with SandboxPool(1) as pool, faults.running(holder):
        tools = OpsTools(store=store, sandbox_run=functools.partial(run_python_sync, pool=pool))
        tools.take_core(holder.pid, "c1")
        found = tools.core_strings("c1", "sk-live")
    text = str(found)
    assert key not in text and "[redacted]" in text
