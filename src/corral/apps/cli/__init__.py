"""The ``corral`` command. Each command group lives in its own module and registers itself here."""

from __future__ import annotations

import typer

from corral import __version__
from corral.apps.cli import _agents, _approvals, _ask, _graph, _models, _runs, _sandbox

app = typer.Typer(
    name="corral",
    help="Durable, sandboxed AI agents — and a data agent that answers questions over your data.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
)


@app.callback(invoke_without_command=True)
def _root(
    version: bool = typer.Option(False, "--version", help="Print the version and exit."),
) -> None:
    if version:
        typer.echo(f"corral {__version__}")
        raise typer.Exit()


for _module in (_runs, _models, _sandbox, _ask, _graph):
    _module.register(app)
_approvals.register(app)
_agents.register(app)


def main() -> None:
    app()
