"""A supervised team that answers a data question over two sources with the local model.

A coordinator splits the question: the store's customers are in ``examples/chinook/chinook.sqlite``, its
offices' staff in a second database (built here from ``OFFICES``). Two data-agent workers answer one part
each (SQL written by the model, run in the sandbox), a reviewer agent judges the combined answer, and the
coordinator replies to the caller. All four are processes with durable mailboxes under one supervisor: a
worker killed mid-question is restarted and resumes its question from the journal (the model calls it had
completed are replayed, not made again).

    python examples/team/team.py [JOURNAL]

``tests/agents/test_supervisor_team.py`` runs it and kills a worker in the middle of its question.
"""

from __future__ import annotations

import asyncio
import sqlite3
import sys
from pathlib import Path
from typing import Any

from corral.agents import Agent, Child, Message, ProcessContext, Supervisor, System
from corral.apps.data_agent import DataAgent, SandboxQueryRunner, open_source
from corral.durable import SqliteJournal
from corral.models import Model, resolve_model

HERE = Path(__file__).resolve().parent
CHINOOK = HERE.parent / "chinook" / "chinook.sqlite"
OFFICES = [("Calgary", 5), ("Edmonton", 2), ("Lethbridge", 1)]
QUESTION = "How many customers does the store have, and how many staff work in its offices?"
PARTS = {
    "customers": "How many customers are there?",
    "offices": "What is the total number of staff over all offices?",
}

MODEL: list[Model] = []


def model() -> Model:
    """One local model for the whole team (loading it is the slow part)."""
    if not MODEL:
        MODEL.append(resolve_model("local"))
    return MODEL[0]


def offices_db(directory: Path) -> Path:
    """The second source: a small SQLite database of offices and their staff."""
    path = directory / "offices.sqlite"
    if not path.exists():
        with sqlite3.connect(path) as conn:
            conn.execute("CREATE TABLE offices (city TEXT NOT NULL, staff INTEGER NOT NULL)")
            conn.executemany("INSERT INTO offices VALUES (?, ?)", OFFICES)
        conn.close()
    return path


async def worker(ctx: ProcessContext, state: Any, msg: Message) -> Any:
    """A data agent over one source (the path in its state): answers the calls it gets."""
    if msg.kind != "call":
        return state
    agent = DataAgent(model=model(), runner=SandboxQueryRunner(open_source(state["source"])), candidates=0)
    answer = await agent.ask(msg.body, ctx=ctx.run)
    ctx.reply(msg, {"status": answer.status, "answer": answer.answer, "rows": answer.rows, "sql": answer.sql})
    return {**state, "answered": state.get("answered", 0) + 1}


async def reviewer(ctx: ProcessContext, state: Any, msg: Message) -> Any:
    """An agent that judges whether the combined answer answers the question."""
    if msg.kind != "call":
        return state
    judge = Agent(
        model(),
        instructions=(
            "You review an answer to a data question. Reply with one line: 'OK' if the answer gives every "
            "number the question asks for, else 'PROBLEM: ' and what is missing."
        ),
    )
    result = await judge.run(f"Question: {msg.body['question']}\nAnswer: {msg.body['answer']}", ctx=ctx.run)
    ctx.reply(msg, result.output or f"no verdict ({result.reason})")
    return state


async def coordinator(ctx: ProcessContext, state: Any, msg: Message) -> Any:
    """Splits the question over the two workers, combines their parts, has the reviewer judge, replies."""
    state = dict(state or {})
    if msg.kind == "call":
        refs = {ctx.request(f"worker-{part}", question): part for part, question in PARTS.items()}
        return {"caller": msg.caller, "question": msg.body, "refs": refs, "parts": {}}
    if msg.kind != "reply":
        return state
    if msg.ref in state.get("refs", {}):
        state["parts"] = {**state["parts"], state["refs"][msg.ref]: msg.body}
        if len(state["parts"]) == len(PARTS):
            combined = "; ".join(f"{k}: {state['parts'][k]['answer']}" for k in PARTS)
            state["combined"] = combined
            state["review_ref"] = ctx.request("reviewer", {"question": state["question"], "answer": combined})
        return state
    if msg.ref == state.get("review_ref"):
        ctx.reply(state["caller"], {"answer": state["combined"], "parts": state["parts"], "review": msg.body})
        return {}
    return state


BEHAVIOURS = {"worker": worker, "reviewer": reviewer, "coordinator": coordinator}


def team(directory: Path) -> Supervisor:
    """The supervision tree: a worker that crashes is restarted alone (one_for_one)."""
    return Supervisor(
        "team",
        [
            Child("coordinator", "coordinator"),
            Child("worker-customers", "worker", {"source": str(CHINOOK)}),
            Child("worker-offices", "worker", {"source": str(offices_db(directory))}),
            Child("reviewer", "reviewer"),
        ],
        strategy="one_for_one",
        intensity=3,
        period=60,
    )


async def main(journal_path: Path) -> dict[str, Any]:
    system = System(SqliteJournal(journal_path), BEHAVIOURS)
    await system.start(team(journal_path.parent))
    try:
        result: dict[str, Any] = await system.call("coordinator", QUESTION, timeout=600)
    finally:
        await system.close()
    return result


if __name__ == "__main__":
    path = Path(sys.argv[1]) if len(sys.argv) > 1 else HERE / "team.db"
    print(asyncio.run(main(path)))
