"""The data agent: a fixed loop in which the model makes few, small choices and the system does the rest.

::

    schema (cached, narrowed) ─► write query ─► read-only check ─► run in sandbox ─┐
                      ▲                                                            │
                      └── error text + similar names │ sanity findings │ judge fail ◄┘   (bounded attempts)
                                                          │
                                    answer: prose written from the result, table, SQL, chart

Each model call and each query is a step given to ``step`` (the durable run context's ``ctx.step`` in the
product, so a resumed run repeats none of them). The model writes SQL and judges; it never writes the prose
answer's numbers, which the system takes from the result.
"""

from __future__ import annotations

import difflib
import inspect
import json
import re
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from corral.apps.data_agent import _prompts as prompts
from corral.apps.data_agent._answer import MAX_ROWS, Answer, prose_answer
from corral.apps.data_agent._chart import vega_lite_spec
from corral.apps.data_agent._checks import sanity_check
from corral.apps.data_agent._runner import QueryResult, QueryRunner
from corral.apps.data_agent._schema import Schema, join_path, load_schema, narrow
from corral.apps.data_agent._sqlcheck import (
    extract_sql,
    is_read_only,
    lint,
    repair_qualifiers,
    statement_kind,
    table_aliases,
    unasked_filters,
)
from corral.apps.data_agent._verified import VerifiedQuery, closest
from corral.guards import ApprovalDecision, ApprovalRequest, Approver, Guards, GuardState
from corral.models import (
    AssistantMessage,
    Message,
    Model,
    ModelResponse,
    ModelSettings,
    OutputSchema,
    SystemMessage,
    Usage,
    UserMessage,
)

T = TypeVar("T")

#: ``step(name, fn)`` runs ``fn`` once as a named step and returns its result (durable in the product).
StepFn = Callable[[str, Callable[[], Awaitable[Any]]], Awaitable[Any]]


async def _run_now(name: str, fn: Callable[[], Awaitable[T]]) -> T:
    """The non-durable step: just run it (tests and one-off calls)."""
    return await fn()


@dataclass(frozen=True)
class DataEvent:
    """One thing the agent did, for the live display: ``kind`` is schema, sql, query, check, judge, answer."""

    kind: str
    message: str
    data: dict[str, Any] = field(default_factory=dict)


@dataclass
class DataAgent:
    """Answers questions over one source.

    ``model`` writes queries; ``judge_model`` (default: the same model) judges results. ``runner`` runs
    every query (the sandbox in the product). ``max_attempts`` bounds query rewrites after errors or
    sanity findings; the judge gets ``judge_retries`` extra attempts. A statement that changes data is
    refused unless ``approver`` (see :mod:`corral.guards`) approves it, as a durable step; it then runs
    through the runner's separate ``write`` path.
    """

    model: Model
    runner: QueryRunner
    judge_model: Model | None = None
    verified: Sequence[VerifiedQuery] = ()
    approver: Approver | None = None
    #: Token and cost budgets of one question (checked before each model call; time is not, so a resumed
    #: run replays the same path).
    guards: Guards = field(default_factory=lambda: Guards(max_steps=12, max_wall_s=None))
    max_attempts: int = 3
    judge: bool = True
    judge_retries: int = 1
    charts: bool = True
    chart_dir: Path | None = None
    on_event: Callable[[DataEvent], None] | None = None
    settings: ModelSettings = field(default_factory=lambda: ModelSettings(temperature=0.0, max_tokens=400))

    def _emit(self, kind: str, message: str, **data: Any) -> None:
        if self.on_event is not None:
            self.on_event(DataEvent(kind, message, data))

    async def ask(self, question: str, *, step: StepFn = _run_now, run_id: str = "") -> Answer:
        """Answer ``question``; never raises for a bad query, a bad model reply or a spent budget (those are
        a status)."""
        run = _Run(self, question, step, run_id)
        try:
            return await run.go()
        except _BudgetSpent as exc:
            self._emit("answer", f"stopped: {exc}")
            return Answer(
                status="failed", answer=f"Stopped by a budget: {exc}", run_id=run_id, usage=run.usage
            )


def _join_hint(error: str, schema: Schema, sql: str, dialect: str) -> str:
    """For "no such column: alias.col" where the alias's table lacks the column: the join path from that
    table to one that has it (the system walks the keys; the 0.5B model does not)."""
    match = re.search(r"no such column:\s*\"?(\w+)\.(\w+)", error, re.IGNORECASE) or re.search(
        r'Table "(\w+)" does not have a column named "(\w+)"', error
    )
    if match is None:
        return ""
    qualifier, column = match.group(1), match.group(2)
    aliases = table_aliases(sql, dialect=dialect)
    start = aliases.get(qualifier.lower(), qualifier)
    owners = [
        t.name for t in schema.tables if t.column(column) is not None and t.name.lower() != start.lower()
    ]
    if not owners:
        return ""
    used = {name.lower() for name in aliases.values()}
    owners.sort(key=lambda name: name.lower() not in used)
    for owner in owners:
        path = join_path(schema, start, owner)
        if path:
            return (
                f"{start} has no column {column}; {owner}.{column} is reached by joining on "
                + ", then ".join(path)
                + "."
            )
    return ""


def _group_hint(error: str, schema: Schema, sql: str, dialect: str) -> str:
    """For an aggregate misused on a one-table query ("misuse of aggregate", "must appear in the GROUP BY"):
    the skeleton that counts the rows of a joined table per row of this one, built from the keys."""
    if not re.search(r"aggregate|group by", error, re.IGNORECASE):
        return ""
    used = list(dict.fromkeys(table_aliases(sql, dialect=dialect).values()))
    if len(used) != 1:
        return "Use GROUP BY with the aggregate."
    table = schema.table(used[0])
    if table is None:
        return ""
    label = next(
        (c.name for c in table.columns if not c.pk and not _is_key_name(c.name)), table.columns[0].name
    )
    for other in schema.tables:
        if other.name == table.name:
            continue
        path = join_path(schema, other.name, table.name)
        if len(path) == 1:
            return (
                f"To count {other.name} rows per {table.name}: FROM {other.name} JOIN {table.name} "
                f"ON {path[0]} GROUP BY {table.name}.{label}, then ORDER BY COUNT(*) DESC."
            )
    return "Use GROUP BY with the aggregate."


def _is_key_name(name: str) -> bool:
    return bool(re.search(r"(id|_key|code)$", name, re.IGNORECASE))


def _condensed(messages: list[Message]) -> list[Message]:
    """A retry as one fresh prompt: the original request plus the feedback on the last attempt, as a hint.

    A small model shown its failed query (or a long exchange) copies it; shown the original prompt with the
    problem and the system's hint, it writes a new one. (The full exchange stays in ``messages``.)
    """
    if len(messages) <= 2:
        return messages
    feedback = messages[-1].content if isinstance(messages[-1], UserMessage) else ""
    feedback = feedback.replace("That query has a problem:", "An earlier query failed with:")
    first = messages[1].content if isinstance(messages[1], UserMessage) else ""
    return [messages[0], UserMessage(content=f"{first}\n\nHint: {feedback}")]


class _BudgetSpent(Exception):
    """A guard's budget ran out (internal: turned into a ``failed`` answer)."""


def _similar_names(error: str, schema: Schema, sql: str) -> str:
    """For "no such column/table X" errors, the schema's names closest to X, those of the tables the query
    uses first (the system, not the model, finds them)."""
    match = re.search(
        r'(?:no such column|no such table|column|table)[:\s]+"?([\w. ]+?)"?(?:\s|$|,)', error, re.IGNORECASE
    )
    if match is None:
        return ""
    wrong = match.group(1).split(".")[-1].lower()
    used = {w.lower() for w in re.findall(r"\w+", sql)}
    candidates: dict[str, list[str]] = {}
    for t in schema.tables:
        candidates.setdefault(t.name.lower(), []).append(t.name)
        for c in t.columns:
            candidates.setdefault(c.name.lower(), []).append(f"{t.name}.{c.name}")
    near = difflib.get_close_matches(wrong, list(candidates), n=3, cutoff=0.6)
    if not near:
        return ""
    found = [name for n in near for name in candidates[n]]
    found.sort(key=lambda name: name.split(".")[0].lower() not in used)
    return "Names that exist: " + ", ".join(found[:6]) + "."


def _missing_name(error: str, schema: Schema) -> tuple[str, bool] | None:
    """``(name, exists_elsewhere)`` for a "no such column/table X" error: whether the schema has X (or a name
    containing it, or one spelled almost like it) anywhere; ``None`` for other errors."""
    match = re.search(r"(?:no such column|no such table)[:\s]+\"?([\w.]+)", error, re.IGNORECASE)
    if match is None:
        match = re.search(r'(?:column|table) (?:with name )?"?([\w.]+)"? (?:not found|does not exist)', error)
    if match is None:
        return None
    name = match.group(1).split(".")[-1]
    lowered = name.lower()
    names = {t.name.lower() for t in schema.tables} | {
        c.name.lower() for t in schema.tables for c in t.columns
    }
    like = any(lowered in n or n in lowered for n in names if len(n) > 2) or bool(
        difflib.get_close_matches(lowered, list(names), n=1, cutoff=0.85)
    )
    return name, like


class _Run:
    """One question's run (state kept off the agent, so one agent can answer many questions)."""

    def __init__(self, agent: DataAgent, question: str, step: StepFn, run_id: str) -> None:
        self.agent = agent
        self.question = question
        self.step = step
        self.run_id = run_id
        self.usage = Usage()
        self.guard = GuardState(agent.guards, started_at=0.0)
        self.n_model = 0
        self.n_query = 0
        self.missing: list[tuple[str, bool]] = []
        self.other_errors = 0
        self.declined = False
        self.flagged_filters = False
        self.last_failure: str | None = None
        #: The model's reason when it said the data cannot answer (kept for the end of a run without a
        #: working query).
        self.decline_reason: str | None = None

    async def _model(
        self,
        kind: str,
        messages: list[Message],
        schema: OutputSchema | None = None,
        *,
        temperature: float | None = None,
        max_tokens: int | None = None,
    ) -> str:
        trip = self.guard.before_model(now=0.0)
        if trip is not None:
            raise _BudgetSpent(f"{trip.reason}: {trip.detail}")
        self.n_model += 1
        agent = self.agent
        model = agent.judge_model if kind == "judge" and agent.judge_model is not None else agent.model
        settings = agent.settings.model_copy(
            update={
                k: v for k, v in (("temperature", temperature), ("max_tokens", max_tokens)) if v is not None
            }
        )
        snapshot = list(messages)

        async def call() -> ModelResponse:
            return await model.request(snapshot, output_schema=schema, settings=settings)

        response: ModelResponse = await self.step(f"model.{kind}.{self.n_model}", call)
        self.usage = self.usage + response.usage
        self.guard.record_response(response.usage)
        return response.message.content or ""

    async def _query(self, sql: str) -> QueryResult:
        self.n_query += 1
        runner = self.agent.runner

        async def call() -> QueryResult:
            return await runner.run(sql, max_rows=MAX_ROWS)

        result: QueryResult = await self.step(f"query.{self.n_query}", call)
        return result

    async def go(self) -> Answer:
        agent = self.agent
        question = self.question

        async def get_schema() -> Schema:
            return await load_schema(agent.runner)

        full: Schema = await self.step("schema", get_schema)
        schema = narrow(full, question)
        agent._emit(
            "schema",
            f"schema: {', '.join(schema.table_names()) or '(no table matched)'}",
            tables=schema.table_names(),
            brief=[t.name for t in schema.brief],
        )
        schema_text = schema.render()

        if not schema.tables:
            # Nothing in the schema matches the question's words: ask whether the data can answer at all.
            verdict = await self._answerable(schema_text)
            if verdict is not None:
                return self._cannot(verdict)

        examples = [vq for vq, _ in closest(list(agent.verified), question, k=2)]
        if examples:
            agent._emit(
                "schema", f"verified examples: {len(examples)}", examples=[e.question for e in examples]
            )
        messages: list[Message] = [
            SystemMessage(content=prompts.sql_system(full.dialect)),
            UserMessage(content=prompts.sql_user(question, schema_text, examples)),
        ]
        best: tuple[str, QueryResult] | None = None
        judge_note: str | None = None
        judge_left = agent.judge_retries if agent.judge else 0
        attempts = 0
        # Errors and sanity findings share max_attempts; a judge's fail buys one more attempt (judge_retries).
        limit = agent.max_attempts
        last_error = "no query was written"
        sql = ""
        tried: set[str] = set()
        columns = {t.name.lower(): {c.name.lower() for c in t.columns} for t in full.tables}
        while attempts < limit:
            attempts += 1
            # A repeated mistake at temperature 0 repeats forever: later attempts sample a little.
            reply = await self._model(
                "sql", _condensed(messages), temperature=0.0 if attempts == 1 else 0.3 + 0.3 * (attempts - 2)
            )
            messages.append(AssistantMessage(content=reply))
            sql = extract_sql(reply)
            if not sql:
                if prompts.CANNOT in reply.upper().replace(" ", "_"):
                    reason = reply.split(":", 1)[-1].strip() or "the data has no such information"
                    self.decline_reason = reason
                    if tried and not self.missing and attempts < limit:
                        # It wrote a query (so it judged the data relevant) and the query failed for another
                        # reason than a missing name: that is giving up on a fixable error, not a finding.
                        last_error = "the query needs fixing, not giving up: " + (self.last_failure or "")
                        hint = "; ".join(schema.joins())
                        messages.append(
                            UserMessage(
                                content=prompts.fix_user(last_error, f"Joins: {hint}" if hint else "")
                            )
                        )
                        continue
                    if self.declined or not schema.tables:
                        return self._cannot(reason)
                    # Small models decline too readily; when tables matched the question, ask once more.
                    self.declined = True
                    agent._emit("check", f"the model declined ({reason[:80]}); asking once more")
                    messages.append(UserMessage(content=prompts.push_back(schema.table_names())))
                    continue
                last_error = "the reply contained no SQL query"
                messages.append(UserMessage(content=prompts.fix_user(last_error, "")))
                continue
            if " ".join(sql.split()) in tried:
                last_error = "this is the same query as before, which did not work"
                messages.append(UserMessage(content=prompts.fix_user(last_error, "Write a different query.")))
                continue
            tried.add(" ".join(sql.split()))
            agent._emit("sql", sql, attempt=attempts)
            if not is_read_only(sql, dialect=full.dialect):
                return await self._write(sql, statement_kind(sql, dialect=full.dialect).upper(), attempts)
            repaired, notes = repair_qualifiers(sql, columns, dialect=full.dialect)
            # A repair must not create the mistake lint looks for (a join of a column with itself).
            if notes and len(lint(repaired, dialect=full.dialect)) <= len(lint(sql, dialect=full.dialect)):
                sql = repaired
                for note in notes:
                    agent._emit("check", f"repaired column reference {note}")
            mistakes = lint(sql, dialect=full.dialect)
            unasked = [] if self.flagged_filters else unasked_filters(sql, question, dialect=full.dialect)
            if unasked:
                # Asked once only: if the model keeps the filter, it may know better than word matching.
                self.flagged_filters = True
                conditions = "; ".join(unasked)
                mistakes.append(
                    f"the question does not ask to filter on {conditions}: remove that condition unless the "
                    "question needs it"
                )
            if mistakes and attempts < limit:
                last_error = "; ".join(mistakes)
                agent._emit("check", last_error, finding="lint", blocking=True)
                messages.append(UserMessage(content=prompts.fix_user(last_error, "")))
                continue
            result = await self._query(sql)
            if not result.ok:
                last_error = result.error or "the query failed"
                agent._emit("query", f"error: {last_error}", ok=False)
                self.last_failure = last_error
                hints = _join_hint(last_error, full, sql, full.dialect) or _similar_names(
                    last_error, full, sql
                )
                if not hints:
                    hints = _group_hint(last_error, schema, sql, full.dialect)
                if not hints and len(schema.tables) > 1:
                    hints = "Joins: " + "; ".join(schema.joins())
                missing = _missing_name(last_error, full)
                if missing is not None:
                    self.missing.append(missing)
                else:
                    self.other_errors += 1
                messages.append(UserMessage(content=prompts.fix_user(last_error, hints)))
                continue
            agent._emit("query", f"{result.row_count} rows in {result.elapsed_s:.2f} s", ok=True)
            best = (sql, result)
            findings = sanity_check(question, sql, result, schema=schema)
            blocking = [f for f in findings if f.blocking]
            for f in findings:
                agent._emit("check", f.message, finding=f.kind, blocking=f.blocking)
            if blocking and attempts < agent.max_attempts:
                last_error = "; ".join(f.message for f in blocking)
                messages.append(UserMessage(content=prompts.fix_user(last_error, "")))
                continue
            if not agent.judge:
                break
            verdict, reason = await self._judge(sql, result)
            agent._emit("judge", f"{verdict}: {reason}", verdict=verdict)
            judge_note = f"{verdict}: {reason}"
            if verdict == "pass" or judge_left <= 0:
                break
            judge_left -= 1
            limit = max(limit, attempts + 1)
            messages.append(UserMessage(content=prompts.fix_user(f"a reviewer says: {reason}", "")))
        if best is None and self.missing and not self.other_errors:
            # Every failed attempt reached for names the data does not have: the data lacks what the question
            # needs, which is an answer ("cannot answer"), not a failure of the agent.
            unknown = [n for n, like in self.missing if not like] or [n for n, _ in self.missing]
            return self._cannot(
                "every query needed names the data does not have: " + ", ".join(dict.fromkeys(unknown))
            )
        if best is None and self.decline_reason is not None:
            # No query worked and the model said the data cannot answer: its finding is the honest outcome
            # (a question about data the source lacks), not a failure of the agent.
            return self._cannot(self.decline_reason)
        if best is None:
            return Answer(
                status="failed",
                answer=f"No working query after {attempts} attempts; last problem: {last_error}",
                sql=sql or None,
                run_id=self.run_id,
                usage=self.usage,
                attempts=attempts,
            )
        return await self._answer(best[0], best[1], judge_note, attempts, examples)

    async def _answerable(self, schema_text: str) -> str | None:
        """The reason the data cannot answer, or ``None`` when the model thinks it can."""
        reply = await self._model(
            "answerable",
            [
                SystemMessage(content=prompts.ANSWERABLE_SYSTEM),
                UserMessage(content=f"Schema:\n{schema_text}\n\nQuestion: {self.question}"),
            ],
            OutputSchema(name="answerable", json_schema=prompts.ANSWERABLE_SCHEMA),
            max_tokens=80,
        )
        try:
            data = json.loads(reply)
        except ValueError:
            return None
        if isinstance(data, dict) and data.get("answerable") is False:
            return str(data.get("reason") or "no table or column holds this information")
        return None

    async def _judge(self, sql: str, result: QueryResult) -> tuple[str, str]:
        reply = await self._model(
            "judge",
            [
                SystemMessage(content=prompts.JUDGE_SYSTEM),
                UserMessage(
                    content=prompts.judge_user(
                        self.question, sql, result.columns, result.rows[:5], result.row_count
                    )
                ),
            ],
            OutputSchema(name="verdict", json_schema=prompts.JUDGE_SCHEMA),
            max_tokens=80,
        )
        try:
            data = json.loads(reply)
        except ValueError:
            # An unreadable verdict is not a failure of the query: let it pass, and say so.
            return "pass", "the judge's reply was not readable"
        if not isinstance(data, dict):
            return "pass", "the judge's reply was not readable"
        verdict = "fail" if data.get("verdict") == "fail" else "pass"
        return verdict, str(data.get("reason") or "")[:300]

    async def _write(self, sql: str, kind: str, attempts: int) -> Answer:
        """A statement that changes data: refused unless an approver says yes (a durable step, so a resumed
        run does not ask twice), and then run by the runner's write path."""
        agent = self.agent
        decision: ApprovalDecision | None = None
        if agent.approver is not None:
            approver = agent.approver
            request = ApprovalRequest(
                run_id=self.run_id, tool="sql_write", arguments={"sql": sql}, tool_call_id=f"write.{attempts}"
            )

            async def decide() -> ApprovalDecision:
                out = approver(request)
                return await out if inspect.isawaitable(out) else out

            decision = await self.step("approval", decide)
        write = getattr(agent.runner, "write", None)
        if decision is None or not decision.approved or write is None:
            why = f" ({decision.reason})" if decision is not None and decision.reason else ""
            agent._emit("check", f"refused: a {kind} statement would change the data{why}")
            return Answer(
                status="cannot_answer",
                answer=(
                    f"Refused: answering needs a {kind} statement, which changes the data. The data agent is "
                    f"read-only; writes need explicit approval{why}."
                ),
                sql=sql,
                run_id=self.run_id,
                usage=self.usage,
                attempts=attempts,
            )
        agent._emit("check", f"approved by {decision.by or 'a person'}: {kind}")

        async def run_write() -> QueryResult:
            result: QueryResult = await write(sql)
            return result

        result: QueryResult = await self.step("write", run_write)
        if not result.ok:
            return Answer(
                status="failed",
                answer=f"The approved {kind} failed: {result.error}",
                sql=sql,
                run_id=self.run_id,
                usage=self.usage,
                attempts=attempts,
            )
        agent._emit("answer", f"{kind} applied")
        return Answer(
            status="answered",
            answer=f"Applied the {kind} statement (approved by {decision.by or 'a person'}).",
            sql=sql,
            columns=result.columns,
            rows=result.rows,
            row_count=result.row_count,
            run_id=self.run_id,
            usage=self.usage,
            attempts=attempts,
        )

    def _cannot(self, reason: str) -> Answer:
        self.agent._emit("answer", f"cannot answer: {reason}")
        return Answer(
            status="cannot_answer",
            answer=f"The data cannot answer this: {reason}",
            run_id=self.run_id,
            usage=self.usage,
            attempts=self.n_model,
        )

    async def _answer(
        self,
        sql: str,
        result: QueryResult,
        judge_note: str | None,
        attempts: int,
        examples: list[VerifiedQuery],
    ) -> Answer:
        agent = self.agent
        text = prose_answer(self.question, result.columns, result.rows, result.row_count)
        reused = next((e.question for e in examples if _same_sql(e.sql, sql)), None)
        if reused is not None:
            text += f" (Reused the verified query for: {reused!r}.)"
        if judge_note is not None and judge_note.startswith("fail"):
            text += f" Caution, a check of the result said: {judge_note[6:]}"
        spec = vega_lite_spec(result.columns, result.rows, title=self.question) if agent.charts else None
        chart_path: str | None = None
        if spec is not None and agent.chart_dir is not None:
            render = getattr(agent.runner, "render_chart", None)
            if render is not None:
                out = agent.chart_dir / f"chart-{self.run_id or 'answer'}.png"

                async def draw() -> str | None:
                    path: Path | None = await render(spec, out)
                    return str(path) if path is not None else None

                chart_path = await self.step("chart", draw)
        agent._emit("answer", text, rows=result.row_count, chart=chart_path)
        return Answer(
            status="answered",
            answer=text,
            sql=sql,
            columns=result.columns,
            rows=result.rows,
            row_count=result.row_count,
            chart=chart_path,
            vega_lite=spec,
            run_id=self.run_id,
            usage=self.usage,
            verified_query=reused,
            judge=judge_note,
            attempts=attempts,
        )


def _same_sql(a: str, b: str) -> bool:
    return " ".join(a.lower().split()).rstrip(";") == " ".join(b.lower().split()).rstrip(";")
