"""The product's query runner: every query, schema scan and chart runs in corral's sandbox.

Queries go through ``corral.sandbox.run_sql`` (read-only). The schema scan and the chart are Python run by
``corral.sandbox.run_python``: the code is :mod:`._driver`'s / :mod:`._chart`'s own source, and the request
(paths, the spec) travels as an input file, never formatted into the code.
"""

from __future__ import annotations

import asyncio
import inspect
import json
from pathlib import Path
from typing import Any

from corral.apps.data_agent import _driver
from corral.apps.data_agent._chart import RENDER_CODE
from corral.apps.data_agent._runner import QueryResult, Stopwatch
from corral.apps.data_agent._sources import Source
from corral.apps.data_agent.errors import QueryRunnerError


def _sandbox() -> Any:
    try:
        import corral.sandbox as sandbox
    except ImportError as exc:  # pragma: no cover - the package always ships it
        raise QueryRunnerError(f"corral.sandbox cannot be imported: {exc}") from exc
    if not hasattr(sandbox, "run_sql") or not hasattr(sandbox, "run_python"):
        raise QueryRunnerError(
            "the sandbox (corral.sandbox.run_sql/run_python) is not available in this build; the data agent "
            "never runs model-written queries outside it"
        )
    return sandbox


def _write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


class SandboxQueryRunner:
    """Runs one source's queries in the sandbox, read-only."""

    def __init__(self, source: Source, *, timeout_s: float = 30.0) -> None:
        self.source = source
        self.timeout_s = timeout_s
        self._sandbox = _sandbox()

    async def run(self, sql: str, *, max_rows: int = 1000) -> QueryResult:
        """Run ``sql`` in the sandbox; the database's error comes back in the result."""
        sandbox = self._sandbox
        with Stopwatch() as watch:
            result = await sandbox.run_sql(sql, self._sql_source(), read_only=True, max_rows=max_rows)
        return QueryResult(
            ok=result.error is None,
            columns=[str(c) for c in result.columns],
            rows=[list(r) for r in result.rows],
            row_count=int(result.row_count),
            error=None if result.error is None else str(result.error)[:2000],
            elapsed_s=watch.elapsed,
        )

    def _sql_source(self) -> Any:
        return self._sandbox_source()

    def _sandbox_source(self) -> Any:
        """The sandbox's description of this source."""
        sandbox = self._sandbox
        src = self.source
        if src.kind == "files":
            files = [(t.name, t.path, t.format) for t in src.tables]
            return sandbox.SqlSource.files(files) if hasattr(sandbox, "SqlSource") else files
        if src.kind == "postgres":
            raise QueryRunnerError(
                "PostgreSQL sources need network access, which the sandbox does not give; this build cannot "
                "query them"
            )
        return str(src.path)

    async def _python(self, code: str, inputs: dict[str, Path | bytes]) -> Any:
        return await self._sandbox.run_python(code, inputs=inputs)

    async def describe(self) -> dict[str, Any]:
        """Scan the schema in the sandbox with the driver's own code."""
        spec = self.source.spec()
        inputs: dict[str, Path | bytes] = {}
        if self.source.kind == "files":
            for i, table in enumerate(spec["tables"]):
                name = f"t{i}{Path(table['path']).suffix}"
                inputs[name] = Path(table["path"])
                table["path"] = f"/data/{name}"
        elif self.source.path is not None:
            name = "db" + self.source.path.suffix
            inputs[name] = self.source.path
            spec["path"] = f"/data/{name}"
        inputs["request.json"] = json.dumps({"op": "describe", "spec": spec}).encode()
        code = inspect.getsource(_driver) + '\nmain(["driver", "/data/request.json", "result.json"])\n'
        result = await self._python(code, inputs)
        raw = result.files.get("result.json")
        if raw is None:
            raise QueryRunnerError(
                f"the schema scan of {self.source.describe()} failed in the sandbox: {result.stderr[-500:]}"
            )
        out: dict[str, Any] = json.loads(raw)
        if not out.get("ok"):
            raise QueryRunnerError(f"cannot read the schema of {self.source.describe()}: {out.get('error')}")
        return out

    async def render_chart(self, spec: dict[str, Any], out: Path) -> Path | None:
        """Draw ``spec`` as a PNG with matplotlib in the sandbox; ``None`` when the sandbox could not."""
        result = await self._python(RENDER_CODE, {"chart.json": json.dumps(spec).encode()})
        png = result.files.get("chart.png")
        if png is None or not png.startswith(b"\x89PNG"):
            return None
        await asyncio.to_thread(_write, out, png)
        return out
