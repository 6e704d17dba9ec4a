"""Deciding a parked question's write on the terminal that asked it.

The terminal is one more decider, not a private path: the request is in the journal's ledger, the run is
parked, and this prompt decides through :class:`~corral.guards.Approvals` like ``corral approvals`` in a
second terminal or the web UI. While it waits for a key it watches the ledger, so whoever decides first
wins and the prompt steps aside; closing the terminal (or killing the process) leaves the request pending
for anyone else.
"""

from __future__ import annotations

import select
from typing import TextIO

from rich.console import Console
from rich.markup import escape
from rich.syntax import Syntax

from corral.guards import ApprovalAlreadyDecided, ApprovalRecord, Approvals
from corral.guards.errors import ApprovalError

#: How often the prompt looks at the ledger for a decision made elsewhere.
POLL_S = 0.5
_SIGNAL = "approval:"


def parked_request(approvals: Approvals, signal: str | None) -> ApprovalRecord | None:
    """The approval request a run parked on ``signal`` waits for, if it is one."""
    if signal is None or not signal.startswith(_SIGNAL):
        return None
    try:
        return approvals.get(signal.removeprefix(_SIGNAL))
    except ApprovalError:
        return None


def how_to_decide(record: ApprovalRecord) -> str:
    """The commands that decide ``record`` from anywhere, and resume its run."""
    return (
        f"run {record.run_id} waits for approval {record.id} ({record.why or record.action}). Decide with "
        f"`corral approvals approve {record.id}`, `reject {record.id} --reason ...` or `edit {record.id} "
        f"--args '{{\"sql\": ...}}'`; then `corral runs resume {record.run_id}` (or a `corral worker`) "
        "goes on"
    )


def _read_line(stdin: TextIO, approvals: Approvals, record: ApprovalRecord) -> str | ApprovalRecord | None:
    """A line typed here, or the record once someone else decided it; ``None`` at end of input."""
    while True:
        ready, _, _ = select.select([stdin], [], [], POLL_S)
        if ready:
            line = stdin.readline()
            return None if line == "" else line.strip()
        current = approvals.get(record.id)
        if current.decision is not None:
            return current


def decide_here(
    approvals: Approvals, record: ApprovalRecord, *, who: str, console: Console, stdin: TextIO
) -> ApprovalRecord | None:
    """Offer to decide ``record`` on this terminal. Returns the decided record (here or elsewhere), or
    ``None`` when the input ended undecided (the request stays pending)."""
    console.print(f"\n[bold magenta]approval needed[/bold magenta] {escape(record.why)}")
    sql = record.arguments.get("sql")
    if isinstance(sql, str):
        console.print(Syntax(sql, "sql", word_wrap=True))
    console.print(
        f"[dim]request {record.id} · also decidable with `corral approvals` or the web UI[/dim]\n"
        "[bold]a[/bold]pprove · [bold]r[/bold]eject · [bold]e[/bold]dit the statement > ",
        end="",
    )
    while True:
        got = _read_line(stdin, approvals, record)
        if got is None or isinstance(got, ApprovalRecord):
            if isinstance(got, ApprovalRecord) and got.decision is not None:
                console.print(f"\ndecided elsewhere by {escape(got.decision.by)}: {got.status}")
            return got
        choice = got.lower()
        try:
            if choice in ("a", "approve", "y", "yes"):
                return approvals.approve(record.id, by=who, reason="approved on the terminal")
            if choice in ("r", "reject", "n", "no"):
                console.print("why (the model reads it) > ", end="")
                reason = _read_line(stdin, approvals, record)
                if isinstance(reason, ApprovalRecord) or reason is None:
                    return reason
                return approvals.reject(record.id, by=who, reason=reason or "refused on the terminal")
            if choice in ("e", "edit"):
                console.print("the statement to run instead > ", end="")
                edited = _read_line(stdin, approvals, record)
                if isinstance(edited, ApprovalRecord) or edited is None:
                    return edited
                if edited:
                    return approvals.edit(record.id, by=who, arguments={"sql": edited})
        except ApprovalAlreadyDecided as exc:
            console.print(f"[yellow]{escape(str(exc))}[/yellow]")
            return approvals.get(record.id)
        console.print("a, r or e > ", end="")
