"""Where a question's time goes, read back from its journaled steps."""

from __future__ import annotations

from pathlib import Path

import pytest

from corral.apps.data_agent import _run
from corral.apps.data_agent._timings import Warmup, render, run_timings, warm_up
from corral.durable import Runtime
from corral.models import ScriptedModel, Usage

from .conftest import InProcessRunner, routed_model


async def test_every_model_call_and_query_has_its_time(
    chinook: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A grouped result: the judge reads it (a single aggregate value would be skipped).
    per_genre = (
        "SELECT g.Name, COUNT(*) AS n FROM Track t JOIN Genre g ON g.GenreId = t.GenreId GROUP BY g.Name"
    )
    model = routed_model([f"```sql\n{per_genre}\n```"])
    monkeypatch.setattr(_run, "make_runner", InProcessRunner)
    monkeypatch.setattr(_run, "make_model", lambda name: model)
    monkeypatch.setattr(_run, "_models", {})
    rt = Runtime.open(tmp_path / "journal.sqlite")
    try:
        answer = await _run.ask("How many tracks are in each genre?", db=str(chinook), runtime=rt)
        timings = run_timings(rt.journal, answer.run_id, Warmup(model_load_s=1.5))
    finally:
        rt.close()
    names = [s.name for s in timings.steps]
    assert "schema" in names
    assert names.count("query") == 1
    calls = [n for n in names if n.startswith("model:")]
    assert len(calls) >= 2 and set(calls) == {f"model:{model.name}"}  # the writer, then the judge's votes
    assert not any(n.startswith(("node:", "workflow:")) for n in names)
    assert all(s.seconds >= 0 for s in timings.steps)
    assert timings.run_s >= sum(s.seconds for s in timings.steps) * 0.99
    writer = next(s for s in timings.steps if s.name.startswith("model:"))
    assert writer.input_tokens > 0  # the recorded usage is read back
    lines = render(timings)
    assert lines[0].startswith("warm-up: model load 1.50 s")
    assert lines[-1].startswith(f"run {timings.run_s:.2f} s: model calls")


def test_a_model_without_weights_to_load_warms_up_in_no_time() -> None:
    warmup = warm_up(ScriptedModel(["hi"]), sandbox=False)
    assert warmup == Warmup()


def test_usage_adds_the_cache_and_phase_figures() -> None:
    a = Usage(requests=1, input_tokens=10, cached_tokens=8, prompt_s=0.5, generation_s=1.0)
    b = Usage(requests=1, input_tokens=5, cached_tokens=1, prompt_s=0.25, generation_s=0.5)
    total = a + b
    assert (total.cached_tokens, total.prompt_s, total.generation_s) == (9, 0.75, 1.5)


def test_corral_ask_timings_prints_the_breakdown(
    chinook: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from typer.testing import CliRunner

    from corral.apps.cli import app

    model = routed_model(["```sql\nSELECT COUNT(*) AS n FROM Genre\n```"])
    monkeypatch.setattr(_run, "make_runner", InProcessRunner)
    monkeypatch.setattr(_run, "make_model", lambda name: model)
    monkeypatch.setattr(_run, "_models", {})
    monkeypatch.setenv("CORRAL_JOURNAL", str(tmp_path / "journal.sqlite"))
    result = CliRunner().invoke(
        app, ["ask", "How many genres are there?", "--db", str(chinook), "--timings", "--quiet"]
    )
    assert result.exit_code == 0, result.output
    assert "warm-up: model load 0.00 s, sandbox pool start 0.00 s" in result.output
    assert "query " in result.output and f"model:{model.name}" in result.output
