"""The plan of a hard question: the joins it needs, and the values it filters on, checked before the model
writes the query that composes them.

A question that reaches three or more tables, or ranks groups across two ("which artist has the most
tracks in the Rock genre"), is where a 0.5B model fails: it guesses join conditions and filter columns.
The system builds the plan from the grounding (the table each concept is in, the key path between them)
and the question's values found in sample values, then checks each part with a count query in the sandbox:
the join chain must keep rows, and each filter must match rows on it. Only checked parts reach the model,
as a hint with the row counts; a part that fails is left out (a wrong plan misleads more than none). At
most one query per part and :data:`MAX_PARTS` parts: bounded like every loop.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from corral.apps.data_agent._events import CheckNoted
from corral.apps.data_agent._schema import Schema, join_chain, words
from corral.apps.data_agent._state import emit

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from corral.apps.data_agent._grounding import Grounding
    from corral.apps.data_agent._runner import QueryResult
    from corral.apps.data_agent._state import Question
    from corral.durable import RunContext

#: At most this many checked parts (the join chain and the filters).
MAX_PARTS = 3

_RANKING = re.compile(
    r"\b(most|least|top|highest|lowest|best|worst|largest|smallest|fewest)\b", re.IGNORECASE
)
_GROUPING = re.compile(r"\b(each|per|by|every|which|who)\b", re.IGNORECASE)


@dataclass
class Plan:
    """The joins (``FROM`` clause) and the filters of a hard question, with what each check found."""

    tables: list[str]
    source: str
    filters: list[str] = field(default_factory=list)
    #: ``(part, rows)`` of the parts that passed their check.
    checked: list[tuple[str, int]] = field(default_factory=list)

    def hint(self) -> str:
        if not self.checked:
            return ""
        parts = [f"{part} (checked: {rows} rows)" for part, rows in self.checked]
        return "plan: " + "; ".join(parts)


def is_hard(question: str, grounding: Grounding) -> bool:
    """Three or more tables, or a ranking of groups across two."""
    tables = grounding.tables()
    if len(tables) >= 3:
        return True
    return len(tables) == 2 and bool(_RANKING.search(question)) and bool(_GROUPING.search(question))


def make_plan(question: str, schema: Schema, grounding: Grounding) -> Plan | None:
    """The plan of ``question``, or ``None`` when it is not hard or its tables do not connect."""
    if not is_hard(question, grounding):
        return None
    tables = grounding.tables()[:4]
    q = schema._q
    start = tables[0]
    joined = [start]
    clauses = [f"FROM {q(start)}"]
    for goal in tables[1:]:
        if goal in joined:
            continue
        chain = join_chain(schema, start, goal)
        if not chain:
            return None
        for table, condition in chain:
            name = table.strip('"`[]')
            if name in joined:
                continue
            joined.append(name)
            clauses.append(f"JOIN {table} ON {condition}")
    if len(joined) < 2:
        return None
    return Plan(tables=joined, source=" ".join(clauses), filters=_filters(question, schema, joined))


def _filters(question: str, schema: Schema, tables: list[str]) -> list[str]:
    """``table.column = 'value'`` for the question's values (quoted, or capitalised inside the sentence)
    that are sample values of a text column of the plan's tables."""
    values = re.findall(r"(?<![A-Za-z])'([^']+)'(?![A-Za-z])|\"([^\"]+)\"", question)
    found = [a or b for a, b in values]
    found += re.findall(r"(?<=[a-z,] )([A-Z][\w/&-]*(?: [A-Z][\w/&-]*)*)", question)
    q = schema._q
    out: list[str] = []
    for value in dict.fromkeys(found):
        if set(words(value)) <= {"i"}:
            continue
        for name in tables:
            table = schema.table(name)
            if table is None:
                continue
            col = next(
                (
                    c
                    for c in table.columns
                    if any(isinstance(v, str) and v.lower() == value.lower() for v in c.samples)
                ),
                None,
            )
            if col is not None:
                literal = "'" + value.replace("'", "''") + "'"
                out.append(f"{q(table.name)}.{q(col.name)} = {literal}")
                break
    return out


async def check_plan(
    ctx: RunContext, q: Question, plan: Plan, run: Callable[[RunContext, str], Awaitable[QueryResult]]
) -> Plan:
    """Run a count for the join chain and for each filter on it (in the sandbox, as steps); keep what
    holds rows."""
    result = await run(ctx, f"SELECT COUNT(*) {plan.source}")
    rows = _count(result)
    if rows is None or rows == 0:
        emit(q, CheckNoted(message=f"plan: the joins {plan.source} keep no rows; not used", finding="plan"))
        return plan
    plan.checked.append((f"use {plan.source}", rows))
    for condition in plan.filters[: MAX_PARTS - 1]:
        result = await run(ctx, f"SELECT COUNT(*) {plan.source} WHERE {condition}")
        matched = _count(result)
        if matched:
            plan.checked.append((f"filter WHERE {condition}", matched))
    emit(q, CheckNoted(message=plan.hint(), finding="plan"))
    return plan


def _count(result: QueryResult) -> int | None:
    if not result.ok or not result.rows or not result.rows[0]:
        return None
    value = result.rows[0][0]
    return int(value) if isinstance(value, int | float) else None
