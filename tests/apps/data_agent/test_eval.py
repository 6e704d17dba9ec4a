"""Question sets and execution accuracy: the scoring rules, the Chinook set, the DABench loader."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest

from corral.apps.data_agent import Answer, EvalSetError
from corral.apps.data_agent._eval import dabench_match, load_dabench, load_eval_set, results_match, score

from .conftest import ROOT

DABENCH = ROOT.parent / "shared" / "data" / "dabench-dev"


def test_result_sets_compare_as_multisets_with_float_tolerance_and_no_column_names() -> None:
    gold = [["Rock", 1297], ["Jazz", 130]]
    assert results_match(gold, [["Jazz", 130.0], ["Rock", 1297]], ordered=False)
    assert results_match(gold, [[1297, "Rock", 1], [130, "Jazz", 6]], ordered=False)  # permuted, extra column
    assert not results_match(gold, [["Rock", 1297]], ordered=False)  # a row missing
    assert not results_match(gold, [["Rock", 1297], ["Jazz", 131]], ordered=False)  # a wrong value
    assert not results_match(gold, [["Jazz", 130], ["Rock", 1297]], ordered=True)  # order asked for
    assert results_match([[2328.600000000004]], [[2328.6]], ordered=False)
    assert not results_match([[1, 2]], [[1]], ordered=False)  # a gold column missing


def test_the_chinook_set_is_well_formed_and_its_gold_sql_runs() -> None:
    questions = load_eval_set(ROOT / "evals" / "chinook.jsonl")
    assert len(questions) == 40
    levels = {q.difficulty for q in questions}
    assert levels == {"easy", "medium", "hard"}
    assert sum(q.unanswerable for q in questions) == 5
    conn = sqlite3.connect(ROOT / "examples" / "chinook" / "chinook.sqlite")
    try:
        for q in questions:
            assert q.db is not None and Path(q.db).is_file()
            if q.gold_sql is not None:
                assert conn.execute(q.gold_sql).fetchall(), f"{q.id}: gold SQL returns nothing"
    finally:
        conn.close()


def test_the_clinic_set_matches_a_fresh_build_of_its_database(tmp_path: Path) -> None:
    # The second dev set: its database is rebuilt from the script, and the gold SQL runs on both copies alike.
    import runpy

    questions = load_eval_set(ROOT / "evals" / "clinic.jsonl")
    assert len(questions) == 23 and sum(q.unanswerable for q in questions) == 6
    fresh = tmp_path / "clinic.sqlite"
    runpy.run_path(str(ROOT / "evals" / "build_clinic.py"))["build"](fresh)
    stored, built = sqlite3.connect(ROOT / "evals" / "clinic.sqlite"), sqlite3.connect(fresh)
    try:
        for q in questions:
            if q.gold_sql is not None:
                rows = built.execute(q.gold_sql).fetchall()
                assert rows, f"{q.id}: gold SQL returns nothing"
                assert rows == stored.execute(q.gold_sql).fetchall(), f"{q.id}: rebuild evals/clinic.sqlite"
    finally:
        stored.close()
        built.close()


def test_a_malformed_set_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text(json.dumps({"id": "x", "question": "?"}) + "\n")
    with pytest.raises(EvalSetError, match=r"bad.jsonl:1: x needs gold_sql"):
        load_eval_set(path)


def test_unanswerable_questions_count_only_when_declined() -> None:
    from corral.apps.data_agent._eval import EvalQuestion

    q = EvalQuestion(id="u", question="salary?", gold="cannot_answer")
    assert score(q, Answer(status="cannot_answer", answer="no salary data"), None)
    assert not score(q, Answer(status="answered", answer="42", rows=[[42]]), None)


@pytest.mark.skipif(not DABENCH.is_dir(), reason="the shared DABench dev set is not here")
def test_dabench_loads_with_gold_answers_and_files() -> None:
    questions = load_dabench(DABENCH)
    assert len(questions) == 257
    first = questions[0]
    assert first.id == "dabench-0" and first.gold_answers == [["mean_fare", "34.65"]]
    assert (
        "@mean_fare" in first.hint and "@mean_fare" not in first.question and Path(first.files[0]).is_file()
    )
    assert all(q.gold_answers for q in questions)


def test_dabench_answers_match_at_the_gold_precision() -> None:
    gold = [["mean_fare", "34.65"]]
    assert dabench_match(gold, Answer(status="answered", answer="x", rows=[[34.6542]]))
    assert dabench_match(gold, Answer(status="answered", answer="@mean_fare[34.65]"))
    assert not dabench_match(gold, Answer(status="answered", answer="x", rows=[[34.7]]))
    two = [["a", "1.5"], ["b", "male"]]
    assert dabench_match(two, Answer(status="answered", answer="", rows=[["Male", 1.52]]))


def test_the_judges_verdicts_are_scored_against_the_gold() -> None:
    from corral.apps.data_agent._eval import EvalQuestion, EvalReport, QuestionOutcome, judged_results
    from corral.apps.data_agent._judgement import Judgement

    q = EvalQuestion(id="q", question="How many?", gold_sql="SELECT 3")
    right, wrong = [[3]], [[4]]
    answer = Answer(
        status="answered",
        answer="n: 4",
        rows=wrong,
        judgements=[
            Judgement(verdict="fail", reason="?", rows=right, columns=["n"], row_count=1),  # a false fail
            Judgement(verdict="pass", reason="ok", rows=wrong, columns=["n"], row_count=1),  # missed
        ],
    )
    judged = judged_results(q, answer, right)
    assert [(j.verdict, j.correct) for j in judged] == [("fail", True), ("pass", False)]
    report = EvalReport(system="agent", model="m")
    outcome = {"difficulty": "easy", "status": "answered", "seconds": 1.0}
    report.outcomes = [
        QuestionOutcome(id="q", correct=False, correct_before_judge=True, judgements=judged, **outcome),
        QuestionOutcome(
            id="r",
            correct=True,
            correct_before_judge=True,
            judgements=[
                judged_results(q, answer.model_copy(update={"judgements": [answer.judgements[0]]}), right)[0]
            ],
            **outcome,
        ),
    ]
    figures = report.judge_figures()
    assert (figures.judged, figures.fails, figures.false_fails, figures.missed) == (3, 2, 2, 1)
    assert figures.false_fail_rate == 1.0 and figures.accuracy_before_judge == 1.0
    assert report.to_json()["judge"]["false_fails"] == 2


def test_the_report_gives_refusal_recall_false_refusals_and_p90() -> None:
    from corral.apps.data_agent._eval import EvalReport, QuestionOutcome

    def outcome(i: int, status: str, *, unanswerable: bool, seconds: float) -> QuestionOutcome:
        correct = (status == "cannot_answer") == unanswerable
        return QuestionOutcome(
            id=f"q{i}",
            difficulty="easy",
            correct=correct,
            status=status,
            seconds=seconds,
            unanswerable=unanswerable,
        )

    report = EvalReport(system="agent", model="m")
    report.outcomes = [
        outcome(1, "cannot_answer", unanswerable=True, seconds=1.0),
        outcome(2, "answered", unanswerable=True, seconds=2.0),
        outcome(3, "cannot_answer", unanswerable=True, seconds=3.0),
        *(outcome(i, "answered", unanswerable=False, seconds=float(i)) for i in range(4, 12)),
        outcome(12, "cannot_answer", unanswerable=False, seconds=20.0),
    ]
    data = report.to_json()
    assert data["unanswerable"] == 3
    assert data["refusal_recall"] == pytest.approx(2 / 3)
    assert data["false_refusal_rate"] == pytest.approx(1 / 9)
    assert data["p90_seconds"] == 11.0  # nearest rank: the 11th of 12 sorted times
    assert EvalReport(system="agent", model="m").refusal_recall() is None
