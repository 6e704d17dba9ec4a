"""The API against its own OpenAPI schema, with schemathesis: generated requests (valid and invalid) to
every operation; no response is a 5xx, and every response matches the schema (status, content type,
body)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode

from corral.apps.server import ServerConfig, TokenStore, create_app
from corral.durable import Runtime, SqliteJournal

from ._runs import Essay, essay, park_remover

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Any, str]]:
    home: Path = tmp_path_factory.mktemp("schema")
    config = ServerConfig(
        journal=home / "journal.db", token_file=home / "token", chart_dir=home / "charts", sources={"x": "y"}
    )
    rt = Runtime(SqliteJournal(config.journal))
    essay.run_sync(Essay(topic="t"), runtime=rt, run_id="r1")
    park_remover(rt)
    rt.close()
    token = TokenStore(config.token_file).rotate()
    app = create_app(config)
    yield app, token
    app.state.corral.runtime.close()  # the routes opened it (no lifespan ran it)


def _operations(app: Any, token: str) -> list[Any]:
    schema = schemathesis.openapi.from_asgi(
        "/api/openapi.json", app, headers={"Authorization": f"Bearer {token}"}
    )
    return [result.ok() for result in schema.get_all_operations()]


# schemathesis's own pytest plugin does not run under this pytest (9.2); its strategies run under plain
# hypothesis instead, one operation and one generation mode at a time.
@pytest.mark.parametrize("mode", list(GenerationMode))
def test_every_response_matches_the_schema_and_none_is_a_server_error(
    api: tuple[Any, str], mode: GenerationMode
) -> None:
    app, token = api
    operations = _operations(app, token)
    assert len(operations) >= 14
    for operation in operations:

        @given(case=operation.as_strategy(generation_mode=mode))
        @settings(max_examples=10, deadline=None, suppress_health_check=list(HealthCheck), database=None)
        def check(case: Any) -> None:
            case.call_and_validate(headers={"Authorization": f"Bearer {token}"})

        check()
