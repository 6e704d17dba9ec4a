"""`corral agents tree`: the supervision trees in a journal, with each process's state, restarts and
mailbox depth, as their systems last committed them (every handled message commits)."""

from __future__ import annotations

import json
from dataclasses import asdict

import typer
from rich.console import Console
from rich.markup import escape
from rich.tree import Tree

from corral.agents import ProcessInfo, stored_tree
from corral.apps.cli._journal import JournalOption, JsonOption, open_journal

agents_app = typer.Typer(help="Supervised agents: processes with durable mailboxes.", no_args_is_help=True)

_STYLE = {"running": "green", "stopped": "yellow", "exited": "red"}


def _label(node: ProcessInfo) -> str:
    style = _STYLE.get(node.status, "white")
    text = (
        f"[bold]{escape(node.name)}[/] [dim]{node.kind}[/] [{style}]{node.status}[/]"
        f"  restarts {node.restarts}  mailbox {node.mailbox}"
    )
    if (node.reason and node.status != "running") or node.restarts:
        text += f"  [dim]last exit: {escape(node.reason or '')}[/]"
    return text


def _add(parent: Tree, node: ProcessInfo) -> None:
    branch = parent.add(_label(node))
    for child in node.children:
        _add(branch, child)


@agents_app.command("tree")
def tree(
    journal: JournalOption = None,
    as_json: JsonOption = False,
) -> None:
    """Show the supervision trees: each agent's state, restarts and mailbox depth."""
    roots = stored_tree(open_journal(journal))
    if as_json:
        typer.echo(json.dumps([asdict(r) for r in roots], indent=2))
        return
    console = Console()
    if not roots:
        console.print("no supervised agents in this journal")
        return
    for root in roots:
        top = Tree(_label(root))
        for child in root.children:
            _add(top, child)
        console.print(top)


def register(app: typer.Typer) -> None:
    app.add_typer(agents_app, name="agents")
