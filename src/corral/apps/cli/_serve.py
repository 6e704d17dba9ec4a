"""`corral serve`: the HTTP API and the web UI over the journal, bound to 127.0.0.1 unless told otherwise."""

from __future__ import annotations

import importlib
import os
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape


def _sources(values: list[str]) -> dict[str, str]:
    found: dict[str, str] = {}
    for value in values:
        name, sep, where = value.partition("=")
        if not sep or not name.strip() or not where.strip():
            raise typer.BadParameter(
                f"{value!r}: write NAME=PATH, e.g. chinook=examples/chinook/chinook.sqlite"
            )
        if "://" in where:
            found[name.strip()] = where.strip()
        else:  # a database file, or CSV/Parquet files separated by commas
            found[name.strip()] = ",".join(str(Path(p.strip()).resolve()) for p in where.split(","))
    return found


def serve(
    host: Annotated[str, typer.Option(help="Address to bind. Anything but loopback exposes the journal.")] = (
        "127.0.0.1"
    ),
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8321,
    journal: Annotated[
        Path | None,
        typer.Option("--journal", help="Journal file (default: the one the CLI uses).", show_default=False),
    ] = None,
    source: Annotated[
        list[str] | None,
        typer.Option(
            "--source",
            help="NAME=PATH the Ask page may query: a database file or URL, or CSV/Parquet files "
            "separated by commas; repeatable.",
        ),
    ] = None,
    model: Annotated[str | None, typer.Option(help="Model for Ask (default: the setting, or local).")] = None,
    worker: Annotated[
        bool,
        typer.Option(
            "--worker/--no-worker",
            help="Execute runnable runs in this process too (import their agents with --import).",
        ),
    ] = False,
    imports: Annotated[
        list[str] | None,
        typer.Option("--import", help="A module defining agents/workflows to resume here; repeatable."),
    ] = None,
    rotate_token: Annotated[
        bool, typer.Option("--rotate-token", help="Replace the token (the old one stops working) and exit.")
    ] = False,
) -> None:
    """Serve the API and the web UI. The first start prints the token every request needs (once)."""
    import uvicorn

    from corral._config import data_dir, journal_path
    from corral.apps.server import ServerConfig, TokenStore, create_app

    console = Console(stderr=True, soft_wrap=True)  # a token or a URL is never cut across lines
    home = data_dir()
    tokens = TokenStore(home / "server-token")
    if rotate_token:
        console.print(f"new token (shown once; the old one no longer works):\n{tokens.rotate()}")
        return
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    for name in imports or []:
        importlib.import_module(name)
    config = ServerConfig(
        journal=journal or journal_path(),
        token_file=tokens.path,
        chart_dir=home / "charts",
        sources=_sources(source or []),
        model=model,
        worker=worker,
    )
    created = tokens.ensure()
    if created is not None:
        console.print(f"token (shown once; keep it, or `corral serve --rotate-token`):\n{created}")
    console.print(f"corral serving {escape(str(config.journal))} on http://{host}:{port}/ (Ctrl-C stops)")
    uvicorn.run(create_app(config), host=host, port=port, log_level="warning")


def register(app: typer.Typer) -> None:
    """Attach `serve` to the root app."""
    app.command("serve")(serve)
