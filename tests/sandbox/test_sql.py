"""SQL through the sandbox on every source kind the data agent uses."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import duckdb
import pandas as pd
import pytest

from corral.sandbox import (
    DuckDBSource,
    FilesSource,
    SandboxPool,
    SandboxUsageError,
    SQLiteSource,
    as_source,
    run_sql,
    run_sql_sync,
)

from .conftest import needs_bwrap

pytestmark = [pytest.mark.sandbox, needs_bwrap]


@pytest.fixture
def shop(tmp_path: Path) -> Path:
    path = tmp_path / "shop.sqlite"
    with sqlite3.connect(path) as con:
        con.execute("create table orders(id integer, customer text, amount real, created_at text)")
        con.executemany(
            "insert into orders values (?, ?, ?, ?)",
            [(i, f"c{i % 7}", i * 1.5, f"2024-0{1 + i % 9}-01") for i in range(2500)],
        )
    return path


@pytest.fixture
def warehouse(tmp_path: Path) -> Path:
    path = tmp_path / "warehouse.duckdb"
    con = duckdb.connect(str(path))
    con.execute(
        "create table sales as select range as id, range % 3 as region, range * 2 as amount from range(100)"
    )
    con.close()
    return path


@pytest.fixture
def files(tmp_path: Path) -> Path:
    folder = tmp_path / "files"
    folder.mkdir()
    pd.DataFrame({"id": [1, 2, 3], "amount": [10.0, 20.0, 30.5]}).to_csv(folder / "payments.csv", index=False)
    pd.DataFrame({"id": [1, 2, 3], "name": ["ann", "bob", "cy"]}).to_parquet(folder / "people.parquet")
    (folder / "notes.txt").write_text("ignored")
    return folder


def test_sqlite_query_returns_columns_types_rows_and_total(pool: SandboxPool, shop: Path) -> None:
    result = run_sql_sync("select id, customer, amount from orders order by id", shop, pool=pool, max_rows=3)
    assert result.ok, result.error
    assert result.columns == ["id", "customer", "amount"]
    assert result.types == ["INTEGER", "TEXT", "REAL"]
    assert result.rows == [(0, "c0", 0.0), (1, "c1", 1.5), (2, "c2", 3.0)]
    assert (result.row_count, result.truncated) == (2500, True)


def test_sqlite_error_is_the_databases_own_message(pool: SandboxPool, shop: Path) -> None:
    result = run_sql_sync("select YEAR(created_at) from orders", shop, pool=pool)
    assert result.error == "OperationalError: no such function: YEAR"
    assert result.rows == [] and not result.ok


def test_duckdb_file(pool: SandboxPool, warehouse: Path) -> None:
    query = "select region, sum(amount) as total from sales group by region order by region"
    result = run_sql_sync(query, DuckDBSource(warehouse), pool=pool)
    assert result.ok, result.error
    assert result.columns == ["region", "total"] and result.types == ["BIGINT", "HUGEINT"]
    con = duckdb.connect(str(warehouse), read_only=True)
    expected = con.execute(query).fetchall()  # the same engine, on the host, is the oracle
    con.close()
    assert result.rows == [tuple(int(v) for v in row) for row in expected] and len(expected) == 3


def test_duckdb_error_text(pool: SandboxPool, warehouse: Path) -> None:
    result = run_sql_sync("select nope from sales", warehouse, pool=pool)
    assert result.error is not None and result.error.startswith("BinderException")
    assert 'column "nope"' in result.error.lower() or "nope" in result.error


def test_csv_and_parquet_files_are_views_named_after_their_stems(pool: SandboxPool, files: Path) -> None:
    query = "select name, amount from payments join people using (id) order by amount desc"
    result = run_sql_sync(query, files, pool=pool)
    assert result.ok, result.error
    assert result.rows == [("cy", 30.5), ("bob", 20.0), ("ann", 10.0)]
    assert result.types == ["VARCHAR", "DOUBLE"]
    assert as_source(files) == FilesSource((files / "payments.csv", files / "people.parquet"))


def test_file_list_source(pool: SandboxPool, files: Path) -> None:
    result = run_sql_sync("select count(*) as n from payments", [files / "payments.csv"], pool=pool)
    assert result.rows == [(3,)]


def test_read_write_needs_an_explicit_grant_sqlite(pool: SandboxPool, shop: Path) -> None:
    denied = run_sql_sync("delete from orders where id < 100", shop, pool=pool)
    assert denied.error is not None
    granted = run_sql_sync(
        "delete from orders where id < 100", SQLiteSource(shop), pool=pool, read_only=False
    )
    assert granted.ok, granted.error
    with sqlite3.connect(shop) as con:
        assert con.execute("select count(*) from orders").fetchone() == (2400,)


def test_read_write_grant_duckdb(pool: SandboxPool, warehouse: Path) -> None:
    granted = run_sql_sync("insert into sales values (1000, 9, 9)", warehouse, pool=pool, read_only=False)
    assert granted.ok, granted.error
    con = duckdb.connect(str(warehouse), read_only=True)
    assert con.execute("select count(*) from sales where region = 9").fetchone() == (1,)
    con.close()


def test_csv_sources_cannot_be_granted_writes(pool: SandboxPool, files: Path) -> None:
    with pytest.raises(SandboxUsageError, match="read-only"):
        run_sql_sync("select 1", files, pool=pool, read_only=False)


def test_unknown_source_kind_is_a_usage_error(tmp_path: Path) -> None:
    with pytest.raises(SandboxUsageError, match="suffix"):
        as_source(tmp_path / "data.xlsx")


def test_query_stopped_by_a_limit_says_so(pool: SandboxPool, warehouse: Path) -> None:
    from corral.sandbox import Limits

    query = "select count(*) from range(1000000000000) a"
    result = run_sql_sync(query, warehouse, pool=pool, limits=Limits(wall_seconds=1, cpu_seconds=1))
    assert result.error is not None and "limit" in result.error
    assert result.run.limit in ("wall", "cpu")


async def test_async_run_sql(pool: SandboxPool, shop: Path) -> None:
    result = await run_sql("select count(*) as n from orders", shop, pool=pool)
    assert result.rows == [(2500,)]
