"""`corral resident start | stop | status`, and the one path `corral ask` and `corral chat` take to a
question: through the resident process when it fits (see ``corral.apps.data_agent._resident``), else in this
process."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape

from corral.apps.data_agent import Answer
from corral.apps.data_agent._events import DataEvent
from corral.apps.data_agent._timings import Warmup

resident_app = typer.Typer(
    help="The resident process that keeps the local model and the sandbox pool warm between questions.",
    no_args_is_help=True,
)


async def answer_question(
    question: str,
    *,
    db: str | Sequence[str] | None,
    files: Sequence[str | Path],
    model: str | None,
    thread: str | None,
    resident: bool,
    timings: bool,
    on_event: Callable[[DataEvent], None] | None,
    options: dict[str, Any],
) -> tuple[Answer, Warmup]:
    """The answer to ``question`` and what warming up for it cost: in the resident process when
    ``resident`` and it fits (a local model, no write to approve here), else in this process."""
    from corral.apps.data_agent import _run
    from corral.apps.data_agent._resident_client import ask_resident, use_resident
    from corral.apps.data_agent._resident_wire import AskOptions
    from corral.apps.data_agent._sandbox_runner import SandboxQueryRunner
    from corral.apps.data_agent._timings import warm_up

    # An unusable source or option is an error here, before any process starts.
    source = _run.check_question(db, files, options.get("language", "auto"))
    # PostgreSQL stays here too: its password may come from this process's PGPASSWORD.
    fits = not options.get("allow_writes") and source.kind != "postgres" and use_resident(model)
    if resident and fits and (db is None or isinstance(db, str)):  # several databases: in this process
        wire = AskOptions(**{k: v for k, v in options.items() if k != "allow_writes"})
        return await ask_resident(
            question, db=db, files=files, model=model, thread=thread, options=wire, on_event=on_event
        )
    warmup = Warmup()
    if timings:
        sandbox = _run.make_runner is SandboxQueryRunner
        warmup = await asyncio.to_thread(warm_up, _run._model(model), sandbox=sandbox)
    answer = await _run.ask(
        question, db=db, files=files, model=model, on_event=on_event, thread=thread, **options
    )
    return answer, warmup


def print_timings(console: Console, run_id: str, warmup: Warmup) -> None:
    """The question's breakdown from the journal (see ``corral.apps.data_agent._timings``)."""
    from corral.apps.data_agent._timings import render, run_timings
    from corral.durable import Runtime

    if not run_id:
        return
    rt = Runtime()
    try:
        for line in render(run_timings(rt.journal, run_id, warmup)):
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
    from corral.apps.data_agent import _resident, _resident_client

    if foreground:
        raise typer.Exit(_resident.main(["--idle", str(idle)] if idle else []))
    hello = asyncio.run(_resident_client.status())
    if hello is None:
        _resident_client.start(idle)
        hello = asyncio.run(_wait_for_resident())
    Console().print(f"resident running: pid {hello.pid}, exits after {hello.idle_timeout_s:.0f} s idle")


async def _wait_for_resident() -> Any:
    from corral.apps.data_agent._resident_client import connect

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
    from corral.apps.data_agent._resident_client import stop

    Console().print("stopped" if asyncio.run(stop()) else "no resident process runs")


@resident_app.command("status")
def status_command() -> None:
    """Whether a resident process runs, and what it has done."""
    from corral.apps.data_agent._resident_client import status

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
