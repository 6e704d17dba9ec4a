"""`corral ask` (a question over a database or files) and `corral eval` (a question set, scored)."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.syntax import Syntax
from rich.table import Table

from corral import CorralError
from corral.apps.cli._progress import Progress
from corral.apps.data_agent import Answer
from corral.apps.data_agent._eval import EvalReport

_HERE = Path(".")


def _print_answer(console: Console, answer: Answer, *, max_rows: int = 20) -> None:
    colour = {"answered": "green", "cannot_answer": "yellow", "failed": "red"}[answer.status]
    console.print(f"[bold {colour}]{answer.status}[/bold {colour}]  {escape(answer.answer)}")
    if answer.columns:
        table = Table(show_lines=False, header_style="bold")
        for col in answer.columns:
            table.add_column(escape(col))
        for row in answer.rows[:max_rows]:
            table.add_row(*(escape("" if v is None else str(v)) for v in row))
        console.print(table)
        if answer.row_count > max_rows:
            console.print(
                f"[dim]{answer.row_count} rows; first {max_rows} shown (--json gives up to 1,000)[/dim]"
            )
    if answer.sql:
        console.print(Syntax(answer.sql, "sql", word_wrap=True))
    if answer.code:
        console.print(Syntax(answer.code, "python", word_wrap=True))
    if answer.chart:
        console.print(f"chart: {answer.chart}")
    usage = answer.usage
    console.print(
        f"[dim]run {answer.run_id} · {usage.requests} model calls · {usage.total_tokens} tokens · "
        f"${usage.cost_usd:.4f}[/dim]"
    )


def _print_error(err: Console, exc: CorralError, *, as_json: bool) -> None:
    """A question that could not start: the contract's shape with ``failed`` (``--json``), or one line."""
    if not as_json:
        err.print(f"[red]error:[/red] {escape(str(exc))}")
        return
    failed: dict[str, Any] = {
        "status": "failed",
        "answer": str(exc),
        "sql": None,
        "code": None,
        "columns": [],
        "rows": [],
        "chart": None,
        "run_id": "",
        "usage": {},
    }
    sys.stdout.write(json.dumps(failed) + "\n")


def ask_command(
    ctx: typer.Context,
    question: Annotated[str, typer.Argument(help="The question, in plain language.")],
    db: Annotated[
        str | None, typer.Option("--db", help="A SQLite or DuckDB file, or a postgresql:// URL.")
    ] = None,
    files: Annotated[
        list[Path] | None,
        typer.Option(
            "--files", help="CSV or Parquet files, queried together (each a table named after its file)."
        ),
    ] = None,
    model: Annotated[
        str | None, typer.Option("--model", help="Model name (default: the setting, or local).")
    ] = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print one JSON object (the stable contract).")
    ] = False,
    verified: Annotated[
        Path | None, typer.Option("--verified", help="YAML file of verified question→SQL.")
    ] = None,
    no_judge: Annotated[bool, typer.Option("--no-judge", help="Skip the LLM-as-a-judge check.")] = False,
    chart_dir: Annotated[Path, typer.Option("--chart-dir", help="Where the PNG chart goes.")] = _HERE,
    quiet: Annotated[bool, typer.Option("--quiet", help="Do not show the steps.")] = False,
    language: Annotated[
        str,
        typer.Option(
            "--language",
            help="auto (pandas for --files, SQL for --db), sql, or python (pandas; --files only).",
        ),
    ] = "auto",
    allow_writes: Annotated[
        bool,
        typer.Option("--allow-writes", help="Let a write be proposed; each one is asked on the terminal."),
    ] = False,
) -> None:
    """Answer a question over a database or data files, with the SQL it ran and a chart when it helps."""
    from corral.apps.data_agent import ask

    all_files = [*(files or []), *(Path(a) for a in ctx.args)]
    err = Console(stderr=True)
    display = Progress.from_flags(quiet=quiet, console=err)
    options: dict[str, Any] = {
        "judge": not no_judge,
        "chart_dir": str(chart_dir.resolve()),
        "allow_writes": allow_writes,
        "language": language,
    }
    if verified is not None:
        options["verified"] = str(verified)
    try:
        answer = asyncio.run(ask(question, db=db, files=all_files, model=model, on_event=display, **options))
    except CorralError as exc:
        display.close()
        if as_json:
            failed: dict[str, Any] = {
                "status": "failed",
                "answer": str(exc),
                "sql": None,
                "code": None,
                "columns": [],
                "rows": [],
                "chart": None,
                "run_id": "",
                "usage": {},
            }
            sys.stdout.write(json.dumps(failed) + "\n")
        else:
            err.print(f"[red]error:[/red] {escape(str(exc))}")
        raise typer.Exit(2) from exc
    finally:
        display.close()
    if as_json:
        sys.stdout.write(json.dumps(answer.to_json(), ensure_ascii=False, default=str) + "\n")
    else:
        _print_answer(Console(), answer)
    raise typer.Exit(0 if answer.status != "failed" else 1)


def eval_command(
    path: Annotated[Path, typer.Argument(help="A JSONL question set, or the DABench dev directory.")],
    model: Annotated[
        str | None, typer.Option("--model", help="Model name (default: the setting, or local).")
    ] = None,
    limit: Annotated[int | None, typer.Option("--limit", help="Only the first N questions.")] = None,
    system: Annotated[
        str, typer.Option("--system", help="agent, baseline or baseline-rich (single-shot SQL).")
    ] = "agent",
    out: Annotated[Path | None, typer.Option("--out", help="Where the JSON report goes.")] = None,
    no_judge: Annotated[bool, typer.Option("--no-judge", help="Skip the judge step.")] = False,
) -> None:
    """Run a question set and print execution accuracy by difficulty, latency and cost per question."""
    from corral.apps.data_agent._evalrun import run_eval

    console = Console()
    err = Console(stderr=True)

    def progress(i: int, n: int, line: str) -> None:
        err.print(f"[dim]{i}/{n}[/dim] {escape(line)}", highlight=False)

    try:
        report = asyncio.run(
            run_eval(path, model=model, limit=limit, system=system, judge=not no_judge, progress=progress)
        )
    except CorralError as exc:
        err.print(f"[red]error:[/red] {escape(str(exc))}")
        raise typer.Exit(2) from exc
    console.print(_report_table(report))
    target = out or Path(f"eval-{path.stem}-{system}.json")
    target.write_text(json.dumps(report.to_json(), indent=2, default=str), encoding="utf-8")
    console.print(f"report: {target}")


def register(app: typer.Typer) -> None:
    """Attach this module's commands to the root app."""
    app.command("ask", context_settings={"allow_extra_args": True})(ask_command)
    app.command("eval")(eval_command)


def _report_table(report: EvalReport) -> Table:
    table = Table(title=f"{report.system} · {report.model}", header_style="bold")
    table.add_column("difficulty")
    table.add_column("questions", justify="right")
    table.add_column("execution accuracy", justify="right")
    for level in ("easy", "medium", "hard"):
        if report.count(level):
            table.add_row(level, str(report.count(level)), f"{report.accuracy(level):.0%}")
    table.add_row("[bold]all[/bold]", str(report.count()), f"[bold]{report.accuracy():.0%}[/bold]")
    median, p90, cost = report.median_seconds(), report.p90_seconds(), report.mean_cost()
    recall, false_refusals = report.refusal_recall(), report.false_refusal_rate()
    refusals = "" if recall is None else f"unanswerable recognised {recall:.0%} · "
    if false_refusals is not None:
        refusals += f"false refusals {false_refusals:.0%} · "
    table.caption = (
        f"{refusals}median {median:.1f} s, p90 {p90:.1f} s per question · mean cost ${cost:.4f} per question"
    )
    return table
