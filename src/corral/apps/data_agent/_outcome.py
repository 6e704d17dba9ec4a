"""How a question ends: an answer from a working query, ``cannot_answer`` with the reason, or ``failed``."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from corral.apps.data_agent._answer import Answer, prose_answer
from corral.apps.data_agent._chart import vega_lite_spec
from corral.apps.data_agent._events import Answered
from corral.apps.data_agent._state import Question, emit
from corral.apps.data_agent._verified import VerifiedQuery
from corral.durable import RunContext


def cannot(q: Question, reason: str) -> Answer:
    """``cannot_answer``: the data does not hold what the question asks for (an answer, not a failure)."""
    emit(q, Answered(message=f"cannot answer: {reason}"))
    return Answer(
        status="cannot_answer",
        answer=f"The data cannot answer this: {reason}",
        run_id=q.run_id,
        usage=q.usage,
        attempts=q.model_calls,
    )


def failed(q: Question) -> Answer:
    """No working query (or program) after the attempts: ``failed``, with the last one and its problem."""
    python = q.flow.language == "python"
    what = "code" if python else "query"
    return Answer(
        status="failed",
        answer=f"No working {what} after {q.attempts} attempts; last problem: {q.last_error}",
        run_id=q.run_id,
        usage=q.usage,
        attempts=q.attempts,
        sql=None if python else (q.text or None),
        code=(q.text or None) if python else None,
    )


def _same_sql(a: str, b: str) -> bool:
    return " ".join(a.lower().split()).rstrip(";") == " ".join(b.lower().split()).rstrip(";")


async def _chart(ctx: RunContext, q: Question, spec: dict[str, object]) -> str | None:
    agent = q.agent
    render = getattr(agent.runner, "render_chart", None)
    if agent.chart_dir is None or render is None:
        return None
    out = Path(agent.chart_dir) / f"chart-{q.run_id or 'answer'}.png"

    async def draw() -> str | None:
        path: Path | None = await render(spec, out)
        return str(path) if path is not None else None

    drawn: str | None = await ctx.step("chart", draw)
    return drawn


async def compose(ctx: RunContext, q: Question, examples: Sequence[VerifiedQuery] = ()) -> Answer:
    """The answer from the best result: prose written by the system from the rows (the model never writes
    the numbers), the table, the query or program, the judge's caution, and a chart when one helps."""
    assert q.best is not None
    text_run, result = q.best
    python = q.flow.language == "python"
    text = prose_answer(q.question, result.columns, result.rows, result.row_count)
    reused = next((e.question for e in examples if _same_sql(e.sql, text_run)), None)
    if reused is not None:
        text += f" (Reused the verified query for: {reused!r}.)"
    if q.judge_note is not None and q.judge_note.startswith("fail"):
        text += f" Caution, a check of the result said: {q.judge_note[6:]}"
    spec = vega_lite_spec(result.columns, result.rows, title=q.question) if q.agent.charts else None
    chart_path = await _chart(ctx, q, spec) if spec is not None else None
    emit(q, Answered(message=text, rows=result.row_count, chart=chart_path))
    return Answer(
        status="answered",
        answer=text,
        sql=None if python else text_run,
        code=text_run if python else None,
        columns=result.columns,
        rows=result.rows,
        row_count=result.row_count,
        chart=chart_path,
        vega_lite=spec,
        run_id=q.run_id,
        usage=q.usage,
        verified_query=reused,
        judge=q.judge_note,
        attempts=q.attempts,
    )
