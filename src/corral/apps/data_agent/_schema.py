"""Schema linking: what is in the source, and the part of it a question needs.

The full schema (tables, columns, types, keys, likely joins, sample values, row counts) is gathered once per
source through the query runner and cached under ``cache_dir()/data_agent`` keyed by the source's fingerprint
(path, size, mtime). :func:`narrow` keeps the tables a question mentions (by name, column name or sample
value), the tables that connect them, and a short form of their neighbours, so a small model's context holds
what matters and little else. :meth:`Schema.render` prints it as ``CREATE TABLE`` statements — the form code
models were trained on — with sample values and row counts as comments.
"""

from __future__ import annotations

import itertools
import json
import re
from collections import Counter, deque
from collections.abc import Awaitable, Callable, Iterable
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field

from corral._config import cache_dir
from corral.apps.data_agent._runner import QueryRunner
from corral.apps.data_agent._sources import Source
from corral.apps.data_agent._sqlcheck import quote_identifier

#: Part of every cache key: raised when a description's shape changes.
_CACHE_VERSION = 2
_BRIEF_COLUMNS = 12


class Column(BaseModel):
    name: str
    type: str = ""
    pk: bool = False
    samples: list[Any] = Field(default_factory=list)


class ForeignKey(BaseModel):
    column: str
    ref_table: str
    ref_column: str
    declared: bool = True  # False: inferred from same-name ``*Id`` columns


class Table(BaseModel):
    name: str
    view: bool = False
    columns: list[Column] = Field(default_factory=list)
    foreign_keys: list[ForeignKey] = Field(default_factory=list)
    row_count: int | None = None

    def column(self, name: str) -> Column | None:
        return next((c for c in self.columns if c.name.lower() == name.lower()), None)


class Schema(BaseModel):
    """A source's schema, or the part of it selected for one question."""

    dialect: str
    tables: list[Table] = Field(default_factory=list)
    #: Tables shown by name and key columns only (neighbours of the selected ones).
    brief: list[Table] = Field(default_factory=list)

    def table(self, name: str) -> Table | None:
        return next((t for t in self.tables if t.name.lower() == name.lower()), None)

    def render(self, *, samples: bool = True) -> str:
        """``CREATE TABLE`` text with keys, references, samples and row counts."""
        q = self._q
        out: list[str] = []
        for table in self.tables:
            lines = []
            refs = {fk.column.lower(): fk for fk in table.foreign_keys}
            for col in table.columns:
                line = f"  {q(col.name)} {col.type or 'ANY'}".rstrip()
                if col.pk:
                    line += " PRIMARY KEY"
                fk = refs.get(col.name.lower())
                if fk is not None:
                    line += f" REFERENCES {q(fk.ref_table)}({q(fk.ref_column)})"
                shown = _shown_samples(col) if samples else []
                if shown:
                    line += ", -- e.g. " + ", ".join(_sample_text(v) for v in shown)
                lines.append(line)
            # Commas must precede comments; rebuild each line as "definition, -- comment".
            body = "\n".join(
                _comma_before_comment(ln, last=i == len(lines) - 1) for i, ln in enumerate(lines)
            )
            rows = f" -- {table.row_count} rows" if table.row_count is not None and samples else ""
            out.append(f"CREATE TABLE {q(table.name)} (\n{body}\n);{rows}")
        for table in self.brief:
            cols = ", ".join(q(c.name) for c in table.columns[:_BRIEF_COLUMNS])
            more = ", ..." if len(table.columns) > _BRIEF_COLUMNS else ""
            out.append(f"-- also table {q(table.name)}({cols}{more})")
        return "\n".join(out)

    def joins(self) -> list[str]:
        """Join conditions between the (selected) tables, along declared or likely keys."""
        names = {t.name for t in self.tables}
        q = self._q
        return [
            f"{q(t.name)}.{q(fk.column)} = {q(fk.ref_table)}.{q(fk.ref_column)}"
            for t in self.tables
            for fk in t.foreign_keys
            if fk.ref_table in names and fk.ref_table != t.name
        ]

    def _q(self, name: str) -> str:
        return quote_identifier(name, dialect=self.dialect)

    def table_names(self) -> list[str]:
        return [t.name for t in self.tables]


def _comma_before_comment(line: str, *, last: bool) -> str:
    definition, sep, comment = line.partition(", -- ")
    if last:
        return f"{definition} -- {comment}" if sep else definition
    return f"{definition}, -- {comment}" if sep else f"{definition},"


def _shown_samples(col: Column) -> list[Any]:
    """Samples worth their tokens: text values hint at spelling and content; for keys and numbers two
    values show the scale, for dates one shows the format."""
    if col.pk or _looks_like_key(col.name):
        return []
    if any(isinstance(v, str) for v in col.samples):
        if all(isinstance(v, str) and re.match(r"^\d{4}-\d\d-\d\d", v) for v in col.samples):
            return col.samples[:1]
        return col.samples[:3]
    return col.samples[:2]


def _sample_text(value: Any) -> str:
    if isinstance(value, str):
        # Samples are data, never instructions: one line, quoted as an SQL literal.
        flat = " ".join(value.split())
        return "'" + flat.replace("'", "''") + "'"
    return json.dumps(value)


def _looks_like_key(name: str) -> bool:
    return bool(re.search(r"(id|_key|code)$", name, re.IGNORECASE))


def infer_joins(tables: list[Table]) -> None:
    """Add undeclared joins: a column ``XId`` in one table that is the primary key (or the only ``XId``
    column of a table named like ``X``) of another; ``x_id`` also refers to the key of a table named
    ``x``/``xs`` or, in schemas that prefix names, ``<prefix>_x`` (the one of the same prefix). A generic
    ``id`` refers to nothing. Files and many databases declare no foreign keys."""
    pk_owner: dict[str, Table] = {}
    for table in tables:
        pks = [c for c in table.columns if c.pk]
        if len(pks) == 1 and pks[0].name.lower() != "id":
            pk_owner.setdefault(pks[0].name.lower(), table)
    for table in tables:
        for col in table.columns:
            key = col.name.lower()
            if not _looks_like_key(col.name) or key == "id":
                continue
            owner = pk_owner.get(key)
            if owner is None:
                # Undeclared keys: a table whose name is the column's name without its "id" suffix.
                owner = _table_named(tables, re.sub(r"_?id$", "", key), near=table)
            if owner is None or owner is table:
                continue
            if col.pk and len([c for c in table.columns if c.pk]) == 1 and not owner.column(col.name):
                continue
            if any(fk.column.lower() == key for fk in table.foreign_keys):
                continue
            owner_pks = [c for c in owner.columns if c.pk]
            ref = owner.column(col.name) or (owner_pks[0] if len(owner_pks) == 1 else None)
            if ref is None:
                continue
            table.foreign_keys.append(
                ForeignKey(column=col.name, ref_table=owner.name, ref_column=ref.name, declared=False)
            )


def _table_named(tables: list[Table], stem: str, *, near: Table) -> Table | None:
    """The table named ``stem`` (or its plural), else the one named ``<prefix>_stem`` that shares
    ``near``'s prefix, else the only one so named; ``None`` when it is not clear."""
    if not stem:
        return None
    forms = {stem, stem + "s", stem + "es", re.sub(r"y$", "ies", stem)}
    exact = [t for t in tables if _norm(t.name) in forms]
    if exact:
        return exact[0]
    tail = [t for t in tables if re.split(r"[_.]", t.name.lower())[-1] in forms]
    prefix = re.split(r"[_.]", near.name.lower())[0]
    same = [t for t in tail if re.split(r"[_.]", t.name.lower())[0] == prefix]
    if len(same) == 1:
        return same[0]
    return tail[0] if len(tail) == 1 else None


def _norm(name: str) -> str:
    return re.sub(r"[^a-z0-9]", "", name.lower())


def schema_from_driver(raw: dict[str, Any], dialect: str) -> Schema:
    """Build a :class:`Schema` from the driver's description and add the likely joins."""
    tables = [Table.model_validate(t) for t in raw.get("tables") or []]
    infer_joins(tables)
    return Schema(dialect=dialect, tables=tables)


async def cached_description(
    source: Source, kind: str, describe: Callable[[], Awaitable[dict[str, Any]]], *, use_cache: bool = True
) -> dict[str, Any]:
    """What ``describe()`` returns for ``source`` (a sandbox job scanning the data), from the cache when the
    source has not changed since (the key is its fingerprint: paths, sizes, mtimes). ``kind`` names the
    description (``schema`` for the SQL driver's, ``frames`` for pandas'). PostgreSQL is never cached: the
    server's tables can change without a file to notice it."""
    path: Path | None = None
    if use_cache and source.kind != "postgres":
        path = cache_dir() / "data_agent" / f"{kind}-v{_CACHE_VERSION}-{source.fingerprint()}.json"
        if path.is_file():
            try:
                loaded = json.loads(path.read_text(encoding="utf-8"))
                if isinstance(loaded, dict):
                    return loaded
            except ValueError:
                pass  # a damaged cache entry is rebuilt below
    raw = await describe()
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(raw), encoding="utf-8")
        tmp.replace(path)
    return raw


async def load_schema(runner: QueryRunner, *, use_cache: bool = True) -> Schema:
    """The source's full schema, from the cache when the source has not changed since it was gathered."""
    raw = await cached_description(runner.source, "schema", runner.describe, use_cache=use_cache)
    return schema_from_driver(raw, runner.source.dialect)


# --- narrowing ---------------------------------------------------------------------------------------------

#: Words that carry no meaning of their own (articles, prepositions, auxiliaries).
FUNCTION_WORDS = frozenset(
    [
        "a",
        "an",
        "the",
        "of",
        "in",
        "on",
        "at",
        "to",
        "for",
        "by",
        "with",
        "from",
        "and",
        "or",
        "is",
        "are",
        "was",
        "what",
        "which",
        "how",
        "do",
        "does",
    ]
)

# Words that never name data: function words plus the vocabulary of asking (count, top, list, ...).
_STOP = FUNCTION_WORDS | frozenset(
    [
        "not",
        "no",
        "were",
        "be",
        "been",
        "did",
        "many",
        "much",
        "who",
        "whom",
        "whose",
        "where",
        "when",
        "why",
        "list",
        "show",
        "give",
        "find",
        "get",
        "me",
        "all",
        "each",
        "every",
        "per",
        "than",
        "that",
        "this",
        "these",
        "those",
        "there",
        "their",
        "its",
        "it",
        "as",
        "into",
        "most",
        "least",
        "top",
        "highest",
        "lowest",
        "total",
        "number",
        "count",
        "average",
        "sum",
        "max",
        "min",
        "between",
        "over",
        "under",
        "more",
        "less",
        "only",
        "also",
        "have",
        "has",
        "had",
        "any",
        "some",
        "one",
        "two",
        "three",
        "first",
        "last",
        "name",
        "names",
    ]
)


def words(text: str) -> list[str]:
    """Lower-case word stems of ``text``; identifiers are split at camelCase and underscores."""
    text = re.sub(r"([a-z0-9])([A-Z])", r"\1 \2", text)
    out = []
    for w in re.findall(r"[A-Za-z0-9]+", text.replace("_", " ")):
        w = w.lower()
        out.append(_stem(w))
    return out


def _stem(w: str) -> str:
    if len(w) > 4 and w.endswith("ies"):
        return w[:-3] + "y"
    if len(w) > 3 and w.endswith("s") and not w.endswith("ss"):
        return w[:-1]
    return w


# Generic business words and the column words they usually stand for. Kept small and domain-neutral: the
# agent is tuned for schemas it has never seen, not for one sample database.
_SYNONYMS: dict[str, set[str]] = {
    "sale": {"total", "amount", "price", "invoice", "order", "revenue", "quantity"},
    "revenue": {"total", "amount", "price", "invoice", "order", "sale"},
    "spent": {"total", "amount", "price", "invoice", "order"},
    "spend": {"total", "amount", "price", "invoice", "order"},
    "earn": {"total", "amount", "salary", "revenue"},
    "bought": {"invoice", "order", "purchase", "quantity"},
    "purchase": {"invoice", "order", "quantity"},
    "sold": {"invoice", "order", "quantity", "sale"},
    "long": {"length", "duration", "millisecond", "second", "minute"},
    "longest": {"length", "duration", "millisecond", "second", "minute"},
    "shortest": {"length", "duration", "millisecond", "second", "minute"},
    "expensive": {"price", "cost", "amount"},
    "cheapest": {"price", "cost", "amount"},
    "old": {"age", "birth", "date"},
    "oldest": {"age", "birth", "date", "hire"},
    "youngest": {"age", "birth", "date"},
    "year": {"date", "year"},
    "month": {"date", "month"},
    "live": {"city", "country", "state", "address"},
    "where": {"city", "country", "state", "address"},
}


def expand(qwords: set[str]) -> set[str]:
    """Question words plus the schema words their generic synonyms point to."""
    out = set(qwords)
    for w in qwords:
        out |= _SYNONYMS.get(w, set())
    return out


def _prefix_words(tables: list[Table]) -> set[str]:
    """Words in the names of a third or more of the tables (at least three): a prefix such as a combined
    source's alias (``chinook_Track``) or a house style (``tbl_``), which says nothing about one table."""
    counts: Counter[str] = Counter(w for t in tables for w in set(words(t.name)))
    return {w for w, n in counts.items() if n >= 3 and 3 * n >= len(tables)}


def _table_score(
    table: Table, qwords: set[str], question: str, prefixes: frozenset[str] = frozenset()
) -> float:
    score = 0.0
    tw = set(words(table.name)) - prefixes or set(words(table.name))
    if tw:
        # A word naming the whole table counts more than one naming a part of it (Track vs PlaylistTrack).
        # Squared: a word naming half of a two-word table name (Track in PlaylistTrack) is a weak hint.
        score += 3.0 * (len(tw & qwords) / len(tw)) ** 2
    for col in table.columns:
        cw = set(words(col.name)) - {"id"}
        hits = cw & qwords
        if hits:
            # Key columns repeat other tables' names, so they hint less at this table.
            score += (0.5 if _looks_like_key(col.name) else 1.0) * len(hits) / len(cw)
        for v in col.samples:
            if (
                isinstance(v, str)
                and len(v) >= 3
                and re.search(r"\b" + re.escape(v.lower()) + r"\b", question)
            ):
                score += 2.0
    return score


def _graph(tables: Iterable[Table]) -> dict[str, set[str]]:
    g: dict[str, set[str]] = {}
    for t in tables:
        g.setdefault(t.name, set())
        for fk in t.foreign_keys:
            g[t.name].add(fk.ref_table)
            g.setdefault(fk.ref_table, set()).add(t.name)
    return g


def _path(g: dict[str, set[str]], a: str, b: str) -> list[str]:
    prev: dict[str, str | None] = {a: None}
    todo = deque([a])
    while todo:
        cur = todo.popleft()
        if cur == b:
            path = []
            node: str | None = cur
            while node is not None:
                path.append(node)
                node = prev[node]
            return path
        for nxt in sorted(g.get(cur, ())):
            if nxt not in prev:
                prev[nxt] = cur
                todo.append(nxt)
    return []


#: The most characters of schema text a question's prompt gets (about 1,700 tokens: the 0.5B model's context
#: is 8,192 tokens, and every prompt token costs time on a CPU).
PROMPT_BUDGET = 6000


def narrow(
    schema: Schema,
    question: str,
    *,
    max_tables: int = 5,
    keep_all_under: int = 4,
    brief_all_under: int = 16,
    budget: int = PROMPT_BUDGET,
) -> Schema:
    """The part of ``schema`` that ``question`` needs (see the module docstring). Over ``budget``
    characters of text, the neighbours shown briefly are dropped, half at a time; the selected tables stay."""
    return _within(_narrow(schema, question, max_tables, keep_all_under, brief_all_under), budget)


def _within(schema: Schema, budget: int) -> Schema:
    while len(schema.render()) > budget and schema.brief:
        schema = schema.model_copy(update={"brief": schema.brief[: len(schema.brief) // 2]})
    return schema


def _narrow(
    schema: Schema, question: str, max_tables: int, keep_all_under: int, brief_all_under: int
) -> Schema:
    if len(schema.tables) <= keep_all_under:
        return schema
    qwords = expand(set(words(question)) - _STOP)
    qlower = question.lower()
    prefixes = frozenset(_prefix_words(schema.tables))
    scored = sorted(
        ((s, t.name) for t in schema.tables if (s := _table_score(t, qwords, qlower, prefixes)) > 0),
        key=lambda x: (-x[0], x[1]),
    )
    if not scored:
        # Nothing matched: the question may be unanswerable, or phrased with words the schema lacks. Show the
        # tables briefly so the model can still link them (or say it cannot answer).
        return Schema(dialect=schema.dialect, tables=[], brief=list(schema.tables))
    chosen = [name for _, name in scored[:max_tables]]
    top = scored[0][0]
    # Keep tables close in score to the best, drop weak single-word coincidences when strong matches exist.
    chosen = [name for s, name in scored[:max_tables] if s >= 0.5 * top]
    g = _graph(schema.tables)
    keep = list(chosen)
    for other in chosen[1:]:
        for node in _path(g, chosen[0], other):
            if node not in keep:
                keep.append(node)
    if len(schema.tables) < brief_all_under:
        brief_names = sorted((set(g) | {t.name for t in schema.tables}) - set(keep))
    else:
        brief_names = sorted({n for k in keep for n in g.get(k, ())} - set(keep))
    by_name = {t.name: t for t in schema.tables}
    return Schema(
        dialect=schema.dialect,
        tables=[by_name[n] for n in keep if n in by_name],
        brief=[by_name[n] for n in brief_names if n in by_name],
    )


def join_path(schema: Schema, start: str, goal: str) -> list[str]:
    """The join conditions that lead from table ``start`` to table ``goal`` along keys (declared or likely),
    e.g. ``['InvoiceLine.TrackId = Track.TrackId', 'Track.GenreId = Genre.GenreId']``; ``[]`` if none."""
    by_name = {t.name.lower(): t for t in schema.tables}
    a, b = by_name.get(start.lower()), by_name.get(goal.lower())
    if a is None or b is None:
        return []
    names = _path(_graph(schema.tables), a.name, b.name)[::-1]
    conditions = []
    for left, right in itertools.pairwise(names):
        fk = next((f for f in by_name[left.lower()].foreign_keys if f.ref_table == right), None)
        if fk is not None:
            conditions.append(f"{left}.{fk.column} = {right}.{fk.ref_column}")
            continue
        back = next((f for f in by_name[right.lower()].foreign_keys if f.ref_table == left), None)
        if back is None:
            return []
        conditions.append(f"{left}.{back.ref_column} = {right}.{back.column}")
    return conditions


def join_chain(schema: Schema, start: str, goal: str) -> list[tuple[str, str]]:
    """The tables to join, in order, from ``start`` to ``goal`` with the condition of each join (names
    quoted for the dialect): ``[("Track", "InvoiceLine.TrackId = Track.TrackId"), ("Genre", ...)]`` from
    InvoiceLine to Genre; ``[]`` if no keys connect them."""
    by_name = {t.name.lower(): t for t in schema.tables}
    a, b = by_name.get(start.lower()), by_name.get(goal.lower())
    if a is None or b is None:
        return []
    names = _path(_graph(schema.tables), a.name, b.name)[::-1]
    q = schema._q
    chain = []
    for left, right in itertools.pairwise(names):
        fk = next((f for f in by_name[left.lower()].foreign_keys if f.ref_table == right), None)
        if fk is not None:
            chain.append((q(right), f"{q(left)}.{q(fk.column)} = {q(right)}.{q(fk.ref_column)}"))
            continue
        back = next((f for f in by_name[right.lower()].foreign_keys if f.ref_table == left), None)
        if back is None:
            return []
        chain.append((q(right), f"{q(left)}.{q(back.ref_column)} = {q(right)}.{q(back.column)}"))
    return chain
