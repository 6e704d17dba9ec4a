"""`corral ask` (a question over a database or files) and `corral eval` (a question set, scored)."""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Coroutine
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.syntax import Syntax
from rich.table import Table

from corral import CorralError
from corral.apps.cli._progress import Progress
from corral.apps.cli._resident import print_timings
from corral.apps.data_agent import Answer, EvalReport

if TYPE_CHECKING:
    from corral.durable import Runtime

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
        list[str] | None,
        typer.Option(
            "--db",
            help="A SQLite or DuckDB file, or a postgresql:// URL. Repeat it (or add --files) to query "
            "several sources together.",
        ),
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
        typer.Option(
            "--allow-writes",
            help="Let a write be proposed: the question waits for a decision (`corral approvals`; on a "
            "terminal, also asked here). Without a terminal it exits 3, parked.",
        ),
    ] = False,
    thread: Annotated[
        str | None,
        typer.Option("--thread", help="Ask as a follow-up in this conversation (see `corral chat`)."),
    ] = None,
    timings: Annotated[
        bool, typer.Option("--timings", help="Print where the time went, step by step (on stderr).")
    ] = False,
    no_resident: Annotated[
        bool,
        typer.Option(
            "--no-resident",
            help="Answer in this process, not in the resident one that keeps a local model warm.",
        ),
    ] = False,
    no_lessons: Annotated[
        bool,
        typer.Option("--no-lessons", help="Neither use nor keep lessons from corrections (corral lessons)."),
    ] = False,
) -> None:
    """Answer a question over a database or data files, with the SQL it ran and a chart when it helps."""
    from corral.apps.data_agent import Warmup, answer_question, ask
    from corral.durable import Runtime

    all_files = [*(files or []), *(Path(a) for a in ctx.args)]
    err = Console(stderr=True)
    display = Progress.from_flags(quiet=quiet, console=err)
    options: dict[str, Any] = {
        "judge": not no_judge,
        "chart_dir": str(chart_dir.resolve()),
        "allow_writes": allow_writes,
        "language": language,
        "lessons": not no_lessons,
    }
    if verified is not None:
        options["verified"] = str(verified.resolve())
    dbs = db or []
    one_db = dbs[0] if len(dbs) == 1 else (dbs or None)
    # A write may park the question on a decision: taken here or elsewhere (`corral approvals`), through
    # the journal this process opens; everything else may go to the resident process.
    runtime = Runtime() if allow_writes else None
    try:
        if runtime is not None:
            warmup = Warmup()
            answer = _answer_deciding(
                runtime,
                ask(
                    question,
                    db=one_db,
                    files=all_files,
                    model=model,
                    runtime=runtime,
                    on_event=display,
                    thread=thread,
                    **options,
                ),
                display,
                err,
            )
        else:
            answer, warmup = asyncio.run(
                answer_question(
                    question,
                    db=one_db,
                    files=all_files,
                    model=model,
                    thread=thread,
                    resident=not no_resident,
                    timings=timings,
                    on_event=display,
                    options=options,
                )
            )
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
        if runtime is not None:
            runtime.close()
    if timings:
        print_timings(err, answer.run_id, warmup)
    if as_json:
        sys.stdout.write(json.dumps(answer.to_json(), ensure_ascii=False, default=str) + "\n")
    else:
        _print_answer(Console(), answer)
    raise typer.Exit(0 if answer.status != "failed" else 1)


#: ``corral ask``'s exit status when the question is parked on a decision nobody took here.
EXIT_PARKED = 3


def _answer_deciding(
    runtime: Runtime, started: Coroutine[Any, Any, Answer], display: Progress, err: Console
) -> Answer:
    """Run the question; while it parks on a write's approval, offer the decision on this terminal (through
    the ledger, so anyone else may decide first) and go on. Parked with no terminal: exit 3, saying how
    to decide and resume."""
    from corral.apps.cli._approvals import _who
    from corral.apps.cli._decide import decide_here, how_to_decide, parked_request
    from corral.apps.data_agent import resume
    from corral.durable import RunSuspended
    from corral.guards import Approvals

    work: Coroutine[Any, Any, Answer] = started
    while True:
        try:
            return asyncio.run(work)
        except RunSuspended as parked:
            display.close()
            approvals = Approvals(runtime)
            record = parked_request(approvals, parked.signal)
            if record is None:
                err.print(f"[yellow]{escape(str(parked))}[/yellow]")
                raise typer.Exit(EXIT_PARKED) from None
            interactive = sys.stdin is not None and sys.stdin.isatty()
            decided = (
                decide_here(approvals, record, who=_who(None), console=err, stdin=sys.stdin)
                if interactive
                else None
            )
            if decided is None:
                err.print(f"[yellow]parked:[/yellow] {escape(how_to_decide(record))}")
                raise typer.Exit(EXIT_PARKED) from None
            work = resume(parked.run_id, runtime=runtime, on_event=display)


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
    lessons: Annotated[
        Path | None,
        typer.Option(
            "--lessons",
            help="Keep and use lessons from corrections in this store (run twice to measure them; "
            "default: none, so runs stay comparable).",
        ),
    ] = None,
) -> None:
    """Run a question set and print execution accuracy by difficulty, latency and cost per question."""
    from corral.apps.data_agent import LessonStore, run_eval

    console = Console()
    err = Console(stderr=True)

    def progress(i: int, n: int, line: str) -> None:
        err.print(f"[dim]{i}/{n}[/dim] {escape(line)}", highlight=False)

    try:
        report = asyncio.run(
            run_eval(
                path,
                model=model,
                limit=limit,
                system=system,
                judge=not no_judge,
                progress=progress,
                lessons=LessonStore(lessons) if lessons is not None else None,
            )
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
    judge = report.judge_figures()
    if judge.judged or judge.skipped:
        table.caption += (
            f"\njudge: {judge.judged} verdicts ({judge.fails} fail, {judge.false_fails} of them on a correct "
            f"result: false-fail rate {judge.false_fail_rate:.0%}), {judge.skipped} skipped · accuracy "
            f"before the judge {judge.accuracy_before_judge:.0%}"
        )
    return table
