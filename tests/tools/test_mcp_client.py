"""MCP servers' tools in corral, against real servers from PyPI and a real misbehaving one of our own.

No mocks of the protocol: each server is a child process speaking MCP over stdio (``mcp-server-time``,
``mcp-server-git`` over a temporary repository, ``mcp-server-fetch`` pointed at a local HTTP server, and
``mcp_servers/probe.py`` built on the official SDK, whose tools hang, crash or corrupt the stream on purpose).
"""

from __future__ import annotations

import asyncio
import http.server
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from corral.agents import Agent
from corral.durable import MemoryJournal, RunContext, Runtime
from corral.guards import Guards, approve_all, deny_all
from corral.models import Message, ScriptedModel, ToolDefinition, ToolResultMessage
from corral.tools import (
    HttpServer,
    MCPToolset,
    StdioServer,
    ToolArgumentsError,
    ToolRaisedError,
    ToolReplyError,
    ToolTimeoutError,
    ToolUnavailableError,
    parse_server_spec,
    servers_from_config,
    toolsets_from_config,
)

PY = sys.executable
PROBE = Path(__file__).with_name("mcp_servers") / "probe.py"

pytestmark = pytest.mark.timeout(120)


def probe(workdir: Path, **options: Any) -> MCPToolset:
    return MCPToolset(StdioServer(PY, (str(PROBE), str(workdir))), name="probe", **options)


def calls(workdir: Path) -> list[str]:
    path = workdir / "calls.log"
    return path.read_text().splitlines() if path.exists() else []


def results(messages: Sequence[Message]) -> list[str]:
    return [m.content for m in messages if isinstance(m, ToolResultMessage)]


# ---- specs ---------------------------------------------------------------------------------------------


def test_specs_from_strings_and_desktop_config() -> None:
    assert parse_server_spec("uvx mcp-server-git --repository /tmp/r") == StdioServer(
        "uvx", ("mcp-server-git", "--repository", "/tmp/r")
    )
    http = parse_server_spec("http://127.0.0.1:9/mcp", headers={"Authorization": "Bearer s3cret"})
    assert isinstance(http, HttpServer) and "s3cret" not in repr(http)
    config = {
        "mcpServers": {
            "time": {"command": "mcp-server-time", "args": ["--local-timezone", "UTC"]},
            "corral": {"url": "http://127.0.0.1:8765/mcp", "headers": {"Authorization": "Bearer t"}},
        }
    }
    servers = servers_from_config(config)
    assert servers["time"] == StdioServer("mcp-server-time", ("--local-timezone", "UTC"))
    assert isinstance(servers["corral"], HttpServer)
    assert [t.prefix for t in toolsets_from_config(config)] == ["time", "corral"]
    with pytest.raises(Exception, match="mcpServers"):
        servers_from_config({"nothing": 1})


# ---- real servers from PyPI ----------------------------------------------------------------------------


async def test_time_server_tools_with_prefix_and_filter() -> None:
    async with MCPToolset(
        f"{PY} -m mcp_server_time --local-timezone UTC", prefix="time", include=["get_current_time"]
    ) as toolset:
        tools = await toolset.tools()
        assert [t.name for t in tools] == ["time_get_current_time"]
        (now,) = tools
        assert "timezone" in now.definition.parameters["properties"]
        assert not now.side_effects  # the server annotates it read-only
        text = await now.call({"timezone": "UTC"})
        assert '"timezone": "UTC"' in text
        with pytest.raises(ToolArgumentsError, match="timezone"):
            await now.call({})
        with pytest.raises(ToolRaisedError, match=r"reported an error.*Nowhere/Atlantis"):
            await now.call({"timezone": "Nowhere/Atlantis"})


async def test_time_server_in_an_agent_run_is_journaled() -> None:
    toolset = MCPToolset(f"{PY} -m mcp_server_time --local-timezone UTC", prefix="time")
    model = ScriptedModel([("time_get_current_time", {"timezone": "Europe/Oslo"}), "Done."])
    runtime = Runtime(MemoryJournal())

    async def flow(ctx: RunContext, question: str) -> str:
        agent = Agent(model, tools=await toolset.tools(ctx))
        result = await agent.run(question, ctx=ctx)
        assert "Europe/Oslo" in results(result.messages)[0]
        return str(result.output)

    try:
        assert await runtime.run(flow, "What time is it in Oslo?", run_id="t1") == "Done."
    finally:
        await toolset.aclose()
    names = [s.name for s in runtime.steps("t1")]
    assert names[0] == "mcp:tools:mcp_server_time"
    assert "tool:time_get_current_time" in names


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    path = tmp_path / "repo"
    path.mkdir()
    git = ["git", "-C", str(path), "-c", "user.name=t", "-c", "user.email=t@example.invalid"]
    subprocess.run(["git", "init", "-q", str(path)], check=True)
    (path / "a.txt").write_text("one\n")
    subprocess.run([*git, "add", "a.txt"], check=True)
    subprocess.run([*git, "commit", "-qm", "first commit"], check=True)
    (path / "a.txt").write_text("two\n")
    return path


def git_log(repo: Path) -> list[str]:
    out = subprocess.run(["git", "-C", str(repo), "log", "--format=%s"], capture_output=True, text=True)
    return out.stdout.splitlines()


async def test_git_server_reads_and_approval_guards_its_writes(repo: Path) -> None:
    toolset = MCPToolset(
        f"{PY} -m mcp_server_git --repository {repo}",
        prefix="git",
        include=["git_status", "git_diff_unstaged", "git_add", "git_commit"],
        needs_approval=["git_add", "git_commit"],
    )
    script = [
        ("git_git_status", {"repo_path": str(repo)}),
        ("git_git_diff_unstaged", {"repo_path": str(repo)}),
        ("git_git_add", {"repo_path": str(repo), "files": ["a.txt"]}),
        ("git_git_commit", {"repo_path": str(repo), "message": "sneaky"}),
        "I could not commit: the calls were refused.",
    ]
    try:
        tools = await toolset.tools()
        assert sorted(t.name for t in tools) == [
            "git_git_add",
            "git_git_commit",
            "git_git_diff_unstaged",
            "git_git_status",
        ]
        assert {t.name for t in tools if t.needs_approval} == {"git_git_add", "git_git_commit"}
        agent = Agent(ScriptedModel(script), tools=tools, approver=deny_all)
        result = await agent.run("Commit the change.", runtime=Runtime(MemoryJournal()))
    finally:
        await toolset.aclose()
    status, diff, add, commit = results(result.messages)
    assert "a.txt" in status and "+two" in diff
    assert "not approved" in add and "not approved" in commit
    assert git_log(repo) == ["first commit"]  # nothing was written


@pytest.fixture
def local_site() -> Iterator[str]:
    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = (
                b"<html><head><title>Corral notes</title></head><body><h1>Herd report</h1>"
                b"<p>Forty-two goats are in the corral.</p></body></html>"
            )
            if self.path == "/robots.txt":
                body = b"User-agent: *\nAllow: /\n"
            self.send_response(200)
            ctype = "text/plain" if self.path == "/robots.txt" else "text/html; charset=utf-8"
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


async def test_fetch_server_against_a_local_site(local_site: str) -> None:
    async with MCPToolset(
        f"{PY} -m mcp_server_fetch --ignore-robots-txt --allow-private-ips", prefix="web"
    ) as toolset:
        tools = {t.name: t for t in await toolset.tools()}
        text = await tools["web_fetch"].call({"url": f"{local_site}/notes"})
    assert "Forty-two goats" in text


# ---- failures: the server's calls fail, never the run --------------------------------------------------


async def test_killed_server_fails_the_call_then_restarts(tmp_path: Path) -> None:
    async with probe(tmp_path, timeout=30) as toolset:
        tools = {t.name: t for t in await toolset.tools()}
        first_pid = int(await tools["pid"].call({}))
        call = asyncio.ensure_future(tools["hang"].call({}))
        while not (tmp_path / "inside").exists():  # noqa: ASYNC110 - another process writes it
            await asyncio.sleep(0.02)
        os.kill(first_pid, signal.SIGKILL)
        started = time.monotonic()
        with pytest.raises(ToolUnavailableError, match="failed during the call of 'hang'"):
            await call
        assert time.monotonic() - started < 5  # at once, not at the timeout
        second_pid = int(await tools["pid"].call({}))  # restarted on the next call
        assert second_pid != first_pid
        with pytest.raises(ToolUnavailableError, match="crashing on purpose"):  # its stderr is quoted
            await tools["crash"].call({})
        assert await tools["tick"].call({"label": "after"}) == "ticked after"


async def test_a_dying_server_does_not_fail_the_agent_run(tmp_path: Path) -> None:
    toolset = probe(tmp_path)
    model = ScriptedModel([("crash", {}), ("tick", {"label": "again"}), "Recovered."])
    try:
        agent = Agent(model, tools=await toolset.tools())
        result = await agent.run("Go.", runtime=Runtime(MemoryJournal()))
    finally:
        await toolset.aclose()
    assert result.ok and result.output == "Recovered."
    crashed, ticked = results(result.messages)
    assert "failed during the call of 'crash'" in crashed and ticked == "ticked again"


async def test_a_server_that_keeps_dying_stops_the_run_by_policy(tmp_path: Path) -> None:
    toolset = probe(tmp_path)
    model = ScriptedModel([("crash", {}), ("crash", {}), ("crash", {}), "Never reached."])
    try:
        agent = Agent(model, tools=await toolset.tools(), guards=Guards(breaker_threshold=2))
        result = await agent.run("Go.", runtime=Runtime(MemoryJournal()))
    finally:
        await toolset.aclose()
    assert result.status == "stopped" and result.reason == "circuit_open"
    assert result.tool_calls == 2


async def test_a_hung_call_times_out_and_trips_the_breaker(tmp_path: Path) -> None:
    async with probe(tmp_path, timeout=0.5, breaker_threshold=2, breaker_reset_s=60) as toolset:
        tools = {t.name: t for t in await toolset.tools()}
        for _ in range(2):
            with pytest.raises(ToolTimeoutError, match=r"0\.5 s"):
                await tools["hang"].call({"seconds": 30})
        assert toolset.breaker.state == "open"
        started = time.monotonic()
        with pytest.raises(ToolUnavailableError, match="fail fast"):
            await tools["tick"].call({"label": "x"})
        assert time.monotonic() - started < 0.1
    assert "tick x" not in calls(tmp_path)


async def test_a_server_that_cannot_start_is_a_clear_error() -> None:
    toolset = MCPToolset(
        "/nonexistent/mcp-server --flag", name="ghost", connect_attempts=2, breaker_threshold=1
    )
    with pytest.raises(ToolUnavailableError, match=r"'ghost'.*unavailable.*Tried 2 time"):
        await toolset.tools()
    assert toolset.breaker.state == "open"
    await toolset.aclose()


# ---- hostile servers -----------------------------------------------------------------------------------


async def test_oversized_reply_is_cut(tmp_path: Path) -> None:
    async with probe(tmp_path, max_result_chars=1_000) as toolset:
        tools = {t.name: t for t in await toolset.tools()}
        text = await tools["big"].call({"chars": 3_000_000})
    assert len(text) < 1_100 and text.endswith("[cut: 3000000 characters in all; ask for less]")


async def test_malformed_and_garbage_replies_are_rejected_clearly(tmp_path: Path) -> None:
    async with probe(tmp_path, timeout=20) as toolset:
        tools = {t.name: t for t in await toolset.tools()}
        with pytest.raises(ToolReplyError, match=r"malformed reply to 'malformed'.*content"):
            await tools["malformed"].call({})
        started = time.monotonic()
        with pytest.raises(ToolReplyError, match=r"not a JSON-RPC message.*this is not json"):
            await tools["garbage"].call({})
        assert time.monotonic() - started < 2.5  # at once, not when the server answers 3 s later
        assert await tools["tick"].call({"label": "fine"}) == "ticked fine"


def injected_model(messages: Sequence[Message], tools: Sequence[ToolDefinition]) -> object:
    """A model that does whatever the last tool result tells it to."""
    seen = {t.name for t in tools}
    assert "exfiltrate" not in seen
    done = len(results(messages))
    plan: list[object] = [
        ("inject", {}),
        ("drop_everything", {}),  # the injection says: without approval
        ("add_tool", {}),  # the server grows a tool...
        ("exfiltrate", {"secret": "hunter2"}),  # ...which the agent must not get
        "Finished.",
    ]
    return plan[done]


async def test_injected_instructions_cannot_widen_tools_or_skip_approval(tmp_path: Path) -> None:
    toolset = probe(tmp_path, needs_approval=["drop_everything"])
    try:
        agent = Agent(ScriptedModel(injected_model), tools=await toolset.tools(), approver=deny_all)
        result = await agent.run("Search.", runtime=Runtime(MemoryJournal()))
    finally:
        await toolset.aclose()
    injected, dropped, added, exfiltrated = results(result.messages)
    assert "IGNORE PREVIOUS INSTRUCTIONS" in injected
    assert "not approved" in dropped
    assert added == "added"
    assert "There is no tool named 'exfiltrate'" in exfiltrated
    assert calls(tmp_path) == ["inject", "add_tool"]  # neither drop_everything nor exfiltrate ran


async def test_approved_calls_run(tmp_path: Path) -> None:
    toolset = probe(tmp_path, needs_approval=True)
    try:
        agent = Agent(
            ScriptedModel([("tick", {"label": "ok"}), "Done."]),
            tools=await toolset.tools(),
            approver=approve_all,
            guards=Guards(max_steps=5),
        )
        result = await agent.run("Tick.", runtime=Runtime(MemoryJournal()))
    finally:
        await toolset.aclose()
    assert result.ok and calls(tmp_path) == ["tick ok"]


async def test_workflow_node_calls_are_durable_steps(tmp_path: Path) -> None:
    toolset = probe(tmp_path)
    runtime = Runtime(MemoryJournal())

    async def node(ctx: RunContext) -> list[str]:
        await toolset.tools(ctx)
        good = await toolset.call("tick", {"label": "node"}, ctx=ctx)
        bad = await toolset.call("tick", {"label": 5}, ctx=ctx)
        return [good.content, str(bad.error_kind)]

    try:
        assert await runtime.run(node, run_id="n1") == ["ticked node", "arguments"]
        assert await runtime.run(node, run_id="n1") == ["ticked node", "arguments"]  # replayed
    finally:
        await toolset.aclose()
    assert calls(tmp_path) == ["tick node"]


# ---- crash and resume ----------------------------------------------------------------------------------


@pytest.mark.slow
def test_resumed_run_repeats_no_mcp_call_and_keeps_its_tools(tmp_path: Path) -> None:
    script = Path(__file__).with_name("_mcp_crash_agent.py")
    command = [sys.executable, str(script), str(tmp_path / "journal.sqlite"), str(tmp_path)]
    first = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while not (tmp_path / "inside").exists():
        assert first.poll() is None, first.communicate()
        assert time.monotonic() < deadline, "the agent never reached the hanging call"
        time.sleep(0.02)
    os.kill(first.pid, signal.SIGKILL)  # the agent dies in the middle of an MCP call
    first.communicate(timeout=10)
    (tmp_path / "resume").touch()
    # The server now offers one more tool; the resumed run must keep the tools it journaled.
    env = {**os.environ, "PROBE_EXTRA_TOOL": "1"}
    second = subprocess.run(command, capture_output=True, text=True, timeout=120, env=env)
    assert second.returncode == 0, second.stderr
    assert '"output": "Both done."' in second.stdout
    assert calls(tmp_path) == ["tick once", "hang", "hang"]  # tick not repeated; the cut call is redone
    offered = (tmp_path / "offered.log").read_text().splitlines()
    assert offered and all("extra" not in line.split() for line in offered)
