"""Sanity checks of a query's result, done by the system (not the model) before the judge sees it.

Each finding is a short sentence the model can act on when it rewrites the query.

>>> from corral.apps.data_agent._runner import QueryResult
>>> r = QueryResult(ok=True, columns=["Name", "n"], rows=[[None, 1], [None, 2]], row_count=2)
>>> [f.kind for f in sanity_check("How many tracks per genre?", "SELECT ...", r)]
['all_null']
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

from corral.apps.data_agent._runner import QueryResult
from corral.apps.data_agent._schema import Schema, words

FindingKind = Literal["empty", "all_null", "fanout", "missing_column"]


@dataclass(frozen=True)
class Finding:
    """One problem with a result; ``blocking`` findings send the query back for a rewrite."""

    kind: FindingKind
    message: str
    blocking: bool = True


_ASKED = re.compile(r"\b(?:show|list|give|return|with|include|including)\b(.*)", re.IGNORECASE)


def sanity_check(
    question: str, sql: str, result: QueryResult, *, schema: Schema | None = None
) -> list[Finding]:
    """Findings about ``result``: empty, all-NULL columns, a join that multiplied rows, an asked-for column
    missing. An empty result is not blocking when the question may legitimately have no rows."""
    findings: list[Finding] = []
    if not result.ok:
        return findings
    if result.row_count == 0:
        findings.append(
            Finding(
                "empty",
                "the query returned no rows: check the filter values against the sample values (spelling, "
                "case, date format) and the join conditions",
                blocking=not re.search(r"\b(any|ever|exist)\b", question, re.IGNORECASE),
            )
        )
        return findings
    if _aggregate_of_nothing(sql, result):
        findings.append(
            Finding(
                "empty",
                "the filter matched no rows (the aggregate is 0 or NULL): compare the quoted values in the "
                "WHERE clause with the sample values (spelling, case, date format)",
            )
        )
        return findings
    for i, col in enumerate(result.columns):
        if result.rows and all(row[i] is None for row in result.rows):
            findings.append(
                Finding("all_null", f"column {col!r} is NULL in every row: a wrong column or a failed join")
            )
    findings.extend(_fanout(sql, result))
    findings.extend(_missing_columns(question, result, schema))
    return findings


def _aggregate_of_nothing(sql: str, result: QueryResult) -> bool:
    """One row of zeros/NULLs from a query that filters on a text value: almost always a filter value that
    does not occur in the data (a small model's typical slip: 'rock' for 'Rock')."""
    if len(result.rows) != 1 or not re.search(r"\bwhere\b[^;]*'", sql, re.IGNORECASE):
        return False
    return all(v is None or v == 0 for v in result.rows[0])


def _fanout(sql: str, result: QueryResult) -> list[Finding]:
    """A join that multiplied rows: duplicate rows when the query joined tables and did not aggregate."""
    lowered = sql.lower()
    if " join " not in f" {lowered} " or "group by" in lowered or "distinct" in lowered:
        return []
    if len(result.rows) < 2:
        return []
    seen = {tuple(map(str, r)) for r in result.rows}
    if len(seen) < len(result.rows) * 0.8:
        return [
            Finding(
                "fanout",
                f"{len(result.rows) - len(seen)} of {len(result.rows)} rows are exact duplicates: the join "
                "probably multiplied rows; use DISTINCT, GROUP BY, or join on the full key",
            )
        ]
    return []


def _missing_columns(question: str, result: QueryResult, schema: Schema | None) -> list[Finding]:
    """A column the question names explicitly (``show the name and the email``) that is not in the result."""
    if schema is None:
        return []
    match = _ASKED.search(question)
    if match is None:
        return []
    asked = set(words(match.group(1)))
    result_words = {w for c in result.columns for w in words(c)}
    missing = []
    for table in schema.tables:
        for col in table.columns:
            cw = words(col.name)
            # Only single-word column names said verbatim count (``email``), to avoid false alarms.
            if len(cw) == 1 and cw[0] in asked and cw[0] not in result_words and len(cw[0]) > 3:
                missing.append(col.name)
    missing = sorted(set(missing))
    if not missing:
        return []
    return [
        Finding(
            "missing_column",
            f"the question asks for {', '.join(missing)} but the result has no such column",
            blocking=False,
        )
    ]
