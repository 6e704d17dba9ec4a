"""Evaluation: question sets, execution accuracy, and the report ``corral eval`` prints.

A question set is JSONL, one question a line::

    {"id": "chinook-01", "question": "How many tracks are there?", "difficulty": "easy",
     "db": "../examples/chinook/chinook.sqlite", "gold_sql": "SELECT COUNT(*) FROM Track"}

``db`` (or ``files``, a list) is relative to the JSONL file. ``gold_sql`` is run on the same source to get the
gold result; ``"gold": "cannot_answer"`` marks a question the data cannot answer; ``"ordered": true`` makes
row order count. The DABench dev set (closed-form ``@name[value]`` answers over CSV files) loads with
:func:`load_dabench`.

Execution accuracy: a prediction is correct when its result set equals the gold result set — rows compared as
a multiset unless the question is ordered, values compared with a float tolerance, column names ignored, and
extra columns in the prediction allowed (the gold columns must be found among the prediction's, in any
order). An unanswerable question is correct only with status ``cannot_answer``.

>>> results_match([[1, "a"], [2, "b"]], [["b", 2.0000001, 9], ["a", 1, 9]], ordered=False)
True
>>> results_match([[1], [2]], [[2], [1]], ordered=True)
False
"""

from __future__ import annotations

import json
import math
import re
import statistics
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from itertools import permutations
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field, ValidationError

from corral.apps.data_agent._answer import Answer, prose_answer
from corral.apps.data_agent.errors import EvalSetError

Difficulty = Literal["easy", "medium", "hard"]


class EvalQuestion(BaseModel):
    """One question of a set; paths are absolute once loaded."""

    id: str
    question: str
    difficulty: Difficulty = "medium"
    db: str | None = None
    files: list[str] = Field(default_factory=list)
    gold_sql: str | None = None
    gold: Literal["cannot_answer"] | None = None
    ordered: bool = False
    #: DABench: ``[[name, value], ...]`` expected in the answer.
    gold_answers: list[list[str]] = Field(default_factory=list)
    hint: str = ""

    @property
    def unanswerable(self) -> bool:
        return self.gold == "cannot_answer"


def load_eval_set(path: str | Path, *, limit: int | None = None) -> list[EvalQuestion]:
    """Read a JSONL question set; ``db``/``files`` are resolved against the file's directory."""
    p = Path(path)
    if p.is_dir() and (p / "da-dev-questions.jsonl").is_file():
        return load_dabench(p, limit=limit)
    out: list[EvalQuestion] = []
    try:
        lines = p.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise EvalSetError(f"{p}: cannot read the question set: {exc}") from exc
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            q = EvalQuestion.model_validate(json.loads(line))
        except (ValueError, ValidationError) as exc:
            raise EvalSetError(f"{p}:{number}: not a valid question: {exc}") from exc
        if q.gold_sql is None and not q.unanswerable and not q.gold_answers:
            raise EvalSetError(f"{p}:{number}: {q.id} needs gold_sql, gold_answers or gold='cannot_answer'")
        updates: dict[str, Any] = {}
        if q.db is not None and "://" not in q.db:
            updates["db"] = str((p.parent / q.db).resolve())
        if q.files:
            updates["files"] = [str((p.parent / f).resolve()) for f in q.files]
        out.append(q.model_copy(update=updates))
        if limit is not None and len(out) >= limit:
            break
    return out


def load_dabench(directory: str | Path, *, limit: int | None = None) -> list[EvalQuestion]:
    """The InfiAgent-DABench dev set: questions over CSV files with ``@name[value]`` answers.

    The question and its constraints make the question text; the answer format goes to ``hint`` (the agent
    answers with a query, scored from its result); the gold answers come from ``da-dev-labels.jsonl``.
    """
    d = Path(directory)
    labels: dict[int, list[list[str]]] = {}
    for line in (d / "da-dev-labels.jsonl").read_text(encoding="utf-8").splitlines():
        if line.strip():
            item = json.loads(line)
            labels[int(item["id"])] = [[str(n), str(v)] for n, v in item["common_answers"]]
    out = []
    for line in (d / "da-dev-questions.jsonl").read_text(encoding="utf-8").splitlines():
        if not line.strip():
            continue
        item = json.loads(line)
        # The answer format (@name[value]) stays out of the question: asked for it, a small model writes the
        # answer instead of a query. Scoring reads the values from the result (see dabench_match).
        text = f"{item['question']}\nConstraints: {item['constraints']}"
        level = item.get("level", "medium")
        out.append(
            EvalQuestion(
                id=f"dabench-{item['id']}",
                question=text,
                difficulty=level if level in ("easy", "medium", "hard") else "medium",
                files=[str((d / "da-dev-tables" / item["file_name"]).resolve())],
                gold_answers=labels.get(int(item["id"]), []),
                hint=str(item["format"]),
            )
        )
        if limit is not None and len(out) >= limit:
            break
    return out


# --- comparing results --------------------------------------------------------------------------------


def _norm(value: Any) -> Any:
    """Numbers become floats rounded to 6 significant digits (so 1 == 1.0 and float noise vanishes); text is
    stripped; everything else becomes its text."""
    if isinstance(value, bool):
        return float(value)
    if isinstance(value, int | float):
        f = float(value)
        if math.isnan(f):
            return None
        return float(f"{f:.6g}")
    if isinstance(value, str):
        s = value.strip()
        try:
            return float(f"{float(s):.6g}") if re.fullmatch(r"-?\d+(\.\d+)?", s) else s
        except ValueError:
            return s
    if value is None:
        return None
    return str(value)


def _column(rows: Sequence[Sequence[Any]], i: int) -> list[Any]:
    return [_norm(r[i]) if i < len(r) else None for r in rows]


def results_match(
    gold: Sequence[Sequence[Any]], pred: Sequence[Sequence[Any]], *, ordered: bool = False
) -> bool:
    """Whether ``pred`` holds the gold result (see the module docstring for the rules)."""
    if len(gold) != len(pred):
        return False
    if not gold:
        return True
    n_gold = max(len(r) for r in gold)
    n_pred = max(len(r) for r in pred)
    if n_pred < n_gold:
        return False
    gold_cols = [_column(gold, i) for i in range(n_gold)]
    pred_cols = [_column(pred, j) for j in range(n_pred)]
    # Candidate prediction columns for each gold column: same values (as a multiset, or in order).
    candidates = []
    for g in gold_cols:
        key = g if ordered else sorted(g, key=repr)
        cands = [j for j, p in enumerate(pred_cols) if (p if ordered else sorted(p, key=repr)) == key]
        if not cands:
            return False
        candidates.append(cands)
    gold_rows = [tuple(c[i] for c in gold_cols) for i in range(len(gold))]
    tried = 0
    for choice in permutations(range(n_pred), n_gold):
        if any(choice[k] not in candidates[k] for k in range(n_gold)):
            continue
        tried += 1
        pred_rows = [tuple(pred_cols[j][i] for j in choice) for i in range(len(pred))]
        if (pred_rows == gold_rows) if ordered else (Counter(pred_rows) == Counter(gold_rows)):
            return True
        if tried > 200:
            break
    return False


_AT = re.compile(r"@(\w+)\[([^\]]*)\]")


def dabench_match(gold_answers: list[list[str]], answer: Answer) -> bool:
    """A DABench question is correct when every ``@name[value]`` gold value is found in the answer: in an
    ``@name[value]`` of the answer's text, else among the result's first row (numbers compared at the
    gold's precision)."""
    said = {name.lower(): value for name, value in _AT.findall(answer.answer)}
    cells = [v for row in answer.rows[:1] for v in row]
    for name, value in gold_answers:
        if name.lower() in said and _same_value(value, said[name.lower()]):
            continue
        if not any(_same_value(value, c) for c in cells):
            return False
    return bool(gold_answers)


def _same_value(gold: str, got: Any) -> bool:
    g = gold.strip()
    try:
        gf = float(g)
    except ValueError:
        return str(got).strip().lower() == g.lower()
    try:
        f = float(got)
    except (TypeError, ValueError):
        return False
    decimals = len(g.split(".")[1]) if "." in g else 0
    return bool(abs(round(f, decimals) - gf) <= 10 ** (-decimals) * 0.5 + 1e-9)


# --- running a set --------------------------------------------------------------------------------


class JudgedResult(BaseModel):
    """One verdict of the judge (or a skip) and whether the result it judged matched the gold."""

    verdict: str
    reason: str = ""
    correct: bool


class QuestionOutcome(BaseModel):
    """What happened on one question."""

    id: str
    difficulty: str
    correct: bool
    status: str
    seconds: float
    cost_usd: float = 0.0
    tokens: int = 0
    model_calls: int = 0
    model_seconds: float = 0.0
    sql: str | None = None
    gold_sql: str | None = None
    error: str | None = None
    #: Whether the result the judge first saw was correct (the answer without the judge); ``None`` when no
    #: result reached the judge.
    correct_before_judge: bool | None = None
    judgements: list[JudgedResult] = Field(default_factory=list)
    #: The data cannot answer the question (its gold is ``cannot_answer``).
    unanswerable: bool = False


class JudgeFigures(BaseModel):
    """How the judge did on a set: its verdicts against the gold. A *false fail* is a fail on a result that
    matched the gold; its rate is over the correct results the judge gave a verdict on."""

    judged: int = 0
    skipped: int = 0
    passes: int = 0
    fails: int = 0
    false_fails: int = 0
    caught: int = 0
    missed: int = 0
    accuracy_before_judge: float = 0.0

    @property
    def false_fail_rate(self) -> float:
        correct = self.false_fails + (self.passes - self.missed)
        return self.false_fails / correct if correct else 0.0


def judged_results(
    question: EvalQuestion, answer: Answer, gold_rows: list[list[Any]] | None
) -> list[JudgedResult]:
    """Each judgement of ``answer`` with its result scored like an answer."""
    out = []
    for j in answer.judgements:
        seen = Answer(
            status="answered",
            answer=prose_answer(question.question, j.columns, j.rows, j.row_count),
            columns=j.columns,
            rows=j.rows,
            row_count=j.row_count,
        )
        out.append(JudgedResult(verdict=j.verdict, reason=j.reason, correct=score(question, seen, gold_rows)))
    return out


@dataclass
class EvalReport:
    """Accuracy by difficulty, latency and cost of one system on one question set."""

    system: str
    model: str
    outcomes: list[QuestionOutcome] = field(default_factory=list)

    def accuracy(self, difficulty: str | None = None) -> float:
        chosen = [o for o in self.outcomes if difficulty is None or o.difficulty == difficulty]
        return sum(o.correct for o in chosen) / len(chosen) if chosen else 0.0

    def count(self, difficulty: str | None = None) -> int:
        return len([o for o in self.outcomes if difficulty is None or o.difficulty == difficulty])

    def median_seconds(self) -> float:
        return statistics.median(o.seconds for o in self.outcomes) if self.outcomes else 0.0

    def p90_seconds(self) -> float:
        """The 90th percentile of the seconds per question (nearest rank)."""
        if not self.outcomes:
            return 0.0
        ordered = sorted(o.seconds for o in self.outcomes)
        return ordered[max(0, math.ceil(0.9 * len(ordered)) - 1)]

    def refusal_recall(self) -> float | None:
        """Of the questions the data cannot answer, the share answered ``cannot_answer`` (``None``: none)."""
        chosen = [o for o in self.outcomes if o.unanswerable]
        return sum(o.status == "cannot_answer" for o in chosen) / len(chosen) if chosen else None

    def false_refusal_rate(self) -> float | None:
        """Of the questions the data answers, the share wrongly answered ``cannot_answer``."""
        chosen = [o for o in self.outcomes if not o.unanswerable]
        return sum(o.status == "cannot_answer" for o in chosen) / len(chosen) if chosen else None

    def mean_cost(self) -> float:
        return statistics.fmean(o.cost_usd for o in self.outcomes) if self.outcomes else 0.0

    def judge_figures(self) -> JudgeFigures:
        """The judge's verdicts against the gold, over every question."""
        f = JudgeFigures()
        for o in self.outcomes:
            for j in o.judgements:
                if j.verdict == "skipped":
                    f.skipped += 1
                    continue
                f.judged += 1
                f.passes += j.verdict == "pass"
                f.fails += j.verdict == "fail"
                f.false_fails += j.verdict == "fail" and j.correct
                f.caught += j.verdict == "fail" and not j.correct
                f.missed += j.verdict == "pass" and not j.correct
        before = [
            o.correct if o.correct_before_judge is None else o.correct_before_judge for o in self.outcomes
        ]
        f.accuracy_before_judge = sum(before) / len(before) if before else 0.0
        return f

    def to_json(self) -> dict[str, Any]:
        levels = [d for d in ("easy", "medium", "hard") if self.count(d)]
        judge = self.judge_figures()
        return {
            "system": self.system,
            "model": self.model,
            "questions": len(self.outcomes),
            "accuracy": self.accuracy(),
            "accuracy_by_difficulty": {d: self.accuracy(d) for d in levels},
            "count_by_difficulty": {d: self.count(d) for d in levels},
            "median_seconds": self.median_seconds(),
            "p90_seconds": self.p90_seconds(),
            "unanswerable": len([o for o in self.outcomes if o.unanswerable]),
            "refusal_recall": self.refusal_recall(),
            "false_refusal_rate": self.false_refusal_rate(),
            "mean_cost_usd": self.mean_cost(),
            "judge": {**judge.model_dump(), "false_fail_rate": judge.false_fail_rate},
            "outcomes": [o.model_dump() for o in self.outcomes],
        }


#: ``gold_rows(question) -> rows`` runs the gold SQL (through the same runner as the system under test).
GoldFn = Callable[[EvalQuestion], Awaitable[list[list[Any]] | None]]
#: ``answer(question) -> Answer`` asks the system under test.
AnswerFn = Callable[[EvalQuestion], Awaitable[Answer]]


def score(question: EvalQuestion, answer: Answer, gold_rows: list[list[Any]] | None) -> bool:
    """Whether ``answer`` is correct for ``question``."""
    if question.unanswerable:
        return answer.status == "cannot_answer"
    if answer.status != "answered":
        return False
    if question.gold_answers:
        return dabench_match(question.gold_answers, answer)
    if gold_rows is None:
        return False
    return results_match(gold_rows, answer.rows, ordered=question.ordered)
