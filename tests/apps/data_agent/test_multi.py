"""Several sources in one question: two databases, or databases and files, queried together through DuckDB,
each still read-only (the driver's own functions, in process; the sandboxed path is in tests/security)."""

from __future__ import annotations

import asyncio
import hashlib
import json
import shutil
import sqlite3
from pathlib import Path

import duckdb
import pytest

from corral.apps.data_agent import DataAgent, SourceError, _driver, open_source
from corral.apps.data_agent._schema import load_schema

from .conftest import CHINOOK, InProcessRunner, routed_model

#: Statements a job over combined sources must refuse, whatever the host's checks let through.
HOSTILE = [
    "INSERT INTO shop.orders VALUES (99, 1, 1.0)",
    "DELETE FROM shop_orders",
    "DROP TABLE shop.orders",
    "CREATE TABLE shop.evil AS SELECT 1",
    "UPDATE stock.items SET qty = 0",
    "ATTACH ':memory:' AS other",
    "ATTACH '/etc/passwd' AS other",
    "DETACH stock",
    "INSTALL sqlite",
    "LOAD sqlite",
    "LOAD '/tmp/evil.duckdb_extension'",
    "SET enable_external_access = true",
    "COPY (SELECT 1) TO '/tmp/corral-multi-pwned.csv'",
    "SELECT 1; DROP TABLE shop.orders",
    "SELECT * FROM read_csv_auto('/etc/passwd')",
    "CALL pragma_version()",
]


@pytest.fixture
def sources(tmp_path: Path) -> dict[str, Path]:
    """A SQLite database, a DuckDB database and a CSV file that share keys."""
    shop = tmp_path / "shop.sqlite"
    conn = sqlite3.connect(shop)
    conn.executescript(
        """
        CREATE TABLE customers (id INTEGER PRIMARY KEY, name TEXT, since DATE);
        CREATE TABLE orders (id INTEGER PRIMARY KEY, customer_id INTEGER REFERENCES customers(id),
                             amount NUMERIC(10,2));
        INSERT INTO customers VALUES (1, 'Ada', '2023-01-05'), (2, 'Bo', '2024-03-01');
        INSERT INTO orders VALUES (1, 1, 10.5), (2, 1, 4.5), (3, 2, 7);
        """
    )
    conn.commit()
    conn.close()
    stock = tmp_path / "stock.duckdb"
    con = duckdb.connect(str(stock))
    con.execute("CREATE TABLE items (sku VARCHAR PRIMARY KEY, qty INTEGER)")
    con.execute("INSERT INTO items VALUES ('a', 3), ('b', 0)")
    con.close()
    regions = tmp_path / "regions.csv"
    regions.write_text("customer_id,region\n1,north\n2,south\n")
    return {"shop": shop, "stock": stock, "regions": regions}


def _digest(paths: list[Path]) -> list[str]:
    return [hashlib.sha256(p.read_bytes()).hexdigest() for p in paths]


def test_several_dbs_and_files_make_one_source_with_an_alias_each(sources: dict[str, Path]) -> None:
    src = open_source([str(sources["shop"]), str(sources["stock"])], [sources["regions"]])
    assert src.kind == "multi" and src.dialect == "duckdb"
    assert [alias for alias, _ in src.parts] == ["shop", "stock", "files"]
    assert [p.kind for _, p in src.parts] == ["sqlite", "duckdb", "files"]
    assert set(src.files) == {
        sources["shop"].resolve(),
        sources["stock"].resolve(),
        sources["regions"].resolve(),
    }
    # One --db with --files is combined too; one --db alone is not.
    assert open_source(str(sources["shop"]), [sources["regions"]]).kind == "multi"
    assert open_source([str(sources["shop"])]).kind == "sqlite"
    # Two files with the same stem get distinct aliases.
    other = sources["shop"].parent / "other"
    other.mkdir()
    shutil.copy(sources["shop"], other / "shop.sqlite")
    twice = open_source([str(sources["shop"]), str(other / "shop.sqlite")])
    assert [alias for alias, _ in twice.parts] == ["shop", "shop_2"]


def test_postgres_cannot_be_combined_yet(sources: dict[str, Path]) -> None:
    with pytest.raises(SourceError, match="PostgreSQL database cannot be combined"):
        open_source(["postgresql://u@localhost/db", str(sources["shop"])])


def test_the_schema_names_every_table_by_its_source(sources: dict[str, Path]) -> None:
    runner = InProcessRunner(open_source([str(sources["shop"]), str(sources["stock"])], [sources["regions"]]))
    schema = asyncio.run(load_schema(runner, use_cache=False))
    assert schema.dialect == "duckdb"
    assert sorted(schema.table_names()) == ["regions", "shop_customers", "shop_orders", "stock_items"]
    orders = schema.table("shop_orders")
    assert orders is not None
    # The declared key still points at the renamed table.
    declared = [(fk.column, fk.ref_table) for fk in orders.foreign_keys if fk.declared]
    assert declared == [("customer_id", "shop_customers")]
    assert "CREATE TABLE shop_customers" in schema.render()


def test_a_query_joins_all_sources(sources: dict[str, Path]) -> None:
    spec = open_source([str(sources["shop"]), str(sources["stock"])], [sources["regions"]]).spec()
    out = _driver.run_query(
        spec,
        "SELECT r.region, SUM(o.amount) AS total FROM shop_orders o JOIN regions r USING (customer_id) "
        "CROSS JOIN (SELECT COUNT(*) AS n FROM stock.items) s GROUP BY r.region ORDER BY r.region",
        100,
    )
    assert out["ok"], out["error"]
    assert out["rows"] == [["north", 15.0], ["south", 7.0]]
    # Catalog-qualified names work too, and SQLite's dates became dates.
    out = _driver.run_query(spec, "SELECT year(since) FROM shop.customers ORDER BY id", 100)
    assert out["ok"] and out["rows"] == [[2023], [2024]], out


@pytest.mark.parametrize("sql", HOSTILE)
def test_a_job_cannot_write_attach_or_load_anything(sources: dict[str, Path], sql: str) -> None:
    files = [sources["shop"], sources["stock"], sources["regions"]]
    before = _digest(files)
    spec = open_source([str(sources["shop"]), str(sources["stock"])], [sources["regions"]]).spec()
    out = _driver.run_query(spec, sql, 100)
    assert not out["ok"] and out["error"], out
    assert _digest(files) == before
    assert not Path("/tmp/corral-multi-pwned.csv").exists()
    # And the sources still answer.
    assert _driver.run_query(spec, "SELECT COUNT(*) FROM shop_orders", 1)["rows"] == [[3]]


async def test_the_agent_answers_over_two_databases(tmp_path: Path, sources: dict[str, Path]) -> None:
    chinook = tmp_path / "chinook.sqlite"
    shutil.copy(CHINOOK, chinook)
    runner = InProcessRunner(open_source([str(chinook), str(sources["shop"])]))
    model = routed_model(
        [
            "```sql\nSELECT (SELECT COUNT(*) FROM chinook_Artist) AS artists, "
            "(SELECT COUNT(*) FROM shop_customers) AS customers\n```"
        ]
    )
    answer = await DataAgent(model=model, runner=runner).ask("How many artists and how many shop customers?")
    assert answer.status == "answered" and answer.rows == [[275, 2]]
    prompt = str(model.calls[0].messages[1].content)
    assert "CREATE TABLE chinook_Artist" in prompt and "CREATE TABLE shop_customers" in prompt
    assert "duckdb" in str(model.calls[0].messages[0].content)


async def test_a_write_over_combined_sources_is_refused(sources: dict[str, Path]) -> None:
    runner = InProcessRunner(open_source([str(sources["shop"]), str(sources["stock"])]))
    before = _digest([sources["shop"], sources["stock"]])
    model = routed_model(["```sql\nDELETE FROM shop.orders\n```"])
    answer = await DataAgent(model=model, runner=runner).ask("Delete every order")
    assert answer.status == "cannot_answer" and "Refused" in answer.answer
    assert runner.queries == [] and _digest([sources["shop"], sources["stock"]]) == before


def test_corral_ask_takes_several_db_and_files(
    monkeypatch: pytest.MonkeyPatch, sources: dict[str, Path], tmp_path: Path
) -> None:
    from typer.testing import CliRunner

    from corral.apps.cli import app
    from corral.apps.data_agent import _run

    monkeypatch.setattr(_run, "make_runner", InProcessRunner)
    monkeypatch.setattr(_run, "_models", {})
    sql = (
        "SELECT r.region, SUM(o.amount) AS total FROM shop_orders o JOIN regions r "
        "ON o.customer_id = r.customer_id GROUP BY r.region ORDER BY r.region"
    )
    monkeypatch.setattr(_run, "make_model", lambda name: routed_model([f"```sql\n{sql}\n```"]))
    args = ["ask", "Total amount per region?", "--db", str(sources["shop"]), "--db", str(sources["stock"])]
    result = CliRunner().invoke(app, [*args, "--files", str(sources["regions"]), "--json", "--quiet"])
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout.strip().splitlines()[-1])
    assert out["status"] == "answered" and out["rows"] == [["north", 15.0], ["south", 7.0]]
