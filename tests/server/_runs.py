"""Runs the server's tests look at: an agent parked on an approval, a workflow that loops once, and an
agent whose model and tool answer with markup. Defined at import, so a worker in this process can resume
them by name."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from pydantic import BaseModel, Field

from corral.agents import Agent, End, Workflow
from corral.durable import RunSuspended, Runtime
from corral.guards import ApprovalPolicy, sql_writes
from corral.models import Message, ScriptedModel, ToolResultMessage
from corral.tools import tool

HOSTILE = '<script>window.__pwned = 1</script><img src=x onerror="window.__pwned = 2">'

users = ["ada", "bob"]


@tool
def run_sql(sql: str) -> str:
    """Run SQL on the users table."""
    if sql.lstrip().lower().startswith("select"):
        return json.dumps(users)
    return "1 row deleted"


def _results(messages: Sequence[Message]) -> int:
    return sum(isinstance(m, ToolResultMessage) for m in messages)


def remover() -> Agent[str]:
    """Reads, then asks to delete (a write: it needs approval), then answers. Scripted by the
    conversation, so a resumed run gets the right reply whichever model object answers it."""
    replies: list[Any] = [
        ("run_sql", {"sql": "SELECT name FROM users"}),
        ("run_sql", {"sql": "DELETE FROM users WHERE name = 'bob'"}),
        "Bob is removed.",
    ]
    model = ScriptedModel(lambda messages, tools: replies[min(_results(messages), 2)])
    return Agent(
        model,
        tools=[run_sql],
        approvals=[ApprovalPolicy(tools="run_sql", ask=sql_writes(), timeout_s=24 * 3600)],
        name="remover",
    )


@tool
def echo(text: str) -> str:
    """Echo the text back."""
    return f"echoed: {text}"


def hostile() -> Agent[str]:
    model = ScriptedModel(
        lambda messages, tools: ("echo", {"text": HOSTILE}) if not _results(messages) else HOSTILE
    )
    return Agent(model, tools=[echo], name="hostile")


class Essay(BaseModel):
    topic: str
    drafts: list[str] = Field(default_factory=list)


essay = Workflow("essay", state=Essay)


@essay.node(next=["review"])
async def write(ctx: Any, state: Essay) -> Any:
    draft = await ctx.step("write", lambda: f"{state.topic}, take {len(state.drafts) + 1}")
    state.drafts.append(draft)
    return "review"


@essay.node(next=[write, End], max_visits=3)
async def review(ctx: Any, state: Essay) -> Any:
    return End(state.drafts[-1]) if len(state.drafts) == 2 else write


def park_remover(runtime: Runtime, run_id: str = "remove-bob") -> str:
    """Start the remover; it parks on the approval of its DELETE. Returns the run id."""
    try:
        remover().run_sync("Remove bob.", runtime=runtime, run_id=run_id)
    except RunSuspended:
        return run_id
    raise AssertionError("the remover did not park on its approval")
