"""`corral ops diagnose|resume`: the observability agent on the command line.

``diagnose`` shows each step live (stderr), prints the report, and — when it proposes a fix — parks the
run on an approval: decide it with ``corral approvals``, then ``corral ops resume RUN_ID`` runs the
approved action and verifies the symptom is gone. Exit codes: 0 diagnosed, 1 inconclusive, 2 error,
3 waiting for a human's decision.
"""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape

from corral import CorralError
from corral.apps.cli._journal import JournalOption, open_journal

if TYPE_CHECKING:
    from corral.apps.ops_agent import OpsAgent, OpsEvent, Report
    from corral.durable import Runtime

ops_app = typer.Typer(
    help="Diagnose a misbehaving service; fixes run only after a human approves.", no_args_is_help=True
)

ModelOption = Annotated[
    str | None, typer.Option("--model", help="Model for triage and choices (default: the setting, or local).")
]
NoModelOption = Annotated[bool, typer.Option("--no-model", help="Detectors only: no model calls.")]
JsonOption = Annotated[bool, typer.Option("--json", help="Print the report as JSON.")]
QuietOption = Annotated[bool, typer.Option("--quiet", help="Do not show the steps.")]


def _shower(quiet: bool, err: Console) -> Callable[[OpsEvent], None] | None:
    def show(event: OpsEvent) -> None:
        err.print(f"[cyan]{event.stage:>10}[/cyan] {escape(event.message)}", highlight=False)

    return None if quiet else show


def _agent(model: str | None, no_model: bool, quiet: bool, err: Console) -> OpsAgent:
    from corral.apps.ops_agent import OpsAgent
    from corral.models import resolve_model

    return OpsAgent(model=None if no_model else resolve_model(model), on_event=_shower(quiet, err))


def _print(report: Report, as_json: bool) -> None:
    if as_json:
        sys.stdout.write(report.model_dump_json() + "\n")
        return
    out = Console()
    colour = "green" if report.status == "diagnosed" else "yellow"
    out.print(f"[bold {colour}]{report.status}[/bold {colour}]  {escape(report.summary)}")
    if report.explanation:
        out.print(escape(report.explanation))
    for e in report.cited():
        out.print(
            f"  [dim]{e.id}[/dim] {e.tool} {escape(json.dumps(e.arguments))[:100]} → journal step {e.ref}"
        )
    if report.recommendation:
        out.print(f"[bold]recommendation[/bold] {escape(report.recommendation)}")
    for h in report.alternatives[:3]:
        out.print(f"  [dim]also considered ({h.score:.2f}):[/dim] {escape(h.title)}")
    r = report.remediation
    if r is not None:
        out.print(
            f"[bold]remediation[/bold] {r.action} {escape(json.dumps(r.arguments))}: {r.approval}"
            + (f", {escape(r.result or '')}" if r.executed else "")
            + (f"; {escape(r.verification or '')}" if r.verification else "")
        )
    for note in report.notes:
        out.print(f"[dim]note: {escape(note)}[/dim]")


def _run(
    go: Callable[[Runtime], Coroutine[Any, Any, Report]], journal: Path | None, as_json: bool, err: Console
) -> None:
    from corral.durable import RunSuspended, Runtime

    runtime = Runtime(open_journal(journal))
    try:
        report = asyncio.run(go(runtime))
    except RunSuspended as parked:
        from corral.guards import Approvals

        pending = Approvals(runtime).list(run_id=parked.run_id)
        for a in pending:
            err.print(
                f"[magenta]waiting[/magenta] for a decision on {a.id}: {a.action} "
                f"{escape(json.dumps(a.arguments))}"
                f" — {escape(a.why)}"
            )
        err.print(
            f"decide with `corral approvals approve|reject ID`, then `corral ops resume {parked.run_id}`"
        )
        if as_json:
            sys.stdout.write(
                json.dumps(
                    {"status": "waiting", "run_id": parked.run_id, "approvals": [a.id for a in pending]}
                )
                + "\n"
            )
        raise typer.Exit(3) from None
    except CorralError as exc:
        err.print(f"[red]error:[/red] {escape(str(exc))}")
        raise typer.Exit(2) from exc
    finally:
        runtime.close()
    _print(report, as_json)
    raise typer.Exit(0 if report.status == "diagnosed" else 1)


@ops_app.command("diagnose")
def diagnose_command(
    symptom: Annotated[str, typer.Argument(help='What is wrong, e.g. "the API is slow".')],
    service: Annotated[
        str | None, typer.Option("--service", help="The service (name or systemd unit).")
    ] = None,
    pid: Annotated[
        int | None, typer.Option("--pid", help="The process (and its children) to examine.")
    ] = None,
    log: Annotated[
        list[str] | None, typer.Option("--log", help="A log file or directory to read (repeat).")
    ] = None,
    metrics: Annotated[
        list[str] | None, typer.Option("--metrics", help="A Prometheus endpoint URL (repeat).")
    ] = None,
    core: Annotated[
        list[str] | None, typer.Option("--core", help="A core file a crash left, to read (repeat).")
    ] = None,
    cores: Annotated[str, typer.Option("--cores", help="Core dumps: ask (default), allow or never.")] = "ask",
    no_remediate: Annotated[
        bool, typer.Option("--no-remediate", help="Report only; propose no fix.")
    ] = False,
    explore: Annotated[
        bool,
        typer.Option("--explore", help="If the detectors find nothing, let the model explore (read-only)."),
    ] = False,
    run_id: Annotated[
        str | None, typer.Option("--run-id", help="Name the run (resume it with the same id).")
    ] = None,
    model: ModelOption = None,
    no_model: NoModelOption = False,
    journal: JournalOption = None,
    as_json: JsonOption = False,
    quiet: QuietOption = False,
) -> None:
    """Gather evidence, rank hypotheses, report the root cause with its evidence, and propose a fix that
    waits for a human's approval."""
    from pydantic import ValidationError

    from corral.apps.ops_agent import DiagnoseRequest

    err = Console(stderr=True)
    try:
        request = DiagnoseRequest(
            symptom=symptom,
            service=service,
            pid=pid,
            log_paths=log or [],
            metrics_urls=metrics or [],
            core_dumps=cores,  # type: ignore[arg-type]
            remediate=not no_remediate,
            explore=explore,
            core_files=core or [],
        )
    except ValidationError as exc:
        err.print(f"[red]error:[/red] {escape(str(exc))}")
        raise typer.Exit(2) from exc
    from corral.apps.ops_agent import diagnose

    def go(runtime: Runtime) -> Coroutine[Any, Any, Report]:
        return diagnose(
            request,
            model=model,
            use_model=not no_model,
            runtime=runtime,
            run_id=run_id,
            on_event=_shower(quiet, err),
        )

    _run(go, journal, as_json, err)


@ops_app.command("resume")
def resume_command(
    run_id: Annotated[str, typer.Argument(help="The run of `corral ops diagnose` to go on with.")],
    model: ModelOption = None,
    no_model: NoModelOption = False,
    journal: JournalOption = None,
    as_json: JsonOption = False,
    quiet: QuietOption = False,
) -> None:
    """Go on with a diagnosis that waited for a decision (or was interrupted), from its journal, with the
    model it started with (``--model``/``--no-model`` matter only for runs recorded before diagnoses became
    resumable by any worker)."""
    from corral.apps.ops_agent import DiagnoseRequest, ops_run, resume
    from corral.durable import RunNotFound, Runtime, function_path

    err = Console(stderr=True)
    runtime = Runtime(open_journal(journal))
    try:
        record = runtime.get_run(run_id)
        request = DiagnoseRequest.model_validate(json.loads(record.input)["args"][0])
    except (RunNotFound, KeyError, IndexError, ValueError) as exc:
        err.print(f"[red]error:[/red] {run_id!r} is not a run of `corral ops diagnose` in {journal}")
        raise typer.Exit(2) from exc
    finally:
        runtime.close()
    if record.function == function_path(ops_run):
        _run(lambda rt: resume(run_id, runtime=rt, on_event=_shower(quiet, err)), journal, as_json, err)
    else:  # a run of OpsAgent.diagnose's closure, journaled by an earlier version: only it can go on
        agent = _agent(model, no_model, quiet, err)
        _run(lambda rt: agent.diagnose(request, runtime=rt, run_id=run_id), journal, as_json, err)


def register(app: typer.Typer) -> None:
    """Attach ``corral ops`` to the root app."""
    app.add_typer(ops_app, name="ops")
