"""A question is a durable run: killed mid-way with SIGKILL, it resumes without repeating what was done."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import pytest

from corral.apps.data_agent import Answer, _run
from corral.durable import Runtime
from corral.models import Message, ScriptedModel, SystemMessage, ToolDefinition

from .conftest import ROOT, InProcessRunner


@pytest.mark.slow
def test_a_killed_run_resumes_without_repeating_the_model_call(
    tmp_path: Path, chinook: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    journal, marker = tmp_path / "journal.sqlite", tmp_path / "marker"
    env = {**os.environ, "PYTHONPATH": str(ROOT / "tests")}
    child = subprocess.Popen(
        [sys.executable, "-m", "apps.data_agent._crash_child", str(journal), str(chinook), str(marker)],
        cwd=ROOT / "tests",
        env=env,
    )
    try:
        deadline = time.monotonic() + 60
        while not marker.exists():
            assert child.poll() is None, "the child ended before reaching the judge"
            assert time.monotonic() < deadline, "the child never reached the judge"
            time.sleep(0.05)
        child.send_signal(signal.SIGKILL)
        child.wait(10)
    finally:
        if child.poll() is None:
            child.kill()

    asked: list[str] = []

    def reply(messages: Sequence[Message], tools: Sequence[ToolDefinition]) -> str:
        system = messages[0].content if isinstance(messages[0], SystemMessage) else ""
        asked.append(system.split(" ")[1])
        if system.startswith("You check whether"):
            return '{"verdict": "pass", "reason": "lists genres"}'
        return "```sql\nSELECT 'a repeated call would answer this' AS wrong\n```"

    runner_calls: list[str] = []

    class CountingRunner(InProcessRunner):
        async def run(self, sql: str, *, max_rows: int = 1000):  # type: ignore[no-untyped-def]
            runner_calls.append(sql)
            return await super().run(sql, max_rows=max_rows)

    monkeypatch.setattr(_run, "make_runner", CountingRunner)
    monkeypatch.setattr(_run, "make_model", lambda name: ScriptedModel(reply))
    monkeypatch.setattr(_run, "_models", {})
    rt = Runtime.open(journal)
    try:
        result = asyncio.run(rt.resume("crash-1"))
    finally:
        rt.close()
    answer = Answer.model_validate(result)
    assert answer.status == "answered" and answer.row_count == 25
    assert answer.sql == "SELECT Name FROM Genre ORDER BY Name"
    # Only the judge ran again (two votes that agree decide three): the query-writing call and the query came
    # from the journal.
    assert asked == ["check"] * 2
    assert runner_calls == []
