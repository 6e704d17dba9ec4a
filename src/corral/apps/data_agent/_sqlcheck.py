"""SQL handling on the host: pull a query out of a model's reply, refuse writes, quote awkward names.

The host never runs a query; it only parses it (sqlglot) to decide whether it may be sent to the sandbox.

>>> extract_sql("Here it is:\\n```sql\\nSELECT 1;\\n```")
'SELECT 1'
>>> check_read_only("SELECT * FROM \\"Order Details\\"", dialect="sqlite")
>>> quote_identifier("Order Details", dialect="sqlite")
'"Order Details"'
>>> quote_identifier("Total", dialect="sqlite")
'Total'
"""

from __future__ import annotations

import functools
import re

import sqlglot
from sqlglot import exp
from sqlglot.dialects.dialect import Dialect
from sqlglot.errors import SqlglotError
from sqlglot.tokenizer_core import TokenType

from corral.apps.data_agent.errors import WriteRefusedError

_FENCE = re.compile(r"```(?:[a-zA-Z]+)?\s*\n?(.*?)```", re.DOTALL)
_START = re.compile(
    r"\b(SELECT|WITH|INSERT|UPDATE|DELETE|DROP|CREATE|ALTER|COPY|ATTACH|PRAGMA|REPLACE|MERGE)\b",
    re.IGNORECASE,
)
_SIMPLE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")

# Statement types that only read. Anything else (DML, DDL, PRAGMA, ATTACH, COPY, SET...) is a write or a
# change of the session and needs explicit approval.
_READ_ONLY_ROOTS = (exp.Select, exp.Union, exp.Intersect, exp.Except, exp.Subquery, exp.Values)
_WRITE_NODES = (exp.Insert, exp.Update, exp.Delete, exp.Create, exp.Drop, exp.Alter, exp.Merge, exp.Copy)


@functools.lru_cache(maxsize=256)
def _statements(sql: str, dialect: str | None) -> tuple[exp.Expr, ...] | None:
    """Every statement of ``sql``, parsed once: the checks and repairs of one attempt all read this one
    parse (cached by text; callers that change a tree copy it first). ``None`` when it does not parse."""
    try:
        return tuple(t for t in sqlglot.parse(sql, read=dialect) if t is not None)
    except SqlglotError:
        return None


def _tree(sql: str, dialect: str | None, *, copy: bool = False) -> exp.Expr | None:
    """The query's syntax tree as ``sqlglot.parse_one`` gives it (a ``Block`` for several statements), from
    the shared parse; ``copy`` for a caller that changes it. ``None`` when it does not parse."""
    trees = _statements(sql, dialect)
    if not trees:
        return None
    if len(trees) > 1:
        return exp.Block(expressions=[t.copy() for t in trees])
    return trees[0].copy() if copy else trees[0]


def first_statement(sql: str, *, dialect: str | None = None) -> str:
    """The text of the first statement of ``sql``, cut at the first ``;`` that sqlglot's tokenizer sees
    outside a string literal or a quoted name (a ``;`` inside ``'a;b'`` does not end a statement).

    >>> first_statement("SELECT 'a;b' AS x; DROP TABLE t")
    "SELECT 'a;b' AS x"
    >>> first_statement("SELECT 1")
    'SELECT 1'
    """
    try:
        tokens = Dialect.get_or_raise(dialect).tokenize(sql)
    except SqlglotError:
        # Untokenizable text (an unclosed quote): cut nothing; the parse and the database will say more.
        return sql.strip()
    end = next((t.start for t in tokens if t.token_type == TokenType.SEMICOLON), len(sql))
    return sql[:end].strip()


def extract_sql(text: str, *, dialect: str | None = None) -> str:
    """The SQL statement in a model's reply: the first fenced block that holds one, else the text from the
    first statement keyword (SELECT, WITH, and the writing ones, so a write is seen and refused) on.

    Small models wrap queries in fences, add prose before or after, or end with a semicolon; all of that is
    removed. Returns ``""`` when no query is found.
    """
    fenced = _FENCE.findall(text)
    candidate = next((block for block in fenced if _START.search(block)), None)
    if candidate is None:
        unfenced = text.replace("```", "")
        match = _START.search(unfenced)
        if match is None:
            return ""
        candidate = unfenced[match.start() :]
        # Prose after the query usually starts after a blank line.
        candidate = re.split(r"\n\s*\n", candidate, maxsplit=1)[0]
        # Without a fence, "select" may be an English word: keep the text only if it parses as SQL.
        if _tree(first_statement(candidate, dialect=dialect), dialect) is None:
            return ""
    # Keep only the first statement.
    return first_statement(candidate.strip(), dialect=dialect)


def statement_kind(sql: str, *, dialect: str) -> str:
    """The kind of the first statement (``select``, ``delete``, ...) for messages."""
    tree = _tree(sql, dialect)
    return tree.key if tree is not None else "unparsable"


def is_read_only(sql: str, *, dialect: str) -> bool:
    """True when ``sql`` is a single statement that only reads (SELECT, WITH ... SELECT, set operations)."""
    trees = _statements(sql, dialect)
    if trees is None:
        # Unparsable text is not a write we can see; the database will reject it and the error goes back to
        # the model. The sandbox opens the source read-only regardless.
        return not re.match(r"\s*(INSERT|UPDATE|DELETE|DROP|CREATE|ALTER|ATTACH|PRAGMA|COPY)\b", sql, re.I)
    if len(trees) != 1:
        return False
    tree = trees[0]
    if not isinstance(tree, _READ_ONLY_ROOTS):
        return False
    return not any(isinstance(node, _WRITE_NODES) for node in tree.walk())


def check_read_only(sql: str, *, dialect: str, allow_writes: bool = False) -> None:
    """Raise :class:`WriteRefusedError` when ``sql`` would write and writes were not granted."""
    if allow_writes or is_read_only(sql, dialect=dialect):
        return
    kind = statement_kind(sql, dialect=dialect).upper()
    raise WriteRefusedError(
        f"refused a {kind} statement: the data agent is read-only unless writes are explicitly approved. "
        f"Statement: {sql[:200]}"
    )


def quote_identifier(name: str, *, dialect: str) -> str:
    """``name`` as the dialect needs it: bare when simple and not reserved, quoted otherwise."""
    if _SIMPLE.match(name) and not _is_reserved(name, dialect):
        return name
    return exp.to_identifier(name, quoted=True).sql(dialect=dialect)


# Words every SQL dialect reserves; sqlglot's parser is lenient with some of them, so they are listed.
_RESERVED = frozenset(
    [
        "all",
        "alter",
        "and",
        "any",
        "as",
        "asc",
        "between",
        "by",
        "case",
        "cast",
        "check",
        "column",
        "constraint",
        "create",
        "cross",
        "current",
        "default",
        "delete",
        "desc",
        "distinct",
        "drop",
        "else",
        "end",
        "except",
        "exists",
        "false",
        "fetch",
        "for",
        "foreign",
        "from",
        "full",
        "group",
        "having",
        "in",
        "index",
        "inner",
        "insert",
        "intersect",
        "into",
        "is",
        "join",
        "key",
        "left",
        "like",
        "limit",
        "natural",
        "not",
        "null",
        "offset",
        "on",
        "or",
        "order",
        "outer",
        "primary",
        "references",
        "right",
        "select",
        "set",
        "table",
        "then",
        "to",
        "true",
        "union",
        "unique",
        "update",
        "user",
        "using",
        "values",
        "view",
        "when",
        "where",
        "window",
        "with",
    ]
)


def _is_reserved(name: str, dialect: str) -> bool:
    if name.lower() in _RESERVED:
        return True
    try:
        parsed = sqlglot.parse_one(f"SELECT {name} FROM t", read=dialect)
    except SqlglotError:
        return True
    # A reserved word does not parse as a plain column named like itself.
    col = parsed.expressions[0] if parsed.expressions else None
    return not (isinstance(col, exp.Column) and col.name == name)


def limit_rows(sql: str, limit: int) -> str:
    """Wrap a query so at most ``limit`` rows come back (keeps the query's own ordering)."""
    return f"SELECT * FROM ({sql}) AS corral_q LIMIT {int(limit)}"


def repair_qualifiers(sql: str, tables: dict[str, set[str]], *, dialect: str) -> tuple[str, list[str]]:
    """Fix ``alias.column`` references whose alias's table lacks the column when exactly one other table
    of the query has it (``a.AlbumId`` with ``a`` = Artist, ``al`` = Album becomes ``al.AlbumId``).

    ``tables`` maps lower-case table names to their lower-case column names. Returns the query (unchanged
    when nothing needed fixing or it does not parse) and one note per fix, for the live display.

    >>> cols = {"artist": {"artistid", "name"}, "album": {"albumid", "artistid", "title"}}
    >>> repair_qualifiers("SELECT COUNT(a.AlbumId) FROM Artist a JOIN Album al ON a.ArtistId = al.ArtistId",
    ...                   cols, dialect="sqlite")[1]
    ['a.AlbumId -> al.AlbumId']
    """
    tree = _tree(sql, dialect, copy=True)
    if tree is None:
        return sql, []
    aliases: dict[str, str] = {}
    for table in tree.find_all(exp.Table):
        name = table.name.lower()
        if name in tables:
            aliases[(table.alias_or_name or name).lower()] = name
    notes: list[str] = []
    for column in tree.find_all(exp.Column):
        qualifier = column.table
        if not qualifier or qualifier.lower() not in aliases:
            continue
        col = column.name.lower()
        if col in tables[aliases[qualifier.lower()]]:
            continue
        owners = sorted({a for a, t in aliases.items() if col in tables[t]})
        if len(owners) != 1:
            continue
        # Keep the alias as the query wrote it (case), found among the tables' own spellings.
        spelled = next(
            (t.alias_or_name for t in tree.find_all(exp.Table) if t.alias_or_name.lower() == owners[0]),
            owners[0],
        )
        notes.append(f"{qualifier}.{column.name} -> {spelled}.{column.name}")
        column.set("table", exp.to_identifier(spelled))
    if not notes:
        return sql, []
    return tree.sql(dialect=dialect), notes


def lint(sql: str, *, dialect: str) -> list[str]:
    """Mistakes a small model makes that the database accepts silently, found before the query runs:
    a join condition that compares a column with itself (a cross join in disguise).

    >>> lint("SELECT * FROM a JOIN b ON a.id = a.id", dialect="sqlite")
    ['the condition a.id = a.id compares a column with itself; join on a column of each table']
    """
    tree = _tree(sql, dialect)
    if tree is None:
        return []
    problems = []
    owners: dict[str, set[str]] = {}
    for table in tree.find_all(exp.Table):
        if table.alias:
            owners.setdefault(table.alias.lower(), set()).add(table.name)
    for alias, names in owners.items():
        if len(names) > 1:
            both = " and ".join(sorted(names))
            problems.append(f"the tables {both} both have the alias {alias}; give each table its own alias")
    for eq in tree.find_all(exp.EQ):
        left, right = eq.left, eq.right
        if isinstance(left, exp.Column) and isinstance(right, exp.Column) and left.sql() == right.sql():
            problems.append(
                f"the condition {eq.sql(dialect=dialect)} compares a column with itself; "
                "join on a column of each table"
            )
    return problems


def table_aliases(sql: str, *, dialect: str) -> dict[str, str]:
    """``{alias or name (lower case): table name}`` of the tables a query reads.

    >>> table_aliases("SELECT * FROM Track AS t JOIN Genre g ON 1=1", dialect="sqlite")
    {'t': 'Track', 'g': 'Genre'}
    """
    tree = _tree(sql, dialect)
    if tree is None:
        return {}
    return {(t.alias_or_name or t.name).lower(): t.name for t in tree.find_all(exp.Table)}


_COMPARISONS = (exp.EQ, exp.NEQ, exp.GT, exp.GTE, exp.LT, exp.LTE, exp.Like, exp.ILike, exp.In, exp.Is)


def _stems(text: str) -> set[str]:
    out = set()
    for w in re.findall(r"[A-Za-z0-9]+", re.sub(r"([a-z0-9])([A-Z])", r"\1 \2", text).replace("_", " ")):
        w = w.lower()
        out.add(w[:-1] if len(w) > 3 and w.endswith("s") and not w.endswith("ss") else w)
    return out - {"id"}


def unasked_filters(sql: str, question: str, *, dialect: str) -> list[str]:
    """WHERE conditions on a column the question never mentions, with values it never mentions either: small
    models add filters nobody asked for (``WHERE Survived = 1`` for "the mean fare of the passengers").

    >>> unasked_filters("SELECT AVG(Fare) FROM t WHERE Survived = 1", "The mean fare?", dialect="duckdb")
    ['Survived = 1']
    >>> unasked_filters("SELECT * FROM c WHERE Country = 'Canada'", "Clients in Canada?", dialect="sqlite")
    []
    """
    tree = _tree(sql, dialect)
    if tree is None:
        return []
    asked = _stems(question)
    lowered = question.lower()
    found = []
    for where in tree.find_all(exp.Where):
        for predicate in where.find_all(*_COMPARISONS):
            columns = list(predicate.find_all(exp.Column))
            literals = [lit.this for lit in predicate.find_all(exp.Literal)]
            if not columns or (len(columns) > 1 and not literals):
                continue  # a join condition, or nothing to judge
            if any(_stems(c.name) & asked for c in columns):
                continue
            if any(str(v).lower() in lowered for v in literals if str(v)):
                continue
            # A date or number written out in full ('1970-01-01' for "before 1970") was asked for too.
            if any(n in lowered for v in literals for n in re.findall(r"\d{2,}", str(v)) if n.strip("0")):
                continue
            if predicate.find(exp.Select) is not None:
                continue  # a subquery condition (NOT IN (SELECT ...)) is structure, not a filter
            found.append(predicate.sql(dialect=dialect))
    return found


# Quoted identifiers and string literals: the parts of a query that a text repair must not touch.
_QUOTED = re.compile(r"('(?:[^']|'')*'|\"[^\"]*\"|`[^`]*`|\[[^\]]*\])")


def quote_spaced_names(sql: str, names: set[str], *, dialect: str) -> tuple[str, list[str]]:
    """Quote the schema's names that need quotes (``Order Details``, ``Unit Price``) where the query wrote
    them bare, or with underscores for the spaces (``Order_Details``) when the schema has no such name.

    ``names`` are the schema's table and column names. Small models drop the quotes; the database then reads
    ``FROM Order Details`` as the table ``Order`` aliased ``Details``. Returns the query and one note per fix.

    >>> names = {"Lab Results", "Test Name"}
    >>> quote_spaced_names("SELECT Test_Name FROM Lab Results", names, dialect="sqlite")
    ('SELECT "Test Name" FROM "Lab Results"', ['Lab Results', 'Test Name'])
    """
    lowered = {n.lower() for n in names}
    spaced = sorted((n for n in names if " " in n.strip()), key=len, reverse=True)
    if not spaced:
        return sql, []
    notes: list[str] = []
    parts = _QUOTED.split(sql)
    for i in range(0, len(parts), 2):  # even parts are outside quotes
        text = parts[i]
        for name in spaced:
            pieces = [re.escape(p) for p in name.split()]
            # With underscores only when the schema has no name spelled that way itself.
            sep = r"(?:\s+|_)" if "_".join(name.split()).lower() not in lowered else r"\s+"
            pattern = re.compile(r"(?<![\w\"'`\[])" + sep.join(pieces) + r"(?![\w\"'`\]])", re.IGNORECASE)
            quoted = quote_identifier(name, dialect=dialect)
            text, n = pattern.subn(lambda _m, q=quoted: q, text)
            if n and name not in notes:
                notes.append(name)
        parts[i] = text
    if not notes:
        return sql, []
    return "".join(parts), notes


def is_complex(sql: str, *, dialect: str) -> bool:
    """Whether a query joins, groups or nests (where a small model's first query is most often wrong)."""
    tree = _tree(sql, dialect)
    if tree is None:
        return False
    if tree.find(exp.Join) is not None or tree.find(exp.Group) is not None:
        return True
    return any(s is not tree for s in tree.find_all(exp.Select))


def repair_duplicate_aliases(sql: str, tables: dict[str, set[str]], *, dialect: str) -> tuple[str, list[str]]:
    """Give each table of a SELECT its own alias when the query gave two the same one (``doctors d JOIN
    departments d``), and point each ``alias.column`` at the table that has the column; in a join condition
    that compares a column with itself, the two sides go to the two tables.

    ``tables`` maps lower-case table names to their lower-case column names.

    >>> cols = {"doctors": {"doctor_id", "department_id"}, "departments": {"department_id", "name"}}
    >>> repair_duplicate_aliases("SELECT d.name FROM doctors d JOIN departments d "
    ...                          "ON d.department_id = d.department_id", cols, dialect="sqlite")[0]
    'SELECT d2.name FROM doctors AS d JOIN departments AS d2 ON d.department_id = d2.department_id'
    """
    tree = _tree(sql, dialect, copy=True)
    if tree is None:
        return sql, []
    groups: dict[tuple[int, str], list[exp.Table]] = {}
    for table in tree.find_all(exp.Table):
        if table.alias:
            groups.setdefault((id(table.parent_select), table.alias.lower()), []).append(table)
    duplicated = {k: ts for k, ts in groups.items() if len({t.name.lower() for t in ts}) > 1}
    if not duplicated:
        return sql, []
    taken = {t.alias_or_name.lower() for t in tree.find_all(exp.Table)}
    notes: list[str] = []
    for (scope, alias), group in duplicated.items():
        names = [group[0].alias]
        for table in group[1:]:
            n = 2
            while f"{alias}{n}" in taken:
                n += 1
            new = f"{group[0].alias}{n}"
            taken.add(new.lower())
            table.set("alias", exp.TableAlias(this=exp.to_identifier(new)))
            names.append(new)
            notes.append(f"{table.name} {alias} -> {new}")
        columns_of = [tables.get(t.name.lower(), set()) for t in group]
        done: set[int] = set()
        for eq in tree.find_all(exp.EQ):
            left, right = eq.left, eq.right
            if (
                isinstance(left, exp.Column)
                and isinstance(right, exp.Column)
                and left.table.lower() == alias
                and right.table.lower() == alias
                and left.name.lower() == right.name.lower()
                and id(left.parent_select) == scope
            ):
                left.set("table", exp.to_identifier(names[0]))
                right.set("table", exp.to_identifier(names[1]))
                done.update((id(left), id(right)))
        for column in tree.find_all(exp.Column):
            if id(column) in done or column.table.lower() != alias or id(column.parent_select) != scope:
                continue
            owners = [i for i, cols in enumerate(columns_of) if column.name.lower() in cols]
            if len(owners) == 1:
                column.set("table", exp.to_identifier(names[owners[0]]))
    return tree.sql(dialect=dialect), notes
