"""The data agent's host side reads what its sandboxed driver jobs wrote: a hostile job's answer is a failed
result or a typed error, never a ``RecursionError``, ``TypeError`` or ``ValueError`` out of a runner."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest

from corral.apps.data_agent._pandas_runner import SandboxPandasRunner
from corral.apps.data_agent._sandbox_runner import SandboxQueryRunner
from corral.apps.data_agent._sources import open_source
from corral.apps.data_agent.errors import QueryRunnerError
from corral.sandbox import RunResult

_DEEP = b"[" * 100_000 + b"]" * 100_000
#: Results no answer may be made of.
BROKEN: dict[str, bytes] = {
    "deeply-nested": _DEEP,
    "nested-in-rows": b'{"ok": true, "rows": [' + _DEEP + b"]}",
    "not-json": b"\xff\xfe garbage",
    "not-an-object": b"[1, 2, 3]",
    "nan": b'{"ok": true, "rows": [[NaN]], "row_count": 1}',
    "ok-is-text": b'{"ok": "yes"}',
}
#: Results malformed as a query's answer.
BAD_ANSWER: dict[str, bytes] = {
    "row-count-is-text": b'{"ok": true, "rows": [], "row_count": "many"}',
    "row-count-is-huge-float": b'{"ok": true, "rows": [], "row_count": 1e400}',
    "rows-not-lists": b'{"ok": true, "rows": [1, 2], "row_count": 2}',
    "row-values-nested": b'{"ok": true, "rows": [[[1]]], "row_count": 1}',
    "columns-objects": b'{"ok": true, "columns": [{"a": 1}], "rows": []}',
}
#: Results malformed as a schema.
BAD_SCHEMA: dict[str, bytes] = {
    "table-name-number": b'{"ok": true, "tables": [{"name": 5}]}',
    "tables-not-list": b'{"ok": true, "tables": {"a": 1}}',
    "column-without-name": b'{"ok": true, "tables": [{"name": "t", "columns": [{}]}]}',
}


class FakeSandbox:
    """Stands in for ``corral.sandbox``: every job "wrote" the crafted result file."""

    def __init__(self, raw: bytes) -> None:
        self.raw = raw

    async def run_python(self, code: str, **_: Any) -> RunResult:
        return RunResult(stdout="", stderr="", exit_code=0, files={"result.json": self.raw})


@pytest.fixture
def csv(tmp_path: Path) -> Path:
    path = tmp_path / "sales.csv"
    path.write_text("region,amount\nnorth,3\n")
    return path


def runners(csv: Path, raw: bytes) -> list[Any]:
    sql = SandboxQueryRunner(open_source(files=[csv]))
    pandas = SandboxPandasRunner(open_source(files=[csv]))
    for runner in (sql, pandas):
        runner._sandbox = FakeSandbox(raw)
    return [sql, pandas]


@pytest.mark.parametrize("name", sorted({**BROKEN, **BAD_ANSWER}))
def test_a_crafted_answer_is_a_failed_result(csv: Path, name: str) -> None:
    for runner in runners(csv, {**BROKEN, **BAD_ANSWER}[name]):
        result = asyncio.run(runner.run("SELECT 1"))
        assert not result.ok and result.error, (type(runner).__name__, result)


@pytest.mark.parametrize("name", sorted({**BROKEN, **BAD_SCHEMA}))
def test_a_crafted_schema_is_a_typed_error(csv: Path, name: str) -> None:
    for runner in runners(csv, {**BROKEN, **BAD_SCHEMA}[name]):
        with pytest.raises(QueryRunnerError):
            asyncio.run(runner.describe())


def test_a_well_formed_result_still_passes(csv: Path) -> None:
    good = {"ok": True, "error": None, "columns": ["a"], "rows": [[1], ["x"], [None]], "row_count": 3}
    runner = SandboxQueryRunner(open_source(files=[csv]))
    runner._sandbox = FakeSandbox(json.dumps(good).encode())
    result = asyncio.run(runner.run("SELECT 1"))
    assert result.ok and result.rows == [[1], ["x"], [None]] and result.row_count == 3
