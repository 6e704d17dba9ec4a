"""Conversations: a thread's follow-up sees the previous question, its SQL and rows; the thread is the
journal's runs ``NAME.1``, ``NAME.2``…, so a process killed mid-thread resumes it."""

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
from corral.apps.data_agent._thread import turns
from corral.apps.data_agent.errors import DataAgentError
from corral.durable import Runtime
from corral.models import Message, ScriptedModel, SystemMessage, ToolDefinition, UserMessage

from .conftest import ROOT, InProcessRunner


class Recorder:
    """A scripted model that writes SQL by the question's last words and keeps every query-writing prompt."""

    def __init__(self) -> None:
        self.prompts: list[str] = []
        self.model = ScriptedModel(self.reply)

    def reply(self, messages: Sequence[Message], tools: Sequence[ToolDefinition]) -> str:
        system = messages[0].content if isinstance(messages[0], SystemMessage) else ""
        if system.startswith("You check whether"):
            return '{"reason": "fits", "verdict": "pass"}'
        settings = self.model.calls[-1].settings
        if settings is not None and settings.seed is not None:
            return "no alternative"  # a vote's candidate: none joins
        user = messages[-1].content if isinstance(messages[-1], UserMessage) else ""
        self.prompts.append(user)
        question = user.rsplit("Question:", 1)[-1]
        if "by country" in question:
            return (
                "```sql\nSELECT Country, COUNT(*) AS n FROM Customer WHERE Country = 'Brazil' "
                "GROUP BY Country\n```"
            )
        if "only Brazil" in question:
            return "```sql\nSELECT COUNT(*) AS n FROM Customer WHERE Country = 'Brazil'\n```"
        return "```sql\nSELECT COUNT(*) AS n FROM Customer\n```"


@pytest.fixture
def recorder(monkeypatch: pytest.MonkeyPatch) -> Recorder:
    rec = Recorder()
    monkeypatch.setattr(_run, "make_runner", InProcessRunner)
    monkeypatch.setattr(_run, "make_model", lambda name: rec.model)
    monkeypatch.setattr(_run, "_models", {})
    return rec


async def test_a_follow_up_sees_the_previous_question_sql_and_rows(
    recorder: Recorder, chinook: Path, tmp_path: Path
) -> None:
    rt = Runtime.open(tmp_path / "journal.sqlite")
    try:
        first = await _run.ask("How many customers are there?", db=str(chinook), runtime=rt, thread="t")
        second = await _run.ask("only Brazil", db=str(chinook), runtime=rt, thread="t")
        assert [r.run_id for r in turns(rt.journal, "t")] == ["t.1", "t.2"]
    finally:
        rt.close()
    assert (first.run_id, first.rows) == ("t.1", [[59]])
    assert (second.run_id, second.rows) == ("t.2", [[5]])
    assert "Previous question" not in recorder.prompts[0]
    follow_up = recorder.prompts[-1]
    assert "Previous question: How many customers are there?" in follow_up
    assert "SELECT COUNT(*) AS n FROM Customer\n" in follow_up
    assert "n\n59" in follow_up  # its result's head and first row
    assert follow_up.rstrip().endswith(
        "Question: only Brazil (a follow-up to the previous question: How many customers are there?)"
    )


async def test_a_thread_name_becomes_run_ids_so_it_is_checked(recorder: Recorder, chinook: Path) -> None:
    with pytest.raises(DataAgentError, match="thread name"):
        await _run.ask("Anything?", db=str(chinook), runtime=Runtime(), thread="../x")
    with pytest.raises(DataAgentError, match="not both"):
        await _run.ask("Anything?", db=str(chinook), runtime=Runtime(), thread="t", run_id="r")


@pytest.mark.slow
def test_a_thread_killed_mid_follow_up_resumes_it_then_goes_on(
    recorder: Recorder, chinook: Path, tmp_path: Path
) -> None:
    journal, marker = tmp_path / "journal.sqlite", tmp_path / "marker"
    child = subprocess.Popen(
        [sys.executable, "-m", "apps.data_agent._thread_child", str(journal), str(chinook), str(marker)],
        cwd=ROOT / "tests",
        env={**os.environ, "PYTHONPATH": str(ROOT / "tests")},
    )
    try:
        deadline = time.monotonic() + 60
        while not marker.exists():
            assert child.poll() is None, "the child ended before the follow-up"
            assert time.monotonic() < deadline, "the child never reached the follow-up"
            time.sleep(0.05)
        child.send_signal(signal.SIGKILL)
        child.wait(10)
    finally:
        if child.poll() is None:
            child.kill()

    rt = Runtime.open(journal)
    try:
        runs = turns(rt.journal, "t")
        assert [(r.run_id, r.status.is_final) for r in runs] == [("t.1", True), ("t.2", False)]
        # The next question of the thread: the killed follow-up is resumed first, then this one follows it.
        third = asyncio.run(_run.ask("and by country?", db=str(chinook), runtime=rt, thread="t"))
        second = Answer.model_validate(rt.result("t.2"))
    finally:
        rt.close()
    assert second.rows == [[5]] and second.sql is not None and "Brazil" in second.sql
    assert third.run_id == "t.3" and third.rows == [["Brazil", 5]]
    # Nothing of the first question ran again: the only prompts are the follow-up's (resumed, with the
    # first question as its context, from the journal) and the third's (with the follow-up as its own).
    assert len(recorder.prompts) == 2
    assert "Previous question: How many customers are there?" in recorder.prompts[0]
    assert "Previous question: only Brazil" in recorder.prompts[1]


def test_corral_chat_follows_up_line_by_line(recorder: Recorder, chinook: Path, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from corral.apps.cli import app

    result = CliRunner().invoke(
        app,
        ["chat", "--db", str(chinook), "--thread", "c", "--quiet", "--no-judge"],
        input="How many customers are there?\nonly Brazil\nexit\n",
        env={"CORRAL_JOURNAL": str(tmp_path / "journal.sqlite")},
    )
    assert result.exit_code == 0, result.output
    assert "59" in result.output and "WHERE Country = 'Brazil'" in result.output
    assert "run c.2" in result.output
    assert "Previous question: How many customers are there?" in recorder.prompts[-1]


@pytest.mark.sandbox
async def test_a_follow_up_over_files_sees_the_previous_pandas_code(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    sales = tmp_path / "sales.csv"
    sales.write_text("region,units\nnorth,1\nsouth,2\nnorth,3\n")
    prompts: list[str] = []

    def reply(messages: Sequence[Message], tools: Sequence[ToolDefinition]) -> str:
        system = messages[0].content if isinstance(messages[0], SystemMessage) else ""
        if system.startswith("You check whether"):
            return '{"reason": "fits", "verdict": "pass"}'
        user = str(messages[-1].content)
        prompts.append(user)
        if "only north" in user.rsplit("Question:", 1)[-1]:
            return "```python\nresult = df[df.region == 'north'].units.sum()\n```"
        return "```python\nresult = df.units.sum()\n```"

    monkeypatch.setattr(_run, "make_model", lambda name: ScriptedModel(reply))
    monkeypatch.setattr(_run, "_models", {})
    rt = Runtime.open(tmp_path / "journal.sqlite")
    try:
        first = await _run.ask("How many units in total?", files=[sales], runtime=rt, thread="p", judge=False)
        second = await _run.ask("only north", files=[sales], runtime=rt, thread="p", judge=False)
    finally:
        rt.close()
    assert (first.code, first.rows) == ("result = df.units.sum()", [[6]])
    assert second.rows == [[4]] and second.sql is None
    follow_up = prompts[-1]
    assert "Previous question: How many units in total?" in follow_up
    assert "Its code:\n```python\nresult = df.units.sum()\n```" in follow_up
    assert "start from that code" in follow_up
