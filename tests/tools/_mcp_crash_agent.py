"""An agent with an MCP server's tools, run in its own process for the crash test.

``python _mcp_crash_agent.py JOURNAL WORKDIR``: the run lists the probe server's tools (a journaled step),
calls ``tick`` and then ``hang``, where the test kills this process. Started again, it resumes the run.
Each model turn appends the tool names it was offered to WORKDIR/offered.log. Prints the result as JSON.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from corral.agents import Agent
from corral.durable import RunContext, Runtime, SqliteJournal
from corral.models import Message, ScriptedModel, ToolDefinition, ToolResultMessage
from corral.tools import MCPToolset, StdioServer

JOURNAL, WORKDIR = sys.argv[1], Path(sys.argv[2])
PROBE = Path(__file__).with_name("mcp_servers") / "probe.py"
# The test starts the resumed process with PROBE_EXTRA_TOOL=1: the server then offers one more tool.
extra = {"PROBE_EXTRA_TOOL": os.environ.get("PROBE_EXTRA_TOOL", "0")}
toolset = MCPToolset(
    StdioServer(sys.executable, (str(PROBE), str(WORKDIR)), env=extra), name="probe", timeout=600
)


def script(messages: Sequence[Message], tools: Sequence[ToolDefinition]) -> object:
    with open(WORKDIR / "offered.log", "a", encoding="utf-8") as f:
        f.write(" ".join(sorted(t.name for t in tools)) + "\n")
    done = sum(isinstance(m, ToolResultMessage) for m in messages)
    return [("tick", {"label": "once"}), ("hang", {"seconds": 600}), "Both done."][done]


async def flow(ctx: RunContext, prompt: str) -> dict[str, object]:
    agent = Agent(ScriptedModel(script), tools=await toolset.tools(ctx))
    result = await agent.run(prompt, ctx=ctx)
    await toolset.aclose()
    return {"output": result.output, "tool_calls": result.tool_calls}


print(json.dumps(Runtime(SqliteJournal(JOURNAL)).run_sync(flow, "Tick, then wait.", run_id="mcp-crash")))
