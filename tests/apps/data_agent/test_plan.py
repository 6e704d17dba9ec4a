"""The plan of a hard question: joins and filters built from the grounding, checked, then composed."""

from __future__ import annotations

import pytest

from corral.apps.data_agent import DataAgent, _driver, open_source
from corral.apps.data_agent._grounding import ground
from corral.apps.data_agent._plan import make_plan
from corral.apps.data_agent._schema import Schema, schema_from_driver
from corral.models import UserMessage

from .conftest import CHINOOK, InProcessRunner, routed_model


@pytest.fixture(scope="module")
def chinook_schema() -> Schema:
    source = open_source(str(CHINOOK))
    return schema_from_driver(_driver.describe(source.spec()), source.dialect)


def test_a_ranking_over_four_tables_gets_its_join_chain_and_filter(chinook_schema: Schema) -> None:
    question = "Which artist has the most tracks in the Rock genre?"
    plan = make_plan(question, chinook_schema, ground(question, chinook_schema))
    assert plan is not None
    assert plan.tables == ["Artist", "Album", "Track", "Genre"]
    assert plan.source == (
        "FROM Artist JOIN Album ON Artist.ArtistId = Album.ArtistId "
        "JOIN Track ON Album.AlbumId = Track.AlbumId JOIN Genre ON Track.GenreId = Genre.GenreId"
    )
    assert plan.filters == ["Genre.Name = 'Rock'"]


@pytest.mark.parametrize("question", ["How many tracks are there?", "What is the average invoice total?"])
def test_a_simple_question_gets_no_plan(chinook_schema: Schema, question: str) -> None:
    assert make_plan(question, chinook_schema, ground(question, chinook_schema)) is None


async def test_the_checked_plan_reaches_the_query_writer() -> None:
    runner = InProcessRunner(open_source(str(CHINOOK)))
    sql = (
        "SELECT Artist.Name, COUNT(*) AS n FROM Artist JOIN Album ON Artist.ArtistId = Album.ArtistId "
        "JOIN Track ON Album.AlbumId = Track.AlbumId JOIN Genre ON Track.GenreId = Genre.GenreId "
        "WHERE Genre.Name = 'Rock' GROUP BY Artist.Name ORDER BY n DESC LIMIT 1"
    )
    model = routed_model([f"```sql\n{sql}\n```"])
    answer = await DataAgent(model=model, runner=runner).ask(
        "Which artist has the most tracks in the Rock genre?"
    )
    assert answer.status == "answered" and answer.rows[0][0] == "Led Zeppelin"
    # Two checks ran before the model wrote anything: the join chain keeps rows, the filter matches some.
    assert runner.queries[0].startswith("SELECT COUNT(*) FROM Artist JOIN Album")
    assert runner.queries[1].endswith("WHERE Genre.Name = 'Rock'")
    prompt = [m.content for m in model.calls[0].messages if isinstance(m, UserMessage)][-1]
    assert "plan: use FROM Artist JOIN Album" in prompt and "(checked: 3503 rows)" in prompt
    assert "filter WHERE Genre.Name = 'Rock' (checked: 1297 rows)" in prompt


async def test_a_join_chain_that_keeps_no_rows_is_not_shown(tmp_path: object) -> None:
    import sqlite3
    from pathlib import Path

    path = Path(str(tmp_path)) / "shop.sqlite"
    conn = sqlite3.connect(path)
    conn.executescript(
        "CREATE TABLE region (region_id INTEGER PRIMARY KEY, name TEXT);"
        "CREATE TABLE store (store_id INTEGER PRIMARY KEY, name TEXT,"
        " region_id INTEGER REFERENCES region(region_id));"
        "CREATE TABLE sale (sale_id INTEGER PRIMARY KEY,"
        " store_id INTEGER REFERENCES store(store_id), amount REAL);"
        "INSERT INTO region VALUES (1, 'north'); INSERT INTO store VALUES (1, 'a', 9);"
        "INSERT INTO sale VALUES (1, 1, 5.0);"
    )
    conn.close()
    runner = InProcessRunner(open_source(str(path)))
    model = routed_model(["```sql\nSELECT 1\n```"])
    await DataAgent(model=model, runner=runner).ask("Which region has the most sales amount per store?")
    assert runner.queries[0].startswith("SELECT COUNT(*) FROM")
    prompt = [m.content for m in model.calls[0].messages if isinstance(m, UserMessage)][-1]
    assert "plan:" not in prompt
