"""`corral approvals list|show|approve|reject|edit`: decide the requests of runs parked on an approval.

A thin layer over :class:`corral.guards.Approvals`: every decision records who (``--by``, default the
login name), when, and why, and is accepted once. The run goes on when a worker (``corral worker``) or
``corral runs resume RUN`` picks it up.
"""

from __future__ import annotations

import getpass
import json
import os
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from corral import CorralError
from corral.apps.cli._journal import JournalOption, JsonOption, open_journal
from corral.durable import Runtime
from corral.guards import ApprovalRecord, Approvals, ApprovalStatus

approvals_app = typer.Typer(help="Decide tool calls that wait for a human's approval.", no_args_is_help=True)

ByOption = Annotated[
    str | None,
    typer.Option(
        "--by", help="Who decides (recorded). Default: $CORRAL_USER, else the login name.", show_default=False
    ),
]
HashOption = Annotated[
    str | None,
    typer.Option(
        "--hash",
        help="The arguments hash shown by `show`: refuse if the request is not the one you looked at.",
        show_default=False,
    ),
]
_STATUSES: tuple[ApprovalStatus, ...] = ("pending", "approved", "rejected", "edited", "expired")
_STYLE = {
    "pending": "magenta",
    "approved": "green",
    "edited": "green",
    "rejected": "red",
    "expired": "yellow",
}


def _approvals(journal: Path | None) -> Approvals:
    return Approvals(Runtime(open_journal(journal)))


def _who(by: str | None) -> str:
    if by:
        return by
    env = os.environ.get("CORRAL_USER")
    if env:
        return env
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"


def _when(ts: float | None) -> str:
    return "" if ts is None else datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M:%S")


def _json(record: ApprovalRecord) -> dict[str, Any]:
    return {**record.model_dump(mode="json"), "status": record.status}


def _fail(exc: CorralError) -> typer.Exit:
    Console(stderr=True).print(f"[red]error:[/red] {escape(str(exc))}")
    return typer.Exit(1)


def _short(value: Any, width: int = 60) -> str:
    text = value if isinstance(value, str) else json.dumps(value, sort_keys=True, default=str)
    return text if len(text) <= width else text[: width - 1] + "…"


@approvals_app.command("list")
def list_approvals(
    status: Annotated[
        list[str] | None,
        typer.Option("--status", "-s", help=f"Only these ({', '.join(_STATUSES)}); repeatable."),
    ] = None,
    show_all: Annotated[bool, typer.Option("--all", help="Decided requests too.")] = False,
    run_id: Annotated[str | None, typer.Option("--run", help="Only this run's requests.")] = None,
    limit: Annotated[int, typer.Option(help="At most this many, most recent first.")] = 50,
    journal: JournalOption = None,
    as_json: JsonOption = False,
) -> None:
    """List approval requests: the pending ones unless told otherwise."""
    bad = [s for s in status or [] if s not in _STATUSES]
    if bad:
        Console(stderr=True).print(
            f"[red]error:[/red] unknown status {bad[0]!r}; one of {', '.join(_STATUSES)}"
        )
        raise typer.Exit(2)
    wanted: list[ApprovalStatus] | None = [s for s in _STATUSES if s in (status or [])] or None
    try:
        approvals = _approvals(journal)
        approvals.deliver()
        records = approvals.list(
            status=None if show_all and not wanted else wanted or "pending", run_id=run_id, limit=limit
        )
        approvals.runtime.close()
    except CorralError as exc:
        raise _fail(exc) from exc
    if as_json:
        typer.echo(json.dumps([_json(r) for r in records], indent=2))
        return
    if not records:
        Console().print("no approval requests" if show_all or wanted else "no pending approval requests")
        return
    table = Table("id", "status", "run", "action", "arguments", "why", "asked (UTC)", "deadline", box=None)
    for r in records:
        table.add_row(
            r.id,
            f"[{_STYLE[r.status]}]{r.status}[/]",
            escape(r.run_id),
            escape(r.action),
            escape(_short(r.arguments)),
            escape(_short(r.why, 40)),
            _when(r.created_at),
            _when(r.deadline),
        )
    Console().print(table)


@approvals_app.command("show")
def show(
    approval_id: Annotated[str, typer.Argument(help="The request's id (ap-…).")],
    journal: JournalOption = None,
    as_json: JsonOption = False,
) -> None:
    """Show one request: its call in full, why it needs approval, its hash, and its decision."""
    try:
        approvals = _approvals(journal)
        record = approvals.get(approval_id)
        approvals.runtime.close()
    except CorralError as exc:
        raise _fail(exc) from exc
    if as_json:
        typer.echo(json.dumps(_json(record), indent=2))
        return
    console = Console()
    console.print(f"[bold]approval {record.id}[/bold]  [{_STYLE[record.status]}]{record.status}[/]")
    console.print(f"run       {escape(record.run_id)} (step {record.position})")
    console.print(f"action    {escape(record.action)}")
    console.print(f"why       {escape(record.why)}")
    console.print(f"asked     {_when(record.created_at)}")
    if record.deadline is not None:
        console.print(f"deadline  {_when(record.deadline)} (then: {record.on_timeout})")
    console.print(f"hash      {record.args_hash}")
    console.print("arguments")
    console.print(escape(json.dumps(record.arguments, indent=2, sort_keys=True, default=str)))
    d = record.decision
    if d is not None:
        console.print(f"decided   {d.outcome} by {escape(d.by)} at {_when(d.at)}: {escape(d.reason)}")
        if d.arguments is not None:
            console.print("with      " + escape(json.dumps(d.arguments, sort_keys=True, default=str)))


def _decide(journal: Path | None, as_json: bool, act: Callable[[Approvals], ApprovalRecord]) -> None:
    try:
        approvals = _approvals(journal)
        record = act(approvals)
        approvals.runtime.close()
    except CorralError as exc:
        raise _fail(exc) from exc
    if as_json:
        typer.echo(json.dumps(_json(record), indent=2))
        return
    assert record.decision is not None
    typer.echo(
        f"approval {record.id} {record.status} by {record.decision.by}; run {record.run_id} goes on when a "
        f"worker picks it up (`corral worker`, or `corral runs resume {record.run_id}`)"
    )


@approvals_app.command("approve")
def approve(
    approval_id: Annotated[str, typer.Argument(help="The request's id.")],
    reason: Annotated[str, typer.Option("--reason", "-r", help="Why (recorded).")] = "",
    by: ByOption = None,
    args_hash: HashOption = None,
    journal: JournalOption = None,
    as_json: JsonOption = False,
) -> None:
    """Approve the call as requested."""
    _decide(
        journal, as_json, lambda a: a.approve(approval_id, by=_who(by), reason=reason, args_hash=args_hash)
    )


@approvals_app.command("reject")
def reject(
    approval_id: Annotated[str, typer.Argument(help="The request's id.")],
    reason: Annotated[
        str, typer.Option("--reason", "-r", help="Why: the model reads it as the tool's result.")
    ],
    by: ByOption = None,
    args_hash: HashOption = None,
    journal: JournalOption = None,
    as_json: JsonOption = False,
) -> None:
    """Refuse the call; the reason goes back to the model."""
    _decide(
        journal, as_json, lambda a: a.reject(approval_id, by=_who(by), reason=reason, args_hash=args_hash)
    )


@approvals_app.command("edit")
def edit(
    approval_id: Annotated[str, typer.Argument(help="The request's id.")],
    args: Annotated[str, typer.Option("--args", help="The corrected arguments, a JSON object.")],
    reason: Annotated[str, typer.Option("--reason", "-r", help="Why (recorded).")] = "",
    by: ByOption = None,
    args_hash: HashOption = None,
    journal: JournalOption = None,
    as_json: JsonOption = False,
) -> None:
    """Approve the call with corrected arguments."""
    try:
        arguments = json.loads(args)
    except json.JSONDecodeError as exc:
        Console(stderr=True).print(
            f'[red]error:[/red] --args is not JSON ({exc}); e.g. \'{{"name": "tmp"}}\''
        )
        raise typer.Exit(2) from exc
    if not isinstance(arguments, dict):
        Console(stderr=True).print('[red]error:[/red] --args must be a JSON object, e.g. \'{"name": "tmp"}\'')
        raise typer.Exit(2)
    _decide(
        journal,
        as_json,
        lambda a: a.edit(approval_id, by=_who(by), arguments=arguments, reason=reason, args_hash=args_hash),
    )


def register(app: typer.Typer) -> None:
    """Attach `approvals` to the root app."""
    app.add_typer(approvals_app, name="approvals")
