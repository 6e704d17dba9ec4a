"""Fixtures of the server's tests: a journal with runs in it, the app in process (TestClient), the app
served for real (uvicorn in a thread) and Debian's Chromium driven by Playwright."""

from __future__ import annotations

import os
import shutil
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from corral.apps.server import ServerConfig, TokenStore, create_app
from corral.models import Message, ScriptedModel, SystemMessage, ToolDefinition

ROOT = Path(__file__).resolve().parents[2]
CHINOOK = ROOT / "examples" / "chinook" / "chinook.sqlite"
CHROMIUM = Path("/usr/bin/chromium")


@pytest.fixture(autouse=True)
def _private_home(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CORRAL_CACHE_DIR", str(tmp_path_factory.mktemp("cache")))
    monkeypatch.setenv("CORRAL_HOME", str(tmp_path_factory.mktemp("home")))


@pytest.fixture
def config(tmp_path: Path) -> ServerConfig:
    chinook = tmp_path / "chinook.sqlite"
    shutil.copy(CHINOOK, chinook)
    return ServerConfig(
        journal=tmp_path / "journal.db",
        token_file=tmp_path / "server-token",
        chart_dir=tmp_path / "charts",
        sources={"chinook": str(chinook)},
        worker=True,
        poll_interval=0.05,
    )


@pytest.fixture
def token(config: ServerConfig) -> str:
    created = TokenStore(config.token_file).ensure()
    assert created is not None
    return created


@pytest.fixture
def client(config: ServerConfig, token: str) -> Iterator[TestClient]:
    with TestClient(create_app(config)) as c:
        c.headers["Authorization"] = f"Bearer {token}"
        yield c


@pytest.fixture
def anonymous(config: ServerConfig, token: str) -> Iterator[TestClient]:
    with TestClient(create_app(config)) as c:
        yield c


class LiveServer:
    """The app served by uvicorn on a free port of 127.0.0.1, in a thread of this process (so the agents
    and workflows the tests define can be resumed by its worker)."""

    def __init__(self, config: ServerConfig) -> None:
        import uvicorn

        self.app = create_app(config)
        self.server = uvicorn.Server(
            uvicorn.Config(self.app, host="127.0.0.1", port=0, log_level="warning", lifespan="on")
        )
        self.thread = threading.Thread(target=self.server.run, name="corral-test-server", daemon=True)

    def __enter__(self) -> LiveServer:
        self.thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("the test server did not start")
            time.sleep(0.02)
        return self

    @property
    def url(self) -> str:
        port = self.server.servers[0].sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{port}"

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(20)


@pytest.fixture
def live(config: ServerConfig, token: str) -> Iterator[LiveServer]:
    with LiveServer(config) as server:
        yield server


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """Debian's Chromium (installed by scripts/_setup.sh), driven by Playwright. Missing is a failure.

    Module-scoped, not session-scoped: Playwright's sync API keeps an event loop running in the main
    thread while it is started, and the tests of other modules call ``asyncio.run``."""
    from playwright.sync_api import sync_playwright

    assert CHROMIUM.exists(), "Chromium is missing: scripts/test installs it (apt-get install chromium)"
    with sync_playwright() as pw:
        launched = pw.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox"])
        yield launched
        launched.close()


@pytest.fixture
def page(browser: Any, live: LiveServer, token: str) -> Iterator[Any]:
    """A logged-in page: the token typed into the login form, as a person does."""
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    tab = context.new_page()
    errors: list[str] = []
    tab.on("pageerror", lambda exc: errors.append(str(exc)))
    tab.goto(live.url + "/login")
    tab.fill("#token", token)
    tab.click("button[type=submit]")
    tab.wait_for_url("**/runs")
    tab.errors = errors
    yield tab
    context.close()


def screenshot(page: Any, name: str) -> None:
    """Save a screenshot for docs/ui.md when CORRAL_SCREENSHOTS names a directory."""
    folder = os.environ.get("CORRAL_SCREENSHOTS")
    if folder:
        Path(folder).mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(Path(folder) / f"ui-{name}.png"), full_page=True)


def data_model(sql_replies: list[str]) -> ScriptedModel:
    """A scripted model for the data agent: query-writing requests take ``sql_replies`` in order, the
    judge passes, every question is answerable, no vote candidates."""
    left = list(sql_replies)

    def reply(messages: Sequence[Message], tools: Sequence[ToolDefinition]) -> str:
        system = messages[0].content if messages and isinstance(messages[0], SystemMessage) else ""
        if system.startswith("You check whether"):
            return '{"verdict": "pass", "reason": "answers the question"}'
        if system.startswith("You decide whether"):
            return '{"answerable": true, "reason": "ok"}'
        settings = model.calls[-1].settings
        if settings is not None and settings.seed is not None:
            return "no alternative"
        return left.pop(0) if left else "```sql\nSELECT 1\n```"

    model = ScriptedModel(reply)
    return model


def wait_until(page: Any, expression: str, *, timeout: float = 30.0) -> None:
    """Poll ``expression`` in the page until it is true. Not ``page.wait_for_function``: that evaluates a
    string with ``eval``, which the pages' Content-Security-Policy forbids (as it should)."""
    deadline = time.monotonic() + timeout
    while not page.evaluate(expression):
        assert time.monotonic() < deadline, f"still false after {timeout} s: {expression}"
        time.sleep(0.05)


def off_loop(fn: Any, *args: Any, **kwargs: Any) -> Any:
    """Call ``fn`` in another thread: Playwright's sync API keeps an event loop running in this one, so
    ``asyncio.run`` (``run_sync``) cannot be called here while a browser is open."""
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(1) as pool:
        return pool.submit(fn, *args, **kwargs).result()
