"""`corral graph show|check MODULE:NAME`, and the drawing behind `corral runs show RUN_ID --graph`."""

from __future__ import annotations

import importlib
import json
import os
import sys
from collections.abc import Sequence
from typing import Annotated, Any

import typer

from corral import CorralError
from corral.agents.workflow import END, Graph, mermaid, run_path
from corral.durable import StepRecord, StepStatus

graph_app = typer.Typer(help="Check and draw workflow graphs before they run.", no_args_is_help=True)

Target = Annotated[str, typer.Argument(help="MODULE:NAME of a Workflow (the module is imported).")]


def load_workflow(target: str) -> Graph[Any]:
    """The workflow object ``module:name`` names (the current directory is importable, as with python -m)."""
    module_name, _, attr = target.partition(":")
    if not module_name or not attr:
        raise typer.BadParameter(f"{target!r}: write MODULE:NAME, e.g. examples.workflows.chain:workflow")
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        found: Any = importlib.import_module(module_name)
    except ImportError as exc:
        raise typer.BadParameter(f"cannot import {module_name!r}: {exc}") from exc
    for part in attr.split("."):
        found = getattr(found, part, None)
    if callable(found) and not isinstance(found, Graph):
        found = found()  # a factory that builds the workflow
    if not isinstance(found, Graph):
        raise typer.BadParameter(f"{target!r} is not a corral Workflow (got {type(found).__name__})")
    return found


@graph_app.command("show")
def show(target: Target) -> None:
    """Print the workflow's graph as Mermaid (paste it into any Mermaid renderer)."""
    typer.echo(mermaid(load_workflow(target).spec()))


@graph_app.command("check")
def check(target: Target) -> None:
    """Run the static checks: reachability, a path to the end, bounded cycles, worst-case cost."""
    from corral.agents.workflow import check_graph

    report = check_graph(load_workflow(target))
    typer.echo(report.describe())
    raise typer.Exit(0 if report.ok else 1)


def _value(step: StepRecord) -> Any:
    if step.status is not StepStatus.OK or step.value is None:
        return None
    try:
        return json.loads(step.value)
    except ValueError:
        return None


def run_graph(steps: Sequence[StepRecord]) -> str:
    """The Mermaid drawing of the path a run took over its workflow's graph (from its journal alone)."""
    spec, path, current = run_path([(s.name, _value(s)) for s in steps])
    if spec is None:
        raise CorralError("this run journaled no workflow graph (it is not a workflow run)")
    lines = [mermaid(spec, path, current=current)]
    taken = " → ".join(path) if path else "(no node finished yet)"
    lines.append(f"%% path: {taken}" + ("" if not path or path[-1] == END else f" → {current} (in progress)"))
    return "\n".join(lines)


def register(app: typer.Typer) -> None:
    """Attach `graph` to the root app."""
    app.add_typer(graph_app, name="graph")
