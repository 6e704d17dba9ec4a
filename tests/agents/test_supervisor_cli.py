"""`corral agents tree` shows the stored supervision tree: states, restarts, mailbox depths, exit reasons."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from typer.testing import CliRunner

from corral.agents import Child, Message, ProcessContext, Supervisor, System
from corral.apps.cli import app
from corral.durable import SqliteJournal


async def slow(ctx: ProcessContext, state: Any, msg: Message) -> Any:
    return state


async def test_tree_shows_states_restarts_and_mailbox_depth(tmp_path: Path) -> None:
    path = tmp_path / "j.db"
    system = System(SqliteJournal(path), {"slow": slow})
    tree = Supervisor("root", [Child("a", "slow"), Supervisor("team", [Child("b", "slow")])], intensity=5)
    await system.start(tree)
    system.kill("b", "provider outage")
    await system.idle()
    await system.close()
    # Queue messages for a that nobody handles (the system is closed): the depth shows in the tree.
    again = System(SqliteJournal(path), {"slow": slow})
    await again.start(tree)
    for task in [p.task for p in again._procs.values() if p.task]:
        task.cancel()
    again._procs["a"].status = "stopped"  # keep a from draining while the messages are committed
    for i in range(3):
        await again.send("a", i)
    await again.close()

    result = CliRunner().invoke(app, ["agents", "tree", "--journal", str(path), "--json"])
    assert result.exit_code == 0, result.output
    roots = json.loads(result.output)
    assert [r["name"] for r in roots] == ["root"]
    team = roots[0]["children"][1]
    assert team["children"][0] | {"children": []} == {
        "name": "b",
        "kind": "worker",
        "status": "running",
        "restarts": 1,
        "mailbox": 0,
        "reason": "provider outage",
        "children": [],
    }
    assert roots[0]["children"][0]["mailbox"] == 3

    text = CliRunner().invoke(app, ["agents", "tree", "--journal", str(path)])
    assert text.exit_code == 0
    assert "provider outage" in text.output and "restarts 1" in text.output


def test_tree_of_a_journal_without_agents(tmp_path: Path) -> None:
    SqliteJournal(tmp_path / "j.db").close()
    result = CliRunner().invoke(app, ["agents", "tree", "--journal", str(tmp_path / "j.db")])
    assert result.exit_code == 0 and "no supervised agents" in result.output
