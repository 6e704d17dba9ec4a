"""The journal every command group opens: one ``--journal`` option and one way to resolve its default."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from corral.durable import SqliteJournal

JournalOption = Annotated[
    Path | None,
    typer.Option(
        "--journal",
        help="Journal file (default: $CORRAL_JOURNAL, the config file's 'journal', or the data dir's).",
        show_default=False,
    ),
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")]


def journal_file(journal: Path | None) -> Path:
    """``journal``, or the configured default (``$CORRAL_JOURNAL``, the config file, the data dir)."""
    if journal is not None:
        return journal
    from corral._config import journal_path

    return journal_path()


def open_journal(journal: Path | None, *, synchronous: str | None = None) -> SqliteJournal:
    """The SQLite journal at ``journal`` (or the default), in its stored durability mode unless given."""
    return SqliteJournal(journal_file(journal), synchronous=synchronous)  # type: ignore[arg-type]
