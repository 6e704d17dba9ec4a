"""`corral lessons list | show ID | forget ID`: review what the data agent learned from its corrections.

A lesson (see docs/data-agent.md, Lessons from corrections) is a query that failed, why, and the query
that worked, kept per source schema and shown to the model on later questions over it. A team reads them
here and deletes the ones it does not want the agent to follow.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.syntax import Syntax
from rich.table import Table

from corral.apps.cli._journal import JsonOption
from corral.apps.data_agent import Lesson, LessonStore

lessons_app = typer.Typer(
    help="Lessons the data agent learned from its own corrections (per source).", no_args_is_help=True
)

StoreOption = Annotated[
    Path | None,
    typer.Option(
        "--store",
        help="Lessons file (default: $CORRAL_LESSONS, the config file's 'lessons', or lessons.sqlite next "
        "to the journal).",
        show_default=False,
    ),
]


def _one_line(text: str, width: int) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= width else flat[: width - 1] + "…"


@lessons_app.command("list")
def list_lessons(
    store: StoreOption = None,
    source: Annotated[
        str | None, typer.Option("--source", help="Only the lessons of this schema fingerprint.")
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """List the lessons: id, source, question and what went wrong."""
    lessons = LessonStore(store).all(source)
    if as_json:
        typer.echo(json.dumps([les.model_dump() for les in lessons], indent=2))
        return
    console = Console()
    if not lessons:
        console.print("no lessons yet")
        return
    table = Table(header_style="bold")
    for name in ("id", "source", "question", "problem", "learned"):
        table.add_column(name)
    for les in lessons:
        table.add_row(
            les.id,
            escape(f"{les.source[:8]} {_one_line(les.source_name, 30)}"),
            escape(_one_line(les.question, 50)),
            escape(_one_line(les.problem, 50)),
            les.created,
        )
    console.print(table)


def _get(store: Path | None, lesson_id: str) -> Lesson:
    lesson = LessonStore(store).get(lesson_id)
    if lesson is None:
        Console(stderr=True).print(
            f"[red]error:[/red] no lesson has the id {escape(lesson_id)} (or the prefix is ambiguous); "
            "see corral lessons list"
        )
        raise typer.Exit(2)
    return lesson


@lessons_app.command("show")
def show(
    lesson_id: Annotated[str, typer.Argument(help="The lesson's id (or an unambiguous prefix).")],
    store: StoreOption = None,
    as_json: JsonOption = False,
) -> None:
    """Show one lesson in full: the question, the query that failed and why, and the one that worked."""
    lesson = _get(store, lesson_id)
    if as_json:
        typer.echo(json.dumps(lesson.model_dump(), indent=2))
        return
    console = Console()
    console.print(
        f"[bold]{lesson.id}[/bold]  {escape(lesson.source_name)} [dim](schema {lesson.source})[/dim]"
    )
    console.print(f"question: {escape(lesson.question)}")
    console.print(f"learned:  {lesson.created}  run {lesson.run_id}")
    console.print("[red]failed[/red]:")
    console.print(Syntax(lesson.failed_sql, "sql", word_wrap=True))
    console.print(f"[red]because[/red]: {escape(lesson.problem)}")
    console.print("[green]worked[/green]:")
    console.print(Syntax(lesson.fixed_sql, "sql", word_wrap=True))


@lessons_app.command("forget")
def forget(
    lesson_id: Annotated[str, typer.Argument(help="The lesson's id (or an unambiguous prefix).")],
    store: StoreOption = None,
) -> None:
    """Delete a lesson: the agent is not shown it again."""
    lesson = _get(store, lesson_id)
    LessonStore(store).forget(lesson.id)
    Console().print(f"forgot lesson {lesson.id} ({escape(_one_line(lesson.question, 60))})")


def register(app: typer.Typer) -> None:
    app.add_typer(lessons_app, name="lessons")
