"""The seam between the agent and the data: a :class:`QueryRunner` runs a query (or describes the schema).

The product's runner is :class:`SandboxQueryRunner`: every query runs in corral's sandbox, on a read-only
mount of the source. There is deliberately no in-process runner in the package: a missing sandbox is an
error that says how to install it, never a silent fallback to running model-written SQL in the host.
"""

from __future__ import annotations

import time
from typing import Any, Protocol, runtime_checkable

from pydantic import BaseModel, ConfigDict, Field

from corral.apps.data_agent._sources import Source


class QueryResult(BaseModel):
    """What one query returned: the first ``max_rows`` rows, the full row count, or the database's error."""

    model_config = ConfigDict(frozen=True)

    ok: bool
    columns: list[str] = Field(default_factory=list)
    rows: list[list[Any]] = Field(default_factory=list)
    row_count: int = 0
    error: str | None = None
    elapsed_s: float = 0.0

    @classmethod
    def from_driver(cls, out: dict[str, Any], elapsed_s: float) -> QueryResult:
        """Validate what the sandboxed driver wrote (it is untrusted output, so it is parsed, not trusted)."""
        return cls(
            ok=bool(out.get("ok")),
            columns=[str(c) for c in out.get("columns") or []],
            rows=[list(r) for r in out.get("rows") or []],
            row_count=int(out.get("row_count") or 0),
            error=None if out.get("error") is None else str(out["error"])[:2000],
            elapsed_s=elapsed_s,
        )


@runtime_checkable
class QueryRunner(Protocol):
    """Runs queries against one source. Implementations must never write to it."""

    source: Source

    async def run(self, sql: str, *, max_rows: int = 1000) -> QueryResult:
        """Run one read-only query; a database error is returned in the result, not raised."""
        ...

    async def describe(self) -> dict[str, Any]:
        """The raw schema description (see :func:`._driver.describe`)."""
        ...


class Stopwatch:
    """Measures a block's wall time (the runner reports it with each result)."""

    def __enter__(self) -> Stopwatch:
        self.start = time.perf_counter()
        self.elapsed = 0.0
        return self

    def __exit__(self, *exc: object) -> None:
        self.elapsed = time.perf_counter() - self.start
