"""Ask from the web: the data agent answers over the sample database in the real sandbox; the page shows
its steps live, the answer, the table, the SQL and the chart. The model is scripted except in the one test
that is about the real local model."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient

from corral.apps.data_agent import _run

from .conftest import LiveServer, data_model, screenshot, wait_until

pytestmark = [pytest.mark.slow, pytest.mark.sandbox]

GENRES = (
    "SELECT g.Name AS genre, COUNT(*) AS tracks FROM Track t JOIN Genre g ON g.GenreId = t.GenreId "
    "GROUP BY g.Name ORDER BY tracks DESC LIMIT 5"
)


@pytest.fixture
def scripted(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_run, "_models", {})
    monkeypatch.setattr(_run, "make_model", lambda name: data_model([f"```sql\n{GENRES}\n```"]))


def test_ask_on_the_sample_database_shows_table_sql_and_chart(
    scripted: None, page: Any, live: LiveServer
) -> None:
    page.goto(live.url + "/ask")
    page.select_option("#source", "chinook")
    page.fill("#question", "Top 5 genres by number of tracks")
    page.click("#ask-button")
    page.wait_for_selector("#timeline li[data-kind=model]", timeout=30_000)
    page.wait_for_selector("#answer:not([hidden])", timeout=60_000)
    assert page.locator("#answer-table thead th").all_inner_texts() == ["genre", "tracks"]
    first = page.locator("#answer-table tbody tr").first.locator("td").all_inner_texts()
    assert first == ["Rock", "1297"]
    assert "GROUP BY g.Name" in page.locator("#answer-query").inner_text()
    wait_until(page, "document.getElementById('chart').naturalWidth > 100")
    assert '"mark"' in page.locator("#vega-spec").text_content()
    kinds = page.locator("#timeline li").evaluate_all("nodes => nodes.map(n => n.dataset.kind)")
    assert "sandbox" in kinds and "model" in kinds  # the query ran in the sandbox; the model wrote it
    assert "note-judge" in kinds and "note-sql" in kinds  # the data agent's own events, the judge's verdict
    assert "pass" in page.locator("#timeline li[data-kind=note-judge]").inner_text()
    screenshot(page, "ask")
    assert page.errors == []


def test_a_hostile_column_name_and_answer_stay_text(
    monkeypatch: pytest.MonkeyPatch, page: Any, live: LiveServer
) -> None:
    sql = (
        'SELECT g.Name AS "<img src=x onerror=window.__pwned=1>", COUNT(*) AS "<script>window.__pwned=2'
        '</script>" FROM Track t JOIN Genre g ON g.GenreId = t.GenreId '
        "GROUP BY g.Name ORDER BY 2 DESC LIMIT 3"
    )
    monkeypatch.setattr(_run, "_models", {})
    monkeypatch.setattr(_run, "make_model", lambda name: data_model([f"```sql\n{sql}\n```"]))
    page.goto(live.url + "/ask")
    page.fill("#question", "Top genres")
    page.click("#ask-button")
    page.wait_for_selector("#answer:not([hidden])", timeout=60_000)
    headers = page.locator("#answer-table thead th").all_inner_texts()
    assert headers == ["<img src=x onerror=window.__pwned=1>", "<script>window.__pwned=2</script>"]
    page.wait_for_timeout(300)
    assert page.evaluate("window.__pwned") is None
    assert page.locator("main img[src=x]").count() == 0


def test_ask_api_refuses_an_unknown_source(client: TestClient) -> None:
    response = client.post("/api/ask", json={"question": "How many?", "source": "nope"})
    assert response.status_code == 404 and "chinook" in response.json()["detail"]
    assert client.get("/api/sources").json() == ["chinook"]
    assert client.post("/api/ask", json={"question": "", "source": "chinook"}).status_code == 422


@pytest.mark.model
def test_the_local_model_answers_from_the_ask_page(
    monkeypatch: pytest.MonkeyPatch, page: Any, live: LiveServer
) -> None:
    monkeypatch.setattr(_run, "_models", {})  # the real embedded model (make_model untouched)
    monkeypatch.delenv("CORRAL_CACHE_DIR")  # the weights the set-up joined, not a private copy of 491 MB
    page.goto(live.url + "/ask")
    page.fill("#question", "How many customers are there?")
    page.click("#ask-button")
    page.wait_for_selector("#answer:not([hidden])", timeout=240_000)
    assert page.locator("#answer-text").inner_text().startswith("answered")
    assert page.locator("#answer-table tbody td").all_inner_texts() == ["59"]
    assert "customer" in page.locator("#answer-query").inner_text().lower()
    usage = page.locator("#timeline li[data-kind=model] .usage").first.inner_text()
    assert "tokens" in usage and not usage.startswith("0+0")


def test_an_unusable_source_is_a_clear_problem(config: Any, token: str, tmp_path: Any) -> None:
    from dataclasses import replace

    from corral.apps.server import create_app

    broken = replace(config, sources={"gone": str(tmp_path / "missing.sqlite")})
    with TestClient(create_app(broken)) as client:
        client.headers["Authorization"] = f"Bearer {token}"
        response = client.post("/api/ask", json={"question": "How many?", "source": "gone"})
    assert response.status_code == 400
    assert "missing.sqlite" in response.json()["detail"]


def test_ask_over_csv_files_answers_with_pandas_code(
    monkeypatch: pytest.MonkeyPatch, config: Any, token: str, tmp_path: Any
) -> None:
    import time
    from dataclasses import replace

    from corral.apps.server import create_app

    sales = tmp_path / "sales.csv"
    sales.write_text("region,amount,units\nnorth,3.5,1\nsouth,4.0,2\nnorth,5.5,3\neast,,4\n")
    monkeypatch.setattr(_run, "_models", {})
    monkeypatch.setattr(
        _run, "make_model", lambda name: data_model(["```python\nresult = df.units.sum()\n```"])
    )
    with TestClient(create_app(replace(config, sources={"sales": str(sales)}))) as client:
        client.headers["Authorization"] = f"Bearer {token}"
        started = client.post("/api/ask", json={"question": "Total units?", "source": "sales"})
        assert started.status_code == 202, started.text
        run_id = started.json()["run_id"]
        deadline = time.monotonic() + 60
        while (run := client.get(f"/api/runs/{run_id}").json())["status"] != "completed":
            assert run["status"] not in ("failed", "cancelled") and time.monotonic() < deadline, run
            time.sleep(0.1)
    answer = run["output"]
    assert answer["rows"] == [[10]] and answer["code"] == "result = df.units.sum()" and answer["sql"] is None
    assert {"frames", "code"} <= {s["name"] for s in run["steps"] if s["kind"] == "sandbox"}


def test_a_thread_follows_up_through_the_api_one_question_at_a_time(
    monkeypatch: pytest.MonkeyPatch, client: TestClient
) -> None:
    import threading
    import time

    by_country = "SELECT Country, COUNT(*) AS customers FROM Customer GROUP BY Country ORDER BY 2 DESC"
    only_brazil = "SELECT COUNT(*) AS customers FROM Customer WHERE Country = 'Brazil'"
    model = data_model([f"```sql\n{by_country}\n```", f"```sql\n{only_brazil}\n```"])
    release = threading.Event()
    request = model.request

    async def held(*args: Any, **kwargs: Any) -> Any:
        # The first question's model call waits, so a second question of the thread arrives mid-way.
        while not release.is_set():
            await __import__("asyncio").sleep(0.02)
        return await request(*args, **kwargs)

    monkeypatch.setattr(model, "request", held)
    monkeypatch.setattr(_run, "_models", {})
    monkeypatch.setattr(_run, "make_model", lambda name: model)

    def wait(run_id: str) -> dict[str, Any]:
        deadline = time.monotonic() + 60
        while (run := client.get(f"/api/runs/{run_id}").json())["status"] != "completed":
            assert run["status"] not in ("failed", "cancelled") and time.monotonic() < deadline, run
            time.sleep(0.1)
        return run

    body = {"question": "How many customers per country?", "source": "chinook", "thread": "sales"}
    first = client.post("/api/ask", json=body)
    assert first.status_code == 202 and first.json()["run_id"] == "sales.1"
    busy = client.post("/api/ask", json={**body, "question": "only Brazil"})
    assert busy.status_code == 409 and "sales.1" in busy.json()["detail"]
    release.set()
    assert wait("sales.1")["output"]["row_count"] == 24
    second = client.post("/api/ask", json={**body, "question": "only Brazil"})
    assert second.status_code == 202 and second.json()["run_id"] == "sales.2"
    run = wait("sales.2")
    assert run["output"]["rows"] == [[5]]
    # The follow-up's prompt carried the previous question and its SQL.
    prompt = next(c.messages[1].content for c in model.calls if "only Brazil" in str(c.messages[1].content))
    assert "How many customers per country?" in prompt and by_country in prompt
    bad = client.post("/api/ask", json={**body, "thread": "../etc"})
    assert bad.status_code == 422
