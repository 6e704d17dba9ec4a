"""Lessons: what the correction loop learned, kept per source and shown to the model on later questions.

When a question is answered after the loop corrected a query (the database refused it, a lint or sanity
check sent it back), the last failing query, what was wrong with it, and the query that worked are kept as a
:class:`Lesson`. Lessons are keyed by the source's *schema* fingerprint (tables, columns and types, not the
data), so they survive new rows and never reach a source with another schema. On a later question over the
same schema the closest lessons (by question similarity, the same ranking as verified queries) are shown to
the model next to the schema.

The store is a SQLite file next to the journal (``lessons.sqlite``; ``$CORRAL_LESSONS`` or the config file's
``lessons`` to move it), one row per lesson: a team reviews and deletes them with ``corral lessons list |
show | forget``. A lesson is data, never an instruction: its text reaches the model quoted and bounded, and
whatever the model then writes is still only a query checked read-only and run in the sandbox.

>>> from corral.apps.data_agent._schema import Column, Schema, Table
>>> a = Schema(dialect="sqlite", tables=[Table(name="t", columns=[Column(name="x", type="INTEGER")])])
>>> b = Schema(dialect="sqlite", tables=[Table(name="t", columns=[Column(name="y", type="INTEGER")])])
>>> fp = schema_fingerprint
>>> fp(a) == fp(a.model_copy()), fp(a) == fp(b)
(True, False)
"""

from __future__ import annotations

import hashlib
import sqlite3
from collections.abc import Awaitable, Callable
from contextlib import closing
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from pydantic import BaseModel, Field, ValidationError

from corral.apps.data_agent._verified import VerifiedQuery, closest
from corral.apps.data_agent.errors import DataAgentError

if TYPE_CHECKING:
    from corral.apps.data_agent._answer import Answer
    from corral.apps.data_agent._schema import Schema
    from corral.apps.data_agent._state import Question
    from corral.durable import RunContext

#: Bounds on what a lesson holds: it is shown to a small model, and its text may come from hostile data.
MAX_QUESTION = 500
MAX_SQL = 2000
MAX_PROBLEM = 300
#: How many lessons a prompt shows at most.
SHOWN = 2

LessonKind = Literal["error", "check"]


class Lesson(BaseModel):
    """One error → fix the loop found: the query that failed, why, and the one that worked."""

    id: str
    source: str = Field(description="schema fingerprint of the source it was learned on")
    source_name: str = ""
    question: str = Field(max_length=MAX_QUESTION)
    failed_sql: str = Field(max_length=MAX_SQL)
    problem: str = Field(max_length=MAX_PROBLEM)
    fixed_sql: str = Field(max_length=MAX_SQL)
    kind: LessonKind = "error"
    run_id: str = ""
    created: str = ""


def schema_fingerprint(schema: Schema) -> str:
    """A key of the schema's shape: dialect, tables, columns and their types (not rows, not samples)."""
    parts = [schema.dialect]
    for table in sorted(schema.tables, key=lambda t: t.name.lower()):
        cols = ",".join(f"{c.name.lower()}:{c.type.lower()}" for c in table.columns)
        parts.append(f"{table.name.lower()}({cols})")
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:24]


def default_path() -> Path:
    """``$CORRAL_LESSONS``, the config file's ``lessons``, or ``lessons.sqlite`` next to the journal."""
    from corral._config import get_setting, journal_path

    return Path(get_setting("lessons", default=str(journal_path().parent / "lessons.sqlite")))


_SCHEMA = """
CREATE TABLE IF NOT EXISTS lessons (
    id TEXT PRIMARY KEY,
    source TEXT NOT NULL,
    source_name TEXT NOT NULL,
    question TEXT NOT NULL,
    failed_sql TEXT NOT NULL,
    problem TEXT NOT NULL,
    fixed_sql TEXT NOT NULL,
    kind TEXT NOT NULL,
    run_id TEXT NOT NULL,
    created TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS lessons_source ON lessons (source);
"""
_COLUMNS = tuple(Lesson.model_fields)


class Recalled(BaseModel):
    """The lessons one question was shown (a step's result)."""

    lessons: list[Lesson] = Field(default_factory=list)


class LessonStore:
    """The lessons of every source, in one SQLite file (opened per call: a CLI and a running question may
    share it, and WAL lets them)."""

    def __init__(self, path: str | Path | None = None) -> None:
        self.path = Path(path) if path is not None else default_path()

    def _connect(self) -> sqlite3.Connection:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(self.path, timeout=10.0)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.executescript(_SCHEMA)
        except (OSError, sqlite3.Error) as exc:
            raise DataAgentError(f"cannot open the lessons store {self.path}: {exc}") from exc
        return conn

    def add(self, lesson: Lesson) -> Lesson:
        """Keep ``lesson`` (the same id again replaces it: a replayed question does not add a second one)."""
        row = tuple(getattr(lesson, c) for c in _COLUMNS)
        marks = ", ".join("?" for _ in _COLUMNS)
        with closing(self._connect()) as conn, conn:
            conn.execute(f"INSERT OR REPLACE INTO lessons ({', '.join(_COLUMNS)}) VALUES ({marks})", row)
        return lesson

    def all(self, source: str | None = None) -> list[Lesson]:
        """Every lesson (of one schema fingerprint, when ``source`` is given), oldest first."""
        if not self.path.exists():
            return []  # reading creates nothing
        where, args = ("WHERE source = ?", (source,)) if source is not None else ("", ())
        with closing(self._connect()) as conn:
            rows = conn.execute(
                f"SELECT {', '.join(_COLUMNS)} FROM lessons {where} ORDER BY created, id", args
            ).fetchall()
        return [lesson for r in rows if (lesson := _from_row(r)) is not None]

    def get(self, lesson_id: str) -> Lesson | None:
        """The lesson whose id is (or starts with, when unambiguous) ``lesson_id``."""
        if not self.path.exists() or not lesson_id:
            return None
        with closing(self._connect()) as conn:
            rows = conn.execute(
                f"SELECT {', '.join(_COLUMNS)} FROM lessons WHERE id LIKE ? ESCAPE '\\' LIMIT 2",
                (_prefix(lesson_id),),
            ).fetchall()
        return _from_row(rows[0]) if len(rows) == 1 else None

    def forget(self, lesson_id: str) -> Lesson | None:
        """Delete one lesson; returns it, or ``None`` when no single lesson has that id."""
        lesson = self.get(lesson_id)
        if lesson is not None:
            with closing(self._connect()) as conn, conn:
                conn.execute("DELETE FROM lessons WHERE id = ?", (lesson.id,))
        return lesson

    def closest(self, source: str, question: str, *, k: int = SHOWN) -> list[Lesson]:
        """The ``k`` lessons of ``source`` whose questions are most like ``question``, best first."""
        lessons = self.all(source)
        as_queries = [VerifiedQuery(question=les.question, sql=les.fixed_sql) for les in lessons]
        index = {id(vq): les for vq, les in zip(as_queries, lessons, strict=True)}
        return [index[id(vq)] for vq, _ in closest(as_queries, question, k=k)]


def _prefix(lesson_id: str) -> str:
    escaped = lesson_id.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return escaped + "%"


def _from_row(row: tuple[object, ...]) -> Lesson | None:
    """A stored row as a lesson; a row edited out of bounds (too long, wrong kind) is ignored, not a crash."""
    try:
        return Lesson.model_validate(dict(zip(_COLUMNS, row, strict=True)))
    except ValidationError:
        return None


def _one_line(text: str, limit: int) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


def render(lessons: list[Lesson]) -> str:
    """The prompt block: each lesson as its question, the mistake (one quoted line), the query that worked."""
    out = []
    for les in lessons:
        out.append(
            f"Question: {_one_line(les.question, MAX_QUESTION)}\n"
            f"Mistake to avoid: `{_one_line(les.failed_sql, 300)}` failed: {_one_line(les.problem, 200)}\n"
            f"```sql\n{les.fixed_sql.strip().replace('```', '` ` `')}\n```"
        )
    return "\n\n".join(out)


# -- the loop's side ----------------------------------------------------------------------------------------
def store_of(q: Question) -> LessonStore | None:
    """The agent's lesson store, if it keeps lessons (and the question is answered with SQL)."""
    store = getattr(q.agent, "lessons", None)
    if not isinstance(store, LessonStore) or q.flow is None or q.flow.language != "sql":
        return None
    return store


async def recall(ctx: RunContext, q: Question, schema: Schema) -> list[Lesson]:
    """The closest lessons for ``q`` over ``schema``, as a step (a resumed question sees the same ones)."""
    store = store_of(q)
    if store is None:
        return []

    def find(source: str, question: str) -> Recalled:
        return Recalled(lessons=store.closest(source, question))

    found = await ctx.step(
        "lessons", find, schema_fingerprint(schema), q.question, returns=Recalled, check_args=False
    )
    return found.lessons


def lesson_of(q: Question, answer: Answer, schema: Schema, source_name: str) -> Lesson | None:
    """The lesson an answered question taught: its last failed query before the one that answered it (none
    when the judge's last word on the answer was a fail: a doubtful fix is no lesson)."""
    if answer.status != "answered" or not answer.sql or (q.judge_note or "").startswith("fail"):
        return None
    fixed = " ".join(answer.sql.split())
    failed = [(sql, why) for sql, why in q.failures if " ".join(sql.split()) != fixed]
    if not failed:
        return None
    sql, problem = failed[-1]
    source = schema_fingerprint(schema)
    key = hashlib.sha256(f"{source}\n{q.question}\n{fixed}".encode()).hexdigest()[:12]
    return Lesson(
        id=key,
        source=source,
        source_name=source_name[:200],
        question=q.question[:MAX_QUESTION],
        failed_sql=sql[:MAX_SQL],
        problem=_one_line(problem, MAX_PROBLEM),
        fixed_sql=answer.sql[:MAX_SQL],
        kind="error" if problem.startswith(("Operational", "Parser", "Binder", "Catalog")) else "check",
        run_id=q.run_id,
    )


async def learn(
    ctx: RunContext,
    q: Question,
    answer: Answer,
    schema: Schema,
    source_name: str,
    confirm: Callable[[], Awaitable[bool]],
) -> Lesson | None:
    """Keep the lesson ``q`` taught with ``answer``, if any and if ``confirm()`` (asked only then) agrees, as
    a step (a replay does not add it twice)."""
    store = store_of(q)
    if store is None:
        return None
    lesson = lesson_of(q, answer, schema, source_name)
    if lesson is None:
        return None
    if not await confirm():
        return None
    lesson = lesson.model_copy(update={"created": ctx.now().isoformat(timespec="seconds")})
    kept: Lesson = await ctx.step("lesson", store.add, lesson, returns=Lesson, check_args=False)
    return kept
