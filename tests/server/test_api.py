"""The HTTP API in process: token on every route, problems for errors, runs/steps/graph/approvals/signals/
cancel, live events, same-origin only."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest
from fastapi.testclient import TestClient

from corral.apps.server import ServerConfig, TokenStore, create_app
from corral.durable import Runtime, SqliteJournal, trace_id_for

from ._runs import Essay, essay, park_remover


@pytest.fixture
def runtime(config: ServerConfig) -> Runtime:
    rt = Runtime(SqliteJournal(config.journal))
    yield rt
    rt.close()


def _paths(client: TestClient) -> list[tuple[str, str]]:
    schema = client.get("/api/openapi.json").json()
    found = []
    for path, ops in schema["paths"].items():
        for method in ops:
            found.append(
                (
                    method.upper(),
                    path.replace("{run_id}", "r1").replace("{approval_id}", "ap-x").replace("{name}", "go"),
                )
            )
    return found


def test_every_route_and_page_refuses_a_request_without_the_token(
    client: TestClient, anonymous: TestClient
) -> None:
    routes = _paths(client)
    assert len(routes) >= 14
    for method, path in [*routes, ("GET", "/api/openapi.json")]:
        response = anonymous.request(method, path, json={})
        assert response.status_code == 401, (method, path)
        assert response.headers["content-type"] == "application/problem+json"
        assert response.json()["status"] == 401
    wrong = {"Authorization": "Bearer not-the-token"}
    for path in ("/", "/runs", "/runs/r1", "/approvals", "/ask", "/system"):
        for headers in ({}, wrong):
            response = anonymous.get(path, headers=headers, follow_redirects=False)
            assert response.status_code == 401, path
            assert 'name="token"' in response.text  # the login form, nothing else
        anonymous.cookies.set("corral_token", "forged")
        assert anonymous.get(path).status_code == 401
        anonymous.cookies.clear()


def test_login_sets_a_strict_http_only_cookie_and_rotation_revokes_it(
    anonymous: TestClient, token: str, config: ServerConfig
) -> None:
    refused = anonymous.post("/login", data={"token": "nope"}, follow_redirects=False)
    assert refused.status_code == 401
    response = anonymous.post("/login", data={"token": token}, follow_redirects=False)
    assert response.status_code == 303
    cookie = response.headers["set-cookie"].lower()
    assert "httponly" in cookie and "samesite=strict" in cookie
    assert anonymous.get("/runs").status_code == 200
    TokenStore(config.token_file).rotate()
    assert anonymous.get("/runs").status_code == 401


def test_the_token_file_holds_only_a_hash_readable_by_its_owner(config: ServerConfig, token: str) -> None:
    text = config.token_file.read_text()
    assert token not in text and len(text.strip()) == 64
    assert config.token_file.stat().st_mode & 0o077 == 0


def test_cross_origin_requests_are_refused_and_never_allowed_credentials(client: TestClient) -> None:
    evil = {"Origin": "http://evil.example"}
    for method, path in (("GET", "/api/runs"), ("POST", "/api/runs/r1/cancel"), ("OPTIONS", "/api/runs")):
        headers = {**evil, "Access-Control-Request-Method": "POST"} if method == "OPTIONS" else evil
        response = client.request(method, path, headers=headers)
        assert response.status_code == 403, (method, path)
        assert "access-control-allow-origin" not in response.headers
        assert "access-control-allow-credentials" not in response.headers
    same = client.get("/api/runs", headers={"Origin": "http://testserver"})
    assert same.status_code == 200


def test_pages_carry_a_strict_content_security_policy(client: TestClient) -> None:
    csp = client.get("/runs").headers["content-security-policy"]
    assert "script-src 'self'" in csp and "unsafe-inline" not in csp and "unsafe-eval" not in csp
    assert "default-src 'none'" in csp and "frame-ancestors 'none'" in csp


def test_runs_list_filters_and_pages(client: TestClient, runtime: Runtime) -> None:
    for i in range(3):
        essay.run_sync(Essay(topic=f"t{i}"), runtime=runtime, run_id=f"essay-{i}")
    park_remover(runtime)
    page = client.get("/api/runs", params={"limit": 2}).json()
    assert page["has_more"] and len(page["runs"]) == 2 and page["total"] is None
    last = client.get("/api/runs", params={"limit": 2, "offset": 2}).json()
    assert last["runs"][1]["run_id"] == "essay-0" and not last["has_more"]
    waiting = client.get("/api/runs", params={"status": "waiting"}).json()
    assert [r["run_id"] for r in waiting["runs"]] == ["remove-bob"]
    assert waiting["runs"][0]["label"] == "agent remover"
    workflows = client.get("/api/runs", params={"label": "workflow essay", "limit": 2}).json()
    assert workflows["total"] == 3 and workflows["has_more"]
    assert [r["run_id"] for r in workflows["runs"]] == ["essay-2", "essay-1"]
    assert client.get("/api/runs", params={"since": time.time() + 60}).json()["total"] == 0
    assert client.get("/api/runs", params={"min_cost": 1}).json()["total"] == 0
    bad = client.get("/api/runs", params={"status": "bogus"})
    assert bad.status_code == 422 and bad.headers["content-type"] == "application/problem+json"


def test_a_scalar_query_parameter_given_twice_is_refused(client: TestClient, runtime: Runtime) -> None:
    park_remover(runtime)
    # A list parameter may repeat; a scalar one may not (FastAPI alone would keep the last value).
    listed = client.get("/api/approvals", params=[("status", "pending"), ("status", "approved")])
    assert listed.status_code == 200 and len(listed.json()) == 1
    twice = client.get("/api/approvals", params=[("run_id", "remove-bob"), ("run_id", "other")])
    assert twice.status_code == 422 and twice.headers["content-type"] == "application/problem+json"
    assert "run_id" in twice.json()["detail"]
    assert client.get("/api/runs", params=[("limit", "1"), ("limit", "2")]).status_code == 422


def test_a_run_its_steps_graph_and_trace_id(client: TestClient, runtime: Runtime) -> None:
    essay.run_sync(Essay(topic="durable"), runtime=runtime, run_id="e1")
    run = client.get("/api/runs/e1").json()
    assert run["status"] == "completed" and run["trace_id"] == trace_id_for("e1")
    kinds = [s["kind"] for s in run["steps"]]
    assert kinds[0] == "workflow" and kinds.count("node") == 4
    graph = client.get("/api/runs/e1/graph").json()
    assert graph["path"] == ["write", "review", "write", "review", "end"] and graph["finished"]
    assert graph["mermaid"].startswith("stateDiagram-v2")
    later = client.get("/api/runs/e1/steps", params={"after": 3}).json()
    assert [s["position"] for s in later] == [p for p in range(4, len(run["steps"]))]
    missing = client.get("/api/runs/nope")
    assert missing.status_code == 404 and "nope" in missing.json()["detail"]
    park_remover(runtime)
    assert client.get("/api/runs/remove-bob/graph").status_code == 404


def test_approve_from_the_api_and_the_worker_finishes_the_run(client: TestClient, runtime: Runtime) -> None:
    park_remover(runtime)
    [request] = client.get("/api/approvals").json()
    assert request["arguments"] == {"sql": "DELETE FROM users WHERE name = 'bob'"}
    assert request["why"] == "SQL that writes: DELETE"
    wrong = client.post(f"/api/approvals/{request['id']}/approve", json={"args_hash": "0" * 64})
    assert wrong.status_code == 409
    decided = client.post(f"/api/approvals/{request['id']}/approve", json={"reason": "bob left", "by": "ada"})
    assert decided.status_code == 200 and decided.json()["status"] == "approved"
    again = client.post(f"/api/approvals/{request['id']}/reject", json={"reason": "too late"})
    assert again.status_code == 409 and again.json()["title"] == "Conflict"
    deadline = time.monotonic() + 20
    while client.get("/api/runs/remove-bob").json()["status"] != "completed":
        assert time.monotonic() < deadline, "the in-process worker did not finish the approved run"
        time.sleep(0.05)
    run = client.get("/api/runs/remove-bob").json()
    assert run["output"]["output"] == "Bob is removed."


def test_reject_needs_a_reason_and_edit_needs_an_object(client: TestClient, runtime: Runtime) -> None:
    park_remover(runtime)
    [request] = client.get("/api/approvals").json()
    no_reason = client.post(f"/api/approvals/{request['id']}/reject", json={})
    assert no_reason.status_code == 422 and no_reason.json()["errors"][0]["loc"] == ["body", "reason"]
    blank = client.post(f"/api/approvals/{request['id']}/reject", json={"reason": "  "})
    assert blank.status_code == 422
    not_object = client.post(f"/api/approvals/{request['id']}/edit", json={"arguments": [1]})
    assert not_object.status_code == 422
    edited = client.post(
        f"/api/approvals/{request['id']}/edit",
        json={"arguments": {"sql": "UPDATE users SET active = 0 WHERE name = 'bob'"}},
    )
    assert edited.json()["status"] == "edited"


def test_a_blank_decider_name_is_the_servers_decider(client: TestClient, runtime: Runtime) -> None:
    # Found by schemathesis: "\x1c" is a non-empty string to the schema but blank to Python's strip().
    park_remover(runtime)
    [request] = client.get("/api/approvals").json()
    decided = client.post(f"/api/approvals/{request['id']}/reject", json={"reason": "no", "by": "\x1c "})
    assert decided.status_code == 200, decided.text
    assert decided.json()["decision"]["by"].strip()


def test_signal_and_cancel(client: TestClient, runtime: Runtime) -> None:
    park_remover(runtime)
    signalled = client.post("/api/runs/remove-bob/signals/poke", json={"payload": {"x": 1}})
    assert signalled.status_code == 200 and signalled.json()["run_id"] == "remove-bob"
    cancelled = client.post("/api/runs/remove-bob/cancel")
    assert cancelled.json()["status"] == "cancelled"
    assert client.get("/api/approvals").json() == []
    assert client.post("/api/runs/nope/cancel").status_code == 404


def test_live_events_stream_the_steps_then_end(client: TestClient, runtime: Runtime) -> None:
    essay.run_sync(Essay(topic="x"), runtime=runtime, run_id="e2")
    events = []
    with client.stream("GET", "/api/runs/e2/events") as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        name = None
        for line in response.iter_lines():
            if line.startswith("event: "):
                name = line[7:]
            elif line.startswith("data: "):
                events.append((name, json.loads(line[6:])))
                if name == "end":
                    break
    names = [n for n, _ in events]
    assert names[-1] == "end" and "run" in names
    assert [d["position"] for n, d in events if n == "step"] == list(range(names.count("step")))


def test_the_openapi_schema_is_published_behind_the_token(client: TestClient) -> None:
    schema = client.get("/api/openapi.json").json()
    assert schema["components"]["securitySchemes"]["HTTPBearer"]["scheme"] == "bearer"
    assert "/api/approvals/{approval_id}/edit" in schema["paths"]
    assert "/runs" not in schema["paths"]  # pages are not API


def test_system_reports_sandbox_models_and_workers(client: TestClient) -> None:
    system = client.get("/api/system").json()
    assert system["sandbox"]["backend"] in ("bubblewrap", "landlock")
    assert any(m["default"] for m in system["models"])
    assert system["in_process_worker"]
    assert "off" in system["traces"]


def test_a_second_app_over_the_same_journal_sees_the_same_runs(
    config: ServerConfig, token: str, runtime: Runtime
) -> None:
    essay.run_sync(Essay(topic="x"), runtime=runtime, run_id="shared")
    with TestClient(create_app(config)) as other:
        other.headers["Authorization"] = f"Bearer {token}"
        assert other.get("/api/runs/shared").json()["status"] == "completed"


async def _sandbox_job(ctx: Any) -> int:
    from corral.sandbox import run_python

    async def job() -> dict[str, Any]:
        code = "import sys; print('to stdout'); print('to stderr', file=sys.stderr); sys.exit(3)"
        result = await run_python(code)
        return {"stdout": result.stdout, "stderr": result.stderr, "exit_code": result.exit_code}

    done = await ctx.step("sandbox:hello", job)
    return int(done["exit_code"])


@pytest.mark.sandbox
def test_a_sandbox_job_shows_its_stdout_stderr_and_exit(client: TestClient, runtime: Runtime) -> None:
    assert runtime.run_sync(_sandbox_job, run_id="job") == 3
    [step] = client.get("/api/runs/job/steps").json()
    assert step["kind"] == "sandbox" and step["title"] == "sandbox:hello: exit 3"
    assert step["fields"]["stdout"] == "to stdout\n" and step["fields"]["stderr"] == "to stderr\n"


def test_a_bug_is_a_500_problem_without_its_details(
    config: ServerConfig, token: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from corral.apps.server import _api

    def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("secret internals")

    monkeypatch.setattr(_api, "system_view", broken)
    with TestClient(create_app(config), raise_server_exceptions=False) as client:
        response = client.get("/api/system", headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 500
    assert response.headers["content-type"] == "application/problem+json"
    assert "secret" not in response.text and response.json()["status"] == 500
