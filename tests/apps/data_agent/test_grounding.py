"""Grounding: each concept of a question tied to a column, a table or a value, or missing with evidence."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from corral.apps.data_agent import DataAgent, _driver, open_source
from corral.apps.data_agent._grounding import Concept, decide, ground, phrases, settled
from corral.apps.data_agent._schema import Schema, schema_from_driver

from .conftest import CHINOOK, InProcessRunner, routed_model


@pytest.fixture(scope="module")
def chinook_schema() -> Schema:
    source = open_source(str(CHINOOK))
    return schema_from_driver(_driver.describe(source.spec()), source.dialect)


def _texts(question: str, schema: Schema) -> dict[str, tuple[bool, bool]]:
    """Each concept's text: (grounded, missing)."""
    return {c.text: (bool(c.grounds), c.missing) for c in ground(question, schema).concepts}


def test_quoted_values_numbers_and_names_are_not_concepts() -> None:
    found = [t for t, _, _ in phrases("How many tracks by 'AC/DC' in Rock sold in 2023 at Lyon?")]
    assert found == ["tracks", "sold"]
    # A verb before a determiner is a phrase of its own: "cost" here is what the tracks do.
    assert [t for t, _, _ in phrases("How many tracks cost more than 0.99?")] == ["tracks", "cost"]


def test_a_verb_leaves_the_question_unresolved_never_missing(chinook_schema: Schema) -> None:
    # "streamed ... on Spotify": nothing in the data, but a verb is no evidence either way.
    grounding = ground("Which tracks were streamed more than a million times on Spotify?", chinook_schema)
    assert not grounding.missing() and not grounding.candidates()
    assert [c.text for c in grounding.unresolved()] == ["streamed"]
    assert not settled(grounding)


@pytest.mark.parametrize(
    "question",
    [
        "How many tracks are in the Rock genre?",
        "Which customers live in Brazil?",
        "What is the total revenue per billing country?",
        "How many customers does each support representative have?",
        "Which employee's customers generated the most sales?",
        "List the album titles of each artist.",
        "How many employees were hired before 2003?",
    ],
)
def test_a_question_over_what_the_data_holds_is_settled_without_the_model(
    chinook_schema: Schema, question: str
) -> None:
    grounding = ground(question, chinook_schema)
    assert not grounding.missing(), grounding.reason()
    assert not grounding.candidates(), [c.text for c in grounding.candidates()]


def test_a_concept_with_a_known_grounding_is_missing_with_the_closest_columns(chinook_schema: Schema) -> None:
    grounding = ground("What is the average salary of the employees?", chinook_schema)
    assert [c.text for c in grounding.missing()] == ["salary"]
    reason = grounding.reason()
    assert reason.startswith("the data has no salary") and "closest columns are" in reason


def test_an_age_is_never_a_record_s_creation_date(tmp_path: Path) -> None:
    path = tmp_path / "app.sqlite"
    conn = sqlite3.connect(path)
    conn.executescript(
        "CREATE TABLE users (id INTEGER PRIMARY KEY, name TEXT, created_at TEXT);"
        "INSERT INTO users VALUES (1, 'ana', '2024-01-02'), (2, 'bo', '2023-05-06');"
    )
    conn.close()
    source = open_source(str(path))
    schema = schema_from_driver(_driver.describe(source.spec()), source.dialect)
    grounding = ground("What is the average age of the users?", schema)
    assert [c.text for c in grounding.missing()] == ["age"]
    assert "birth" in grounding.reason()


def test_the_model_s_choice_of_a_key_for_a_measure_is_not_accepted(chinook_schema: Schema) -> None:
    # An average "rating" taken as the average of an id is an invented mapping.
    concept = Concept(text="popularity", stems=["popularity"], measured=True)
    decide(concept, '{"column": "Track.TrackId"}', ["Track.TrackId", "Track.Name"], chinook_schema)
    assert concept.missing and "popularity" in concept.evidence
    other = Concept(text="popularity", stems=["popularity"], measured=True)
    decide(other, '{"column": "Track.UnitPrice"}', ["Track.TrackId", "Track.UnitPrice"], chinook_schema)
    assert other.grounds == ["Track.UnitPrice"] and not other.missing
    unread = Concept(text="popularity", stems=["popularity"])
    decide(unread, "not json", ["Track.UnitPrice"], chinook_schema)
    assert not unread.missing and not unread.grounds  # no evidence either way


def test_a_date_only_grounds_a_time(chinook_schema: Schema) -> None:
    concept = Concept(text="age", stems=["age"])
    decide(concept, '{"column": "Invoice.InvoiceDate"}', ["Invoice.InvoiceDate"], chinook_schema)
    assert concept.missing
    when = Concept(text="issue day", stems=["issue", "day"])
    decide(when, '{"column": "Invoice.InvoiceDate"}', ["Invoice.InvoiceDate"], chinook_schema)
    assert when.grounds == ["Invoice.InvoiceDate"]


def test_a_phrase_nothing_matches_is_left_to_the_model(chinook_schema: Schema) -> None:
    grounding = ground("How many podcasts are in the catalogue?", chinook_schema)
    assert "podcasts" in [c.text for c in grounding.candidates()]
    assert not settled(grounding)


async def test_the_model_saying_none_makes_the_answer_name_the_missing_concept(tmp_path: Path) -> None:
    runner = InProcessRunner(open_source(str(CHINOOK)))
    model = routed_model([], grounding='{"column": "none"}')
    answer = await DataAgent(model=model, runner=runner).ask("How many podcasts are there?")
    assert answer.status == "cannot_answer"
    assert "the data has no podcasts" in answer.answer and "closest columns are" in answer.answer
    assert runner.queries == []


async def test_a_column_the_model_picks_reaches_the_query_writer_as_a_hint() -> None:
    runner = InProcessRunner(open_source(str(CHINOOK)))
    model = routed_model(
        ["```sql\nSELECT AVG(Milliseconds) FROM Track\n```"], grounding='{"column": "Track.Milliseconds"}'
    )
    answer = await DataAgent(model=model, runner=runner).ask("What is the mean runtime of a track?")
    assert answer.status == "answered"
    # The model's choice is a hint, not a settled grounding (it also picks columns for what the data lacks).
    writer = [
        c
        for c in model.calls
        if "```sql" in str(c.messages[0].content) or "SQL" in str(c.messages[0].content)
    ]
    assert any("'runtime' is Track.Milliseconds" in str(m.content) for c in writer for m in c.messages)


def test_a_column_the_model_chose_does_not_settle_the_question(chinook_schema: Schema) -> None:
    grounding = ground("How many podcasts are there?", chinook_schema)
    (concept,) = grounding.candidates()
    decide(concept, '{"column": "Track.Name"}', ["Track.Name"], chinook_schema)
    assert concept.grounds == ["Track.Name"] and not settled(grounding)


async def test_every_query_failing_on_the_one_phrase_grounded_nowhere_names_it() -> None:
    # Nothing grounds "podcasts" (the model's reply decides nothing), then every query fails, and not on
    # a missing name: the answer is the finding, with the closest columns, not a bare failure.
    runner = InProcessRunner(open_source(str(CHINOOK)))
    failing = "```sql\nSELECT COUNT(*), abs(-9223372036854775808) FROM Track\n```"
    model = routed_model([failing] * 8)
    answer = await DataAgent(model=model, runner=runner).ask("How many podcasts are there?")
    assert answer.status == "cannot_answer", answer
    assert "the data has no podcasts; the closest columns are" in answer.answer
    # The model's queries ran and failed; then one lookup query found no value holding the word.
    *written, lookup = runner.queries
    assert written and all("abs(" in sql for sql in written)
    assert "LIKE '%podcast%'" in lookup and "UNION ALL" in lookup


async def test_a_phrase_a_query_finds_among_the_values_is_no_finding() -> None:
    # "requiems" is in no name and no sample value, but a track's name holds it: the lookup query finds it,
    # so the failed queries stay a failure instead of a claim that the data lacks it.
    runner = InProcessRunner(open_source(str(CHINOOK)))
    failing = "```sql\nSELECT COUNT(*), abs(-9223372036854775808) FROM Track\n```"
    model = routed_model([failing] * 8)
    answer = await DataAgent(model=model, runner=runner).ask("How many requiems are there?")
    assert answer.status == "failed"
    assert any("LIKE '%requiem%'" in sql for sql in runner.queries)


async def test_a_failure_with_every_phrase_grounded_stays_a_failure() -> None:
    # "tracks" and "genre" are in the data: queries that fail are mistakes, never evidence of a lack.
    runner = InProcessRunner(open_source(str(CHINOOK)))
    model = routed_model(["```sql\nSELECT COUNT(*) FROM Tracks WHERE Genre = 1\n```"] * 8)
    answer = await DataAgent(model=model, runner=runner).ask("How many tracks per genre?")
    assert answer.status == "failed"


def test_unfound_names_exactly_one_phrase_grounded_nowhere(chinook_schema: Schema) -> None:
    one = ground("How many podcasts are there?", chinook_schema)
    assert one.unfound() is not None and "podcasts" in str(one.unfound())
    two = ground("How many podcasts have subtitles?", chinook_schema)
    assert len(two.guessed()) != 1 or two.unfound() is not None
    grounded_all = ground("How many tracks per genre?", chinook_schema)
    assert grounded_all.guessed() == [] and grounded_all.unfound() is None
