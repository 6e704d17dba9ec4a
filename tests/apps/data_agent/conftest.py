"""Fixtures of the data agent's tests.

``InProcessRunner`` runs the sandbox driver's own functions in this process. It exists only here, in the
tests, for speed; the product has no in-process runner (see ``corral.apps.data_agent._runner``).
"""

from __future__ import annotations

import asyncio
import shutil
import sqlite3
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from corral.apps.data_agent import QueryResult, Source, _driver, open_source
from corral.models import Message, ScriptedModel, SystemMessage, ToolDefinition

ROOT = Path(__file__).resolve().parents[3]
CHINOOK = ROOT / "examples" / "chinook" / "chinook.sqlite"


class InProcessRunner:
    """A :class:`QueryRunner` that calls the driver directly (tests only) and records every query."""

    def __init__(self, source: Source) -> None:
        self.source = source
        self.queries: list[str] = []
        self.describes = 0

    async def run(self, sql: str, *, max_rows: int = 1000) -> QueryResult:
        self.queries.append(sql)
        out = await asyncio.to_thread(_driver.run_query, self.source.spec(), sql, max_rows)
        return QueryResult.from_driver(out, 0.0)

    async def describe(self) -> dict[str, Any]:
        self.describes += 1
        return await asyncio.to_thread(_driver.describe, self.source.spec())


@pytest.fixture(autouse=True)
def _private_cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    # Schema caches of one test must not leak into another.
    monkeypatch.setenv("CORRAL_CACHE_DIR", str(tmp_path_factory.mktemp("cache")))
    monkeypatch.setenv("CORRAL_HOME", str(tmp_path_factory.mktemp("home")))


@pytest.fixture
def chinook(tmp_path: Path) -> Path:
    """A private copy of Chinook (tests must not depend on each other's mtimes)."""
    dest = tmp_path / "chinook.sqlite"
    shutil.copy(CHINOOK, dest)
    return dest


@pytest.fixture
def chinook_runner(chinook: Path) -> InProcessRunner:
    return InProcessRunner(open_source(str(chinook)))


@pytest.fixture
def awkward_db(tmp_path: Path) -> Path:
    """A SQLite database with awkward identifiers: spaces, reserved words, mixed case."""
    path = tmp_path / "shop.sqlite"
    conn = sqlite3.connect(path)
    conn.executescript(
        """
        CREATE TABLE "Order Details"
            ("Order ID" INTEGER, "Product" TEXT, "Unit Price" REAL, "Quantity" INTEGER);
        CREATE TABLE "Order" ("Order ID" INTEGER PRIMARY KEY, "Group" TEXT, "Select" TEXT);
        INSERT INTO "Order" VALUES (1, 'north', 'a'), (2, 'south', 'b');
        INSERT INTO "Order Details" VALUES (1, 'tea', 2.5, 4), (1, 'milk', 1.0, 1), (2, 'tea', 2.5, 2);
        """
    )
    conn.commit()
    conn.close()
    return path


def routed_model(
    sql_replies: list[str],
    *,
    judge: list[str] | None = None,
    answerable: str = '{"answerable": true, "reason": "ok"}',
    alternatives: list[str] | None = None,
    grounding: str = "{}",
) -> ScriptedModel:
    """A ScriptedModel that answers each kind of request from its own list: query-writing requests take
    ``sql_replies`` in order, judge requests ``judge`` (default: always pass), answerability checks
    ``answerable``, and the sampled candidate queries of the vote (requests with a seed) ``alternatives``
    (default: a reply without a query, so no candidate joins the vote), and the grounding's choices of a
    column ``grounding`` (default: a reply that decides nothing)."""
    sql_left = list(sql_replies)
    judge_left = list(judge) if judge is not None else None
    alt_left = list(alternatives) if alternatives is not None else None

    def reply(messages: Sequence[Message], tools: Sequence[ToolDefinition]) -> str:
        system = messages[0].content if messages and isinstance(messages[0], SystemMessage) else ""
        if system.startswith("You check whether"):
            if judge_left is None:
                return '{"verdict": "pass", "reason": "answers the question"}'
            return judge_left.pop(0)
        if system.startswith("You decide whether"):
            return answerable
        if system.startswith("You match a phrase"):
            return grounding
        settings = model.calls[-1].settings
        if settings is not None and settings.seed is not None:
            if alt_left is None:
                return "no alternative"
            if not alt_left:
                raise AssertionError("the agent asked for more candidates than the test scripted")
            return alt_left.pop(0)
        if not sql_left:
            raise AssertionError("the agent asked for more queries than the test scripted")
        return sql_left.pop(0)

    model = ScriptedModel(reply)
    return model


class WritableRunner(InProcessRunner):
    """Adds the write path (plain sqlite3 on the file) for the approval tests."""

    async def write(self, sql: str) -> QueryResult:
        assert self.source.path is not None
        conn = sqlite3.connect(self.source.path)
        try:
            cur = conn.execute(sql)
            conn.commit()
            return QueryResult(ok=True, row_count=max(cur.rowcount, 0))
        except sqlite3.Error as exc:
            return QueryResult(ok=False, error=str(exc))
        finally:
            conn.close()
