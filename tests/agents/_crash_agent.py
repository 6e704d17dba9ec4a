"""An agent run in its own process, for the crash tests: ``python _crash_agent.py MODE JOURNAL WORKDIR``.

Every call of a tool or the model is appended to a log in WORKDIR, so the test can count them across
processes. While WORKDIR/resume does not exist, the tool named in WORKDIR/hang_in (if any) writes
WORKDIR/inside and sleeps, to be SIGKILLed there. Prints the result as one JSON line.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from corral.agents import Agent
from corral.durable import Runtime, SqliteJournal
from corral.guards import Guards
from corral.models import (
    AssistantMessage,
    Message,
    ModelResponse,
    ScriptedModel,
    ToolCall,
    ToolDefinition,
    ToolResultMessage,
    Usage,
)
from corral.tools import tool

MODE, JOURNAL, WORKDIR = sys.argv[1], sys.argv[2], Path(sys.argv[3])


def log(name: str, line: str) -> None:
    with open(WORKDIR / f"{name}.log", "a", encoding="utf-8") as f:
        f.write(line + "\n")


def maybe_hang(tool_name: str, turn: int) -> None:
    if (WORKDIR / "resume").exists():
        return
    target = WORKDIR / "hang_in"
    if target.exists() and target.read_text().strip() == f"{tool_name}:{turn}":
        (WORKDIR / "inside").write_text(tool_name)
        time.sleep(120)


@tool
def lookup(city: str, turn: int = 0) -> str:
    """The weather in a city."""
    log("lookup", city)
    maybe_hang("lookup", turn)
    return f"{city}: 12 C"


@tool(side_effects=True)
def send(to: str, text: str, idempotency_key: str) -> str:
    """Send a message."""
    log("send", idempotency_key)
    maybe_hang("send", 2)
    return "sent"


def weather_script(messages: Sequence[Message], tools: Sequence[ToolDefinition]) -> object:
    done = sum(isinstance(m, ToolResultMessage) for m in messages)
    log("model", str(done))
    if done == 0:
        return ("lookup", {"city": "Oslo", "turn": 1})
    if done == 1:
        return ("send", {"to": "ops", "text": "Oslo: 12 C"})
    return "Sent the weather in Oslo to ops."


def budget_script(messages: Sequence[Message], tools: Sequence[ToolDefinition]) -> object:
    done = sum(isinstance(m, ToolResultMessage) for m in messages)
    log("model", str(done))
    call = ToolCall(id=f"c{done}", name="lookup", arguments={"city": f"city{done}", "turn": done + 1})
    return ModelResponse(
        message=AssistantMessage(tool_calls=[call]),
        usage=Usage(requests=1, input_tokens=60, output_tokens=40),
    )


if MODE == "weather":
    agent = Agent(ScriptedModel(weather_script), tools=[lookup, send])
else:
    agent = Agent(ScriptedModel(budget_script), tools=[lookup], guards=Guards(max_tokens=500))
result = agent.run_sync(
    "Send the weather in Oslo to ops.", runtime=Runtime(SqliteJournal(JOURNAL)), run_id=MODE
)
print(
    json.dumps(
        {
            "output": result.output,
            "reason": result.reason,
            "turns": result.turns,
            "tokens": result.usage.total_tokens,
            "tool_calls": result.tool_calls,
        }
    )
)
