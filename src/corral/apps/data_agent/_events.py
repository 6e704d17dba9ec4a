"""The data agent's events: what each node of its workflow did, typed, for the live display and the web UI.

Each event is a frozen pydantic model with a ``type`` tag (a stream of them is JSON lines that parse back
with :data:`data_event_adapter`) and a ``message`` a person reads. ``kind`` groups them the way the
terminal shows them (schema, sql, code, query, check, judge, answer).

>>> event = QueryRan(message="25 rows in 0.01 s", ok=True, rows=25)
>>> data_event_adapter.validate_json(event.model_dump_json()) == event, event.kind
(True, 'query')
"""

from __future__ import annotations

from typing import Annotated, Literal, TypeAlias

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter


class _Event(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    message: str

    @property
    def kind(self) -> str:
        """The display group of the event."""
        return str(getattr(self, "type", "event"))


class SchemaRead(_Event):
    """The tables (or DataFrames) the question is about, and the verified examples found for it."""

    type: Literal["schema"] = "schema"
    tables: list[str] = Field(default_factory=list)
    brief: list[str] = Field(default_factory=list)
    examples: list[str] = Field(default_factory=list)


class QueryWritten(_Event):
    """The model wrote a query (SQL) or a program (pandas); ``attempt`` is ``None`` for a vote candidate."""

    type: Literal["query_written"] = "query_written"
    language: Literal["sql", "python"] = "sql"
    attempt: int | None = None

    @property
    def kind(self) -> str:
        return "code" if self.language == "python" else "sql"


class QueryRan(_Event):
    """A query or program ran in the sandbox: its row count, or its error (``ok`` false)."""

    type: Literal["query_ran"] = "query_ran"
    ok: bool
    rows: int = 0
    elapsed_s: float = 0.0

    @property
    def kind(self) -> str:
        return "query"


class CheckNoted(_Event):
    """A check of the system: a repair, a lint or sanity finding (``blocking`` sends the query back), a
    vote, a decline pushed back, an approval."""

    type: Literal["check"] = "check"
    finding: str | None = None
    blocking: bool = False


class Judged(_Event):
    """The judge's verdict on a result, or why it was skipped (``agreed``: the vote's candidates agreed;
    ``skipped``: another conclusive check, named in the message)."""

    type: Literal["judge"] = "judge"
    verdict: Literal["pass", "fail", "agreed", "skipped"]


class Answered(_Event):
    """The question's outcome."""

    type: Literal["answer"] = "answer"
    rows: int = 0
    chart: str | None = None


#: Any event of the data agent, discriminated by ``type``.
DataEvent: TypeAlias = Annotated[
    SchemaRead | QueryWritten | QueryRan | CheckNoted | Judged | Answered, Field(discriminator="type")
]

#: Validates/parses any :data:`DataEvent` (e.g. from a JSON line).
data_event_adapter: TypeAdapter[DataEvent] = TypeAdapter(DataEvent)
