"""The data agent's answer, and the ``--json`` contract scripts and evaluations consume.

The contract (stable; pinned by ``tests/apps/data_agent/test_contract.py``)::

    {"status": "answered" | "cannot_answer" | "failed",
     "answer": str, "sql": str | null, "code": str | null, "columns": [str], "rows": [[...]] (at most 1,000),
     "chart": path | null, "run_id": str, "usage": {...}}

``sql`` is the query that produced the table, ``code`` the pandas program when a file question was answered
with pandas instead (at most one of the two is set).

``to_json()`` returns exactly these keys. Everything else an :class:`Answer` carries (the Vega-Lite spec,
the verified query reused, the judge's verdict) is for the terminal and the web UI, not the contract.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from corral.apps.data_agent._judgement import Judgement
from corral.models import Usage

Status = Literal["answered", "cannot_answer", "failed"]

#: Rows the contract carries at most; ``row_count`` says how many the query really returned.
MAX_ROWS = 1000

CONTRACT_KEYS = ("status", "answer", "sql", "code", "columns", "rows", "chart", "run_id", "usage")


class Answer(BaseModel):
    """What the data agent concluded."""

    model_config = ConfigDict(frozen=True)

    status: Status
    answer: str
    sql: str | None = None
    code: str | None = None
    columns: list[str] = Field(default_factory=list)
    rows: list[list[Any]] = Field(default_factory=list)
    row_count: int = 0
    chart: str | None = None
    vega_lite: dict[str, Any] | None = None
    run_id: str = ""
    usage: Usage = Field(default_factory=Usage)
    verified_query: str | None = None
    judge: str | None = None
    #: The judge's verdicts on each result it saw (or why it was skipped); not in the contract.
    judgements: list[Judgement] = Field(default_factory=list)
    attempts: int = 0

    def to_json(self) -> dict[str, Any]:
        """The ``--json`` object: exactly :data:`CONTRACT_KEYS`, rows capped at :data:`MAX_ROWS`."""
        return {
            "status": self.status,
            "answer": self.answer,
            "sql": self.sql,
            "code": self.code,
            "columns": list(self.columns),
            "rows": [list(r) for r in self.rows[:MAX_ROWS]],
            "chart": self.chart,
            "run_id": self.run_id,
            "usage": self.usage.model_dump(),
        }


def prose_answer(question: str, columns: list[str], rows: list[list[Any]], row_count: int) -> str:
    """A short answer written by the system from the result, so a small model cannot misquote numbers.

    >>> prose_answer("How many?", ["n"], [[42]], 1)
    'n: 42'
    >>> prose_answer("Top artists?", ["Name", "albums"], [["Iron Maiden", 21], ["Led Zeppelin", 14]], 2)
    '2 rows. First: Name=Iron Maiden, albums=21.'
    """
    if row_count == 0:
        return "The query returned no rows."
    if len(rows) == 1 and len(columns) == 1:
        return f"{columns[0]}: {_fmt(rows[0][0])}"
    if len(rows) == 1:
        return ", ".join(f"{c}={_fmt(v)}" for c, v in zip(columns, rows[0], strict=False)) + "."
    first = ", ".join(f"{c}={_fmt(v)}" for c, v in zip(columns, rows[0], strict=False))
    return f"{row_count} rows. First: {first}."


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:,.2f}" if abs(value) >= 100 else f"{value:.4g}"
    return str(value)
