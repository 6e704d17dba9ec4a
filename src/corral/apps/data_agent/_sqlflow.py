"""The SQL flow of the data agent's loop: what questions over a database supply to the shared skeleton.

The schema (cached, narrowed to the tables the question is about), the system's repairs and lint before a
query runs, hints after it fails (join paths, similar names, a GROUP BY skeleton), the vote on the first
complex query, and the reading of failures: a query that reached for names the data does not have is a
finding ("cannot answer"), not a failure of the agent.
"""

from __future__ import annotations

import json
from typing import Literal

from corral.apps.data_agent import _lessons as lessons
from corral.apps.data_agent import _prompts as prompts
from corral.apps.data_agent._answer import MAX_ROWS, Answer
from corral.apps.data_agent._checks import Finding, sanity_check
from corral.apps.data_agent._events import CheckNoted, SchemaRead
from corral.apps.data_agent._grounding import Grounding, grounded, note, settled, value_lookup, widen
from corral.apps.data_agent._hints import anti_join_hint, failure_hint, missing_name
from corral.apps.data_agent._loop import retry
from corral.apps.data_agent._outcome import cannot, compose
from corral.apps.data_agent._plan import check_plan, make_plan
from corral.apps.data_agent._runner import QueryResult, QueryRunner
from corral.apps.data_agent._schema import Schema, load_schema, narrow
from corral.apps.data_agent._sqlcheck import (
    extract_sql,
    is_complex,
    is_read_only,
    lint,
    quote_spaced_names,
    repair_duplicate_aliases,
    repair_qualifiers,
    table_aliases,
    unasked_filters,
)
from corral.apps.data_agent._state import Decision, Question, Settings, ask_model, emit
from corral.apps.data_agent._verified import VerifiedQuery, closest
from corral.apps.data_agent._vote import confirmed, vote
from corral.durable import RunContext
from corral.models import OutputSchema, SystemMessage, UserMessage


class SqlFlow:
    """One question's SQL flow (its bookkeeping lives here, the loop's in :class:`Question`)."""

    language: Literal["sql", "python"] = "sql"
    kind = "sql"
    max_tokens: int | None = None
    no_text = ("the reply contained no SQL query", "")
    same_text = ("this is the same query as before, which did not work", "Write a different query.")
    failed_text = "the query failed"
    judge_label = "SQL"

    def __init__(self, agent: Settings) -> None:
        self.agent = agent
        self.runner: QueryRunner = agent.runner
        self.full = Schema(dialect="sqlite", tables=[])
        self.schema = self.full
        self.examples: list[VerifiedQuery] = []
        self.lessons: list[lessons.Lesson] = []
        #: Names failed queries reached for, with whether the schema has something like them.
        self.missing: list[tuple[str, bool]] = []
        self.other_errors = 0
        self.wrote_query = False
        self.flagged_filters = False
        self.last_failure: str | None = None
        #: Whether the vote's candidates all agreed (then the judge is skipped).
        self.agreed = False
        #: Each concept of the question, grounded in the data or missing (see ``_grounding``).
        self.grounding: Grounding | None = None

    # -- before the loop ---------------------------------------------------------------------------------
    async def prepare(self, ctx: RunContext, q: Question) -> Answer | None:
        # The runner is a process-local handle (its type may differ in the process that resumes the run);
        # the source it reads is fixed by the run's input, so there is no argument worth comparing.
        self.full = await ctx.step("schema", load_schema, self.runner, returns=Schema, check_args=False)
        grounding = self.grounding = await grounded(ctx, q, self.full)
        if grounding.missing():
            # A concept the question needs is in no column, table or value: that is the answer.
            note(q, grounding)
            return cannot(q, grounding.reason())
        plan = make_plan(q.question, self.full, grounding)
        schema = self.schema = widen(
            narrow(self.full, q.question), self.full, grounding, plan.tables if plan else []
        )
        emit(
            q,
            SchemaRead(
                message=f"schema: {', '.join(schema.table_names()) or '(no table matched)'}",
                tables=schema.table_names(),
                brief=[t.name for t in schema.brief],
            ),
        )
        note(q, grounding)
        schema_text = schema.render()
        if not schema.tables and not settled(grounding):
            # Nothing in the schema matches the question's words: ask whether the data can answer at all.
            verdict = await self._answerable(ctx, q, schema_text)
            if verdict is not None:
                return cannot(q, verdict)
        self.examples = [vq for vq, _ in closest(list(self.agent.verified), q.question, k=2)]
        if self.examples:
            names = [e.question for e in self.examples]
            emit(q, SchemaRead(message=f"verified examples: {len(names)}", examples=names))
        self.lessons = await lessons.recall(ctx, q, self.full)
        if self.lessons:
            emit(q, SchemaRead(message=f"lessons shown: {', '.join(x.id for x in self.lessons)}"))
        if plan is not None:
            # A hard question: its joins and filters, checked in the sandbox, before the model composes.
            plan = await check_plan(ctx, q, plan, self.query)
        hints = [h for h in (anti_join_hint(q.question, schema), grounding.hint(), plan and plan.hint()) if h]
        previous = str(getattr(self.agent, "previous", ""))
        user = prompts.sql_user(
            q.question,
            schema_text,
            self.examples,
            hints,
            previous=previous,
            lessons=lessons.render(self.lessons),
        )
        q.messages = [SystemMessage(content=prompts.sql_system(self.full.dialect)), UserMessage(content=user)]
        return None

    async def _answerable(self, ctx: RunContext, q: Question, schema_text: str) -> str | None:
        """The reason the data cannot answer, or ``None`` when the model thinks it can."""
        reply = await ask_model(
            ctx,
            q,
            "answerable",
            [
                SystemMessage(content=prompts.ANSWERABLE_SYSTEM),
                UserMessage(content=f"Schema:\n{schema_text}\n\nQuestion: {q.question}"),
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

    # -- the texts the loop handles ----------------------------------------------------------------------
    def extract(self, reply: str) -> str:
        return extract_sql(reply, dialect=self.full.dialect)

    def normal(self, text: str) -> str:
        return " ".join(text.split())

    def feedback(self, error: str, hints: str = "") -> str:
        return prompts.fix_user(error, hints)

    def on_decline(self, q: Question, reason: str) -> Answer | Decision:
        """A "cannot answer" reply. After a query that failed for another reason than a missing name, it is
        giving up on a fixable error; a first decline when tables matched the question is pushed back once
        (small models decline too readily); otherwise it is the answer."""
        q.decline_reason = reason
        if settled(self.grounding):
            # Every concept is in the data: a decline is a mistake (the reason is kept for a failed answer).
            q.decline_reason = None
            if q.attempts >= q.limit:
                return "finish"
            assert self.grounding is not None
            q.messages.append(
                UserMessage(
                    content=prompts.fix_user("the data holds everything asked for", self.grounding.hint())
                )
            )
            return "again"
        if self.wrote_query and not self.missing and q.attempts < q.limit:
            q.last_error = "the query needs fixing, not giving up: " + (self.last_failure or "")
            joins = "; ".join(self.schema.joins())
            q.messages.append(
                UserMessage(content=prompts.fix_user(q.last_error, f"Joins: {joins}" if joins else ""))
            )
            return "again"
        if q.declined or not self.schema.tables:
            return cannot(q, reason)
        q.declined = True
        emit(q, CheckNoted(message=f"the model declined ({reason[:80]}); asking once more"))
        q.messages.append(UserMessage(content=prompts.push_back(self.schema.table_names())))
        return "again"

    # -- before, while and after a query runs ------------------------------------------------------------
    def repair(self, q: Question, sql: str) -> str:
        """The system's fixes of a query before it runs: bare names that need quotes, tables sharing an
        alias, columns qualified with the wrong table's alias."""
        full = self.full
        names = {t.name for t in full.tables} | {c.name for t in full.tables for c in t.columns}
        quoted, fixed = quote_spaced_names(sql, names, dialect=full.dialect)
        if fixed:
            sql = quoted
            emit(q, CheckNoted(message=f"quoted the names {', '.join(fixed)}"))
        columns = {t.name.lower(): {c.name.lower() for c in t.columns} for t in full.tables}
        renamed, aliases = repair_duplicate_aliases(sql, columns, dialect=full.dialect)
        if aliases:
            sql = renamed
            emit(q, CheckNoted(message=f"gave tables their own aliases: {', '.join(aliases)}"))
        repaired, notes = repair_qualifiers(sql, columns, dialect=full.dialect)
        # A repair must not create the mistake lint looks for (a join of a column with itself).
        if notes and len(lint(repaired, dialect=full.dialect)) <= len(lint(sql, dialect=full.dialect)):
            sql = repaired
            for note in notes:
                emit(q, CheckNoted(message=f"repaired column reference {note}"))
        return sql

    async def check(self, ctx: RunContext, q: Question) -> str:
        """Repairs, then: a statement that writes goes to approval; lint findings and filters the question
        never asked for go back to the model (the filter question once only: the model may know better)."""
        self.wrote_query = True
        dialect = self.full.dialect
        sql = q.text = self.repair(q, q.text)
        if not is_read_only(sql, dialect=dialect):
            return "approve"
        mistakes = lint(sql, dialect=dialect)
        unasked = [] if self.flagged_filters else unasked_filters(sql, q.question, dialect=dialect)
        if unasked:
            self.flagged_filters = True
            mistakes.append(
                f"the question does not ask to filter on {'; '.join(unasked)}: remove that condition unless "
                "the question needs it"
            )
        if mistakes and q.attempts < q.limit:
            error = "; ".join(mistakes)
            emit(q, CheckNoted(message=error, finding="lint", blocking=True))
            return retry(q, error)
        return "run"

    async def query(self, ctx: RunContext, sql: str) -> QueryResult:
        """One query in the sandbox, as a step."""
        result: QueryResult = await ctx.step(
            "query", self.runner.run, sql, max_rows=MAX_ROWS, returns=QueryResult
        )
        return result

    async def execute(self, ctx: RunContext, q: Question) -> QueryResult:
        """Run the query. The first one that joins, groups or nests gets more candidates sampled from the
        same prompt (its prefix is still in the model's cache) and keeps the result most agree on. Not on
        retries: given more tries at a question the data cannot answer, a small model finds some query
        that runs."""
        result = await self.query(ctx, q.text)
        agent = self.agent
        if q.attempts == 1 and agent.candidates > 0 and is_complex(q.text, dialect=self.full.dialect):
            q.text, result, self.agreed = await vote(ctx, q, self, q.text, result)
        return result

    def on_error(self, q: Question, error: str) -> str:
        """The hint for a failed query, and what the failure says: a name that a selected table has is a
        query on the wrong table (fixable); one no selected table has may be a sign the data lacks it."""
        self.last_failure = error
        missing = missing_name(error, self.full)
        if missing is None:
            self.other_errors += 1
        else:
            name = missing[0].lower()
            if any(t.name.lower() == name or t.column(name) is not None for t in self.schema.tables):
                self.other_errors += 1
            else:
                self.missing.append(missing)
        return failure_hint(error, self.full, self.schema, q.text, q.question)

    def on_result(self, q: Question) -> Answer | None:
        """``cannot_answer`` when an earlier query reached for a name none of the question's tables has and
        the query that ran reads none of them: it answers a question about something else (the customers'
        phone numbers for "the phone number of each artist")."""
        if not self.missing or not self.schema.tables or settled(self.grounding):
            return None
        read = {name.lower() for name in table_aliases(q.text, dialect=self.full.dialect).values()}
        selected = [t.name for t in self.schema.tables]
        if not read or read & {name.lower() for name in selected}:
            return None
        names = ", ".join(dict.fromkeys(name for name, _ in self.missing))
        return cannot(
            q,
            f"{', '.join(selected)} has no {names}; the only query that ran reads other tables "
            f"({', '.join(sorted(read))}), so it answers a different question",
        )

    def findings(self, q: Question) -> list[Finding]:
        assert q.result is not None
        return sanity_check(q.question, q.text, q.result, schema=self.schema, full=self.full)

    def skip_judge(self, q: Question) -> bool:
        return self.agreed

    # -- after the loop ----------------------------------------------------------------------------------
    async def conclude(self, ctx: RunContext, q: Question) -> Answer | None:
        """No query worked. If every failure reached for names the data does not have, the model said the data
        cannot answer, or exactly one phrase of the question is grounded nowhere, that finding is the answer;
        otherwise ``None`` (the question failed). Not when every concept of the question is grounded: then a
        wrong name was a mistake, not a finding."""
        if settled(self.grounding):
            return None
        if self.missing and not self.other_errors:
            unknown = [n for n, like in self.missing if not like] or [n for n, _ in self.missing]
            return cannot(
                q, "every query needed names the data does not have: " + ", ".join(dict.fromkeys(unknown))
            )
        if q.decline_reason is not None:
            return cannot(q, q.decline_reason)
        # Every query failed and one phrase of the question is in no column, table or sample value: the
        # data most likely lacks it (a failure would say less), unless a query finds it among the values.
        unfound = self.grounding.unfound() if self.grounding is not None else None
        if unfound is None or self.grounding is None:
            return None
        (concept,) = self.grounding.guessed()
        lookup = value_lookup(self.full, concept.stems)
        if lookup is not None:
            found = await self.query(ctx, lookup)
            if not found.ok or found.rows:
                return None  # a value holds it (or the lookup could not tell): a failure, not a finding
        return cannot(q, unfound)

    async def compose(self, ctx: RunContext, q: Question) -> Answer:
        answer = await compose(ctx, q, self.examples)

        async def confirm() -> bool:
            if q.result is not None and await confirmed(ctx, q, self, q.result):
                return True
            emit(q, CheckNoted(message="the fix is not kept as a lesson: an independent query did not agree"))
            return False

        await lessons.learn(ctx, q, answer, self.full, self.runner.source.describe(), confirm)
        return answer
