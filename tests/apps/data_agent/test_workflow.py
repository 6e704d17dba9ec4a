"""The data agent on the framework: its workflow graph, approvals on the Agent's path, the journaled clock,
statements split by sqlglot."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from corral.apps.cli import app
from corral.apps.data_agent import DataAgent, _run, extract_sql, open_source
from corral.apps.data_agent._loop import data_workflow
from corral.durable import FakeClock, MemoryJournal, Runtime, SqliteJournal
from corral.guards import ApprovalDecision, ApprovalRequest, Guards
from corral.models import Message, ScriptedModel, ToolDefinition, UserMessage

from .conftest import InProcessRunner, WritableRunner, routed_model


def _fence(sql: str) -> str:
    return f"```sql\n{sql}\n```"


def test_the_data_agents_workflow_passes_its_checks_with_a_bounded_loop() -> None:
    report = data_workflow(4, 2).check()
    assert report.ok, report.describe()
    # Four writes at most (max_attempts 3 + one judge retry): the loop's bound, and so every node's.
    assert report.visits["write"] == 4
    assert report.worst.model_calls is not None and report.worst.tokens is None


def test_cli_draws_the_data_agents_graph() -> None:
    shown = CliRunner().invoke(app, ["graph", "show", "corral.apps.data_agent._loop:workflow"])
    assert shown.exit_code == 0, shown.output
    assert "write: write (≤4)" in shown.output and "check --> approve" in shown.output
    checked = CliRunner().invoke(app, ["graph", "check", "corral.apps.data_agent._loop:workflow"])
    assert checked.exit_code == 0 and "workflow data-agent: ok" in checked.output


async def test_a_question_journals_its_path_through_the_graph(chinook_runner: InProcessRunner) -> None:
    journal = MemoryJournal()
    model = routed_model([_fence("SELECT Name FROM Artist LIMIT 0"), _fence("SELECT COUNT(*) FROM Artist")])
    answer = await DataAgent(model=model, runner=chinook_runner).ask(
        "How many artists are there?", runtime=Runtime(journal), run_id="q1"
    )
    assert answer.status == "answered" and answer.rows == [[275]]
    nodes = [s.name for s in journal.load_steps("q1") if s.name.startswith("node:")]
    # The first query returned nothing (a blocking finding): the loop went round once.
    assert nodes == [
        "node:prepare",
        "node:write",
        "node:check",
        "node:run",
        "node:review",
        "node:write",
        "node:check",
        "node:run",
        "node:review",
        "node:finish",
    ]


def test_runs_show_graph_draws_a_questions_path(
    chinook: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_run, "make_runner", InProcessRunner)
    monkeypatch.setattr(_run, "make_model", lambda name: routed_model([_fence("SELECT COUNT(*) FROM Genre")]))
    monkeypatch.setattr(_run, "_models", {})
    journal = tmp_path / "journal.sqlite"
    rt = Runtime(SqliteJournal(journal))
    asyncio.run(_run.ask("How many genres?", db=str(chinook), runtime=rt, run_id="g1"))
    drawn = CliRunner().invoke(app, ["runs", "show", "g1", "--graph", "--journal", str(journal)])
    assert drawn.exit_code == 0, drawn.output
    assert "  prepare --> write: 1×" in drawn.output and "  finish --> [*]: 1×" in drawn.output
    assert "%% path: prepare → write → check → run → review → finish → end" in drawn.output


# -- statements are split by sqlglot's tokenizer, not at every ";" -------------------------------------------
def test_a_semicolon_inside_a_string_literal_does_not_cut_the_query() -> None:
    reply = "```sql\nSELECT COUNT(*) FROM Track WHERE Composer LIKE '%;%';\n```"
    assert extract_sql(reply, dialect="sqlite") == "SELECT COUNT(*) FROM Track WHERE Composer LIKE '%;%'"
    unfenced = "SELECT Name FROM Artist WHERE Name = 'AC;DC'; DROP TABLE Artist"
    assert extract_sql(unfenced) == "SELECT Name FROM Artist WHERE Name = 'AC;DC'"


async def test_a_query_with_a_semicolon_in_a_literal_runs_whole(chinook_runner: InProcessRunner) -> None:
    sql = "SELECT COUNT(*) AS n FROM Track WHERE Name <> 'a;b'"
    answer = await DataAgent(model=routed_model([_fence(sql + ";")]), runner=chinook_runner).ask(
        "How many tracks are not named a;b?"
    )
    assert answer.sql == sql and answer.rows == [[3503]]
    assert chinook_runner.queries[0] == sql


# -- budgets on the journaled clock -------------------------------------------------------------------------
def test_the_time_budget_is_checked_on_the_runs_journaled_clock(chinook: Path) -> None:
    clock = FakeClock(1_000.0)

    def slow(messages: list[Message], tools: list[ToolDefinition]) -> str:
        clock.advance(40.0)  # each model call takes 40 s by the run's clock
        return _fence("SELECT nope FROM Album")

    runner = InProcessRunner(open_source(str(chinook)))
    agent = DataAgent(model=ScriptedModel(slow), runner=runner, guards=Guards(max_wall_s=70))
    journal = MemoryJournal()
    answer = asyncio.run(
        agent.ask("How many albums?", runtime=Runtime(journal, clock=clock, lease_seconds=1e6), run_id="t1")
    )
    # Calls start at 0 s and 40 s; the third would start at 80 s, past the 70 s budget.
    assert answer.status == "failed" and "time_budget" in answer.answer
    assert answer.usage.requests == 2
    # The budget read the journaled end of the last step, not a clock row per call.
    assert [s.name for s in journal.load_steps("t1")].count("now") == 1


# -- approvals through the Agent's path ----------------------------------------------------------------------
async def test_an_approval_held_open_longer_than_the_lease_keeps_the_lease(chinook: Path) -> None:
    """A person who takes their time with an in-process approver (a sync approver blocking for 1 s, with a
    0.3 s lease) must not cost the run its lease: the approver runs off the event loop, so the renewals
    go on."""
    seen: list[ApprovalRequest] = []

    def slow_person(request: ApprovalRequest) -> ApprovalDecision:
        seen.append(request)
        time.sleep(1.0)
        return ApprovalDecision(approved=True, reason="looked fine", by="a slow person")

    delete = _fence("DELETE FROM Genre WHERE Name = 'Opera'")
    rt = Runtime(MemoryJournal(), lease_seconds=0.3)
    agent = DataAgent(
        model=routed_model([delete]), runner=WritableRunner(open_source(str(chinook))), approver=slow_person
    )
    answer = await agent.ask("Delete the opera genre", runtime=rt, run_id="w1")
    assert seen and answer.status == "answered", answer.answer
    assert "approved by a slow person" in answer.answer
    assert rt.get_run("w1").status.value == "completed"
    conn = sqlite3.connect(chinook)
    try:
        assert conn.execute("SELECT COUNT(*) FROM Genre WHERE Name = 'Opera'").fetchone() == (0,)
    finally:
        conn.close()


async def test_a_refused_write_is_recorded_and_not_asked_again_on_resume(chinook: Path) -> None:
    asked: list[Any] = []

    def deny(request: ApprovalRequest) -> ApprovalDecision:
        asked.append(request)
        return ApprovalDecision(approved=False, reason="not today", by="ops")

    journal = MemoryJournal()
    replies = [_fence("DELETE FROM Genre"), _fence("SELECT COUNT(*) AS n FROM Genre")]
    model = routed_model(replies)
    agent = DataAgent(model=model, runner=WritableRunner(open_source(str(chinook))), approver=deny)
    first = await agent.ask("Delete every genre", runtime=Runtime(journal), run_id="d1")
    # The refusal's reason went back to the model, which answered without writing.
    assert first.status == "answered" and first.rows == [[25]]
    feedback = [m.content for m in model.calls[-1].messages if isinstance(m, UserMessage)][-1]
    assert "the DELETE statement was refused: not today" in feedback
    names = [s.name for s in journal.load_steps("d1")]
    assert "approval:sql_write" in names and "node:approve" in names
    again = await DataAgent(
        model=routed_model(replies), runner=WritableRunner(open_source(str(chinook))), approver=deny
    ).ask("Delete every genre", runtime=Runtime(journal), run_id="d1")
    assert again == first and len(asked) == 1


def test_the_data_agents_modules_import_each_other_without_a_cycle() -> None:
    """Not even a type-only one: each module's imports (TYPE_CHECKING ones included) point one way."""
    import ast

    package = Path(__file__).resolve().parents[3] / "src" / "corral" / "apps" / "data_agent"
    edges: dict[str, set[str]] = {}
    for path in package.glob("_*.py"):
        found: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.module == "corral.apps.data_agent":
                found |= {alias.name for alias in node.names if alias.name.startswith("_")}
            elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith(
                "corral.apps.data_agent._"
            ):
                found.add((node.module or "").rsplit(".", 1)[1])
        edges[path.stem] = found - {path.stem}

    def cycle_from(start: str, at: str, seen: list[str]) -> list[str] | None:
        for nxt in sorted(edges.get(at, ())):
            if nxt == start:
                return [*seen, nxt]
            if nxt not in seen:
                found = cycle_from(start, nxt, [*seen, nxt])
                if found:
                    return found
        return None

    cycles = [c for name in sorted(edges) if (c := cycle_from(name, name, [name]))]
    assert not cycles, f"import cycles: {cycles[0]}"
