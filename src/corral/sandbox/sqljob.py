"""One SQL job, hardened: the module ``run_sql`` and the data agent's driver both open databases with.

It runs inside the sandbox, after the privilege drop, where nothing of corral is importable: the worker loads
this file's source at start as the module ``corral_sqljob`` (so every job process has it), and code running
in a job imports it under that name; in process (tests) it is ``corral.sandbox.sqljob``. It needs the
standard library and, lazily, ``duckdb``.

A query is model-written and hostile; the engines are not a boundary, but they should not hand a query a
route to native code or to files either, so each connection is locked down where the engine allows:

- **SQLite**: an authorizer refuses ``ATTACH``/``DETACH`` (and so ``VACUUM INTO``, which writes a file),
  virtual table creation, every pragma but those that describe the schema, and the functions that reach
  native code, memory addresses or files (``load_extension``, ``fts3_tokenizer``, ``readfile``…). Also:
  extension loading off, no attached databases (limit 0), ``trusted_schema`` off; read-only means a copy in
  memory with ``query_only`` on, so no statement can change the file.
- **DuckDB**: no extension is installed or loaded (``autoinstall``/``autoload`` off, no community or unsigned
  extensions), no persistent secrets, external access off with only the source files allowed, one thread,
  and the configuration locked before the query runs.

>>> con = connect_sqlite(":memory:", read_only=False)
>>> con.execute("SELECT fts3_tokenizer('simple')")
Traceback (most recent call last):
...
sqlite3.OperationalError: not authorized to use function: fts3_tokenizer
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import tempfile
from typing import Any

#: Where a ``run_sql`` job writes its answer (the host collects it as a result file, untrusted).
RESULT_PATH = "/work/.sql-result.json"


def real_path(path: str) -> str:
    """The path an engine opens itself for ``path``: the same, except on the rootless Landlock backend, where
    the worker replaces this with the map of ``/work`` and ``/data`` to the job's real directories."""
    return path


def duckdb_path(path: str) -> str:
    """The path DuckDB can open for the database file ``path``.

    On the rootless backend an input is a sealed memfd behind a ``/proc/self/fd`` link; DuckDB resolves the
    link and cannot open ``/memfd:…`` by that name, so it gets a copy in the job's own ``/tmp`` (counted
    against the job's scratch limit). Anywhere else the path is the same.
    """
    path = real_path(path)
    if not os.path.realpath(path).startswith("/memfd:"):
        return path
    fd, copy = tempfile.mkstemp(suffix=".duckdb")
    with open(path, "rb") as src, os.fdopen(fd, "wb") as dst:
        shutil.copyfileobj(src, dst, 1 << 20)
    return copy


#: SQL functions that reach native code, memory addresses or files: refused by name, in any mode.
SQLITE_DENIED_FUNCTIONS = frozenset(
    {
        "load_extension",
        "fts3_tokenizer",
        "readfile",
        "writefile",
        "edit",
        "fsdir",
        "zipfile",
        "sqlar_compress",
        "sqlar_uncompress",
    }
)
#: Pragmas that only describe the schema: the only ones a query may use.
SQLITE_SCHEMA_PRAGMAS = frozenset(
    {"table_info", "table_xinfo", "index_list", "index_info", "index_xinfo", "foreign_key_list"}
)
# Authorizer action codes (sqlite3.h); not all are exported by every Python's sqlite3 module.
_PRAGMA, _ATTACH, _DETACH, _CREATE_VTABLE, _DROP_VTABLE, _FUNCTION = 19, 24, 25, 29, 30, 31
_NEVER = frozenset({_ATTACH, _DETACH, _CREATE_VTABLE, _DROP_VTABLE})
_OK, _DENY = 0, 1

#: DuckDB settings applied at connect time: no extensions, no secrets, one thread.
DUCKDB_CONFIG: dict[str, Any] = {
    "threads": 1,
    "autoinstall_known_extensions": False,
    "autoload_known_extensions": False,
    "allow_community_extensions": False,
    "allow_unsigned_extensions": False,
    "allow_persistent_secrets": False,
}


class Authorizer:
    """The SQLite authorizer: what a query may not do, and the last thing it was refused (for the message).

    Read-only is not its job (``query_only`` on a copy in memory is): SQLite's own schema reads pass through
    it as writes to ``sqlite_master``.
    """

    def __init__(self) -> None:
        self.refused: str | None = None

    def __call__(
        self, action: int, arg1: str | None, arg2: str | None, _db: str | None, _src: str | None
    ) -> int:
        if action in _NEVER:
            return self._refuse("ATTACH, DETACH and virtual tables are not allowed")
        if action == _FUNCTION and (arg2 or "").lower() in SQLITE_DENIED_FUNCTIONS:
            return self._refuse(f"the function {arg2}() is not allowed")
        if action == _PRAGMA and (arg1 or "").lower() not in SQLITE_SCHEMA_PRAGMAS:
            return self._refuse(f"PRAGMA {arg1} is not allowed")
        return _OK

    def _refuse(self, why: str) -> int:
        self.refused = why
        return _DENY


class HardenedConnection(sqlite3.Connection):
    """A SQLite connection that keeps its authorizer, to explain a refusal (see :func:`explain`)."""

    authorizer: Authorizer


def connect_sqlite(path: str, *, read_only: bool) -> HardenedConnection:
    """Open ``path`` hardened. Read-only: a copy in memory (SQLite resolves links itself, and in the sandbox
    ``/data`` entries are links to descriptors), so nothing a query does can reach the file."""
    con: HardenedConnection
    if read_only:
        con = sqlite3.connect(":memory:", isolation_level=None, factory=HardenedConnection)
        if path != ":memory:":
            with open(path, "rb") as f:
                image = f.read()
            if image:
                con.deserialize(image)
    else:
        uri = "file::memory:" if path == ":memory:" else f"file:{real_path(path)}?mode=rw"
        con = sqlite3.connect(uri, uri=True, isolation_level=None, factory=HardenedConnection)
    con.setlimit(sqlite3.SQLITE_LIMIT_ATTACHED, 0)
    if hasattr(con, "enable_load_extension"):
        con.enable_load_extension(False)
    con.execute("PRAGMA trusted_schema = OFF")
    if read_only:
        con.execute("PRAGMA query_only = ON")
    con.authorizer = Authorizer()
    con.set_authorizer(con.authorizer)
    return con


def explain(con: Any, exc: BaseException) -> str:
    """The error text for the model: the engine's own, with what the authorizer refused when it did."""
    text = f"{type(exc).__name__}: {exc}"
    authorizer = getattr(con, "authorizer", None)
    if isinstance(authorizer, Authorizer) and authorizer.refused and "not authorized" in str(exc):
        text += f" ({authorizer.refused})"
    return text


def connect_duckdb(path: str | None, *, read_only: bool, files: list[dict[str, str]] | None = None) -> Any:
    """A DuckDB connection to ``path`` (or in memory with a view per file in ``files``: ``name``, ``path``,
    ``format``), locked down: only the source files reachable, the configuration frozen."""
    import duckdb

    files = [dict(f, path=real_path(f["path"])) for f in files or []]
    if path is not None:
        con = duckdb.connect(duckdb_path(path), read_only=read_only, config=dict(DUCKDB_CONFIG))
    else:
        con = duckdb.connect(":memory:", config=dict(DUCKDB_CONFIG))
    if files:
        con.execute("SET allowed_paths = [" + ", ".join(_literal(f["path"]) for f in files) + "]")
    con.execute("SET enable_external_access = false")
    for f in files:
        reader = "read_parquet" if f["format"] == "parquet" else "read_csv_auto"
        con.execute(f"CREATE VIEW {_quote(f['name'])} AS SELECT * FROM {reader}({_literal(f['path'])})")
    con.execute("SET lock_configuration = true")
    return con


#: Catalog names DuckDB keeps for itself: an attached source never gets one.
RESERVED_ALIASES = frozenset({"main", "memory", "system", "temp", "information_schema", "pg_catalog"})


def flat_names(parts: list[tuple[str, list[str]]], taken: set[str]) -> dict[tuple[str, str], str]:
    """The one-part name of each attached table: ``<alias>_<table>`` (``_2``, ``_3``… when taken), so a
    query over several sources names every table unambiguously without catalog qualifiers. Deterministic:
    the schema scan and the query job compute the same names from the same tables."""
    used = {t.lower() for t in taken}
    out: dict[tuple[str, str], str] = {}
    for alias, tables in parts:
        for table in sorted(tables):
            name = base = f"{alias}_{table}"
            n = 2
            while name.lower() in used:
                name = f"{base}_{n}"
                n += 1
            used.add(name.lower())
            out[(alias, table)] = name
    return out


def connect_attached(parts: list[dict[str, Any]]) -> Any:
    """One DuckDB connection over several sources, each read-only, for a question that joins them.

    ``parts`` are ``{"alias", "kind", ...}``: a DuckDB file (``path``) is attached ``READ_ONLY`` as catalog
    ``alias``; a SQLite file (``path``) is read through :func:`connect_sqlite` (hardened, an image in memory)
    and copied into an in-memory catalog ``alias`` (DuckDB's own SQLite reader is an extension, and none is
    loaded); CSV/Parquet files (``tables``) become views, as in :func:`connect_duckdb`. Every attached table
    also gets a view with a one-part name (:func:`flat_names`). Then external access goes off (only the
    source files stay readable) and the configuration is locked. Run queries with :func:`run_select`: the
    engine itself would still let a statement ``DETACH`` or ``ATTACH ':memory:'``.
    """
    import duckdb

    con = duckdb.connect(":memory:", config=dict(DUCKDB_CONFIG))
    files = [dict(f, path=real_path(f["path"])) for p in parts if p["kind"] == "files" for f in p["tables"]]
    listed: list[tuple[str, list[str]]] = []
    for part in parts:
        alias = part["alias"]
        if not alias.isidentifier() or alias.lower() in RESERVED_ALIASES:
            raise ValueError(f"unusable source alias {alias!r}")
        if part["kind"] == "duckdb":
            con.execute(f"ATTACH {_literal(duckdb_path(part['path']))} AS {_quote(alias)} (READ_ONLY)")
        elif part["kind"] == "sqlite":
            con.execute(f"ATTACH ':memory:' AS {_quote(alias)}")
            _copy_sqlite(con, part["path"], alias)
        elif part["kind"] != "files":
            raise ValueError(f"a {part['kind']} source cannot be combined with others")
        if part["kind"] != "files":
            rows = con.execute(
                "SELECT table_name FROM information_schema.tables WHERE table_catalog = ? "
                "AND table_schema = 'main'",
                [alias],
            ).fetchall()
            listed.append((alias, [r[0] for r in rows]))
    con.execute("SET allowed_paths = [" + ", ".join(_literal(f["path"]) for f in files) + "]")
    con.execute("SET enable_external_access = false")
    for f in files:
        reader = "read_parquet" if f["format"] == "parquet" else "read_csv_auto"
        con.execute(f"CREATE VIEW {_quote(f['name'])} AS SELECT * FROM {reader}({_literal(f['path'])})")
    for (alias, table), flat in flat_names(listed, {f["name"] for f in files}).items():
        con.execute(f"CREATE VIEW {_quote(flat)} AS SELECT * FROM {_quote(alias)}.{_quote(table)}")
    con.execute("SET lock_configuration = true")
    return con


def run_select(con: Any, sql: str) -> Any:
    """Execute ``sql`` on a DuckDB connection if DuckDB's own parser reads it as one SELECT; raises
    ``PermissionError`` otherwise (a second statement, ATTACH, DETACH, COPY, SET, INSTALL, LOAD …)."""
    import duckdb

    statements = duckdb.extract_statements(sql)
    if len(statements) != 1 or statements[0].type != duckdb.StatementType.SELECT:
        kinds = ", ".join(s.type.name for s in statements) or "nothing"
        raise PermissionError(f"only one SELECT statement may run over combined sources (got {kinds})")
    return con.execute(sql)


def _duckdb_type(declared: str, values: list[Any]) -> str:
    """The DuckDB column type for SQLite values (dynamically typed: the values decide, the declared type
    only picks dates and times among text)."""
    seen = {type(v) for v in values if v is not None}
    if seen <= {int}:
        return "BIGINT"
    if seen <= {int, float}:
        return "DOUBLE"
    if seen == {bytes}:
        return "BLOB"
    upper = declared.upper()
    if seen == {str} and ("DATE" in upper or "TIME" in upper) and all(_is_iso(v) for v in values):
        return "TIMESTAMP" if "TIME" in upper else "DATE"
    return "VARCHAR"


def _is_iso(value: Any) -> bool:
    import datetime

    if value is None:
        return True
    try:
        datetime.datetime.fromisoformat(value)
    except ValueError:
        return False
    return True


def _copy_sqlite(con: Any, path: str, alias: str) -> None:
    """Copy every table and view of the SQLite file at ``path`` into catalog ``alias`` of ``con``."""
    src = connect_sqlite(path, read_only=True)
    try:
        names = [
            r[0]
            for r in src.execute(
                "SELECT name FROM sqlite_master WHERE type IN ('table', 'view') AND name NOT LIKE 'sqlite_%'"
            )
        ]
        for name in names:
            try:
                _copy_table(con, src, alias, name)
            except Exception:
                # One table DuckDB cannot hold (a value out of range, a view's duplicate column names)
                # must not hide the others; queries naming it get DuckDB's "does not exist".
                con.execute(f"DROP TABLE IF EXISTS {_quote(alias)}.{_quote(name)}")
    finally:
        src.close()


def _copy_table(con: Any, src: HardenedConnection, alias: str, name: str) -> None:
    import pandas as pd

    declared = [(c, t or "") for _, c, t, *_ in src.execute(f"PRAGMA table_info({_quote(name)})")]
    rows = src.execute(f"SELECT * FROM {_quote(name)}").fetchall()
    columns = {c: [r[i] for r in rows] for i, (c, _) in enumerate(declared)}
    types = {c: _duckdb_type(t, columns[c]) for c, t in declared}
    text = ("VARCHAR", "DATE", "TIMESTAMP")
    frame = pd.DataFrame(
        {
            c: pd.Series([v if v is None or types[c] not in text else str(v) for v in vals], dtype=object)
            for c, vals in columns.items()
        }
    )
    con.register("corral_copy", frame)
    try:
        select = ", ".join(f"CAST({_quote(c)} AS {types[c]}) AS {_quote(c)}" for c, _ in declared)
        con.execute(f"CREATE TABLE {_quote(alias)}.{_quote(name)} AS SELECT {select} FROM corral_copy")
    finally:
        con.unregister("corral_copy")


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _jsonable(value: object) -> object:
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        return value if value == value and value not in (float("inf"), float("-inf")) else str(value)
    if isinstance(value, (bytes, bytearray, memoryview)):
        return "0x" + bytes(value).hex()
    return str(value)


def _sqlite_types(rows: list[Any], width: int) -> list[str]:
    names = {int: "INTEGER", float: "REAL", str: "TEXT", bytes: "BLOB", type(None): "NULL"}
    types = []
    for i in range(width):
        seen = "NULL"
        for row in rows:
            if row[i] is not None:
                seen = names.get(type(row[i]), type(row[i]).__name__)
                break
        types.append(seen)
    return types


def run(spec: dict[str, Any]) -> None:
    """A ``run_sql`` job: run ``spec``'s query; write columns, types, rows, count (or the error) as JSON."""
    out: dict[str, Any] = {"columns": [], "types": [], "rows": [], "row_count": 0, "error": None}
    try:
        if spec.get("copy_to"):
            # A read-write grant works on a private copy; the host writes it back after the job.
            src_name = "/data/" + spec["copy_to"].rsplit("/", 1)[1]
            with open(src_name, "rb") as src, open(spec["copy_to"], "wb") as dst:
                while chunk := src.read(1 << 20):
                    dst.write(chunk)
        if spec["engine"] == "sqlite":
            _run_sqlite(spec, out)
        else:
            _run_duckdb(spec, out)
    except Exception as exc:
        out["error"] = f"{type(exc).__name__}: {exc}"
    with open(RESULT_PATH, "w", encoding="utf-8") as result_file:
        json.dump(out, result_file)


def _run_sqlite(spec: dict[str, Any], out: dict[str, Any]) -> None:
    con = connect_sqlite(spec["path"], read_only=spec["read_only"])
    try:
        cur = con.execute(spec["query"])
        out["columns"] = [d[0] for d in cur.description] if cur.description else []
        rows: list[Any] = []
        total = 0
        for row in cur:
            total += 1
            if len(rows) < spec["max_rows"]:
                rows.append(row)
        out["row_count"] = total
        out["types"] = _sqlite_types(rows, len(out["columns"]))
        out["rows"] = [[_jsonable(v) for v in row] for row in rows]
    except sqlite3.Error as exc:
        out["error"] = explain(con, exc)
    finally:
        con.close()


def _run_duckdb(spec: dict[str, Any], out: dict[str, Any]) -> None:
    path = spec["path"] if spec["engine"] == "duckdb" else None
    con = connect_duckdb(path, read_only=spec["read_only"], files=spec.get("files") or [])
    try:
        cur = con.execute(spec["query"])
        desc = cur.description or []
        out["columns"] = [d[0] for d in desc]
        out["types"] = [str(d[1]) for d in desc]
        rows = cur.fetchmany(spec["max_rows"]) if desc else []
        total = len(rows)
        if desc and len(rows) == spec["max_rows"]:
            while batch := cur.fetchmany(10000):
                total += len(batch)
        out["row_count"] = total
        out["rows"] = [[_jsonable(v) for v in row] for row in rows]
    finally:
        con.close()
