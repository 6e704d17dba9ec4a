"""`corral sandbox` commands: check what this machine offers, and try a file in the sandbox."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

sandbox_app = typer.Typer(
    name="sandbox", help="Check and try the sandbox model-written code runs in.", no_args_is_help=True
)


@sandbox_app.command("check")
def check_command() -> None:
    """Report the backend, what works, what is missing and how to fix it. Exits 1 when code cannot run."""
    from corral.sandbox import check

    report = check()
    for item in report.items:
        mark = "ok " if item.ok else ("-- " if not item.required else "NO ")
        typer.echo(f"{mark} {item.name:16} {item.detail}")
        if not item.ok and item.fix:
            typer.echo(f"    {'':16} fix: {item.fix}")
    for limit in report.limits:
        typer.echo(f"{'ok ' if limit.ok else '!! '} limit {limit.name:10} {limit.detail}")
    if report.can_run:
        typer.echo(f"backend: {report.backend} — model-written code runs isolated ({report.reason})")
        return
    typer.echo(
        f"backend: none — model-written code will NOT run (the sandbox fails closed): {report.reason}",
        err=True,
    )
    raise typer.Exit(1)


@sandbox_app.command("run")
def run_command(
    file: Annotated[
        Path, typer.Argument(exists=True, dir_okay=False, readable=True, help="A Python file to run.")
    ],
    wall: Annotated[float, typer.Option("--wall", help="Wall-clock limit in seconds.")] = 30.0,
    memory_mb: Annotated[int, typer.Option("--memory-mb", help="Memory limit in MiB.")] = 512,
    out: Annotated[
        Path | None, typer.Option("--out", help="Directory to write the job's result files into.")
    ] = None,
) -> None:
    """Run FILE in the sandbox; print its output, resource use and result files."""
    from corral.sandbox import Limits, SandboxPool

    limits = Limits(wall_seconds=wall, cpu_seconds=wall, memory_bytes=memory_mb * 1024 * 1024)
    with SandboxPool(1) as pool:
        result = pool.run_python_sync(file.read_text(encoding="utf-8"), limits=limits)
    typer.echo(result.stdout, nl=False)
    if result.stderr:
        typer.echo(result.stderr, err=True, nl=False)
    status = f"exit {result.exit_code}" if result.exit_code is not None else f"signal {result.signal}"
    limit = f", stopped by the {result.limit} limit" if result.limit else ""
    peak = f"{result.peak_memory_bytes / 1e6:.1f} MB" if result.peak_memory_bytes is not None else "n/a"
    typer.echo(
        f"[{status}{limit}; cpu {result.cpu_seconds:.3f} s, wall {result.wall_seconds:.3f} s, "
        f"peak memory {peak}]",
        err=True,
    )
    for name, data in result.files.items():
        typer.echo(f"[result file {name}: {len(data)} bytes]", err=True)
        if out is not None:
            target = out / name
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(data)
    for skipped in result.skipped:
        typer.echo(f"[skipped {skipped.name}: {skipped.reason}]", err=True)
    if not result.ok:
        raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    """Attach this module's commands to the root app."""
    app.add_typer(sandbox_app)
