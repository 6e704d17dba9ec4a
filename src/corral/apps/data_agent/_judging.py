"""The data agent's judge: the :class:`~corral.guards.LLMJudge` guard on each result, or a recorded skip.

What the judge sees (the evidence): the question, the query (or program) and the result — its columns, row
count and first rows. What it must give to fail a result: the words of the question the result does not
answer, copied from the question, naming something the query and the result do not have. A fail that
quotes words the question lacks, or words the query already handles, is dismissed (the vote counts as a
pass): a 0.5B judge's vague doubt sent back for revision turned correct results into wrong ones. Three
votes are taken (the first at temperature 0); a fail needs a majority.

The judge is skipped — and the skip recorded with its reason — when the deterministic checks are
conclusive: independent samples of the query agreed on the result, or the result is one value computed by
an aggregate with no finding against it (the judge would only re-read the query: the result holds nothing
for it to check).

The guard brings its own budget (model calls), durable steps (each vote is a journaled model call; the
verdict a step) and the revision count; the question's guards still bound the whole question's calls,
tokens and time.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, Literal

import sqlglot
from sqlglot import exp

from corral.apps.data_agent import _prompts as prompts
from corral.apps.data_agent._events import Judged
from corral.apps.data_agent._judgement import MAX_JUDGED_ROWS, Judgement
from corral.apps.data_agent._state import BudgetSpent, Question, emit
from corral.durable import RunContext
from corral.guards import JudgeState, Judging, LLMJudge, Verdict

if TYPE_CHECKING:
    from corral.apps.data_agent._checks import Finding

#: The rubric. It starts like the one before it (tests and scripted models route on "You check whether").
RUBRIC = (
    "You check whether {what} and its result answer a question. Most results are right: say pass unless "
    "you find a concrete mistake. Say fail only when a part of the question is not answered: a filter it "
    "asks for is missing or different, another measure is computed, a grouping it asks for is missing, or "
    "a value it asks for is absent from the result. Reply with JSON: "
    '{{"reason": "<one short sentence>", "missing": "<the words of the question that are not answered, '
    'copied exactly; empty when nothing is missing>", "verdict": "pass" or "fail"}}.'
)
SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "reason": {"type": "string"},
        "missing": {"type": "string"},
        "verdict": {"type": "string", "enum": ["pass", "fail"]},
    },
    "required": ["reason", "missing", "verdict"],
    "additionalProperties": False,
}
#: Votes per verdict, and the judge's model calls per question (its own budget).
VOTES = 3
_AGGREGATES = (exp.Count, exp.Sum, exp.Avg, exp.Min, exp.Max)
_STOP = frozenset(
    [
        "a",
        "an",
        "and",
        "are",
        "as",
        "at",
        "be",
        "by",
        "do",
        "does",
        "each",
        "every",
        "for",
        "from",
        "had",
        "has",
        "have",
        "how",
        "in",
        "into",
        "is",
        "it",
        "its",
        "many",
        "much",
        "of",
        "on",
        "or",
        "per",
        "show",
        "than",
        "that",
        "the",
        "their",
        "there",
        "these",
        "this",
        "those",
        "to",
        "was",
        "were",
        "what",
        "when",
        "where",
        "which",
        "who",
        "whose",
        "with",
        "list",
        "give",
        "find",
        "all",
        "any",
        "number",
        "total",
    ]
)


def _words(text: str) -> list[str]:
    return re.findall(r"[a-z0-9]+", text.lower())


def check_fail(subject: Any, reply: Mapping[str, Any]) -> str | None:
    """Why a failing vote does not hold against the evidence, or ``None`` when it does: it must quote
    words of the question (``missing``), and at least one content word of the quote must be absent from
    the query and the result's columns — words the query already handles are not missing.

    >>> subject = {"question": "How many tracks in the Rock genre?", "columns": ["n"],
    ...            "query": "SELECT COUNT(*) FROM Track t JOIN Genre g USING (GenreId) WHERE g.Name = 'Rock'"}
    >>> check_fail(subject, {"missing": "Rock genre"})
    "every word of 'Rock genre' is in the query or the result"
    >>> check_fail(subject, {"missing": "in the Pop genre"})
    "'in the Pop genre' is not in the question"
    >>> check_fail({**subject, "query": "SELECT COUNT(*) FROM Track"}, {"missing": "Rock"}) is None
    True
    """
    quote = " ".join(str(reply.get("missing") or "").split())
    if not quote:
        return "the fail names nothing of the question that is not answered"
    if " ".join(_words(quote)) not in " ".join(_words(str(subject["question"]))):
        return f"{quote[:80]!r} is not in the question"
    content = [w for w in _words(quote) if w not in _STOP and len(w) > 1]
    if not content:
        return f"{quote[:80]!r} names no data"
    seen = " ".join([str(subject["query"]), *map(str, subject.get("columns") or [])]).lower()
    if all(w in seen for w in content):
        return f"every word of {quote[:80]!r} is in the query or the result"
    return None


def evidence(subject: Any) -> str:
    """What the judge reads (see :func:`~._prompts.judge_user`)."""
    return prompts.judge_user(
        subject["question"],
        subject["query"],
        subject["columns"],
        subject["rows"],
        subject["row_count"],
        label=subject["label"],
    )


def judging(q: Question) -> Judging:
    """The data agent's judging: one LLM judge (the agent's ``judge_model``, else its model), ``votes``
    per verdict, ``judge_retries`` revisions, and after the last one the answer with the judge's caution."""
    agent = q.agent
    votes = getattr(agent, "judge_votes", VOTES)
    what = "a pandas program" if q.flow.language == "python" else "an SQL query"
    judge = LLMJudge(
        agent.judge_model if agent.judge_model is not None else agent.model,
        rubric=RUBRIC.format(what=what),
        evidence=evidence,
        name="result",
        votes=votes,
        max_tokens=120,
        schema=SCHEMA,
        check_fail=check_fail,
    )
    return Judging(
        judges=[judge],
        max_revisions=agent.judge_retries,
        on_exhausted="accept",
        max_calls=votes * (agent.judge_retries + 1),
    )


def single_aggregate(sql: str, dialect: str) -> bool:
    """Whether ``sql`` selects one value computed by an aggregate over the rows (no GROUP BY).

    >>> single_aggregate("SELECT COUNT(*) FROM t WHERE x = 1", "sqlite")
    True
    >>> single_aggregate("SELECT a, COUNT(*) FROM t GROUP BY a", "sqlite")
    False
    """
    try:
        trees = [t for t in sqlglot.parse(sql, read=dialect) if t is not None]
    except sqlglot.errors.SqlglotError:
        return False
    if len(trees) != 1 or not isinstance(trees[0], exp.Select):
        return False
    select = trees[0]
    projections = select.expressions
    return (
        len(projections) == 1
        and select.args.get("group") is None
        and projections[0].find(*_AGGREGATES) is not None
    )


def skip_reason(q: Question, found: Sequence[Finding]) -> str | None:
    """Why the judge need not run on this result, or ``None``."""
    if q.flow.skip_judge(q):
        return "the candidate queries agree on the result"
    result = q.result
    if (
        q.flow.language == "sql"
        and not found
        and result is not None
        and result.row_count == 1
        and len(result.columns) == 1
        and single_aggregate(q.text, q.flow.full.dialect)
    ):
        return "one value computed by an aggregate, no finding: nothing in the result for the judge to check"
    return None


def record(q: Question, verdict: Literal["pass", "fail", "skipped"], reason: str) -> None:
    """Keep the judge's verdict on the current result, with the result, for the answer."""
    result = q.result
    q.judgements.append(
        Judgement(
            verdict=verdict,
            reason=reason,
            attempt=q.attempts,
            text=q.text,
            columns=list(result.columns) if result is not None else [],
            rows=[list(r) for r in result.rows[:MAX_JUDGED_ROWS]] if result is not None else [],
            row_count=result.row_count if result is not None else 0,
        )
    )


def _skipped(q: Question, why: str, *, agreed: bool = False) -> None:
    q.judge_note = f"skipped: {why}"
    record(q, "skipped", why)
    emit(q, Judged(message=f"skipped: {why}", verdict="agreed" if agreed else "skipped"))


def _account(q: Question, verdict: Verdict) -> None:
    """The judge's calls count in the question's budgets too."""
    assert q.guard is not None
    q.usage = q.usage + verdict.usage
    q.guard.record_response(verdict.usage)
    q.model_calls += verdict.calls


async def judge_result(ctx: RunContext, q: Question, found: Sequence[Finding]) -> str | None:
    """Judge the current result (or skip, saying why). Returns the reason to send back for a revision, or
    ``None`` to finish (a pass, a skip, a spent budget, or a fail after the last revision: then the
    answer carries the judge's caution)."""
    why = skip_reason(q, found)
    if why is not None:
        _skipped(q, why, agreed=q.flow.skip_judge(q))
        return None
    if q.judging is None:
        q.judging = JudgeState(judging(q))
    state: JudgeState = q.judging
    assert q.guard is not None
    ended = ctx.last_step_ended()
    trip = q.guard.before_model(ended.timestamp() if ended is not None else q.started)
    if trip is not None:
        raise BudgetSpent(f"{trip.reason}: {trip.detail}")
    result = q.result
    assert result is not None
    subject = {
        "question": q.question,
        "query": q.text,
        "label": q.flow.judge_label,
        "columns": list(result.columns),
        "rows": [list(r) for r in result.rows[:5]],
        "row_count": result.row_count,
    }
    report = await state.check(ctx, subject)
    for v in report.verdicts:
        _account(q, v)
    if not report.verdicts:
        _skipped(q, report.skipped or "the judges' budget is spent")
        return None
    verdict = report.verdicts[0]
    word: Literal["pass", "fail"] = "pass" if verdict.passed else "fail"
    record(q, word, verdict.reason)
    emit(q, Judged(message=f"{word}: {verdict.reason}", verdict=word))
    q.judge_note = f"{word}: {verdict.reason}"
    if report.passed or state.revisions >= state.judging.max_revisions:
        return None
    state.revisions += 1
    return verdict.reason
