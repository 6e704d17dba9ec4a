"""A workflow run in its own process, for the crash tests: ``python _crash_workflow.py JOURNAL WORKDIR``.

The workflow has one node of each kind: ``fetch`` (plain: two steps), ``summarise`` (an agent node: a model
call, a tool call, a model call) and ``fan`` (a parallel node: three branches, each a model call and a
step). Every call is appended to WORKDIR/calls.log, so the test counts them across processes. While
WORKDIR/resume does not exist, the call named in WORKDIR/hang_in writes WORKDIR/inside and sleeps, to be
SIGKILLed there. Prints the result as one JSON line.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field

from corral.agents import Agent, End, Workflow
from corral.durable import RunContext, Runtime, SqliteJournal
from corral.models import (
    JournaledModel,
    Message,
    ScriptedModel,
    ToolDefinition,
    ToolResultMessage,
    UserMessage,
)
from corral.tools import tool

JOURNAL, WORKDIR = sys.argv[1], Path(sys.argv[2])


def log(line: str) -> None:
    with open(WORKDIR / "calls.log", "a", encoding="utf-8") as f:
        f.write(line + "\n")


def hangs(name: str) -> bool:
    target = WORKDIR / "hang_in"
    return not (WORKDIR / "resume").exists() and target.exists() and target.read_text().strip() == name


def hang_here(name: str) -> None:
    if hangs(name):
        (WORKDIR / "inside").write_text(name)
        time.sleep(120)


@tool
def lookup(topic: str) -> str:
    """Facts about a topic."""
    log("tool:lookup")
    hang_here("tool:lookup")
    return f"{topic} is durable"


def script(messages: Sequence[Message], tools: Sequence[ToolDefinition]) -> object:
    prompt = next(m.content for m in messages if isinstance(m, UserMessage)) or ""
    if prompt.startswith("branch"):
        log(f"model:{prompt}")
        return f"{prompt} done"
    done = sum(isinstance(m, ToolResultMessage) for m in messages)
    log(f"model:agent:{done}")
    return ("lookup", {"topic": "corral"}) if done == 0 else "corral is durable."


class State(BaseModel):
    fetched: list[str] = Field(default_factory=list)
    summary: str = ""
    branches: list[str] = Field(default_factory=list)


model = ScriptedModel(script)
wf = Workflow("crash-workflow", state=State)


def fetch_part(part: str) -> str:
    log(f"step:{part}")
    hang_here(f"step:{part}")
    return part


@wf.node(next=["summarise"])
async def fetch(ctx: RunContext, state: State) -> Any:
    state.fetched.append(await ctx.step("fetch-a", fetch_part, "a"))
    state.fetched.append(await ctx.step("fetch-b", fetch_part, "b"))
    return "summarise"


def summarised(state: State, result: Any) -> Any:
    state.summary = result.output
    return "fan"


wf.agent(
    "summarise",
    Agent(model, tools=[lookup]),
    prompt=lambda s: "Summarise corral.",
    then=summarised,
    next=["fan"],
)


async def branch(ctx: RunContext, state: State, index: int) -> str:
    reply = await JournaledModel(model, ctx).request([UserMessage(content=f"branch {index}")])

    async def work() -> str:
        log(f"step:branch{index}")
        if index == 1 and hangs("branch"):
            # Die only once the other branches have finished their work.
            while not all((WORKDIR / f"done{i}").exists() for i in (0, 2)):  # noqa: ASYNC110 - a test probe
                await asyncio.sleep(0.02)
            hang_here("branch")
        return reply.message.content or ""

    out = await ctx.step("work", work)
    (WORKDIR / f"done{index}").touch()
    return out


def gathered(state: State, results: list[str]) -> Any:
    state.branches = results
    return End(len(results))


wf.parallel("fan", branch, plan=lambda s: [0, 1, 2], combine=gathered, next=[End], max_branches=3)

result = wf.run_sync(State(), runtime=Runtime(SqliteJournal(JOURNAL)), run_id="crash")
print(json.dumps({"output": result.output, "state": result.state.model_dump(), "path": result.path}))
