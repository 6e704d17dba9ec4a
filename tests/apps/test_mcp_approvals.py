"""Approvals of what corral's MCP server exposes, over the SDK's in-process transport: a run function that
asks with ``request_approval``, an agent with an in-process approver, and a bad ``run_status`` id."""

from __future__ import annotations

from typing import Any

import mcp_types
import pytest
from mcp import Client

from corral.agents import Agent
from corral.apps.mcp_server import Exposed, ServerConfig, build_server
from corral.durable import MemoryJournal, RunContext, Runtime
from corral.guards import ApprovalPolicy, Approvals, approve_all, request_approval
from corral.models import ScriptedModel
from corral.tools import tool

pytestmark = pytest.mark.timeout(60)
deployed: list[str] = []


async def deploy(ctx: RunContext, version: str) -> str:
    """Deploy a version, with a person's yes."""
    decision = await request_approval(ctx, "deploy", {"version": version}, policy=ApprovalPolicy())
    if not decision.approved:
        return f"not deployed: {decision.reason}"
    return await ctx.step("deploy", lambda: deployed.append(version) or f"deployed {version}")


def exposing(*entries: Exposed) -> dict[str, Exposed]:
    return {e.name: e for e in entries}


DEPLOY = Exposed(name="deploy", description="Deploy a version.", kind="run", target=deploy)


async def test_a_run_function_parks_and_run_status_finishes_it() -> None:
    deployed.clear()
    runtime = Runtime(MemoryJournal())
    server = build_server(ServerConfig(sandbox_tools=False), runtime=runtime, expose=exposing(DEPLOY))
    async with Client(server) as client:  # declares no elicitation
        parked = (await client.call_tool("deploy", {"version": "2.0"})).structured_content or {}
        assert parked["status"] == "parked" and deployed == []
        [approval] = parked["approvals"]
        assert (approval["action"], approval["arguments"]) == ("deploy", {"version": "2.0"})
        Approvals(runtime).reject(approval["id"], by="ops", reason="freeze")
        done = (await client.call_tool("run_status", {"run_id": parked["run_id"]})).structured_content
    assert done is not None and done["output"] == "not deployed: freeze"
    assert deployed == []


async def test_a_run_function_asks_a_client_that_can_elicit() -> None:
    deployed.clear()
    runtime = Runtime(MemoryJournal())
    server = build_server(ServerConfig(sandbox_tools=False), runtime=runtime, expose=exposing(DEPLOY))
    asked: list[str] = []

    async def approve(context: Any, params: mcp_types.ElicitRequestParams) -> mcp_types.ElicitResult:
        asked.append(params.message)
        return mcp_types.ElicitResult(action="accept", content={"approve": True, "reason": "go"})

    async with Client(server, elicitation_callback=approve) as client:
        done = (await client.call_tool("deploy", {"version": "2.1"})).structured_content
    assert done is not None and (done["status"], done["output"]) == ("completed", "deployed 2.1")
    assert deployed == ["2.1"] and len(asked) == 1 and "2.1" in asked[0]


async def test_an_agent_with_an_in_process_approver_keeps_it() -> None:
    ran: list[str] = []

    @tool(needs_approval=True)
    def launch(target: str) -> str:
        """Launch something."""
        ran.append(target)
        return f"launched {target}"

    agent = Agent(
        ScriptedModel([("launch", {"target": "kite"}), "Done."]), tools=[launch], approver=approve_all
    )
    entry = Exposed(name="kites", description="Launch kites.", kind="agent", target=agent)
    asked: list[str] = []

    async def refuse(context: Any, params: mcp_types.ElicitRequestParams) -> mcp_types.ElicitResult:
        asked.append(params.message)
        return mcp_types.ElicitResult(action="accept", content={"approve": False, "reason": "no"})

    server = build_server(
        ServerConfig(sandbox_tools=False), runtime=Runtime(MemoryJournal()), expose=exposing(entry)
    )
    async with Client(server, elicitation_callback=refuse) as client:
        done = (await client.call_tool("kites", {"prompt": "Launch."})).structured_content
    assert done is not None and done["output"] == "Done."
    assert ran == ["kite"] and asked == []


async def test_run_status_refuses_ids_it_did_not_start() -> None:
    runtime = Runtime(MemoryJournal())
    server = build_server(ServerConfig(sandbox_tools=False), runtime=runtime, expose=exposing(DEPLOY))
    other = await runtime.run(deploy_free, run_id="mcp-deploy-0123456789abcdef")  # an id of the right shape
    assert other == "free"
    async with Client(server) as client:
        for run_id in (
            "someone-elses-run",
            "mcp-nope-0123456789abcdef",
            "mcp-deploy-fedcba9876543210",  # no such run
            "mcp-deploy-0123456789abcdef",  # a run of another function
        ):
            result = await client.call_tool("run_status", {"run_id": run_id})
            assert result.is_error, run_id
        names = {t.name for t in (await client.list_tools()).tools}
    assert names == {"deploy", "run_status"}


async def deploy_free(ctx: RunContext) -> str:
    return "free"
