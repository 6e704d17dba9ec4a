"""The ops agent as the MCP tool ``ops_diagnose`` (``corral mcp serve --ops``), over the SDK's in-process
client, diagnosing a real process that leaks sockets in CLOSE_WAIT. Its remediation parks for a person's
approval exactly as in ``corral ops diagnose``; nothing is killed without one."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import mcp_types
import pytest
from mcp import Client, StdioServerParameters

from corral.apps.mcp_server import ServerConfig, build_server
from corral.durable import MemoryJournal, Runtime
from corral.guards import Approvals

pytestmark = pytest.mark.timeout(120)

# The same fault as tests/ops/faults.py's CLOSE_WAIT_SERVER: sockets kept after the peer hung up.
CLOSE_WAIT_SERVER = """
import socket
srv = socket.socket(); srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
srv.bind(("127.0.0.1", 0)); srv.listen(128)
print(srv.getsockname()[1], flush=True)
kept = []
while True:
    conn, _ = srv.accept()
    conn.recv(100)
    kept.append(conn)
"""


@contextmanager
def leaking_server(tmp_path: Path, clients: int) -> Iterator[subprocess.Popen[str]]:
    """Start the leaking server and leave ``clients`` of its sockets in CLOSE_WAIT; kill it after."""
    script = tmp_path / "api.py"
    script.write_text(CLOSE_WAIT_SERVER)
    proc = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        port = int(proc.stdout.readline())
        for _ in range(clients):
            with socket.create_connection(("127.0.0.1", port), timeout=5) as c:
                c.sendall(b"GET / HTTP/1.0\r\n\r\n")
        time.sleep(0.3)
        yield proc
    finally:
        proc.kill()
        proc.wait(timeout=10)
        if proc.stdout is not None:
            proc.stdout.close()


def serve(runtime: Runtime, *, ops: bool = True) -> Any:
    return build_server(ServerConfig(sandbox_tools=False, ops=ops), runtime=runtime, expose={})


async def test_ops_diagnose_is_offered_only_when_asked_for() -> None:
    async with Client(serve(Runtime(MemoryJournal()), ops=False)) as client:
        assert {t.name for t in (await client.list_tools()).tools} == set()
    async with Client(serve(Runtime(MemoryJournal()))) as client:
        tools = {t.name: t for t in (await client.list_tools()).tools}
    assert set(tools) == {"ops_diagnose", "run_status"}
    assert set(tools["ops_diagnose"].input_schema["properties"]) == {"symptom", "pid", "service"}
    assert tools["ops_diagnose"].input_schema["required"] == ["symptom"]


async def test_the_cli_flag_offers_it_over_stdio(tmp_path: Path) -> None:
    corral = str(Path(sys.executable).with_name("corral"))
    env = {"CORRAL_JOURNAL": str(tmp_path / "journal.sqlite"), "CORRAL_HOME": str(tmp_path / "home")}
    for args, offered in ((["--ops"], {"ops_diagnose", "run_status"}), ([], set())):
        argv = ["mcp", "serve", *args]
        params = StdioServerParameters(command=corral, args=argv, env=env, cwd=str(tmp_path))
        async with Client(params) as client:
            names = {t.name for t in (await client.list_tools()).tools}
        assert names - {"run_python"} == offered


@pytest.mark.slow
async def test_a_close_wait_leak_is_diagnosed_and_its_fix_waits_for_a_person(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CORRAL_CORE_DIR", str(tmp_path / "cores"))
    runtime = Runtime(MemoryJournal())
    declined: list[str] = []

    async def decline(context: Any, params: mcp_types.ElicitRequestParams) -> mcp_types.ElicitResult:
        declined.append(params.message)
        return mcp_types.ElicitResult(action="decline")

    with leaking_server(tmp_path, 25) as server:
        async with Client(serve(runtime), elicitation_callback=decline) as client:
            called = await client.call_tool(
                "ops_diagnose", {"symptom": "connections pile up on the API", "pid": server.pid}
            )
            parked = called.structured_content or {}
            assert parked["status"] == "parked", parked
            [approval] = parked["approvals"]
            assert approval["action"] == "kill_process"
            assert approval["arguments"]["pid"] == server.pid and "CLOSE_WAIT" in approval["why"]
            assert len(declined) == 1 and str(server.pid) in declined[0]
            assert server.poll() is None  # declined: nothing was done
            Approvals(runtime).reject(approval["id"], by="on-call", reason="restart it tonight")
            done = (await client.call_tool("run_status", {"run_id": parked["run_id"]})).structured_content
        assert server.poll() is None
    assert done is not None and done["status"] == "completed", done
    report = done["report"]
    assert report["status"] == "diagnosed" and report["run_id"] == parked["run_id"]
    assert report["cause"]["kind"] == "close_wait_leak" and report["cause"]["pid"] == server.pid
    assert report["remediation"]["approval"] == "rejected"
    assert report["remediation"]["reason"] == "restart it tonight" and not report["remediation"]["executed"]
    assert done["output"] == report["summary"]


async def test_a_bad_request_is_a_tool_error() -> None:
    runtime = Runtime(MemoryJournal())
    async with Client(serve(runtime)) as client:
        bad = await client.call_tool("ops_diagnose", {"symptom": "", "pid": -3})
    assert bad.is_error and runtime.list_runs() == []
