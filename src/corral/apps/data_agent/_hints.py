"""Hints the system adds to a failed query's feedback: it walks the schema's keys, the 0.5B model does not.

Each function reads the database's error, the schema and the query, and returns a sentence for the model
(or ``""`` when it has nothing useful to say). Pure functions: no model, no database.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Sequence

from corral.apps.data_agent import _prompts as prompts
from corral.apps.data_agent._schema import Schema, join_chain, join_path, words
from corral.apps.data_agent._sqlcheck import table_aliases


def join_hint(
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


def group_hint(error: str, schema: Schema, sql: str, dialect: str, question: str = "") -> str:
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


def anti_join_hint(question: str, schema: Schema) -> str:
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


def _is_key_name(name: str) -> bool:
    return bool(re.search(r"(id|_key|code)$", name, re.IGNORECASE))


def similar_names(error: str, schema: Schema, sql: str) -> str:
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


def missing_name(error: str, schema: Schema) -> tuple[str, bool] | None:
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


def failure_hint(error: str, full: Schema, schema: Schema, sql: str, question: str) -> str:
    """The most useful hint for a failed query: a join path, similar names, a GROUP BY skeleton, or the
    joins of the tables the question is about."""
    hint = join_hint(error, full, sql, full.dialect, question, schema.table_names()) or similar_names(
        error, full, sql
    )
    if not hint:
        hint = group_hint(error, schema, sql, full.dialect, question)
    if not hint and len(schema.tables) > 1:
        hint = "Joins: " + "; ".join(schema.joins())
    return hint
