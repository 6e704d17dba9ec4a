"""Runs model-written pandas code on a file source's DataFrames, in corral's sandbox.

The job's code is :mod:`._pydriver`'s own source text; the model's code and the file list travel as the
request input file, never formatted into the job's code. Files are mounted read-only under ``/data`` with
their own names, so a model that reloads ``pd.read_csv("sales.csv")`` reads the real file.
"""

from __future__ import annotations

import inspect
import json
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from corral.apps.data_agent import _job_result, _pydriver
from corral.apps.data_agent._runner import QueryResult, Stopwatch
from corral.apps.data_agent._sources import Source
from corral.apps.data_agent.errors import QueryRunnerError

_HARNESS = inspect.getsource(_pydriver) + '\nmain(["pydriver", "/data/request.json", "result.json"])\n'


@runtime_checkable
class CodeRunner(Protocol):
    """Runs model-written pandas code over one file source (the sandbox in the product)."""

    source: Source

    async def run(self, code: str, *, max_rows: int = 1000) -> QueryResult:
        """Run ``code``; its error (the exception and the line that raised it) comes back in the result."""
        ...

    async def describe(self) -> dict[str, Any]:
        """The DataFrames: name, rows, and columns with dtype, null count and samples (see ``_pydriver``)."""
        ...


def _input_names(paths: list[Path]) -> list[str]:
    """The file names the job sees under ``/data``: the files' own, made unique."""
    names: list[str] = []
    for path in paths:
        name = path.name if path.name != "request.json" else "_request.json"
        stem, suffix, n = Path(name).stem, Path(name).suffix, 2
        while name in names:
            name = f"{stem}_{n}{suffix}"
            n += 1
        names.append(name)
    return names


class SandboxPandasRunner:
    """Runs pandas code over a CSV/Parquet source in the sandbox.

    Raises :class:`QueryRunnerError` for a source that is not files (pandas runs over files; databases are
    queried with SQL).
    """

    def __init__(self, source: Source, *, limits: Any = None) -> None:
        if source.kind != "files":
            raise QueryRunnerError(f"{source.describe()}: pandas code runs over CSV/Parquet files only")
        self.source = source
        import corral.sandbox as sandbox

        self._sandbox = sandbox
        # A hung or runaway program must not hold a question for the sandbox's default 30 s.
        self.limits = limits or sandbox.Limits(
            wall_seconds=20, cpu_seconds=8, memory_bytes=1024 * 1024 * 1024
        )

    def _inputs(self, request: dict[str, Any]) -> dict[str, Path | bytes]:
        tables = list(self.source.tables)
        names = _input_names([t.path for t in tables])
        inputs: dict[str, Path | bytes] = {name: t.path for name, t in zip(names, tables, strict=True)}
        spec = {
            "tables": [
                {"name": t.name, "path": f"/data/{name}", "format": t.format, "original": t.path.name}
                for name, t in zip(names, tables, strict=True)
            ]
        }
        inputs["request.json"] = json.dumps({**request, "spec": spec}).encode()
        return inputs

    async def _job(self, request: dict[str, Any]) -> dict[str, Any] | str:
        """The harness's JSON answer, or why there is none (a limit stopped the job, or it crashed)."""
        result = await self._sandbox.run_python(_HARNESS, inputs=self._inputs(request), limits=self.limits)
        raw = result.files.get("result.json")
        if raw is None:
            if result.limit is not None:
                return f"the code was stopped by the sandbox's {result.limit} limit"
            return f"the code ended the job (exit {result.exit_code}): {result.stderr[-500:].strip()}"
        return _job_result.parse(raw, describe=request.get("op") == "describe")

    async def run(self, code: str, *, max_rows: int = 1000) -> QueryResult:
        with Stopwatch() as watch:
            out = await self._job({"op": "run", "code": code, "max_rows": max_rows})
        if isinstance(out, str):
            return QueryResult(ok=False, error=out, elapsed_s=watch.elapsed)
        return QueryResult.from_driver(out, watch.elapsed)

    async def describe(self) -> dict[str, Any]:
        out = await self._job({"op": "describe"})
        if isinstance(out, str) or not out.get("ok"):
            why = out if isinstance(out, str) else out.get("error")
            raise QueryRunnerError(f"cannot load {self.source.describe()} with pandas: {why}")
        return out
