"""The code that touches the data: opens a source read-only, runs one query, or describes the schema.

This module is self-contained on purpose (standard library plus ``duckdb``, imported lazily): its source text
is shipped into the sandbox and run there, so the host never executes a model-written query itself. The same
functions run in process only in the tests' fixtures, which keeps the tested path and the sandboxed path one
piece of code.

Inputs and outputs are plain JSON-able dicts. The query arrives as data (a file), never formatted into code.
"""

from __future__ import annotations

import datetime
import decimal
import json
import math
import sqlite3
from typing import Any

#: How many distinct sample values describe a column.
SAMPLE_VALUES = 3
#: Longest sample value kept (characters); longer text is cut, it only has to hint at the content.
SAMPLE_CHARS = 40


def _json_value(value: Any) -> Any:
    """A JSON-safe rendering of one database value (numbers stay numbers)."""
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        return None if math.isnan(value) or math.isinf(value) else value
    if isinstance(value, decimal.Decimal):
        return float(value)
    if isinstance(value, datetime.datetime | datetime.date | datetime.time):
        return value.isoformat()
    if isinstance(value, bytes | bytearray | memoryview):
        return f"<{len(bytes(value))} bytes>"
    return str(value)


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _connect(spec: dict[str, Any]) -> tuple[Any, str]:
    """Open the source read-only; returns (connection, kind)."""
    kind = spec["kind"]
    conn: Any
    if kind == "sqlite":
        # In the sandbox the file is a link to a descriptor whose host path does not exist in there, and
        # SQLite resolves links itself: so the query runs on an in-memory image of the file.
        with open(spec["path"], "rb") as f:
            image = f.read()
        conn = sqlite3.connect(":memory:")
        if image:
            conn.deserialize(image)
        # Belt and braces: nothing the query does reaches the file anyway, and it cannot write the image.
        conn.execute("PRAGMA query_only = ON")
        conn.setlimit(sqlite3.SQLITE_LIMIT_ATTACHED, 0)
        return conn, kind
    if kind == "duckdb":
        import duckdb

        conn = duckdb.connect(spec["path"], read_only=True)
        conn.execute("SET enable_external_access = false")
        conn.execute("SET lock_configuration = true")
        return conn, kind
    if kind == "files":
        import duckdb

        conn = duckdb.connect(":memory:")
        paths = [t["path"] for t in spec["tables"]]
        # Only the source files stay readable; every other file system access is off for the query.
        conn.execute("SET allowed_paths = " + "[" + ", ".join(_literal(p) for p in paths) + "]")
        conn.execute("SET enable_external_access = false")
        for table in spec["tables"]:
            reader = "read_parquet" if table["format"] == "parquet" else "read_csv_auto"
            conn.execute(
                f"CREATE VIEW {_quote(table['name'])} AS SELECT * FROM {reader}({_literal(table['path'])})"
            )
        conn.execute("SET lock_configuration = true")
        return conn, kind
    if kind == "postgres":
        import psycopg  # type: ignore[import-not-found, unused-ignore]

        conn = psycopg.connect(spec["url"], autocommit=False)
        conn.read_only = True
        return conn, kind
    raise ValueError(f"unknown source kind {kind!r}")


def _fetch(conn: Any, sql: str, max_rows: int) -> tuple[list[str], list[list[Any]], int]:
    cur = conn.cursor()
    cur.execute(sql)
    columns = [d[0] for d in (cur.description or [])]
    rows: list[list[Any]] = []
    total = 0
    while True:
        batch = cur.fetchmany(1000)
        if not batch:
            break
        for row in batch:
            total += 1
            if len(rows) < max_rows:
                rows.append([_json_value(v) for v in row])
    return columns, rows, total


def run_query(spec: dict[str, Any], sql: str, max_rows: int) -> dict[str, Any]:
    """Run one query; returns ``{"ok", "columns", "rows", "row_count", "error"}``."""
    try:
        conn, _ = _connect(spec)
    except Exception as exc:
        return {
            "ok": False,
            "error": f"cannot open the source: {exc}",
            "columns": [],
            "rows": [],
            "row_count": 0,
        }
    try:
        columns, rows, total = _fetch(conn, sql, max_rows)
        return {"ok": True, "error": None, "columns": columns, "rows": rows, "row_count": total}
    except Exception as exc:
        return {
            "ok": False,
            "error": f"{type(exc).__name__}: {exc}",
            "columns": [],
            "rows": [],
            "row_count": 0,
        }
    finally:
        conn.close()


def _tables_and_columns(conn: Any, kind: str) -> list[dict[str, Any]]:
    cur = conn.cursor()
    tables: list[dict[str, Any]] = []
    if kind == "sqlite":
        cur.execute(
            "SELECT name, type FROM sqlite_master WHERE type IN ('table','view') "
            "AND name NOT LIKE 'sqlite_%' ORDER BY name"
        )
        for name, ttype in cur.fetchall():
            cur.execute("SELECT name, type, pk FROM pragma_table_info(?)", (name,))
            cols = [{"name": c, "type": t or "", "pk": bool(pk)} for c, t, pk in cur.fetchall()]
            cur.execute(
                'SELECT "from", "table", "to" FROM pragma_foreign_key_list(?)',
                (name,),
            )
            refs = [{"column": f, "ref_table": rt, "ref_column": rc} for f, rt, rc in cur.fetchall()]
            tables.append({"name": name, "view": ttype == "view", "columns": cols, "foreign_keys": refs})
        return tables
    if kind in ("duckdb", "files"):
        cur.execute(
            "SELECT table_name, table_type FROM information_schema.tables "
            "WHERE table_schema NOT IN ('information_schema', 'pg_catalog') ORDER BY table_name"
        )
        for name, ttype in cur.fetchall():
            cur.execute(
                "SELECT column_name, data_type FROM information_schema.columns "
                "WHERE table_name = ? ORDER BY ordinal_position",
                [name],
            )
            cols = [{"name": c, "type": t, "pk": False} for c, t in cur.fetchall()]
            pks: set[str] = set()
            fks: list[dict[str, Any]] = []
            cur.execute(
                "SELECT constraint_type, constraint_column_names, referenced_table, referenced_column_names "
                "FROM duckdb_constraints() WHERE table_name = ?",
                [name],
            )
            for ctype, ccols, rtable, rcols in cur.fetchall():
                if ctype == "PRIMARY KEY":
                    pks.update(ccols)
                elif ctype == "FOREIGN KEY" and rtable:
                    for c, rc in zip(ccols, rcols or ccols, strict=False):
                        fks.append({"column": c, "ref_table": rtable, "ref_column": rc})
            for col in cols:
                col["pk"] = col["name"] in pks
            tables.append({"name": name, "view": ttype == "VIEW", "columns": cols, "foreign_keys": fks})
        return tables
    if kind == "postgres":
        cur.execute(
            "SELECT table_name, table_type FROM information_schema.tables "
            "WHERE table_schema = current_schema() ORDER BY table_name"
        )
        for name, ttype in cur.fetchall():
            cur.execute(
                "SELECT column_name, data_type FROM information_schema.columns "
                "WHERE table_schema = current_schema() AND table_name = %s ORDER BY ordinal_position",
                [name],
            )
            cols = [{"name": c, "type": t, "pk": False} for c, t in cur.fetchall()]
            cur.execute(
                "SELECT kcu.column_name, tc.constraint_type, ccu.table_name, ccu.column_name "
                "FROM information_schema.table_constraints tc "
                "JOIN information_schema.key_column_usage kcu ON tc.constraint_name = kcu.constraint_name "
                "LEFT JOIN information_schema.constraint_column_usage ccu "
                "ON tc.constraint_name = ccu.constraint_name AND tc.constraint_type = 'FOREIGN KEY' "
                "WHERE tc.table_schema = current_schema() AND tc.table_name = %s",
                [name],
            )
            pg_pks: set[str] = set()
            pg_fks: list[dict[str, Any]] = []
            for c, ctype, rt, rc in cur.fetchall():
                if ctype == "PRIMARY KEY":
                    pg_pks.add(c)
                elif ctype == "FOREIGN KEY" and rt:
                    pg_fks.append({"column": c, "ref_table": rt, "ref_column": rc})
            for col in cols:
                col["pk"] = col["name"] in pg_pks
            tables.append({"name": name, "view": ttype == "VIEW", "columns": cols, "foreign_keys": pg_fks})
        return tables
    raise ValueError(f"unknown source kind {kind!r}")


def describe(spec: dict[str, Any]) -> dict[str, Any]:
    """Tables, columns, types, keys, row counts and a few sample values per column."""
    conn, kind = _connect(spec)
    try:
        tables = _tables_and_columns(conn, kind)
        cur = conn.cursor()
        for table in tables:
            qt = _quote(table["name"])
            try:
                cur.execute(f"SELECT COUNT(*) FROM {qt}")
                table["row_count"] = int(cur.fetchone()[0])
            except Exception:
                table["row_count"] = None
            for col in table["columns"]:
                qc = _quote(col["name"])
                try:
                    # A bounded scan: samples only hint at the content, so the first rows are enough.
                    cur.execute(
                        f"SELECT DISTINCT {qc} FROM "
                        f"(SELECT {qc} FROM {qt} WHERE {qc} IS NOT NULL LIMIT 2000) s LIMIT {SAMPLE_VALUES}"
                    )
                    samples = []
                    for (v,) in cur.fetchall():
                        v = _json_value(v)
                        if isinstance(v, str) and len(v) > SAMPLE_CHARS:
                            v = v[:SAMPLE_CHARS] + "…"
                        samples.append(v)
                    col["samples"] = samples
                except Exception:
                    col["samples"] = []
        return {"ok": True, "error": None, "tables": tables}
    finally:
        conn.close()


def main(argv: list[str]) -> int:
    """Sandbox entry point: ``main(["driver", REQUEST_JSON, RESULT_JSON])`` (the runner appends this call to
    the module's source; there is no ``__main__`` block, because the sandbox runs jobs as ``__main__``)."""
    with open(argv[1], encoding="utf-8") as f:
        request = json.load(f)
    try:
        if request["op"] == "describe":
            out = describe(request["spec"])
        else:
            out = run_query(request["spec"], request["sql"], int(request["max_rows"]))
    except Exception as exc:
        out = {
            "ok": False,
            "error": f"{type(exc).__name__}: {exc}",
            "columns": [],
            "rows": [],
            "row_count": 0,
        }
    with open(argv[2], "w", encoding="utf-8") as f:
        json.dump(out, f)
    return 0
