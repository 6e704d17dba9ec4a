"""An exposed :class:`~corral.agents.Workflow` over the SDK's in-process client: its state model is the
tool's input schema, each call is a durable run that parks on an approval, and ``run_status`` finishes it."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import mcp_types
import pytest
from mcp import Client
from pydantic import BaseModel, Field

from corral import UsageError
from corral.agents import Agent, AgentResult, End, Workflow
from corral.apps.mcp_server import Exposed, ServerConfig, build_server, expose, exposed
from corral.durable import MemoryJournal, RunContext, Runtime
from corral.guards import ApprovalPolicy, Approvals, request_approval
from corral.models import Message, ScriptedModel, ToolDefinition

pytestmark = pytest.mark.timeout(60)
published: list[str] = []


class Release(BaseModel):
    """A release to write notes for and publish."""

    version: str = Field(min_length=1, description="the version to release")
    highlights: int = Field(2, ge=1, le=5)
    notes: str = ""


def write(messages: Sequence[Message], tools: Sequence[ToolDefinition]) -> object:
    return "Faster start-up; fewer crashes."


def keep_notes(state: Release, result: AgentResult[Any]) -> str:
    state.notes = str(result.output)
    return "publish"


release = Workflow("mcp-release", state=Release)
release.agent(
    "write_notes",
    Agent(ScriptedModel(write), name="writer", instructions="Write release notes."),
    prompt=lambda s: f"Notes for {s.version}, {s.highlights} highlights.",
    then=keep_notes,
    next=["publish"],
    start=True,
)


@release.node(next=[End])
async def publish(ctx: RunContext, state: Release) -> End:
    decision = await request_approval(ctx, "publish", {"version": state.version}, policy=ApprovalPolicy())
    if not decision.approved:
        return End(f"not published: {decision.reason}")
    done = await ctx.step("publish", lambda: published.append(state.version) or f"published {state.version}")
    return End(done)


RELEASE = Exposed(name="release", description="Release a version.", kind="workflow", target=release)


def serve(runtime: Runtime) -> Any:
    return build_server(ServerConfig(sandbox_tools=False), runtime=runtime, expose={"release": RELEASE})


async def test_the_state_model_is_the_input_schema() -> None:
    async with Client(serve(Runtime(MemoryJournal()))) as client:
        tools = {t.name: t for t in (await client.list_tools()).tools}
    assert set(tools) == {"release", "run_status"}
    schema = tools["release"].input_schema
    assert set(schema["properties"]) == {"version", "highlights", "notes"}
    assert schema["required"] == ["version"]
    assert schema["properties"]["highlights"]["maximum"] == 5
    assert set(tools["release"].output_schema["properties"]) >= {"status", "run_id", "output", "approvals"}


async def test_a_workflow_parks_on_its_approval_and_run_status_finishes_it() -> None:
    published.clear()
    runtime = Runtime(MemoryJournal())
    async with Client(serve(runtime)) as client:  # declares no elicitation
        parked = (await client.call_tool("release", {"version": "3.1"})).structured_content or {}
        assert parked["status"] == "parked" and published == []
        [approval] = parked["approvals"]
        assert (approval["action"], approval["arguments"]) == ("publish", {"version": "3.1"})
        Approvals(runtime).approve(approval["id"], by="ops")
        done = (await client.call_tool("run_status", {"run_id": parked["run_id"]})).structured_content
    assert done is not None and done["status"] == "completed"
    result = json.loads(done["output"])
    assert result["output"] == "published 3.1" and result["path"] == ["write_notes", "publish"]
    assert result["state"] == {"version": "3.1", "highlights": 2, "notes": "Faster start-up; fewer crashes."}
    assert published == ["3.1"]
    assert runtime.get_run(parked["run_id"]).function.endswith(":run_workflow")


async def test_a_workflow_asks_a_client_that_can_elicit_and_a_refusal_stands() -> None:
    published.clear()

    async def refuse(context: Any, params: mcp_types.ElicitRequestParams) -> mcp_types.ElicitResult:
        assert "publish" in params.message and "3.2" in params.message
        return mcp_types.ElicitResult(action="accept", content={"approve": False, "reason": "freeze"})

    async with Client(serve(Runtime(MemoryJournal())), elicitation_callback=refuse) as client:
        done = (await client.call_tool("release", {"version": "3.2", "highlights": 3})).structured_content
    assert done is not None and done["status"] == "completed"
    assert json.loads(done["output"])["output"] == "not published: freeze" and published == []


async def test_a_state_the_model_refuses_is_a_tool_error_and_starts_no_run() -> None:
    runtime = Runtime(MemoryJournal())
    async with Client(serve(runtime)) as client:
        bad = await client.call_tool("release", {"version": "", "highlights": 9})
    assert bad.is_error
    assert runtime.list_runs() == []


def test_expose_takes_a_workflow_by_name_and_refuses_a_broken_one(monkeypatch: pytest.MonkeyPatch) -> None:
    from corral.apps.mcp_server import _registry

    monkeypatch.setattr(_registry, "_EXPOSED", {})  # what this test exposes stays in this test
    entry = expose(release, name="ship")
    assert (entry.kind, exposed()["ship"].target) == ("workflow", release)
    broken = Workflow("mcp-broken", state=Release)

    @broken.node(next=["nowhere"])
    async def begin(ctx: RunContext, state: Release) -> str:
        return "nowhere"

    with pytest.raises(Exception, match="nowhere"):
        expose(broken)
    with pytest.raises(UsageError):
        expose(release, name="run_status")
