"""The ``corral`` command. Each command group lives in its own module and registers itself here."""

from __future__ import annotations

import typer

from corral import __version__
from corral.apps.cli import (
    _agents,
    _approvals,
    _ask,
    _chat,
    _graph,
    _lessons,
    _mcp,
    _models,
    _ops,
    _resident,
    _runs,
    _sandbox,
    _serve,
)

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


for _module in (
    _agents,
    _approvals,
    _ask,
    _chat,
    _graph,
    _lessons,
    _mcp,
    _models,
    _ops,
    _resident,
    _runs,
    _sandbox,
    _serve,
):
    _module.register(app)


def main() -> None:
    app()
