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
