"""corral as an MCP server, driven by real clients: the SDK's client (stdio and HTTP), corral's own MCP
client, and the MCP Inspector's CLI (npm, installed by the test set-up)."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import httpx
import httpx2
import mcp_types
import pytest
from mcp import Client, StdioServerParameters
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError

from corral.durable import Runtime
from corral.guards import Approvals
from corral.tools import HttpServer, MCPToolset, ToolRaisedError, ToolUnavailableError

HERE = Path(__file__).parent
CHINOOK = HERE.parents[1] / "examples" / "chinook" / "chinook.sqlite"
CORRAL = str(Path(sys.executable).with_name("corral"))
TOKEN = "test-token-0123456789abcdef"

pytestmark = pytest.mark.timeout(180)


@pytest.fixture
def chinook(tmp_path: Path) -> Path:
    dest = tmp_path / "chinook.sqlite"
    shutil.copy(CHINOOK, dest)
    return dest


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    return {
        "CORRAL_JOURNAL": str(tmp_path / "journal.sqlite"),
        "CORRAL_HOME": str(tmp_path / "home"),
        "CORRAL_CACHE_DIR": str(tmp_path / "cache"),
        "MCP_EXPOSED_LOG": str(tmp_path / "exposed.log"),
        "PATH": os.environ.get("PATH", ""),
    }


def serve_args(chinook: Path, *extra: str) -> list[str]:
    return ["mcp", "serve", "--db", f"chinook={chinook}", "--expose", "_mcp_exposed", "--no-judge", *extra]


def stdio_params(chinook: Path, env: dict[str, str]) -> StdioServerParameters:
    return StdioServerParameters(command=CORRAL, args=serve_args(chinook), env=env, cwd=str(HERE))


def launched(env: dict[str, str]) -> list[str]:
    path = Path(env["MCP_EXPOSED_LOG"])
    return path.read_text().splitlines() if path.exists() else []


@pytest.mark.sandbox
async def test_sdk_client_over_stdio(chinook: Path, env: dict[str, str]) -> None:
    async with Client(stdio_params(chinook, env)) as client:
        tools = {t.name: t for t in (await client.list_tools()).tools}
        assert set(tools) == {"ask", "run_python", "run_sql", "launcher", "shout", "run_status"}
        assert set(tools["ask"].output_schema["properties"]) >= {"status", "answer", "sql", "rows", "run_id"}

        counted = await client.call_tool("run_sql", {"query": "SELECT COUNT(*) AS n FROM Track"})
        assert counted.structured_content == {
            "columns": ["n"],
            "rows": [[3503]],
            "row_count": 1,
            "truncated": False,
            "error": None,
        }
        refused = await client.call_tool("run_sql", {"query": "DELETE FROM Track"})
        assert refused.is_error or refused.structured_content["error"]
        again = await client.call_tool("run_sql", {"query": "SELECT COUNT(*) AS n FROM Track"})
        assert again.structured_content["rows"] == [[3503]]  # read-only: nothing was deleted

        printed = await client.call_tool("run_python", {"code": "import os; print(6 * 7, os.getuid() != 0)"})
        assert printed.structured_content["stdout"] == "42 True\n"

        shouted = await client.call_tool("shout", {"text": "hi", "times": 2})
        assert shouted.structured_content["status"] == "completed"
        assert shouted.structured_content["output"] == "HI HI"


def ledger(env: dict[str, str]) -> Approvals:
    """The server's approvals, read and decided from here as `corral approvals` would."""
    return Approvals(Runtime.open(env["CORRAL_JOURNAL"]))


# Handshake-era connections (2025-11-25, what desktop clients and IDEs speak) elicit over the back-channel
# during the call; 2026-07-28 ones have none, so the call answers input_required and the client calls again.
@pytest.mark.parametrize("mode", ["legacy", "2026-07-28"])
async def test_approval_through_elicitation_and_progress(
    chinook: Path, env: dict[str, str], mode: str
) -> None:
    asked: list[str] = []
    progress: list[str] = []

    async def approve(context: Any, params: mcp_types.ElicitRequestParams) -> mcp_types.ElicitResult:
        asked.append(params.message)
        return mcp_types.ElicitResult(action="accept", content={"approve": True, "reason": "go"})

    async def on_progress(done: float, total: float | None, message: str | None) -> None:
        progress.append(message or "")

    async with Client(stdio_params(chinook, env), elicitation_callback=approve, mode=mode) as client:
        assert client.protocol_version == ("2025-11-25" if mode == "legacy" else mode)
        result = await client.call_tool("launcher", {"prompt": "Launch."}, progress_callback=on_progress)
    done = result.structured_content
    assert done["status"] == "completed" and done["output"] == "Result: launched rocket"
    assert len(asked) == 1 and "launch" in asked[0] and "rocket" in asked[0]
    assert any("calling launch" in line for line in progress)
    assert launched(env) == ["launch rocket"]
    # The answer is a decision in the ledger, like one made with `corral approvals`.
    [record] = ledger(env).list(status=None, run_id=done["run_id"])
    assert record.status == "approved" and record.decision is not None
    assert (record.decision.by, record.decision.reason) == ("mcp-client", "go")


@pytest.mark.parametrize("mode", ["legacy", "2026-07-28"])
async def test_a_refusal_through_elicitation_reaches_the_model(
    chinook: Path, env: dict[str, str], mode: str
) -> None:
    async def refuse(context: Any, params: mcp_types.ElicitRequestParams) -> mcp_types.ElicitResult:
        return mcp_types.ElicitResult(action="accept", content={"approve": False, "reason": "not today"})

    async with Client(stdio_params(chinook, env), elicitation_callback=refuse, mode=mode) as client:
        result = await client.call_tool("launcher", {"prompt": "Launch."})
    assert result.structured_content["status"] == "completed"
    assert result.structured_content["output"] == "Result: The call of 'launch' was not approved: not today"
    assert launched(env) == []


async def test_without_elicitation_the_run_parks_until_corral_approvals_decides(
    chinook: Path, env: dict[str, str]
) -> None:
    async with Client(stdio_params(chinook, env)) as client:  # declares no elicitation
        parked = (await client.call_tool("launcher", {"prompt": "Launch."})).structured_content
        assert parked["status"] == "parked" and parked["output"] is None
        [approval] = parked["approvals"]
        assert (approval["action"], approval["arguments"]) == ("launch", {"target": "rocket"})
        run_id, approval_id = parked["run_id"], approval["id"]
        assert f"corral approvals approve {approval_id}" in parked["message"]
        assert "run_status" in parked["message"] and run_id in parked["message"]
        assert launched(env) == []

        # Not decided yet: asking again changes nothing.
        again = (await client.call_tool("run_status", {"run_id": run_id})).structured_content
        assert again["status"] == "parked" and again["approvals"][0]["id"] == approval_id
        assert launched(env) == []

        decided = await anyio.run_process(
            [CORRAL, "approvals", "approve", approval_id, "--by", "ops", "--reason", "cleared"], env=env
        )
        assert decided.returncode == 0, decided.stderr
        done = (await client.call_tool("run_status", {"run_id": run_id})).structured_content
        assert done == {
            "status": "completed",
            "run_id": run_id,
            "output": "Result: launched rocket",
            "approvals": [],
            "message": "",
            "report": None,  # only ops_diagnose fills it
        }
        finished = (await client.call_tool("run_status", {"run_id": run_id})).structured_content
        assert finished["output"] == "Result: launched rocket"
    assert launched(env) == ["launch rocket"]  # exactly once


@pytest.mark.parametrize("mode", ["legacy", "2026-07-28"])
async def test_a_declined_elicitation_parks_and_a_rejection_reaches_the_model(
    chinook: Path, env: dict[str, str], mode: str
) -> None:
    asked: list[str] = []

    async def decline(context: Any, params: mcp_types.ElicitRequestParams) -> mcp_types.ElicitResult:
        asked.append(params.message)
        return mcp_types.ElicitResult(action="decline")

    async with Client(stdio_params(chinook, env), elicitation_callback=decline, mode=mode) as client:
        parked = (await client.call_tool("launcher", {"prompt": "Launch."})).structured_content
        assert parked["status"] == "parked" and len(asked) == 1
        [approval] = parked["approvals"]
        ledger(env).reject(approval["id"], by="ops", reason="the pad is closed")
        done = (await client.call_tool("run_status", {"run_id": parked["run_id"]})).structured_content
    assert done["output"] == "Result: The call of 'launch' was not approved: the pad is closed"
    assert launched(env) == [] and len(asked) == 1  # a decided approval is not asked again


async def test_run_status_only_reads_runs_of_exposed_tools(chinook: Path, env: dict[str, str]) -> None:
    async with Client(stdio_params(chinook, env)) as client:
        for forged in ("mcp-launcher-0123456789abcdef", "mcp-nope-0123456789abcdef", "../journal", ""):
            result = await client.call_tool("run_status", {"run_id": forged})
            assert result.is_error, forged
            assert "no run" in result.content[0].text or "not the id" in result.content[0].text  # type: ignore[union-attr]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def http_server(chinook: Path, env: dict[str, str]) -> Iterator[str]:
    port = free_port()
    proc = subprocess.Popen(
        [CORRAL, *serve_args(chinook, "--http", f"127.0.0.1:{port}")],
        cwd=HERE,
        env={**os.environ, **env, "CORRAL_MCP_TOKEN": TOKEN},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    url = f"http://127.0.0.1:{port}/mcp"
    deadline = time.monotonic() + 60
    while True:
        assert proc.poll() is None, proc.communicate()
        try:
            httpx.get(url, timeout=1)
            break
        except httpx.TransportError:
            assert time.monotonic() < deadline, "the HTTP server did not start"
            time.sleep(0.1)
    yield url
    proc.terminate()
    proc.communicate(timeout=20)


def test_http_requires_the_token(http_server: str) -> None:
    body = {"jsonrpc": "2.0", "id": 1, "method": "tools/list", "params": {}}
    headers = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json"}
    for auth in ({}, {"Authorization": "Bearer wrong-token-0123456789"}, {"Authorization": TOKEN}):
        response = httpx.post(http_server, json=body, headers={**headers, **auth}, timeout=10)
        assert response.status_code == 401
        assert response.headers["www-authenticate"].startswith("Bearer")


@asynccontextmanager
async def http_client(url: str, token: str) -> AsyncIterator[Client]:
    async with (
        httpx2.AsyncClient(headers={"Authorization": f"Bearer {token}"}) as http,
        Client(streamable_http_client(url, http_client=http)) as client,
    ):
        yield client


async def test_sdk_client_over_http(http_server: str) -> None:
    async with http_client(http_server, TOKEN) as client:
        names = {t.name for t in (await client.list_tools()).tools}
        assert names == {"ask", "run_python", "run_sql", "launcher", "shout", "run_status"}
        shouted = await client.call_tool("shout", {"text": "over http"})
        assert shouted.structured_content["output"] == "OVER HTTP"
    wrong = HttpServer(http_server, headers={"Authorization": "Bearer not-the-token-0123456789"})
    async with MCPToolset(wrong, name="corral", connect_attempts=1) as toolset:
        with pytest.raises(ToolUnavailableError, match=r"'corral'.*unavailable.*error response"):
            await toolset.tools()


async def test_corral_client_over_http(http_server: str) -> None:
    spec = HttpServer(http_server, headers={"Authorization": f"Bearer {TOKEN}"})
    async with MCPToolset(spec, name="corral", prefix="corral", include=["shout", "run_sql"]) as toolset:
        tools = {t.name: t for t in await toolset.tools()}
        assert set(tools) == {"corral_shout", "corral_run_sql"}
        shouted = json.loads(await tools["corral_shout"].call({"text": "both ways", "times": 1}))
        assert (shouted["status"], shouted["output"]) == ("completed", "BOTH WAYS")
        with pytest.raises(ToolRaisedError, match="unknown source 'nope'"):
            await tools["corral_run_sql"].call({"query": "SELECT 1", "source": "nope"})


# ---- the MCP Inspector (a real third-party client) -----------------------------------------------------


def inspector() -> str:
    found = os.environ.get("CORRAL_MCP_INSPECTOR") or str(
        Path(sys.prefix) / "npm" / "node_modules" / ".bin" / "mcp-inspector"
    )
    assert Path(found).exists(), f"{found} is missing: scripts/test installs the MCP Inspector"
    return found


def run_inspector(tmp_path: Path, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "MCP_CATALOG_PATH": str(tmp_path / "inspector.json")}
    return subprocess.run(
        [inspector(), "--cli", *args], capture_output=True, text=True, timeout=timeout, env=env, cwd=HERE
    )


def test_inspector_lists_tools_over_stdio_and_http(
    http_server: str, chinook: Path, env: dict[str, str], tmp_path: Path
) -> None:
    over_stdio = run_inspector(
        tmp_path,
        "--method",
        "tools/list",
        *(f"-e{k}={v}" for k, v in env.items()),
        "--",
        CORRAL,
        *serve_args(chinook),
    )
    assert over_stdio.returncode == 0, over_stdio.stderr
    names = {t["name"] for t in json.loads(over_stdio.stdout)["tools"]}
    assert names == {"ask", "run_python", "run_sql", "launcher", "shout", "run_status"}

    auth = f"Authorization: Bearer {TOKEN}"
    over_http = run_inspector(
        tmp_path,
        "--method",
        "tools/call",
        "--tool-name",
        "run_sql",
        "--header",
        auth,
        "--tool-arg",
        "query=SELECT Name FROM Artist WHERE ArtistId = 1",
        "--",
        http_server,
    )
    assert over_http.returncode == 0, over_http.stderr
    assert json.loads(over_http.stdout)["structuredContent"]["rows"] == [["AC/DC"]]

    refused = run_inspector(tmp_path, "--method", "tools/list", "--", http_server)
    assert refused.returncode != 0


@pytest.mark.slow
@pytest.mark.model
@pytest.mark.sandbox
def test_inspector_calls_ask_on_the_sample_database(
    chinook: Path, env: dict[str, str], tmp_path: Path
) -> None:
    called = run_inspector(
        tmp_path,
        "--method",
        "tools/call",
        "--tool-name",
        "ask",
        "--tool-arg",
        "question=How many customers are there?",
        *(f"-e{k}={v}" for k, v in env.items()),
        "--",
        CORRAL,
        *serve_args(chinook, "--model", "local"),
        timeout=300,
    )
    assert called.returncode == 0, called.stderr
    answer = json.loads(called.stdout)["structuredContent"]
    assert set(answer) == {"status", "answer", "sql", "code", "columns", "rows", "chart", "run_id", "usage"}
    assert answer["status"] == "answered", answer["answer"]
    assert answer["rows"] == [[59]] and answer["run_id"]


def test_bearer_gate_rejects_short_tokens() -> None:
    from corral.apps.mcp_server import BearerTokenGate

    async def app(scope: Any, receive: Any, send: Any) -> None:
        raise AssertionError("never reached")

    with pytest.raises(ValueError, match="16 characters"):
        BearerTokenGate(app, "short")


def test_inspector_sees_a_parked_run_and_picks_up_its_result(
    chinook: Path, env: dict[str, str], tmp_path: Path
) -> None:
    """Each Inspector call starts its own server process: the parked run outlives the one that parked it."""

    def call(tool: str, argument: str) -> dict[str, Any]:
        done = run_inspector(
            tmp_path,
            "--method",
            "tools/call",
            "--tool-name",
            tool,
            "--tool-arg",
            argument,
            *(f"-e{k}={v}" for k, v in env.items()),
            "--",
            CORRAL,
            *serve_args(chinook),
        )
        assert done.returncode == 0, done.stderr
        structured: dict[str, Any] = json.loads(done.stdout)["structuredContent"]
        return structured

    parked = call("launcher", "prompt=Launch.")
    assert parked["status"] == "parked" and launched(env) == []
    [approval] = parked["approvals"]
    ledger(env).approve(approval["id"], by="ops")
    done = call("run_status", f"run_id={parked['run_id']}")
    assert (done["status"], done["output"]) == ("completed", "Result: launched rocket")
    assert launched(env) == ["launch rocket"]


@pytest.mark.parametrize("state_key", [None, "k" * 40])
async def test_an_answer_across_a_server_restart(
    chinook: Path, env: dict[str, str], state_key: str | None
) -> None:
    """2026-07-28: the round's state is the approval's id, sealed by the server's key. With a key kept across
    restarts (`$CORRAL_MCP_STATE_KEY`) a late answer still decides; without one it is refused and the run
    stays parked until it is asked again or decided with `corral approvals`."""
    if state_key is not None:
        env = {**env, "CORRAL_MCP_STATE_KEY": state_key}

    async def approve(context: Any, params: mcp_types.ElicitRequestParams) -> mcp_types.ElicitResult:
        return mcp_types.ElicitResult(action="accept", content={"approve": True, "reason": ""})

    async with Client(stdio_params(chinook, env), elicitation_callback=approve, mode="2026-07-28") as client:
        first = await client.session.call_tool("launcher", {"prompt": "Launch."}, allow_input_required=True)
    assert isinstance(first, mcp_types.InputRequiredResult) and first.request_state
    [pending] = ledger(env).list()
    assert pending.id not in first.request_state  # sealed, not readable by the client
    assert launched(env) == []

    answer = {"approval": mcp_types.ElicitResult(action="accept", content={"approve": True, "reason": ""})}
    async with Client(stdio_params(chinook, env), elicitation_callback=approve, mode="2026-07-28") as client:
        late = client.call_tool(
            "launcher", {"prompt": "Launch."}, input_responses=answer, request_state=first.request_state
        )
        if state_key is not None:
            done = await late
        else:
            with pytest.raises(MCPError, match="Invalid or expired requestState"):
                await late
            assert ledger(env).get(pending.id).status == "pending" and launched(env) == []
            # The run is still parked; asking for it puts the approval to this client again.
            done = await client.call_tool("run_status", {"run_id": pending.run_id})
    assert (done.structured_content or {})["output"] == "Result: launched rocket"
    assert ledger(env).get(pending.id).status == "approved"
    assert launched(env) == ["launch rocket"]
