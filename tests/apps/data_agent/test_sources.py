"""Every source kind, opened read-only and queried through the driver (the code the sandbox runs)."""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

import duckdb
import pytest

from corral.apps.data_agent import SourceError, load_schema, open_source, quote_identifier
from corral.apps.data_agent._sources import table_name_for

from .conftest import InProcessRunner


async def test_sqlite_source_runs_a_query_and_describes_keys(chinook_runner: InProcessRunner) -> None:
    assert chinook_runner.source.kind == "sqlite"
    result = await chinook_runner.run("SELECT COUNT(*) FROM Track")
    assert result.ok and result.rows == [[3503]]
    schema = await load_schema(chinook_runner)
    album = schema.table("Album")
    assert album is not None and album.row_count == 347
    assert [(fk.column, fk.ref_table) for fk in album.foreign_keys] == [("ArtistId", "Artist")]
    assert album.column("AlbumId") is not None and album.column("AlbumId").pk  # type: ignore[union-attr]


async def test_sqlite_source_cannot_be_written(chinook_runner: InProcessRunner, chinook: Path) -> None:
    # Even if a write slipped past the host's check, the driver opens the file read-only.
    result = await chinook_runner.run("DELETE FROM Artist")
    assert not result.ok and "readonly" in (result.error or "").lower()
    conn = sqlite3.connect(chinook)
    assert conn.execute("SELECT COUNT(*) FROM Artist").fetchone() == (275,)
    conn.close()


async def test_duckdb_file_source(tmp_path: Path) -> None:
    path = tmp_path / "w.duckdb"
    conn = duckdb.connect(str(path))
    conn.execute("CREATE TABLE city (city_id INTEGER PRIMARY KEY, name VARCHAR)")
    conn.execute("CREATE TABLE reading (city_id INTEGER REFERENCES city(city_id), temp DOUBLE)")
    conn.execute("INSERT INTO city VALUES (1, 'Oslo'), (2, 'Lima')")
    conn.execute("INSERT INTO reading VALUES (1, -3.5), (1, 0.5), (2, 21.0)")
    conn.close()
    source = open_source(str(path))
    assert source.kind == "duckdb" and source.dialect == "duckdb"
    runner = InProcessRunner(source)
    result = await runner.run(
        "SELECT c.name, AVG(r.temp) FROM reading r JOIN city c USING (city_id) GROUP BY 1 ORDER BY 1"
    )
    assert result.ok, result.error
    assert result.rows == [["Lima", 21.0], ["Oslo", -1.5]]
    schema = await load_schema(runner)
    reading = schema.table("reading")
    assert reading is not None
    assert [(fk.column, fk.ref_table) for fk in reading.foreign_keys] == [("city_id", "city")]
    refused = await runner.run("INSERT INTO city VALUES (3, 'Rome')")
    assert not refused.ok


async def test_csv_and_parquet_files_are_queried_together(tmp_path: Path) -> None:
    (tmp_path / "sales 2024.csv").write_text("customer_id,amount\n1,10.5\n2,3\n1,4.5\n")
    duckdb.execute(
        f"COPY (SELECT * FROM (VALUES (1, 'Ada'), (2, 'Bob')) t(customer_id, name)) "
        f"TO '{tmp_path / 'customers.parquet'}' (FORMAT parquet)"
    )
    source = open_source(files=[tmp_path / "sales 2024.csv", tmp_path / "customers.parquet"])
    assert [t.name for t in source.tables] == ["sales_2024", "customers"]
    runner = InProcessRunner(source)
    result = await runner.run(
        "SELECT c.name, SUM(s.amount) AS total FROM sales_2024 s JOIN customers c "
        "ON s.customer_id = c.customer_id GROUP BY c.name ORDER BY total DESC"
    )
    assert result.ok, result.error
    assert result.rows == [["Ada", 15.0], ["Bob", 3.0]]
    schema = await load_schema(runner)
    sales = schema.table("sales_2024")
    # Files declare no keys: the same-name *_id column is inferred as a likely join.
    assert sales is not None
    assert [(fk.column, fk.ref_table, fk.declared) for fk in sales.foreign_keys] == [
        ("customer_id", "customers", False)
    ]


async def test_files_source_cannot_read_other_host_files(tmp_path: Path) -> None:
    (tmp_path / "a.csv").write_text("x\n1\n")
    runner = InProcessRunner(open_source(files=[tmp_path / "a.csv"]))
    result = await runner.run("SELECT * FROM read_csv_auto('/etc/passwd')")
    assert not result.ok
    assert "external" in (result.error or "").lower() or "disabled" in (result.error or "").lower()


def test_table_names_are_sanitised_and_unique(tmp_path: Path) -> None:
    assert table_name_for(Path("DES=+2006261.csv")) == "DES_2006261"
    assert table_name_for(Path("2014_q4.csv")) == "t_2014_q4"
    for name in ("a-b.csv", "a b.csv"):
        (tmp_path / name).write_text("x\n1\n")
    source = open_source(files=[tmp_path / "a-b.csv", tmp_path / "a b.csv"])
    assert [t.name for t in source.tables] == ["a_b", "a_b_2"]


def test_unusable_sources_are_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(SourceError, match="no such file"):
        open_source(str(tmp_path / "missing.sqlite"))
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(SourceError, match="not a SQLite or DuckDB"):
        open_source(str(tmp_path / "notes.txt"))
    with pytest.raises(SourceError, match="--db"):
        open_source()


def test_postgres_url_is_recognised_and_redacted() -> None:
    source = open_source("postgresql://ana:s3cret@db.example:5432/shop")
    assert source.kind == "postgres" and source.dialect == "postgres"
    assert "s3cret" not in source.describe() and "ana:***@" in source.describe()


@pytest.mark.skipif(not os.environ.get("CORRAL_TEST_POSTGRES_URL"), reason="no PostgreSQL server to test")
async def test_postgres_source_is_read_only() -> None:
    runner = InProcessRunner(open_source(os.environ["CORRAL_TEST_POSTGRES_URL"]))
    assert (await runner.run("SELECT 1 AS one")).rows == [[1]]
    assert not (await runner.run("CREATE TABLE corral_should_not_exist (x int)")).ok


async def test_awkward_identifiers_are_quoted(awkward_db: Path) -> None:
    runner = InProcessRunner(open_source(str(awkward_db)))
    schema = await load_schema(runner)
    text = schema.render()
    assert 'CREATE TABLE "Order Details"' in text
    assert 'CREATE TABLE "Order"' in text
    assert '"Unit Price" REAL' in text and '"Group" TEXT' in text and '"Select" TEXT' in text
    assert quote_identifier("Quantity", dialect="sqlite") == "Quantity"
    # The quoted names the schema shows are the ones that work.
    result = await runner.run(
        'SELECT o."Group", SUM(d."Unit Price" * d.Quantity) FROM "Order Details" d '
        'JOIN "Order" o ON o."Order ID" = d."Order ID" GROUP BY o."Group" ORDER BY 1'
    )
    assert result.ok, result.error
    assert result.rows == [["north", 11.0], ["south", 5.0]]
