"""The data agent's judge: what it records of each result it judges (or skips)."""

from __future__ import annotations

from typing import Literal

from corral.apps.data_agent._judgement import MAX_JUDGED_ROWS, Judgement
from corral.apps.data_agent._state import Question


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
