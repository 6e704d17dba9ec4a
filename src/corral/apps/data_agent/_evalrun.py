"""Running a question set: the agent, or a single-shot baseline, on each question, scored.

Two single-shot baselines (one model call, one query, no correction, no judge; same model, same runner):

- ``baseline``: the classic text-to-SQL prompt — the schema as ``CREATE TABLE`` statements (keys included,
  no sample values) and the question, "reply with the SQL query only";
- ``baseline-rich``: the agent's own first prompt (dialect hints, the way to decline) over the *whole*
  schema with sample values and row counts — what the agent's loop adds beyond its prompt and schema text.

Over CSV/Parquet files both baselines are the pandas path's single shot: the agent's first prompt (the
DataFrames described, the question) → one program, run once.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from corral.apps.data_agent import _pandas_agent as pandas
from corral.apps.data_agent import _prompts as prompts
from corral.apps.data_agent import _run
from corral.apps.data_agent._agent import DataAgent
from corral.apps.data_agent._answer import MAX_ROWS, Answer, Status, prose_answer
from corral.apps.data_agent._eval import (
    EvalQuestion,
    EvalReport,
    QuestionOutcome,
    judged_results,
    load_eval_set,
    score,
)
from corral.apps.data_agent._lessons import LessonStore
from corral.apps.data_agent._pandas_runner import CodeRunner
from corral.apps.data_agent._runner import QueryResult, QueryRunner
from corral.apps.data_agent._schema import cached_description, load_schema
from corral.apps.data_agent._sources import open_source
from corral.apps.data_agent._sqlcheck import extract_sql, is_read_only
from corral.models import Model, ModelSettings, SystemMessage, Usage, UserMessage

Progress = Callable[[int, int, str], None]


PLAIN_SYSTEM = "Write one {dialect} SQL query that answers the question. Reply with the SQL query only."


async def single_shot(model: Model, runner: QueryRunner, question: str, *, rich: bool = False) -> Answer:
    """A baseline: full schema + question → one SQL query, run once (see the module docstring)."""
    schema = await load_schema(runner)
    if rich:
        system = prompts.sql_system(schema.dialect)
        user = prompts.sql_user(question, schema.render(), [])
    else:
        system = PLAIN_SYSTEM.format(dialect=schema.dialect)
        user = f"{schema.render(samples=False)}\n\nQuestion: {question}"
    response = await model.request(
        [SystemMessage(content=system), UserMessage(content=user)],
        settings=ModelSettings(temperature=0.0, max_tokens=400),
    )
    text = response.message.content or ""
    sql = extract_sql(text)
    if not sql:
        if prompts.declined(text) is not None:
            return Answer(status="cannot_answer", answer=text, usage=response.usage)
        return Answer(status="failed", answer="no SQL in the reply", usage=response.usage)
    if not is_read_only(sql, dialect=schema.dialect):
        return Answer(status="failed", answer="refused a write", sql=sql, usage=response.usage)
    return _one_shot(question, await runner.run(sql, max_rows=MAX_ROWS), response.usage, sql=sql)


async def single_shot_pandas(model: Model, runner: CodeRunner, question: str) -> Answer:
    """The baseline over files: the DataFrames' description + question → one program, run once."""
    described = await cached_description(runner.source, "frames", runner.describe)
    names = [str(t["name"]) for t in described.get("tables") or []]
    response = await model.request(
        [
            SystemMessage(content=pandas.code_system(names)),
            UserMessage(content=pandas.code_user(question, pandas.render_frames(described, question))),
        ],
        settings=ModelSettings(temperature=0.0, max_tokens=500),
    )
    text = response.message.content or ""
    code = pandas.extract_code(text)
    if not code:
        status: Status = "cannot_answer" if prompts.declined(text) is not None else "failed"
        return Answer(status=status, answer=text, usage=response.usage)
    return _one_shot(question, await runner.run(code, max_rows=MAX_ROWS), response.usage, code=code)


def _one_shot(
    question: str, result: QueryResult, usage: Usage, *, sql: str | None = None, code: str | None = None
) -> Answer:
    """A baseline's answer from its one run: the result, or the error as a failure."""
    if not result.ok:
        return Answer(status="failed", answer=result.error or "error", sql=sql, code=code, usage=usage)
    return Answer(
        status="answered",
        answer=prose_answer(question, result.columns, result.rows, result.row_count),
        sql=sql,
        code=code,
        columns=result.columns,
        rows=result.rows,
        row_count=result.row_count,
        usage=usage,
    )


async def _answer(
    q: EvalQuestion,
    system: str,
    llm: Model,
    runner: QueryRunner,
    code_runner: CodeRunner | None,
    *,
    judge: bool,
    lessons: LessonStore | None = None,
) -> Answer:
    """One question through ``system``."""
    # A question over files is answered with pandas, told the answer's format (@name[...]) so that it
    # returns those parts by name; a SQL query is scored from its result row instead (see load_dabench).
    text = f"{q.question}\nAnswer format: {q.hint}" if q.hint and code_runner else q.question
    if system == "agent":
        agent = DataAgent(
            model=llm, runner=runner, code_runner=code_runner, judge=judge, charts=False, lessons=lessons
        )
        return await agent.ask(text)
    if code_runner is not None:
        return await single_shot_pandas(llm, code_runner, text)
    return await single_shot(llm, runner, q.question, rich=system == "baseline-rich")


async def run_eval(
    path: str | Path,
    *,
    model: str | None = None,
    limit: int | None = None,
    system: str = "agent",
    judge: bool = True,
    progress: Progress | None = None,
    model_instance: Model | None = None,
    lessons: LessonStore | None = None,
) -> EvalReport:
    """Run every question of the set at ``path`` through ``system`` (``agent`` or ``baseline``). With
    ``lessons`` the agent keeps what its corrections teach in that store and is shown the closest lessons
    (a second run on the same store measures what they are worth); without, it keeps none."""
    if system not in ("agent", "baseline", "baseline-rich"):
        from corral.apps.data_agent.errors import EvalSetError

        raise EvalSetError(f"unknown system {system!r}: use agent, baseline or baseline-rich")
    questions = load_eval_set(path, limit=limit)
    llm = model_instance or _run.loaded_model(model)
    report = EvalReport(system=system, model=llm.name)
    runners: dict[tuple[str | None, tuple[str, ...]], QueryRunner] = {}
    code_runners: dict[tuple[str, ...], CodeRunner | None] = {}
    gold_cache: dict[str, list[list[Any]] | None] = {}

    def runner_for(q: EvalQuestion) -> QueryRunner:
        key = (q.db, tuple(q.files))
        if key not in runners:
            runners[key] = _run.make_runner(open_source(q.db, q.files))
        return runners[key]

    for i, q in enumerate(questions, 1):
        runner = runner_for(q)
        gold_rows: list[list[Any]] | None = None
        if q.gold_sql is not None:
            if q.id not in gold_cache:
                gold = await runner.run(q.gold_sql, max_rows=MAX_ROWS)
                gold_cache[q.id] = gold.rows if gold.ok else None
            gold_rows = gold_cache[q.id]
        started = time.perf_counter()
        error: str | None = None
        files = tuple(q.files)
        if files not in code_runners:
            code_runners[files] = _run.code_runner_for(runner.source) if files else None
        code_runner = code_runners[files]
        try:
            answer = await _answer(q, system, llm, runner, code_runner, judge=judge, lessons=lessons)
        except Exception as exc:  # one broken question must not end the evaluation
            answer = Answer(status="failed", answer=str(exc))
            error = f"{type(exc).__name__}: {exc}"
        seconds = time.perf_counter() - started
        correct = score(q, answer, gold_rows)
        judgements = judged_results(q, answer, gold_rows)
        report.outcomes.append(
            QuestionOutcome(
                id=q.id,
                difficulty=q.difficulty,
                correct=correct,
                status=answer.status,
                seconds=seconds,
                cost_usd=answer.usage.cost_usd,
                tokens=answer.usage.total_tokens,
                model_calls=answer.usage.requests,
                model_seconds=answer.usage.latency_s,
                sql=answer.sql or answer.code,
                gold_sql=q.gold_sql,
                error=error,
                correct_before_judge=judgements[0].correct if judgements else None,
                judgements=judgements,
                unanswerable=q.unanswerable,
            )
        )
        if progress is not None:
            mark = "ok " if correct else "BAD"
            progress(i, len(questions), f"{mark} {seconds:5.1f}s {q.id} [{q.difficulty}] {answer.status}")
    return report
