"""The web UI in Debian's Chromium, driven by Playwright: log in, runs, a workflow's path, the approvals
inbox, the token on every page, and markup from a model or a tool that stays text."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

import pytest

from corral.apps.server import ServerConfig
from corral.durable import Runtime, SqliteJournal

from ._runs import HOSTILE, Essay, essay, hostile, park_remover
from .conftest import LiveServer, off_loop, screenshot

pytestmark = pytest.mark.slow


@pytest.fixture
def runtime(config: ServerConfig) -> Any:
    rt = Runtime(SqliteJournal(config.journal))
    yield rt
    rt.close()


def test_every_page_refuses_access_without_the_token(browser: Any, live: LiveServer) -> None:
    context = browser.new_context()
    tab = context.new_page()
    for path in ("/", "/runs", "/runs/anything", "/approvals", "/ask", "/system", "/api/runs"):
        response = tab.goto(live.url + path)
        assert response is not None and response.status == 401, path
        if not path.startswith("/api/"):
            assert tab.locator("#token").is_visible()
            assert tab.locator("nav").count() == 0
    context.add_cookies([{"name": "corral_token", "value": "forged", "url": live.url}])
    response = tab.goto(live.url + "/runs")
    assert response is not None and response.status == 401
    screenshot(tab, "login")
    context.close()


def test_runs_page_lists_and_filters(page: Any, live: LiveServer, runtime: Runtime) -> None:
    for i in range(3):
        off_loop(essay.run_sync, Essay(topic=f"topic {i}"), runtime=runtime, run_id=f"essay-{i}")
    off_loop(park_remover, runtime)
    page.goto(live.url + "/runs")
    rows = page.locator("table.runs tbody tr")
    assert rows.count() == 4
    page.check("input[name=status][value=waiting]")
    page.click(".filters button[type=submit]")
    page.wait_for_url("**status=waiting**")
    assert page.locator("table.runs tbody tr").count() == 1
    assert "remove-bob" in page.locator("table.runs tbody").inner_text()
    page.goto(live.url + "/runs")
    screenshot(page, "runs")


def test_a_workflow_run_shows_its_graph_and_path(page: Any, live: LiveServer, runtime: Runtime) -> None:
    off_loop(essay.run_sync, Essay(topic="durable agents"), runtime=runtime, run_id="essay-run")
    page.goto(live.url + "/runs/essay-run")
    assert page.locator("#path").inner_text() == "Path taken: write → review → write → review → end"
    taken = page.locator("#workflow-graph g.node.taken")
    assert sorted(taken.evaluate_all("nodes => nodes.map(n => n.dataset.node)")) == ["end", "review", "write"]
    assert page.locator("#workflow-graph path.edge.taken").count() == 3
    page.wait_for_selector("#timeline li[data-kind=node]")
    page.locator("#live").filter(has_text="finished").wait_for()
    assert page.locator("#timeline li").count() == 7  # the graph, 2 writes, 4 node exits
    assert page.locator("#trace-id").inner_text().strip()
    screenshot(page, "workflow-run")
    assert page.errors == []


def test_approve_a_parked_run_from_the_inbox_and_watch_it_finish(
    page: Any, live: LiveServer, runtime: Runtime
) -> None:
    off_loop(park_remover, runtime)
    page.goto(live.url + "/approvals")
    card = page.locator("article.approval")
    assert card.count() == 1
    assert '"sql": "DELETE FROM users WHERE name = \'bob\'"' in card.locator("pre.arguments").inner_text()
    assert card.locator(".why").inner_text() == "SQL that writes: DELETE"
    screenshot(page, "approvals")
    card.locator("input[name=reason]").fill("bob left the company")
    card.locator("button[data-action=approve]").click()
    card.locator(".result").filter(has_text="approved").wait_for()
    page.goto(live.url + "/runs/remove-bob")
    page.locator("#run-status").filter(has_text="completed").wait_for(timeout=20_000)
    page.locator("#live").filter(has_text="finished").wait_for()
    assert "Bob is removed." in page.locator("#run-output").inner_text()
    kinds = page.locator("#timeline li").evaluate_all("nodes => nodes.map(n => n.dataset.kind)")
    assert "approval" in kinds and "model" in kinds and "tool" in kinds
    screenshot(page, "run-approved")
    page.goto(live.url + "/approvals")
    assert page.locator("#empty").is_visible()
    assert page.errors == []


def test_reject_with_a_reason_from_the_inbox(page: Any, live: LiveServer, runtime: Runtime) -> None:
    off_loop(park_remover, runtime)
    page.goto(live.url + "/approvals")
    card = page.locator("article.approval")
    card.locator("button[data-action=reject]").click()
    card.locator(".result").filter(has_text="reason").wait_for()  # refused: a rejection needs a reason
    card.locator("input[name=reason]").fill("deactivate users, never delete them")
    card.locator("button[data-action=reject]").click()
    card.locator(".result").filter(has_text="rejected").wait_for()
    page.goto(live.url + "/runs/remove-bob")
    page.locator("#run-status").filter(has_text="completed").wait_for(timeout=20_000)
    page.locator("#live").filter(has_text="finished").wait_for()
    assert "deactivate users, never delete them" in (page.locator("#timeline").text_content() or "")


def test_markup_from_the_model_and_a_tool_stays_text(page: Any, live: LiveServer, runtime: Runtime) -> None:
    dialogs: list[str] = []
    page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
    off_loop(hostile().run_sync, "Echo something.", runtime=runtime, run_id="hostile-run")
    page.goto(live.url + "/runs/hostile-run")
    page.locator("#live").filter(has_text="finished").wait_for()
    page.wait_for_timeout(300)
    text = page.locator("main").inner_text()
    assert text.count("window.__pwned") >= 2  # shown, as text, in the tool call, its result and the answer
    assert page.evaluate("window.__pwned") is None
    assert page.locator("main script").count() == 0 and page.locator("main img[src=x]").count() == 0
    assert dialogs == []
    page.goto(live.url + "/runs?" + urlencode({"label": HOSTILE}))
    assert page.evaluate("window.__pwned") is None


def test_system_page(page: Any, live: LiveServer, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CORRAL_CACHE_DIR")  # where the set-up installed the local model
    page.goto(live.url + "/system")
    assert "local:qwen2.5-coder-0.5b (default)\tyes" in page.locator("table").nth(1).inner_text()
    assert page.locator("#sandbox-backend").inner_text() in ("bubblewrap", "landlock")
    screenshot(page, "system")


def test_approve_with_edited_arguments_then_cancel_another_run(
    page: Any, live: LiveServer, runtime: Runtime
) -> None:
    off_loop(park_remover, runtime)
    page.goto(live.url + "/approvals")
    card = page.locator("article.approval")
    card.locator("textarea[name=arguments]").fill("not json")
    card.locator("button[data-action=edit]").click()
    card.locator(".result").filter(has_text="not JSON").wait_for()
    card.locator("textarea[name=arguments]").fill(
        '{"sql": "UPDATE users SET active = 0 WHERE name = \'bob\'"}'
    )
    card.locator("button[data-action=edit]").click()
    card.locator(".result").filter(has_text="edited").wait_for()
    page.goto(live.url + "/runs/remove-bob")
    page.locator("#run-status").filter(has_text="completed").wait_for(timeout=20_000)
    page.locator("#live").filter(has_text="finished").wait_for()
    assert "UPDATE users SET active = 0" in (page.locator("#timeline").text_content() or "")
    off_loop(park_remover, runtime, "remove-bob-2")
    page.goto(live.url + "/runs/remove-bob-2")
    page.click("#cancel-run")
    page.locator("#run-status").filter(has_text="cancelled").wait_for()
    page.locator("#live").filter(has_text="finished").wait_for()
    assert page.locator("#cancel-run").is_disabled()
