"""The code that touches the data: opens a source read-only, runs one query, or describes the schema.

This module is self-contained on purpose (standard library, ``duckdb`` imported lazily, and the sandbox's SQL
job module, which every sandbox job has as ``corral_sqljob``): its source text is shipped into the sandbox and
run there, so the host never executes a model-written query itself. Opening a database goes through
:mod:`corral.sandbox.sqljob`, the same hardening ``run_sql`` uses (authorizer, locked DuckDB settings). The
same functions run in process only in the tests' fixtures, which keeps the tested path and the sandboxed path
one piece of code.

Inputs and outputs are plain JSON-able dicts. The query arrives as data (a file), never formatted into code.
"""

from __future__ import annotations

import datetime
import decimal
import json
import math
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from corral.sandbox import sqljob
else:
    try:
        import corral_sqljob as sqljob  # in the sandbox: the worker's copy of corral.sandbox.sqljob
    except ImportError:
        from corral.sandbox import sqljob  # in process (the tests' fixtures)

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


def _connect(spec: dict[str, Any]) -> tuple[Any, str]:
    """Open the source read-only, hardened by the sandbox's SQL job module; returns (connection, kind)."""
    kind = spec["kind"]
    if kind == "sqlite":
        return sqljob.connect_sqlite(spec["path"], read_only=True), kind
    if kind == "duckdb":
        return sqljob.connect_duckdb(spec["path"], read_only=True), kind
    if kind == "files":
        files = [{"name": t["name"], "path": t["path"], "format": t["format"]} for t in spec["tables"]]
        return sqljob.connect_duckdb(None, read_only=True, files=files), kind
    if kind == "postgres":
        return _pg_connect(spec), kind
    if kind == "multi":
        return sqljob.connect_attached(spec["parts"]), kind
    raise ValueError(f"unknown source kind {kind!r}")


# -- PostgreSQL ---------------------------------------------------------------------------------------------
#
# In the sandbox the job has no network: the host opened the one connection to the server the URL names (and
# did TLS, if any) and passed the job one end of a socket pair, linked as ``spec["socket"]``. libpq can only
# connect by itself, so a small relay listens on a Unix socket in the job's own /tmp and pipes the one
# connection it accepts to that descriptor. The tests also connect straight to ``spec["url"]`` in process.


class ConnectError(Exception):
    """The PostgreSQL session could not be opened (unreachable, authentication, missing database, refused)."""


#: Directory of the job's relay socket (libpq treats a host starting with "/" as a socket directory).
PG_SOCKET_DIR = "/tmp/pg"


def _pg_options(spec: dict[str, Any]) -> str:
    """Server settings for the session: read-only by default and bounded in time (each its own ``-c``)."""
    ms = int(spec.get("statement_timeout_ms") or 20000)
    return (
        f"-c default_transaction_read_only=on -c statement_timeout={ms} -c lock_timeout={ms} "
        f"-c idle_in_transaction_session_timeout={2 * ms} -c cursor_tuple_fraction=1"
    )


def _pg_relay(link: str, port: int) -> str:
    """Listen on ``PG_SOCKET_DIR/.s.PGSQL.<port>`` and pipe the first connection to the inherited socket."""
    import os
    import socket
    import threading

    # The sandbox links an inherited descriptor as /data/<name> -> /proc/self/fd/<N>.
    upstream = socket.socket(fileno=int(os.readlink(link).rsplit("/", 1)[1]))
    os.makedirs(PG_SOCKET_DIR, mode=0o700, exist_ok=True)
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(f"{PG_SOCKET_DIR}/.s.PGSQL.{port}")
    listener.listen(1)
    threading.Thread(target=_pg_accept_one, args=(listener, upstream), daemon=True).start()
    return PG_SOCKET_DIR


def _pg_accept_one(listener: Any, upstream: Any) -> None:
    # One connection only: the host opened exactly one to the server.
    conn, _ = listener.accept()
    listener.close()
    with conn, upstream:
        pipe(conn, upstream)


def pipe(a: Any, b: Any) -> None:
    """Copy bytes both ways between two connected sockets until either side closes."""
    import select

    peer = {a: b, b: a}
    while True:
        ready, _, _ = select.select([a, b], [], [])
        for src in ready:
            try:
                data = src.recv(65536)
            except OSError:
                return
            if not data:
                return
            peer[src].sendall(data)


def _pg_reason(exc: BaseException) -> str:
    """libpq's message without the relay's socket path (which would only confuse the reader)."""
    import re

    text = " ".join(str(exc).split())
    text = re.sub(r"^(connection failed: )?connection to server .*? failed: ", "", text)
    return text or type(exc).__name__


class QueryError(Exception):
    """The database refused or failed the query (its message, fit for the model to correct the query)."""


def _pg_error(exc: BaseException, query: str) -> str:
    """The server's message with the place it points at in *the query as written*: its own context line
    would quote the ``DECLARE … CURSOR FOR`` prefix the model never wrote."""
    diag = getattr(exc, "diag", None)
    primary = getattr(diag, "message_primary", None) or str(exc).splitlines()[0]
    text = f"{type(exc).__name__}: {primary}"
    position = getattr(diag, "statement_position", None)
    offset = len('DECLARE "corral_query" CURSOR FOR ')
    if position and position.isdigit() and int(position) > offset:
        at = int(position) - offset - 1
        text += f" (at: {query[at : at + 40]!r})"
    hint = getattr(diag, "message_hint", None)
    return f"{text}. Hint: {hint}" if hint else text


def _pg_connect(spec: dict[str, Any]) -> Any:
    import psycopg  # type: ignore[import-not-found, unused-ignore]

    params: dict[str, Any] = dict(spec.get("params") or {})
    params["options"] = " ".join(x for x in (params.get("options"), _pg_options(spec)) if x)
    conninfo = ""
    if "socket" in spec:
        port = int(spec["port"])
        # libpq does no TLS over a Unix socket; the host did TLS (when asked) on its side of the relay.
        params.update(
            host=_pg_relay(spec["socket"], port), port=str(port), sslmode="disable", gssencmode="disable"
        )
    else:
        conninfo = spec["url"]  # tests, in process: straight to the server
    try:
        # libpq counts whole seconds, at least 2.
        timeout = max(2, round(float(spec.get("connect_timeout") or 10)))
        conn = psycopg.connect(conninfo, autocommit=False, connect_timeout=timeout, **params)
    except psycopg.Error as exc:
        raise ConnectError(_pg_reason(exc)) from None
    if conn.info.parameter_status("is_superuser") == "on":
        # A superuser can write server files (COPY ... TO PROGRAM, lo_export) even in a read-only transaction.
        conn.close()
        raise ConnectError(
            f"refused to query as {params.get('user') or 'this role'}: it is a superuser, which can run "
            "programs and write files on the server even in a read-only transaction; connect as a role "
            "with SELECT rights only"
        )
    conn.read_only = True  # every transaction starts with BEGIN READ ONLY
    return conn


def _pg_fetch(conn: Any, sql: str, max_rows: int) -> tuple[list[str], list[list[Any]], int]:
    """Run ``sql`` through a server-side cursor: ``DECLARE … CURSOR FOR`` takes exactly one SELECT/VALUES
    (no second statement after a ``;``, no ``SET TRANSACTION READ WRITE``, no data-modifying WITH), only the
    first ``max_rows`` rows are transferred, and the rest are counted by the server (MOVE)."""
    from psycopg import sql as pgsql  # type: ignore[import-not-found, unused-ignore]

    query = sql.strip().rstrip(";")
    with conn.cursor(name="corral_query") as cur:
        try:
            cur.execute(query)
            columns = [d[0] for d in (cur.description or [])]
            rows = [[_json_value(v) for v in r] for r in cur.fetchmany(max_rows)] if max_rows > 0 else []
            total = len(rows)
            if len(rows) == max_rows:
                moved = conn.execute(pgsql.SQL("MOVE FORWARD ALL IN {}").format(pgsql.Identifier(cur.name)))
                total += int((moved.statusmessage or "MOVE 0").split()[-1])
        except Exception as exc:
            raise QueryError(_pg_error(exc, query)) from None
    return columns, rows, total


def _fetch(conn: Any, sql: str, max_rows: int, kind: str = "") -> tuple[list[str], list[list[Any]], int]:
    if kind == "multi":
        cur = sqljob.run_select(conn, sql)  # one SELECT, by DuckDB's own parser
    else:
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
        conn, kind = _connect(spec)
    except Exception as exc:
        return {
            "ok": False,
            "error": f"cannot open the source: {exc}",
            "connect_failed": True,
            "columns": [],
            "rows": [],
            "row_count": 0,
        }
    try:
        if kind == "postgres":
            columns, rows, total = _pg_fetch(conn, sql, max_rows)
        else:
            columns, rows, total = _fetch(conn, sql, max_rows, kind)
        return {"ok": True, "error": None, "columns": columns, "rows": rows, "row_count": total}
    except Exception as exc:
        return {
            "ok": False,
            "error": str(exc) if isinstance(exc, QueryError) else sqljob.explain(conn, exc),
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


def _describe_multi(spec: dict[str, Any]) -> dict[str, Any]:
    """Each part described on its own connection, its tables renamed as the combined connection names them
    (``sqljob.flat_names``); keys keep pointing at the same tables."""
    described = [(part, describe(part)) for part in spec["parts"]]
    files = {t["name"] for part, d in described if part["kind"] == "files" for t in d["tables"]}
    listed = [(p["alias"], [t["name"] for t in d["tables"]]) for p, d in described if p["kind"] != "files"]
    flat = sqljob.flat_names(listed, files)
    tables: list[dict[str, Any]] = []
    for part, d in described:
        for table in d["tables"]:
            if part["kind"] != "files":
                alias = part["alias"]
                table["name"] = flat[(alias, table["name"])]
                for fk in table["foreign_keys"]:
                    fk["ref_table"] = flat.get((alias, fk["ref_table"]), fk["ref_table"])
            tables.append(table)
    return {"ok": True, "error": None, "tables": tables}


def describe(spec: dict[str, Any]) -> dict[str, Any]:
    """Tables, columns, types, keys, row counts and a few sample values per column."""
    if spec["kind"] == "multi":
        return _describe_multi(spec)
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
