"""What the MCP server tests expose: an agent whose one tool needs approval, and a durable run function.

``corral mcp serve --expose _mcp_exposed`` imports this module (from the current directory), which exposes
both itself. ``launch`` appends to $MCP_EXPOSED_LOG so a test can see whether it really ran.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

from corral.agents import Agent
from corral.apps.mcp_server import expose
from corral.durable import RunContext
from corral.models import Message, ScriptedModel, ToolDefinition, ToolResultMessage
from corral.tools import tool


@tool(needs_approval=True)
def launch(target: str) -> str:
    """Launch something (needs a person's yes)."""
    with open(os.environ["MCP_EXPOSED_LOG"], "a", encoding="utf-8") as f:
        f.write(f"launch {target}\n")
    return f"launched {target}"


def script(messages: Sequence[Message], tools: Sequence[ToolDefinition]) -> object:
    done = [m for m in messages if isinstance(m, ToolResultMessage)]
    if not done:
        return ("launch", {"target": "rocket"})
    return f"Result: {done[-1].content}"


launcher = Agent(
    ScriptedModel(script),
    tools=[launch],
    name="launcher",
    instructions="Launches things, with a person's approval.",
    # No approver: a call of `launch` parks the run until its approval is decided (through MCP or
    # `corral approvals`).
)
expose(launcher)


async def shout(ctx: RunContext, text: str, times: int = 1) -> str:
    """Repeat a text, louder."""
    words = [text.upper()] * times
    return await ctx.step("shout", lambda: " ".join(words))


expose(shout)
