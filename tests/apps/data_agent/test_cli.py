"""`corral ask` and `corral eval` end to end, with a scripted model and the test runner plugged in."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from corral.apps.cli import app
from corral.apps.data_agent import CONTRACT_KEYS, _run
from corral.durable import Runtime
from corral.models import Model, ScriptedModel

from .conftest import InProcessRunner, routed_model


@pytest.fixture
def plugged(monkeypatch: pytest.MonkeyPatch) -> dict[str, Model]:
    """Replace the sandbox runner and the model factory (tests only); returns the models built."""
    built: dict[str, Model] = {}
    monkeypatch.setattr(_run, "make_runner", InProcessRunner)
    monkeypatch.setattr(_run, "_models", {})
    return built


def _use_model(monkeypatch: pytest.MonkeyPatch, model: ScriptedModel) -> None:
    monkeypatch.setattr(_run, "make_model", lambda name: model)


def test_ask_json_prints_exactly_the_contract(
    plugged: dict[str, Model], monkeypatch: pytest.MonkeyPatch, chinook: Path
) -> None:
    _use_model(monkeypatch, routed_model(["```sql\nSELECT COUNT(*) AS n FROM Artist\n```"]))
    result = CliRunner().invoke(app, ["ask", "How many artists are there?", "--db", str(chinook), "--json"])
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout.strip().splitlines()[-1])
    assert tuple(out) == CONTRACT_KEYS
    assert out["status"] == "answered" and out["rows"] == [[275]] and out["columns"] == ["n"]
    assert out["sql"] == "SELECT COUNT(*) AS n FROM Artist"
    # One model call: the judge is skipped on one value computed by an aggregate.
    assert out["run_id"] and out["usage"]["requests"] == 1
    # The question ran as a durable run: its model calls and query are journaled steps.
    rt = Runtime()
    names = [s.name for s in rt.steps(out["run_id"])]
    rt.close()
    assert names[:3] == ["workflow:data-agent", "now", "schema"]
    assert "query" in names and "model:scripted" in names and names[-1] == "node:finish"


def test_ask_shows_steps_and_the_table(
    plugged: dict[str, Model], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    a, b = tmp_path / "orders.csv", tmp_path / "customers.csv"
    a.write_text("customer_id,amount\n1,5\n1,7\n2,1\n")
    b.write_text("customer_id,name\n1,Ada\n2,Bob\n")
    sql = (
        "SELECT c.name, SUM(o.amount) AS total FROM orders o JOIN customers c "
        "ON o.customer_id = c.customer_id GROUP BY c.name ORDER BY total DESC"
    )
    _use_model(monkeypatch, routed_model([f"```sql\n{sql}\n```"]))
    result = CliRunner().invoke(
        app,
        [
            "ask",
            "Total amount per customer",
            "--files",
            str(a),
            str(b),
            "--language",
            "sql",
            "--chart-dir",
            str(tmp_path),
        ],
    )
    assert result.exit_code == 0, result.output
    assert "answered" in result.stdout and "Ada" in result.stdout and "12" in result.stdout
    assert "schema" in result.stderr and "query" in result.stderr and "judge" in result.stderr


def test_ask_with_an_unusable_source_is_a_clear_error(plugged: dict[str, Model], tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["ask", "Anything?", "--db", str(tmp_path / "nope.sqlite"), "--json"])
    assert result.exit_code == 2
    out = json.loads(result.stdout.strip().splitlines()[-1])
    assert out["status"] == "failed" and "no such file" in out["answer"]


def test_eval_prints_accuracy_by_difficulty_and_writes_a_report(
    plugged: dict[str, Model], monkeypatch: pytest.MonkeyPatch, chinook: Path, tmp_path: Path
) -> None:
    questions = [
        {"id": "q1", "question": "How many artists?", "difficulty": "easy", "db": str(chinook),
         "gold_sql": "SELECT COUNT(*) FROM Artist"},
        {"id": "q2", "question": "How many albums?", "difficulty": "medium", "db": str(chinook),
         "gold_sql": "SELECT COUNT(*) FROM Album"},
        {"id": "q3", "question": "Average salary?", "difficulty": "hard", "db": str(chinook),
         "gold": "cannot_answer"},
    ]  # fmt: skip
    path = tmp_path / "set.jsonl"
    path.write_text("".join(json.dumps(q) + "\n" for q in questions))
    # Right, wrong (counts tracks instead of albums), and a correct refusal.
    _use_model(
        monkeypatch,
        routed_model(
            [
                "```sql\nSELECT COUNT(*) FROM Artist\n```",
                "```sql\nSELECT COUNT(*) FROM Track\n```",
                "CANNOT_ANSWER: no salary column",
            ]
        ),
    )
    out = tmp_path / "report.json"
    result = CliRunner().invoke(app, ["eval", str(path), "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "execution accuracy" in result.stdout and "67%" in result.stdout
    report = json.loads(out.read_text())
    assert report["accuracy_by_difficulty"] == {"easy": 1.0, "medium": 0.0, "hard": 1.0}
    assert [o["correct"] for o in report["outcomes"]] == [True, False, True]
    assert report["median_seconds"] >= 0
