"""`corral chat`: questions over one source, each line a question, follow-ups working on the one before.

The conversation is a thread of the journal (see docs/data-agent.md, Conversations): ``--thread NAME``
continues it, in this process or after a crash; a question killed mid-way is resumed first.
"""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape

from corral import CorralError
from corral.apps.cli._ask import _print_answer
from corral.apps.cli._progress import Progress
from corral.apps.cli._resident import print_timings

_QUIT = {"exit", "quit", r"\q"}


def _unfinished(thread: str) -> str | None:
    """The question of the thread's last run when it did not finish (killed), else ``None``."""
    from corral.apps.data_agent import thread_question, thread_runs
    from corral.durable import Runtime

    rt = Runtime()
    try:
        runs = thread_runs(rt.journal, thread)
    finally:
        rt.close()
    return thread_question(runs[-1]) if runs and not runs[-1].status.is_final else None


def chat_command(
    db: Annotated[
        str | None, typer.Option("--db", help="A SQLite or DuckDB file, or a postgresql:// URL.")
    ] = None,
    files: Annotated[
        list[Path] | None, typer.Option("--files", help="CSV or Parquet files, queried together.")
    ] = None,
    thread: Annotated[
        str | None, typer.Option("--thread", help="Continue this conversation (default: a new one).")
    ] = None,
    model: Annotated[
        str | None, typer.Option("--model", help="Model name (default: the setting, or local).")
    ] = None,
    no_judge: Annotated[bool, typer.Option("--no-judge", help="Skip the LLM-as-a-judge check.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", help="Do not show the steps.")] = False,
    timings: Annotated[bool, typer.Option("--timings", help="Print where the time went.")] = False,
    no_resident: Annotated[
        bool, typer.Option("--no-resident", help="Answer in this process, not in the resident one.")
    ] = False,
) -> None:
    """Ask questions one line at a time; "and by country?" or "only 2023" follow up on the previous one."""
    from corral.apps.data_agent import answer_question, check_thread_name

    console, err = Console(), Console(stderr=True)
    try:
        name = check_thread_name(thread) if thread else f"chat-{uuid.uuid4().hex[:8]}"
    except CorralError as exc:
        err.print(f"[red]error:[/red] {escape(str(exc))}")
        raise typer.Exit(2) from exc
    err.print(f"[dim]thread {name} (continue it later with --thread {name}); exit or Ctrl-D ends[/dim]")
    options: dict[str, Any] = {
        "judge": not no_judge,
        "chart_dir": str(Path(".").resolve()),
        "language": "auto",  # SQL over databases, pandas over files; both follow up on the previous turn
    }
    pending = _unfinished(name)
    if pending is not None:
        err.print(f"[dim]resuming the unfinished question: {escape(pending)}[/dim]")
    while True:
        question = pending if pending is not None else _read(console)
        pending = None
        if question is None or question.strip().lower() in _QUIT:
            return
        if not question.strip():
            continue
        display = Progress.from_flags(quiet=quiet, console=err)
        try:
            answer, warmup = asyncio.run(
                answer_question(
                    question.strip(),
                    db=db,
                    files=list(files or []),
                    model=model,
                    thread=name,
                    resident=not no_resident,
                    timings=timings,
                    on_event=display,
                    options=options,
                )
            )
        except CorralError as exc:
            err.print(f"[red]error:[/red] {escape(str(exc))}")
            continue
        finally:
            display.close()
        _print_answer(console, answer)
        if timings:
            print_timings(err, answer.run_id, warmup)


def _read(console: Console) -> str | None:
    try:
        return console.input("[bold]?[/bold] ")
    except EOFError:
        return None


def register(app: typer.Typer) -> None:
    """Attach this module's commands to the root app."""
    app.command("chat")(chat_command)
