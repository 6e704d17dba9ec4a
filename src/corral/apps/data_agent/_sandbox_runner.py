"""The product's query runner: every query, schema scan and chart runs in corral's sandbox.

SQLite and DuckDB queries go through ``corral.sandbox.run_sql`` (read-only). CSV/Parquet queries, the schema
scan and the chart are Python run by ``corral.sandbox.run_python``: the code is :mod:`._driver`'s (or
:mod:`._chart`'s) own source text, and the request (the query, the spec) travels as an input file, never
formatted into the code. The data files are mounted read-only under ``/data``.

PostgreSQL goes through the driver too, and the job still has no network: the host opens the one connection
the URL names (TLS on the host's side when asked for) and relays it to a socket the job inherits (see
:mod:`._pg_relay`). The password travels in the request input file, like the query, never in the code.
"""

from __future__ import annotations

import asyncio
import inspect
import json
from pathlib import Path
from typing import Any

from corral.apps.data_agent import _driver, _job_result, _multi, _pg_relay
from corral.apps.data_agent._chart import RENDER_CODE
from corral.apps.data_agent._runner import QueryResult, Stopwatch
from corral.apps.data_agent._sources import Source
from corral.apps.data_agent.errors import QueryRunnerError

#: The driver as a sandbox job: its own source, then its entry point on the request input.
_DRIVER_CODE = inspect.getsource(_driver) + '\nmain(["driver", "/data/request.json", "result.json"])\n'
#: How long one relayed PostgreSQL session may last: the job's wall limit (30 s) plus the pool's backstop.
_PG_SESSION_SECONDS = 45.0


def _sandbox() -> Any:
    try:
        import corral.sandbox as sandbox
    except ImportError as exc:  # pragma: no cover - the package always ships it
        raise QueryRunnerError(f"corral.sandbox cannot be imported: {exc}") from exc
    return sandbox


def _write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


class SandboxQueryRunner:
    """Runs one source's queries in the sandbox, read-only.

    A machine that cannot isolate code raises ``corral.sandbox.SandboxUnavailable`` (with what to install)
    on the first query; there is no fallback to running the query in this process.
    """

    def __init__(self, source: Source, *, statement_timeout: float = 20.0) -> None:
        self.source = source
        self.statement_timeout = statement_timeout
        self._sandbox = _sandbox()
        # Parsed on the host: where to connect and how (TLS); raises SourceError for an unusable URL.
        self._pg = _pg_relay.parse_url(source.url or "") if source.kind == "postgres" else None

    async def run(self, sql: str, *, max_rows: int = 1000) -> QueryResult:
        """Run ``sql`` in the sandbox; the database's error comes back in the result."""
        sandbox = self._sandbox
        src = self.source
        with Stopwatch() as watch:
            if src.kind == "files" or src.path is None:
                # Files: our table names (sanitised stems) are the driver's. PostgreSQL: the relay is.
                out = await self._driver({"op": "query", "sql": sql, "max_rows": max_rows})
                if out.get("connect_failed") and self._pg is not None:
                    # Not the query's fault: the model cannot fix an unreachable server or a wrong password.
                    reason = str(out.get("error")).removeprefix("cannot open the source: ")
                    raise QueryRunnerError(f"cannot connect to {src.describe()}: {self._scrub(reason)}")
            else:
                db = (
                    sandbox.SQLiteSource(src.path) if src.kind == "sqlite" else sandbox.DuckDBSource(src.path)
                )
                res = await sandbox.run_sql(sql, db, read_only=True, max_rows=max_rows)
                out = {
                    "ok": res.error is None,
                    "columns": res.columns,
                    "rows": [list(r) for r in res.rows],
                    "row_count": res.row_count,
                    "error": res.error,
                }
        return QueryResult.from_driver(out, watch.elapsed)

    async def write(self, sql: str) -> QueryResult:
        """Run an *approved* statement that changes data: the sandbox works on a copy of the database file
        and writes it back only if the file did not change meanwhile. CSV/Parquet files are never written."""
        src = self.source
        if src.kind == "postgres":
            return QueryResult(
                ok=False,
                error="writes to PostgreSQL are not supported: every session is a read-only transaction; "
                "run the statement yourself with a client that has write rights",
            )
        if src.kind == "multi":
            return QueryResult(
                ok=False, error="combined sources are read-only; ask one database alone to write"
            )
        if src.kind == "files" or src.path is None:
            return QueryResult(ok=False, error="CSV/Parquet sources are read-only; load them into a database")
        sandbox = self._sandbox
        db = sandbox.SQLiteSource(src.path) if src.kind == "sqlite" else sandbox.DuckDBSource(src.path)
        with Stopwatch() as watch:
            res = await sandbox.run_sql(sql, db, read_only=False)
        return QueryResult(
            ok=res.error is None,
            columns=res.columns,
            rows=[list(r) for r in res.rows],
            row_count=res.row_count,
            error=res.error,
            elapsed_s=watch.elapsed,
        )

    async def _driver(self, request: dict[str, Any]) -> dict[str, Any]:
        """Run :mod:`._driver` in the sandbox on this source (files mounted read-only under /data)."""
        spec = self.source.spec()
        inputs: dict[str, Path | bytes] = {}
        if self._pg is not None:
            spec = {
                "kind": "postgres",
                "socket": "/data/pg",
                "port": self._pg.port,
                "params": self._pg.job_params,  # with the password: it stays in the input file
                "statement_timeout_ms": int(self.statement_timeout * 1000),
                "connect_timeout": self._pg.connect_timeout,
            }
        elif self.source.kind == "multi":
            spec = _multi.mount(spec, inputs)
        elif self.source.kind == "files":
            for i, table in enumerate(spec["tables"]):
                name = f"t{i}{Path(table['path']).suffix.lower()}"
                inputs[name] = Path(table["path"])
                table["path"] = f"/data/{name}"
        elif self.source.path is not None:
            name = "db" + self.source.path.suffix.lower()
            inputs[name] = self.source.path
            spec["path"] = f"/data/{name}"
        inputs["request.json"] = json.dumps({**request, "spec": spec}).encode()
        if self._pg is None:
            result = await self._sandbox.run_python(_DRIVER_CODE, inputs=inputs)
        else:
            result = await self._run_relayed(self._pg, inputs)
        raw = result.files.get("result.json")
        if raw is None:
            raise QueryRunnerError(
                f"the sandboxed driver for {self.source.describe()} produced no result "
                f"(exit {result.exit_code}, limit {result.limit}): {self._scrub(result.stderr[-500:])}"
            )
        loaded = _job_result.parse(raw, describe=request.get("op") == "describe")
        if isinstance(loaded, str):
            if request.get("op") == "describe":
                raise QueryRunnerError(f"the sandboxed driver for {self.source.describe()}: {loaded}")
            return {"ok": False, "error": loaded, "columns": [], "rows": [], "row_count": 0}
        if isinstance(loaded.get("error"), str):
            loaded["error"] = self._scrub(loaded["error"])
        return loaded

    async def _run_relayed(self, target: _pg_relay.PgTarget, inputs: dict[str, Path | bytes]) -> Any:
        """Run the driver with one relayed connection to the PostgreSQL server as the socket ``/data/pg``."""
        relay = await asyncio.to_thread(_pg_relay.open_relay, target, _PG_SESSION_SECONDS)
        try:
            return await self._sandbox.run_python(_DRIVER_CODE, inputs=inputs, sockets={"pg": relay.job_end})
        finally:
            await asyncio.to_thread(relay.close)

    def _scrub(self, text: str) -> str:
        """``text`` without the PostgreSQL password (no message of ours has it; this is a second guard)."""
        password = self._pg.job_params.get("password") if self._pg is not None else None
        return text.replace(password, "***") if password else text

    async def describe(self) -> dict[str, Any]:
        """Scan the schema in the sandbox with the driver's own code."""
        out = await self._driver({"op": "describe"})
        if not out.get("ok"):
            raise QueryRunnerError(f"cannot read the schema of {self.source.describe()}: {out.get('error')}")
        return out

    async def render_chart(self, spec: dict[str, Any], out: Path) -> Path | None:
        """Draw ``spec`` as a PNG with matplotlib in the sandbox; ``None`` when the sandbox could not."""
        result = await self._sandbox.run_python(RENDER_CODE, inputs={"chart.json": json.dumps(spec).encode()})
        png = result.files.get("chart.png")
        if png is None or not png.startswith(b"\x89PNG"):
            return None
        await asyncio.to_thread(_write, out, png)
        return out
