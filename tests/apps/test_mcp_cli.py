"""`corral mcp tools` shows a real server's tools as an agent sees them; bad options are clear errors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

CORRAL = str(Path(sys.executable).with_name("corral"))


def corral(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([CORRAL, *args], capture_output=True, text=True, timeout=120)


@pytest.mark.timeout(150)
def test_tools_lists_a_server_as_the_agent_sees_it() -> None:
    spec = f"{sys.executable} -m mcp_server_time --local-timezone UTC"
    listed = corral("mcp", "tools", spec, "--prefix", "time", "--include", "convert_time", "--json")
    assert listed.returncode == 0, listed.stderr
    (definition,) = json.loads(listed.stdout)["tools"]
    assert definition["name"] == "time_convert_time"
    assert set(definition["parameters"]["required"]) == {"source_timezone", "time", "target_timezone"}
    plain = corral("mcp", "tools", spec)
    assert plain.returncode == 0 and "get_current_time\n    Get current time" in plain.stdout


def test_tools_of_a_server_that_does_not_start_is_a_clear_error() -> None:
    failed = corral("mcp", "tools", "/nonexistent/mcp-server")
    assert failed.returncode == 2
    assert "error: The MCP server 'mcp-server'" in failed.stderr and "unavailable" in failed.stderr


def test_serve_refuses_a_bad_http_address() -> None:
    failed = corral("mcp", "serve", "--http", "localhost")
    assert failed.returncode == 2 and "HOST:PORT" in failed.stderr


def test_serve_refuses_a_short_state_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CORRAL_MCP_STATE_KEY", "short")
    failed = corral("mcp", "serve")
    said = " ".join(failed.stderr.replace("│", " ").split())  # the message as rich wraps it in a box
    assert failed.returncode == 2 and "$CORRAL_MCP_STATE_KEY must hold at least 32 characters" in said


async def test_an_exposed_run_function_keeps_its_typed_parameters(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mcp import Client

    from corral.apps.mcp_server import ServerConfig, _registry, build_server, expose_reference, exposed
    from corral.durable import MemoryJournal, Runtime

    monkeypatch.setattr(_registry, "_EXPOSED", {})  # what this test exposes stays in this test

    sys.path.insert(0, str(Path(__file__).parent))
    try:
        expose_reference("_mcp_exposed:shout")
    finally:
        sys.path.remove(str(Path(__file__).parent))
    assert {"shout", "launcher"} <= set(exposed())
    runtime = Runtime(MemoryJournal())
    server = build_server(ServerConfig(sandbox_tools=False), runtime=runtime)
    async with Client(server) as client:  # the SDK's in-process transport
        (tool,) = [t for t in (await client.list_tools()).tools if t.name == "shout"]
        assert tool.input_schema["required"] == ["text"]
        assert tool.input_schema["properties"]["times"]["type"] == "integer"
        assert set(tool.input_schema["properties"]) == {"text", "times"}  # not the request context
        result = await client.call_tool("shout", {"text": "run", "times": 3})
        bad = await client.call_tool("shout", {"text": "run", "times": "many"})
    assert result.structured_content is not None
    assert result.structured_content["output"] == "RUN RUN RUN"
    assert bad.is_error
    (run,) = runtime.list_runs()
    assert run.status == "completed"


@pytest.mark.sandbox
async def test_run_sql_over_a_files_source_and_unknown_sources(tmp_path: Path) -> None:
    from mcp import Client

    from corral.apps.mcp_server import ServerConfig, build_server

    sales = tmp_path / "sales.csv"
    sales.write_text("region,amount\nnorth,5\nsouth,7\nnorth,1\n")
    server = build_server(ServerConfig(files={"sales": (str(sales),)}), expose={})
    async with Client(server) as client:
        names = {t.name for t in (await client.list_tools()).tools}
        summed = await client.call_tool("run_sql", {"query": "SELECT SUM(amount) AS total FROM sales"})
        unknown = await client.call_tool("run_sql", {"query": "SELECT 1", "source": "nope"})
    assert names == {"ask", "run_python", "run_sql"}
    assert summed.structured_content is not None and summed.structured_content["rows"] == [[13]]
    assert unknown.is_error and "unknown source 'nope': choose one of sales" in unknown.content[0].text  # type: ignore[union-attr]
