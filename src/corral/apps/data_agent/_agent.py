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
from typing import Any, Literal, TypeVar

from corral.apps.data_agent import _prompts as prompts
from corral.apps.data_agent._answer import MAX_ROWS, Answer, prose_answer
from corral.apps.data_agent._chart import vega_lite_spec
from corral.apps.data_agent._checks import sanity_check
from corral.apps.data_agent._pandas_agent import answer_with_pandas
from corral.apps.data_agent._pandas_runner import CodeRunner
from corral.apps.data_agent._runner import QueryResult, QueryRunner
from corral.apps.data_agent._schema import Schema, join_chain, join_path, load_schema, narrow, words
from corral.apps.data_agent._sqlcheck import (
    extract_sql,
    is_complex,
    is_read_only,
    lint,
    quote_spaced_names,
    repair_duplicate_aliases,
    repair_qualifiers,
    statement_kind,
    table_aliases,
    unasked_filters,
)
from corral.apps.data_agent._verified import VerifiedQuery, closest
from corral.apps.data_agent.errors import DataAgentError
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
    sanity findings; the judge gets ``judge_retries`` extra attempts. The first query that joins, groups or
    nests gets ``candidates`` more, sampled at ``candidate_temperature`` from the same prompt and run too;
    the result most of them agree on is kept (self-consistency on results, not on SQL text). A statement
    that changes data is refused unless ``approver`` (see :mod:`corral.guards`) approves it, as a durable
    step; it then runs through the runner's separate ``write`` path.
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
    #: Runs pandas code over a file source (:class:`~._pandas_runner.SandboxPandasRunner` in the product).
    code_runner: CodeRunner | None = None
    #: ``"auto"`` answers file sources with pandas when there is a ``code_runner`` and databases with SQL;
    #: ``"sql"`` or ``"python"`` forces one.
    language: Literal["auto", "sql", "python"] = "auto"
    settings: ModelSettings = field(default_factory=lambda: ModelSettings(temperature=0.0, max_tokens=400))
    candidates: int = 2
    candidate_temperature: float = 0.6

    def _emit(self, kind: str, message: str, **data: Any) -> None:
        if self.on_event is not None:
            self.on_event(DataEvent(kind, message, data))

    async def ask(self, question: str, *, step: StepFn = _run_now, run_id: str = "") -> Answer:
        """Answer ``question``; never raises for a bad query, a bad model reply or a spent budget (those are
        a status)."""
        run = _Run(self, question, step, run_id)
        try:
            if self.language != "sql" and self.code_runner is not None:
                return await answer_with_pandas(run, self.code_runner)
            if self.language == "python":
                raise DataAgentError(
                    "language='python' needs a code_runner (pandas runs over CSV/Parquet files)"
                )
            return await run.go()
        except _BudgetSpent as exc:
            self._emit("answer", f"stopped: {exc}")
            return Answer(
                status="failed", answer=f"Stopped by a budget: {exc}", run_id=run_id, usage=run.usage
            )


def _join_hint(
    error: str, schema: Schema, sql: str, dialect: str, question: str = "", selected: Sequence[str] = ()
) -> str:
    """For "no such column: alias.col" where the alias's table lacks the column: the join path from that
    table to one that has it (the system walks the keys; the 0.5B model does not). For an unqualified
    column of a one-table query, only to the ``selected`` tables (those the question is about): the path to
    any table with a column of that name leads a small model to answer what nobody asked (an artist's
    phone number through the customers who bought their albums)."""
    only: set[str] | None = None
    match = re.search(r"no such column:\s*\"?(\w+)\.(\w+)", error, re.IGNORECASE) or re.search(
        r'Table "(\w+)" does not have a column named "(\w+)"', error
    )
    aliases = table_aliases(sql, dialect=dialect)
    if match is not None:
        qualifier, column = match.group(1), match.group(2)
        start = aliases.get(qualifier.lower(), qualifier)
    else:
        # An unqualified column in a one-table query: the path from that table.
        bare = re.search(r"no such column:\s*\"?(\w+)\"?\s*$", error.strip(), re.IGNORECASE) or re.search(
            r'column "?(\w+)"? (?:not found|does not exist)', error
        )
        used = set(aliases.values())
        if bare is None or len(used) != 1:
            return ""
        column, start = bare.group(1), used.pop()
        only = {name.lower() for name in selected}
    owners = [
        t.name
        for t in schema.tables
        if t.column(column) is not None
        and t.name.lower() != start.lower()
        and (only is None or t.name.lower() in only)
    ]
    if not owners:
        return ""
    used = {name.lower() for name in aliases.values()}
    asked = set(words(question))
    # The table the query already reads first, then one the question names ("which department ...").
    owners.sort(key=lambda name: (name.lower() not in used, not set(words(name)) <= asked))
    for owner in owners:
        path = join_path(schema, start, owner)
        if path:
            return (
                f"{start} has no column {column}; {owner}.{column} is reached by joining on "
                + ", then ".join(path)
                + "."
            )
    return ""


def _group_hint(error: str, schema: Schema, sql: str, dialect: str, question: str = "") -> str:
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
    pk = next((c.name for c in table.columns if c.pk), None)
    label = pk or next(
        (c.name for c in table.columns if not c.pk and not _is_key_name(c.name)), table.columns[0].name
    )
    # The table to count: one the question names first (``lab results`` per patient), the nearest first.
    asked = set(words(question))
    options = []
    for other in schema.tables:
        if other.name == table.name:
            continue
        chain = join_chain(schema, other.name, table.name)
        if chain:
            named = set(words(other.name)) <= asked
            options.append((not named, len(chain), other.name, chain))
    if not options:
        return "Use GROUP BY with the aggregate."
    _, _, other_name, chain = min(options)
    joins = " ".join(f"JOIN {name} ON {condition}" for name, condition in chain)
    return (
        f"To count {other_name} rows per {table.name}: FROM {schema._q(other_name)} {joins} "
        f"GROUP BY {schema._q(table.name)}.{schema._q(label)}, then ORDER BY COUNT(*) DESC."
    )


_NEGATION = re.compile(r"\b(?:never|without|no|none)\b", re.IGNORECASE)


def _anti_join_hint(question: str, schema: Schema) -> str:
    """For a question about rows that have no match ("tracks never sold", "patients without an
    appointment"): the ``NOT IN`` form over the key between the table the question names and a selected
    table that refers to it. Small models write a join with a filter such as ``Quantity = 0`` instead."""
    if not _NEGATION.search(question):
        return ""
    asked = set(words(question))
    named = [t for t in schema.tables if set(words(t.name)) <= asked]
    for subject in named:
        referring = [
            (other, fk)
            for other in schema.tables
            if other.name != subject.name
            for fk in other.foreign_keys
            if fk.ref_table == subject.name
        ]
        if referring:
            other, fk = referring[0]
            q = schema._q
            return prompts.anti_join(q(subject.name), q(fk.ref_column), q(other.name), q(fk.column))
    return ""


#: A candidate query's token budget: a query, not the explanation small models like to add after it.
_CANDIDATE_TOKENS = 200


def _nothing(result: QueryResult) -> bool:
    """A single row of zeros and NULLs: what a query whose filter or join matched nothing returns."""
    return len(result.rows) == 1 and all(v is None or v == 0 for v in result.rows[0])


def _result_key(result: QueryResult) -> tuple[str, ...]:
    """A result's identity for voting: its rows as a sorted multiset, numbers at 6 significant digits,
    column names ignored."""

    def cell(v: Any) -> str:
        if isinstance(v, bool) or v is None:
            return repr(v)
        if isinstance(v, int | float):
            return f"{float(v):.6g}"
        return str(v)

    return tuple(sorted("\x1f".join(cell(v) for v in row) for row in result.rows))


def _is_key_name(name: str) -> bool:
    return bool(re.search(r"(id|_key|code)$", name, re.IGNORECASE))


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
        self.wrote_query = False
        #: Candidate queries of the vote that failed (a retry that writes one again is not run again).
        self._failed_alternatives: list[str] = []
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
        seed: int | None = None,
    ) -> str:
        trip = self.guard.before_model(now=0.0)
        if trip is not None:
            raise _BudgetSpent(f"{trip.reason}: {trip.detail}")
        self.n_model += 1
        agent = self.agent
        model = agent.judge_model if kind == "judge" and agent.judge_model is not None else agent.model
        settings = agent.settings.model_copy(
            update={
                k: v
                for k, v in (("temperature", temperature), ("max_tokens", max_tokens), ("seed", seed))
                if v is not None
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
        hint = _anti_join_hint(question, schema)
        messages: list[Message] = [
            SystemMessage(content=prompts.sql_system(full.dialect)),
            UserMessage(content=prompts.sql_user(question, schema_text, examples, [hint] if hint else [])),
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
        agreed = False
        while attempts < limit:
            attempts += 1
            # A repeated mistake at temperature 0 repeats forever: later attempts sample a little.
            prompt = list(prompts.condensed(messages))
            reply = await self._model(
                "sql", prompt, temperature=0.0 if attempts == 1 else 0.3 + 0.3 * (attempts - 2)
            )
            messages.append(AssistantMessage(content=reply))
            sql = extract_sql(reply)
            if not sql:
                reason = prompts.declined(reply)
                if reason is not None:
                    self.decline_reason = reason
                    if self.wrote_query and not self.missing and attempts < limit:
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
            self.wrote_query = True
            agent._emit("sql", sql, attempt=attempts)
            sql = self._repair(sql, full)
            if not is_read_only(sql, dialect=full.dialect):
                return await self._write(sql, statement_kind(sql, dialect=full.dialect).upper(), attempts)
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
            if attempts == 1 and agent.candidates > 0 and is_complex(sql, dialect=full.dialect):
                # The first query, when it joins, groups or nests: sample more from the same prompt (its
                # prefix is still in the model's cache, so each costs only its own tokens) and keep the
                # result most candidates agree on. Not on retries: given more tries at a question the data
                # cannot answer, a small model finds some query that runs.
                sql, result, agreed = await self._vote(prompt, sql, result, schema, full)
                for failed in self._failed_alternatives:
                    tried.add(failed)
            if not result.ok:
                last_error = result.error or "the query failed"
                agent._emit("query", f"error: {last_error}", ok=False)
                self.last_failure = last_error
                hints = _join_hint(
                    last_error, full, sql, full.dialect, question, schema.table_names()
                ) or _similar_names(last_error, full, sql)
                if not hints:
                    hints = _group_hint(last_error, schema, sql, full.dialect, question)
                if not hints and len(schema.tables) > 1:
                    hints = "Joins: " + "; ".join(schema.joins())
                missing = _missing_name(last_error, full)
                if missing is not None:
                    # A name that a selected table has is a query on the wrong table (fixable), not a sign
                    # that the data lacks what the question needs.
                    name = missing[0].lower()
                    fixable = any(t.name.lower() == name or t.column(name) is not None for t in schema.tables)
                    if fixable:
                        self.other_errors += 1
                    else:
                        self.missing.append(missing)
                else:
                    self.other_errors += 1
                messages.append(UserMessage(content=prompts.fix_user(last_error, hints)))
                continue
            agent._emit("query", f"{result.row_count} rows in {result.elapsed_s:.2f} s", ok=True)
            switched = self._switched_subject(sql, schema, full.dialect)
            if switched is not None:
                return self._cannot(switched)
            best = (sql, result)
            findings = sanity_check(question, sql, result, schema=schema, full=full)
            blocking = [f for f in findings if f.blocking]
            for f in findings:
                agent._emit("check", f.message, finding=f.kind, blocking=f.blocking)
            if blocking and attempts < agent.max_attempts:
                last_error = "; ".join(f.message for f in blocking)
                messages.append(UserMessage(content=prompts.fix_user(last_error, "")))
                continue
            if not agent.judge:
                break
            if agreed:
                # Independent samples that agree on the result are the stronger check; the judge (a 0.5B
                # model reading five rows) adds little to it and costs a full prompt.
                judge_note = None
                agent._emit("judge", "skipped: the candidate queries agree on the result", verdict="agreed")
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
            return self._failed(sql, attempts, last_error)
        return await self._answer(best[0], best[1], judge_note, attempts, examples)

    def _switched_subject(self, sql: str, schema: Schema, dialect: str) -> str | None:
        """The reason the data cannot answer when an earlier query reached for a name that none of the
        tables the question is about has, and the query that ran reads none of those tables: it answers
        a question about something else (the customers' phone numbers for "the phone number of each
        artist"). ``None`` otherwise."""
        if not self.missing or not schema.tables:
            return None
        read = {name.lower() for name in table_aliases(sql, dialect=dialect).values()}
        selected = [t.name for t in schema.tables]
        if not read or read & {name.lower() for name in selected}:
            return None
        names = ", ".join(dict.fromkeys(name for name, _ in self.missing))
        return (
            f"{', '.join(selected)} has no {names}; the only query that ran reads other tables "
            f"({', '.join(sorted(read))}), so it answers a different question"
        )

    def _repair(self, sql: str, full: Schema) -> str:
        """The system's fixes of a query before it runs: bare names that need quotes, columns qualified with
        the wrong table's alias."""
        agent = self.agent
        names = {t.name for t in full.tables} | {c.name for t in full.tables for c in t.columns}
        quoted, fixed = quote_spaced_names(sql, names, dialect=full.dialect)
        if fixed:
            sql = quoted
            agent._emit("check", f"quoted the names {', '.join(fixed)}")
        columns = {t.name.lower(): {c.name.lower() for c in t.columns} for t in full.tables}
        renamed, aliases = repair_duplicate_aliases(sql, columns, dialect=full.dialect)
        if aliases:
            sql = renamed
            agent._emit("check", f"gave tables their own aliases: {', '.join(aliases)}")
        repaired, notes = repair_qualifiers(sql, columns, dialect=full.dialect)
        # A repair must not create the mistake lint looks for (a join of a column with itself).
        if notes and len(lint(repaired, dialect=full.dialect)) <= len(lint(sql, dialect=full.dialect)):
            sql = repaired
            for note in notes:
                agent._emit("check", f"repaired column reference {note}")
        return sql

    async def _vote(
        self, prompt: list[Message], sql: str, result: QueryResult, schema: Schema, full: Schema
    ) -> tuple[str, QueryResult, bool]:
        """Self-consistency on results: ``candidates`` more queries sampled from ``prompt`` are checked and
        run like the first; the result that most candidates give wins (ties: a result that is not a single
        row of zeros/NULLs, then the first query's, then the earliest). When no two results agree,
        ``candidates`` more are drawn, once. Results with a blocking sanity finding vote only when no other
        result ran. Returns the winner and whether every candidate that ran agreed on it (two at least)."""
        agent = self.agent
        pool: list[tuple[str, QueryResult]] = [(sql, result)]
        by_text = {" ".join(sql.split()): result}
        self._failed_alternatives = []

        async def draw(seeds: range) -> None:
            for seed in seeds:
                reply = await self._model(
                    "sql-alt",
                    prompt,
                    temperature=agent.candidate_temperature,
                    seed=seed,
                    max_tokens=_CANDIDATE_TOKENS,
                )
                alt = extract_sql(reply)
                if not alt:
                    continue
                alt = self._repair(alt, full)
                if not is_read_only(alt, dialect=full.dialect) or lint(alt, dialect=full.dialect):
                    continue
                text = " ".join(alt.split())
                if text in by_text:
                    pool.append((alt, by_text[text]))  # the same query again: a vote for the same result
                    continue
                agent._emit("sql", alt, attempt="candidate")
                alt_result = await self._query(alt)
                by_text[text] = alt_result
                pool.append((alt, alt_result))
                if not alt_result.ok:
                    self._failed_alternatives.append(text)

        def count() -> tuple[list[tuple[int, str, QueryResult]], dict[tuple[str, ...], list[int]]]:
            ran = [(i, s, r) for i, (s, r) in enumerate(pool) if r.ok]
            clean = [
                (i, s, r)
                for i, s, r in ran
                if r.row_count > 0
                and not any(f.blocking for f in sanity_check(self.question, s, r, schema=schema, full=full))
            ]
            groups: dict[tuple[str, ...], list[int]] = {}
            for i, _, r in clean or ran:
                groups.setdefault(_result_key(r), []).append(i)
            return ran, groups

        await draw(range(1, agent.candidates + 1))
        ran, groups = count()
        if len(groups) > 1 and max(len(g) for g in groups.values()) == 1:
            # No two results agree: one more round decides more often than a tie-break.
            await draw(range(agent.candidates + 1, 2 * agent.candidates + 1))
            ran, groups = count()
        if not groups:
            return sql, result, False

        def rank(key: tuple[str, ...]) -> tuple[int, bool, bool, int]:
            members = groups[key]
            degenerate = _nothing(pool[members[0]][1])
            return len(members), not degenerate, 0 in members, -members[0]

        best_key = max(groups, key=rank)
        winner = groups[best_key][0]
        size = len(groups[best_key])
        voters = sum(len(g) for g in groups.values())
        agent._emit(
            "check",
            f"{len(pool)} candidate queries, {len(ran)} ran, {size} agree on the kept result",
            candidates=len(pool),
            agree=size,
        )
        kept = pool[winner][1]
        clean = kept.row_count > 0 and not any(
            f.blocking for f in sanity_check(self.question, pool[winner][0], kept, schema=schema, full=full)
        )
        unanimous = clean and size >= 2 and len(groups) == 1 and len(ran) == voters
        return pool[winner][0], pool[winner][1], unanimous

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

    async def _judge(
        self, sql: str, result: QueryResult, *, system: str = prompts.JUDGE_SYSTEM, label: str = "SQL"
    ) -> tuple[str, str]:
        """The judge's ``(verdict, reason)`` on a query (or, with ``system``/``label``, a program)."""
        reply = await self._model(
            "judge",
            [
                SystemMessage(content=system),
                UserMessage(
                    content=prompts.judge_user(
                        self.question, sql, result.columns, result.rows[:5], result.row_count, label=label
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

    def _failed(self, text: str, attempts: int, last_error: str, *, language: str = "sql") -> Answer:
        """No working query (or program) after ``attempts``: ``failed``, with the last one and its problem."""
        what = "code" if language == "python" else "query"
        return Answer(
            status="failed",
            answer=f"No working {what} after {attempts} attempts; last problem: {last_error}",
            run_id=self.run_id,
            usage=self.usage,
            attempts=attempts,
            sql=(text or None) if language == "sql" else None,
            code=(text or None) if language == "python" else None,
        )

    async def _answer(
        self,
        sql: str,
        result: QueryResult,
        judge_note: str | None,
        attempts: int,
        examples: list[VerifiedQuery],
        *,
        language: str = "sql",
    ) -> Answer:
        """The answer from a working query (or, ``language="python"``, program) and its result."""
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
            sql=sql if language == "sql" else None,
            code=sql if language == "python" else None,
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
