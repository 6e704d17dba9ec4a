"""`corral runs list|show|resume|cancel`, `corral signal`, `corral worker`: inspect and steer durable runs."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from corral import CorralError, UsageError
from corral.apps.cli._journal import JournalOption, JsonOption, open_journal
from corral.durable import (
    RunRecord,
    RunStatus,
    RunSuspended,
    Runtime,
    StepRecord,
    Worker,
)

runs_app = typer.Typer(help="Inspect and steer durable runs (the journal).", no_args_is_help=True)

SynchronousOption = Annotated[
    str | None,
    typer.Option(
        "--synchronous",
        help="Set the journal's durability mode: 'normal' (survives a killed process) or 'full' (also a "
        "power cut). Stored in the journal: every process that executes its runs uses it. Default: keep "
        "the journal's mode.",
        show_default=False,
    ),
]

_STYLE = {
    RunStatus.PENDING: "yellow",
    RunStatus.RUNNING: "cyan",
    RunStatus.WAITING: "magenta",
    RunStatus.COMPLETED: "green",
    RunStatus.FAILED: "red",
    RunStatus.CANCELLED: "dim",
}


def _runtime(journal: Path | None, *, importing: bool = False, synchronous: str | None = None) -> Runtime:
    if importing and "" not in sys.path and os.getcwd() not in sys.path:
        # Run functions are found again by `module:qualname`; like `python -m`, look in the current directory.
        sys.path.insert(0, os.getcwd())
    if synchronous not in (None, "normal", "full"):
        raise UsageError(f"--synchronous must be 'normal' or 'full', not {synchronous!r}")
    return Runtime(open_journal(journal, synchronous=synchronous))


def _when(ts: float | None) -> str:
    if ts is None:
        return ""
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M:%S")


def _loads(text: str | None) -> Any:
    return None if text is None else json.loads(text)


def _run_json(run: RunRecord) -> dict[str, Any]:
    return {
        "run_id": run.run_id,
        "function": run.function,
        "status": run.status.value,
        "input": _loads(run.input),
        "output": _loads(run.output),
        "waiting_for": run.waiting_for,
        "wake_at": run.wake_at,
        "worker_id": run.worker_id,
        "created_at": run.created_at,
        "updated_at": run.updated_at,
    }


def _step_json(step: StepRecord) -> dict[str, Any]:
    return {
        "position": step.position,
        "name": step.name,
        "status": step.status.value,
        "key": step.key,
        "value": _loads(step.value),
        "started_at": step.started_at,
        "ended_at": step.ended_at,
        "duration_ms": None if step.duration is None else round(step.duration * 1000, 3),
    }


def _fail(exc: CorralError) -> typer.Exit:
    Console(stderr=True).print(f"[red]error:[/red] {escape(str(exc))}")
    return typer.Exit(1)


def _short(text: str | None, width: int = 60) -> str:
    if text is None:
        return ""
    return text if len(text) <= width else text[: width - 1] + "…"


@runs_app.command("list")
def list_runs(
    status: Annotated[
        list[RunStatus] | None, typer.Option("--status", "-s", help="Only runs in this status (repeatable).")
    ] = None,
    limit: Annotated[int, typer.Option(help="At most this many runs, newest first.")] = 50,
    journal: JournalOption = None,
    as_json: JsonOption = False,
) -> None:
    """List runs, newest first."""
    try:
        rt = _runtime(journal)
        runs = rt.list_runs(status=status or None, limit=limit)
        rt.close()
    except CorralError as exc:
        raise _fail(exc) from exc
    if as_json:
        typer.echo(json.dumps([_run_json(r) for r in runs], indent=2))
        return
    table = Table("run", "status", "function", "created (UTC)", "waiting for / output", box=None)
    for r in runs:
        detail = r.waiting_for or ("timer " + _when(r.wake_at) if r.wake_at else _short(r.output))
        table.add_row(
            r.run_id,
            f"[{_STYLE[r.status]}]{r.status.value}[/]",
            escape(r.function),
            _when(r.created_at),
            escape(detail or ""),
        )
    console = Console()
    if runs:
        console.print(table)
    else:
        console.print("no runs")


@runs_app.command("show")
def show(
    run_id: Annotated[str, typer.Argument(help="The run's id.")],
    journal: JournalOption = None,
    as_json: JsonOption = False,
    graph: Annotated[bool, typer.Option("--graph", help="Draw a workflow run's path (Mermaid).")] = False,
) -> None:
    """Show a run and its steps with status and timing."""
    try:
        rt = _runtime(journal)
        run = rt.get_run(run_id)
        steps = rt.steps(run_id)
        rt.close()
        if graph:
            from corral.apps.cli._graph import run_graph

            typer.echo(run_graph(steps))
            return
    except CorralError as exc:
        raise _fail(exc) from exc
    if as_json:
        typer.echo(json.dumps({**_run_json(run), "steps": [_step_json(s) for s in steps]}, indent=2))
        return
    console = Console()
    console.print(f"[bold]run {escape(run.run_id)}[/bold]  [{_STYLE[run.status]}]{run.status.value}[/]")
    console.print(f"function  {escape(run.function)}")
    console.print(f"input     {escape(_short(run.input, 100))}")
    console.print(f"created   {_when(run.created_at)}   updated {_when(run.updated_at)}")
    if run.waiting_for or run.wake_at:
        console.print(f"waiting   signal {run.waiting_for or '-'}  timer {_when(run.wake_at) or '-'}")
    if run.output is not None:
        console.print(
            f"{'error' if run.status is RunStatus.FAILED else 'output':<9} {escape(_short(run.output, 100))}"
        )
    table = Table("#", "step", "status", "ms", "key", "value", box=None)
    for s in steps:
        ms = "" if s.duration is None else f"{s.duration * 1000:.2f}"
        table.add_row(
            str(s.position), escape(s.name), s.status.value, ms, escape(s.key or ""), escape(_short(s.value))
        )
    console.print(table if steps else "no steps")


@runs_app.command("resume")
def resume(
    run_id: Annotated[str, typer.Argument(help="The run's id.")],
    journal: JournalOption = None,
    as_json: JsonOption = False,
    synchronous: SynchronousOption = None,
) -> None:
    """Resume a run here (replaying its journal) until it completes, fails or parks again."""
    try:
        rt = _runtime(journal, importing=True, synchronous=synchronous)
    except CorralError as exc:
        raise _fail(exc) from exc
    try:
        result = asyncio.run(rt.resume(run_id))
    except RunSuspended as parked:
        run = rt.get_run(run_id)
        rt.close()
        if as_json:
            typer.echo(json.dumps(_run_json(run)))
        else:
            typer.echo(str(parked))
        return
    except CorralError as exc:
        rt.close()
        raise _fail(exc) from exc
    except Exception as exc:  # the run failed: its (recorded) exception, of any type
        rt.close()
        Console(stderr=True).print(
            f"[red]run {escape(run_id)} failed:[/red] {type(exc).__name__}: {escape(str(exc))}"
        )
        raise typer.Exit(1) from exc
    rt.close()
    text = json.dumps(result if not hasattr(result, "model_dump") else result.model_dump(mode="json"))
    typer.echo(
        json.dumps({"run_id": run_id, "status": "completed", "output": json.loads(text)}) if as_json else text
    )


@runs_app.command("cancel")
def cancel(
    run_id: Annotated[str, typer.Argument(help="The run's id.")],
    journal: JournalOption = None,
    as_json: JsonOption = False,
) -> None:
    """Cancel a run (a parked run at once, an executing one at its next step)."""
    try:
        rt = _runtime(journal)
        run = rt.cancel(run_id)
        rt.close()
    except CorralError as exc:
        raise _fail(exc) from exc
    if as_json:
        typer.echo(json.dumps(_run_json(run)))
    elif run.status is RunStatus.CANCELLED:
        typer.echo(f"run {run_id} cancelled")
    else:
        typer.echo(f"run {run_id} is already {run.status.value}; nothing to cancel")


@runs_app.command("check")
def check(
    run_id: Annotated[str | None, typer.Argument(help="Only this run (default: the whole journal).")] = None,
    journal: JournalOption = None,
    as_json: JsonOption = False,
) -> None:
    """Verify the journal: the file, its write-ahead log, and every row's checksum and run's step count."""
    try:
        rt = _runtime(journal)
        try:
            found = rt.journal.verify(run_id)
            runs = 1 if run_id is not None else len(rt.list_runs(limit=2**62)) if not found else None
        finally:
            rt.close()
    except CorralError as exc:
        raise _fail(exc) from exc
    if as_json:
        problems = [{"run_id": e.run_id, "position": e.position, "error": str(e)} for e in found]
        typer.echo(json.dumps({"ok": not found, "problems": problems}, indent=2))
    elif found:
        console = Console(stderr=True)
        for e in found:
            console.print(f"[red]corrupt:[/red] {escape(str(e))}")
    else:
        typer.echo(f"journal ok: {runs} run(s) checked")
    if found:
        raise typer.Exit(1)


def signal(
    run_id: Annotated[str, typer.Argument(help="The run's id.")],
    name: Annotated[str, typer.Argument(help="Signal name, e.g. 'approval'.")],
    payload: Annotated[str, typer.Argument(help="JSON payload (default: null).")] = "null",
    journal: JournalOption = None,
    as_json: JsonOption = False,
) -> None:
    """Send a signal to a run; a run waiting for it becomes runnable (a worker or `runs resume` goes on)."""
    try:
        value = json.loads(payload)
    except json.JSONDecodeError as exc:
        Console(stderr=True).print(
            f"[red]error:[/red] the payload is not JSON ({exc}); quote it, e.g. '{{\"ok\": true}}'"
        )
        raise typer.Exit(2) from exc
    try:
        rt = _runtime(journal)
        rt.send_signal(run_id, name, value)
        run = rt.get_run(run_id)
        rt.close()
    except CorralError as exc:
        raise _fail(exc) from exc
    if as_json:
        typer.echo(json.dumps(_run_json(run)))
    else:
        typer.echo(f"signal {name} sent to run {run_id} (now {run.status.value})")


def worker(
    concurrency: Annotated[int, typer.Option(help="Runs executed at once.")] = 16,
    poll: Annotated[float, typer.Option(help="Seconds between polls of the journal when idle.")] = 0.5,
    once: Annotated[bool, typer.Option("--once", help="Exit when nothing is runnable.")] = False,
    journal: JournalOption = None,
    synchronous: SynchronousOption = None,
) -> None:
    """Execute runnable runs: pending, signalled, due timers, and runs of dead workers (at once on this
    host, after their lease elsewhere)."""
    try:
        rt = _runtime(journal, importing=True, synchronous=synchronous)
    except CorralError as exc:
        raise _fail(exc) from exc
    console = Console(stderr=True)

    def report(run_id: str, exc: Exception) -> None:
        console.print(f"[red]run {escape(run_id)} failed:[/red] {type(exc).__name__}: {escape(str(exc))}")

    w = Worker(rt, concurrency=concurrency, poll_interval=poll, on_failure=report)
    try:
        if once:
            n = asyncio.run(w.run_until_idle())
            console.print(f"executed {n} run(s), {w.failed} failed")
        else:
            console.print(
                f"worker {w.worker_id} serving {escape(str(getattr(rt.journal, 'path', '')))} (Ctrl-C stops)"
            )
            asyncio.run(w.serve())
    except KeyboardInterrupt:
        console.print("stopped")
    finally:
        rt.close()


def register(app: typer.Typer) -> None:
    """Attach `runs`, `signal` and `worker` to the root app."""
    app.add_typer(runs_app, name="runs")
    app.command("signal")(signal)
    app.command("worker")(worker)
