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
from corral.apps.data_agent._schema import Schema, Table, words

FindingKind = Literal["empty", "all_null", "fanout", "missing_column", "key_not_label", "result"]


@dataclass(frozen=True)
class Finding:
    """One problem with a result; ``blocking`` findings send the query back for a rewrite."""

    kind: FindingKind
    message: str
    blocking: bool = True


_ASKED = re.compile(r"\b(?:show|list|give|return|with|include|including)\b(.*)", re.IGNORECASE)


def sanity_check(
    question: str,
    sql: str,
    result: QueryResult,
    *,
    schema: Schema | None = None,
    full: Schema | None = None,
) -> list[Finding]:
    """Findings about ``result``: empty, all-NULL columns, a join that multiplied rows, a key shown where
    the question asks for a name (with ``full``, the whole schema), an asked-for column missing. An empty
    result is not blocking when the question may legitimately have no rows."""
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
    if full is not None:
        findings.extend(_key_not_label(question, result, full))
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


def _looks_like_key(name: str) -> bool:
    return bool(re.search(r"(id|_key|code)$", name, re.IGNORECASE))


def _key_owner(column: str, schema: Schema) -> Table | None:
    """The table a key column identifies: the one whose only primary key has this name, else the table a
    foreign key of this name refers to."""
    lowered = column.lower()
    for table in schema.tables:
        pks = [c for c in table.columns if c.pk]
        if len(pks) == 1 and pks[0].name.lower() == lowered:
            return table
    for table in schema.tables:
        for fk in table.foreign_keys:
            if fk.column.lower() == lowered:
                return schema.table(fk.ref_table)
    return None


def _key_not_label(question: str, result: QueryResult, schema: Schema) -> list[Finding]:
    """A key column (``department_id``) in the result where the question asks for the thing it identifies
    by name (``the department name``): small models group by the key and stop there. The finding names the
    table to join and its label column, found from the keys and the question's words."""
    asked = set(words(question))
    if "id" in asked:
        return []
    result_words = {w for c in result.columns for w in words(c)}
    findings = []
    for col in result.columns:
        if not _looks_like_key(col):
            continue
        owner = _key_owner(col, schema)
        if owner is None:
            continue
        labels = [
            c
            for c in owner.columns
            if not c.pk and not _looks_like_key(c.name) and any(isinstance(v, str) for v in c.samples)
        ]
        if not labels:
            continue
        scored = sorted(
            ((len(set(words(c.name)) & asked), i, c.name) for i, c in enumerate(labels)),
            key=lambda x: (-x[0], x[1]),
        )
        best_score = scored[0][0]
        if best_score == 0 and not set(words(owner.name)) <= asked:
            continue  # the question asks neither for a name nor about this table
        chosen = [name for s, _, name in scored if s == best_score][: 1 if best_score == 0 else 2]
        if any(set(words(name)) <= result_words for name in chosen):
            continue
        shown = " and ".join(f"{owner.name}.{name}" for name in chosen)
        on = next(
            (
                f" ON {t.name}.{fk.column} = {owner.name}.{fk.ref_column}"
                for t in schema.tables
                for fk in t.foreign_keys
                if fk.column.lower() == col.lower() and fk.ref_table == owner.name
            ),
            "",
        )
        findings.append(
            Finding(
                "key_not_label",
                f"the result shows the key {col} where the question asks for {shown}: join {owner.name}"
                f"{on} and select {shown} instead of {col}",
            )
        )
    return findings
