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


# -- several sources in one job, through the real sandbox ---------------------------------------------------
#: Sent straight to the sandboxed driver (past the host's read-only check): each must fail in the job.
MULTI_ATTACKS = [
    "INSERT INTO shop.orders VALUES (9, 9)",
    "DELETE FROM shop_orders",
    "DROP TABLE stock.items",
    "UPDATE stock.items SET qty = 0",
    "CREATE TABLE stock.evil AS SELECT 1",
    "ATTACH ':memory:' AS other",
    "ATTACH '/data/p1db.duckdb' AS again",
    "ATTACH '/etc/passwd' AS other",
    "DETACH stock",
    "DETACH stock; ATTACH '/data/p1db.duckdb' AS stock; DELETE FROM stock.items",
    "INSTALL sqlite",
    "LOAD sqlite",
    "SET enable_external_access = true",
    "COPY (SELECT 1) TO '/data/out.csv'",
    "SELECT 1; DROP TABLE shop.orders",
    "SELECT * FROM read_text('/etc/passwd')",
]


@pytest.fixture
def multi(tmp_path: Path) -> tuple[Any, list[Path]]:
    import sqlite3

    import duckdb

    shop = tmp_path / "shop.sqlite"
    conn = sqlite3.connect(shop)
    conn.executescript(
        "CREATE TABLE orders (id INTEGER, qty INTEGER); INSERT INTO orders VALUES (1, 2), (2, 5);"
    )
    conn.commit()
    conn.close()
    stock = tmp_path / "stock.duckdb"
    con = duckdb.connect(str(stock))
    con.execute("CREATE TABLE items (id INTEGER, qty INTEGER); INSERT INTO items VALUES (1, 7)")
    con.close()
    regions = tmp_path / "regions.csv"
    regions.write_text("id,region\n1,north\n2,south\n")
    files = [shop, stock, regions]
    return open_source([str(shop), str(stock)], files=[regions]), files


def _digests(files: list[Path]) -> list[str]:
    import hashlib

    return [hashlib.sha256(f.read_bytes()).hexdigest() for f in files]


@pytest.mark.sandbox
def test_combined_sources_join_in_the_sandbox(multi: tuple[Any, list[Path]]) -> None:
    source, _ = multi
    runner = SandboxQueryRunner(source)
    result = asyncio.run(
        runner.run(
            "SELECT r.region, o.qty + i.qty AS total FROM shop_orders o JOIN regions r ON r.id = o.id "
            "JOIN stock.items i ON i.id = o.id"
        )
    )
    assert result.ok and result.rows == [["north", 9]], result
    described = asyncio.run(runner.describe())
    assert sorted(t["name"] for t in described["tables"]) == ["regions", "shop_orders", "stock_items"]


@pytest.mark.sandbox
@pytest.mark.parametrize("sql", MULTI_ATTACKS)
def test_a_job_over_combined_sources_cannot_write_attach_or_load(
    multi: tuple[Any, list[Path]], sql: str
) -> None:
    source, files = multi
    before = _digests(files)
    runner = SandboxQueryRunner(source)
    result = asyncio.run(runner.run(sql))
    assert not result.ok and result.error, result
    assert _digests(files) == before
    assert not (files[0].parent / "out.csv").exists()
    after = asyncio.run(runner.run("SELECT COUNT(*) FROM stock_items"))
    assert after.ok and after.rows == [[1]]
