"""`corral mcp`: serve corral to MCP clients; list an MCP server's tools as an agent sees them."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

mcp_app = typer.Typer(
    name="mcp", help="Serve corral over MCP, or look at another MCP server's tools.", no_args_is_help=True
)


def _named(values: list[str] | None, option: str) -> dict[str, list[str]]:
    """``NAME=PATH`` (or a bare ``PATH``, named after its stem) options, grouped by name."""
    found: dict[str, list[str]] = {}
    for value in values or []:
        name, sep, path = value.partition("=")
        if not sep or "://" in name:
            name, path = Path(value.split("?")[0].rstrip("/")).stem or "db", value
        found.setdefault(name, []).append(path)
    for name, paths in found.items():
        if option == "--db" and len(paths) > 1:
            raise typer.BadParameter(f"two databases are named {name!r}; write NAME=PATH", param_hint=option)
    return found


def _host_port(value: str) -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit():
        raise typer.BadParameter(f"{value!r}: write HOST:PORT, e.g. 127.0.0.1:8765", param_hint="--http")
    return host or "127.0.0.1", int(port)


@mcp_app.command("serve")
def serve_command(
    http: Annotated[
        str | None,
        typer.Option("--http", help="Serve streamable HTTP on HOST:PORT (default: stdio). Needs a token."),
    ] = None,
    db: Annotated[
        list[str] | None,
        typer.Option("--db", help="A database for `ask`/`run_sql`: NAME=PATH or PATH (SQLite, DuckDB, URL)."),
    ] = None,
    files: Annotated[
        list[str] | None, typer.Option("--files", help="CSV/Parquet files for `ask`: NAME=PATH (repeat).")
    ] = None,
    expose: Annotated[
        list[str] | None,
        typer.Option(
            "--expose", help="module:attribute of an Agent, Workflow or async run function to offer (repeat)."
        ),
    ] = None,
    model: Annotated[str | None, typer.Option("--model", help="The data agent's model.")] = None,
    ops: Annotated[
        bool,
        typer.Option(
            "--ops",
            help="Offer `ops_diagnose`: the ops agent diagnosing this host (off by default: it reads every "
            "process's state; its fixes still wait for a person's approval).",
        ),
    ] = False,
    no_judge: Annotated[bool, typer.Option("--no-judge", help="Skip the data agent's judge check.")] = False,
    journal: Annotated[
        Path | None, typer.Option("--journal", help="Journal of the served runs (default: yours).")
    ] = None,
    token_env: Annotated[
        str, typer.Option("--token-env", help="Environment variable holding the HTTP bearer token.")
    ] = "CORRAL_MCP_TOKEN",
    state_key_env: Annotated[
        str,
        typer.Option(
            "--state-key-env",
            help="Environment variable holding a key (32+ characters) that seals approval rounds, so an "
            "answer sent after a restart still decides (default: a key of this process).",
        ),
    ] = "CORRAL_MCP_STATE_KEY",
) -> None:
    """Offer `ask`, `run_python`, `run_sql`, exposed agents and workflows (and, with --ops, `ops_diagnose`)
    to MCP clients (stdio, or HTTP + token)."""
    from corral.apps.mcp_server import (
        ServerConfig,
        build_server,
        expose_reference,
        new_token,
        serve_http,
        serve_stdio,
    )

    sys.path.insert(0, os.getcwd())  # --expose names the user's own modules
    for reference in expose or []:
        expose_reference(reference)
    state_key = os.environ.get(state_key_env) or None
    if state_key is not None and len(state_key) < 32:
        raise typer.BadParameter(
            f"${state_key_env} must hold at least 32 characters", param_hint="--state-key-env"
        )
    config = ServerConfig(
        databases={name: paths[0] for name, paths in _named(db, "--db").items()},
        files={name: tuple(paths) for name, paths in _named(files, "--files").items()},
        model=model,
        judge=not no_judge,
        journal=journal,
        state_key=state_key,
        ops=ops,
    )
    server = build_server(config)
    if http is None:
        asyncio.run(serve_stdio(server))
        return
    host, port = _host_port(http)
    token = os.environ.get(token_env) or ""
    if not token:
        token = new_token()
        typer.echo(f"no ${token_env} set: this server's bearer token is {token}", err=True)
    typer.echo(f"corral MCP server on http://{host}:{port}/mcp (bearer token required)", err=True)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve_http(server, token=token, host=host, port=port))


@mcp_app.command("tools")
def tools_command(
    server: Annotated[str, typer.Argument(help="A command line (stdio) or an http(s):// URL.")],
    prefix: Annotated[str | None, typer.Option("--prefix", help="Put before each tool's name.")] = None,
    include: Annotated[
        list[str] | None, typer.Option("--include", help="Keep only this tool (repeat).")
    ] = None,
    header: Annotated[
        list[str] | None, typer.Option("--header", help="'Name: value' sent to an HTTP server (repeat).")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the definitions as JSON.")] = False,
) -> None:
    """List a server's tools exactly as a corral agent would see them (names, descriptions, schemas)."""
    from corral import CorralError
    from corral.tools import MCPToolset

    headers = dict(h.split(":", 1) for h in header or [] if ":" in h)
    toolset = MCPToolset(
        server,
        prefix=prefix,
        include=include,
        headers={k.strip(): v.strip() for k, v in headers.items()},
        connect_attempts=1,
    )

    async def listing() -> tuple[list[dict[str, Any]], list[str]]:
        try:
            listed = await toolset.list_tools()
            tools = toolset.tools_from(listed)
            return [t.definition.model_dump() for t in tools], listed.skipped
        finally:
            await toolset.aclose()

    try:
        definitions, skipped = asyncio.run(listing())
    except CorralError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from exc
    if as_json:
        typer.echo(json.dumps({"tools": definitions, "skipped": skipped}, indent=2))
        return
    for definition in definitions:
        summary = (definition["description"] or "").strip().split("\n", 1)[0]
        typer.echo(f"{definition['name']}\n    {summary}")
        params = definition["parameters"].get("properties", {})
        required = set(definition["parameters"].get("required", []))
        for name, schema in params.items():
            mark = "" if name in required else "?"
            typer.echo(f"    - {name}{mark}: {schema.get('type', 'any')}")
    for reason in skipped:
        typer.echo(f"skipped {reason}", err=True)
    typer.echo(f"{len(definitions)} tool(s) from {toolset.name}", err=True)


def register(app: typer.Typer) -> None:
    """Attach ``corral mcp`` to the root app."""
    app.add_typer(mcp_app)
