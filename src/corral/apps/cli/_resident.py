"""`corral resident start | stop | status`, and the timings `corral ask` and `corral chat` print (the path
to a question is ``corral.apps.data_agent.answer_question``)."""

from __future__ import annotations

import asyncio
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape

from corral.apps.data_agent import Warmup

resident_app = typer.Typer(
    help="The resident process that keeps the local model and the sandbox pool warm between questions.",
    no_args_is_help=True,
)


def print_timings(console: Console, run_id: str, warmup: Warmup) -> None:
    """The question's breakdown from the journal."""
    from corral.apps.data_agent import render_timings, run_timings
    from corral.durable import Runtime

    if not run_id:
        return
    rt = Runtime()
    try:
        for line in render_timings(run_timings(rt.journal, run_id, warmup)):
            console.print(f"[dim]{escape(line)}[/dim]", highlight=False)
    finally:
        rt.close()


@resident_app.command("start")
def start_command(
    idle: Annotated[
        float | None, typer.Option("--idle", help="Exit after this many seconds without a question.")
    ] = None,
    foreground: Annotated[bool, typer.Option("--foreground", help="Run in this terminal.")] = False,
) -> None:
    """Start the resident process (``corral ask`` also starts it on demand)."""
    from corral.apps.data_agent import resident

    if foreground:
        raise typer.Exit(resident.main(["--idle", str(idle)] if idle else []))
    hello = asyncio.run(resident.status())
    if hello is None:
        resident.start(idle)
        hello = asyncio.run(_wait_for_resident())
    Console().print(f"resident running: pid {hello.pid}, exits after {hello.idle_timeout_s:.0f} s idle")


async def _wait_for_resident() -> Any:
    from corral.apps.data_agent.resident import connect

    connected = await connect(start_if_needed=False)
    for _ in range(600):
        if connected is not None:
            connected[0][1].close()
            return connected[1]
        await asyncio.sleep(0.05)
        connected = await connect(start_if_needed=False)
    raise typer.Exit(1)


@resident_app.command("stop")
def stop_command() -> None:
    """Stop the resident process."""
    from corral.apps.data_agent.resident import stop

    Console().print("stopped" if asyncio.run(stop()) else "no resident process runs")


@resident_app.command("status")
def status_command() -> None:
    """Whether a resident process runs, and what it has done."""
    from corral.apps.data_agent.resident import status

    hello = asyncio.run(status())
    if hello is None:
        Console().print("no resident process runs")
        raise typer.Exit(1)
    Console().print(
        f"resident running: pid {hello.pid}, {hello.questions} questions, "
        f"exits after {hello.idle_timeout_s:.0f} s idle"
    )


def register(app: typer.Typer) -> None:
    """Attach this module's commands to the root app."""
    app.add_typer(resident_app, name="resident")
