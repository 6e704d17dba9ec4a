"""A question as a durable run: what ``corral ask`` starts, so a killed process resumes where it stopped.

:func:`ask_run` is the run function (its arguments are JSON, as the journal requires); every model call and
query inside it is a step of the run. :func:`ask` starts it on a runtime (the user's journal by default) and
returns the :class:`Answer`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextvars import ContextVar
from pathlib import Path
from typing import Any

from corral.apps.data_agent._agent import DataAgent, DataEvent
from corral.apps.data_agent._answer import Answer
from corral.apps.data_agent._runner import QueryRunner
from corral.apps.data_agent._sandbox_runner import SandboxQueryRunner
from corral.apps.data_agent._sources import Source, open_source
from corral.apps.data_agent._verified import load_verified
from corral.durable import RunContext, Runtime
from corral.guards import terminal_approver
from corral.models import Model, resolve_model

#: Builds the query runner of a source. The product's is the sandbox; tests replace it (and only tests).
RunnerFactory = Callable[[Source], QueryRunner]
make_runner: RunnerFactory = SandboxQueryRunner
#: Builds the model from its user-typed name (tests replace it with a scripted model).
make_model: Callable[[str | None], Model] = resolve_model

_on_event: ContextVar[Callable[[DataEvent], None] | None] = ContextVar(
    "corral_data_agent_events", default=None
)
_models: dict[str | None, Model] = {}


def _model(name: str | None) -> Model:
    # Loading a local model takes seconds: one instance per name and process.
    if name not in _models:
        _models[name] = make_model(name)
    return _models[name]


async def ask_run(
    ctx: RunContext,
    question: str,
    db: str | None = None,
    files: Sequence[str] = (),
    model: str | None = None,
    options: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The run function of one question (arguments and result are JSON)."""
    opts = options or {}
    source = open_source(db, list(files))
    agent = DataAgent(
        model=_model(model),
        runner=make_runner(source),
        verified=load_verified(opts["verified"]) if opts.get("verified") else (),
        judge=bool(opts.get("judge", True)),
        charts=bool(opts.get("charts", True)),
        chart_dir=Path(opts["chart_dir"]) if opts.get("chart_dir") else None,
        on_event=_on_event.get(),
        # Writes need a person: asked on the terminal when there is one, refused otherwise.
        approver=terminal_approver if opts.get("allow_writes") else None,
    )
    answer = await agent.ask(question, step=ctx.step, run_id=ctx.run_id)
    return answer.model_dump(mode="json")


async def ask(
    question: str,
    *,
    db: str | None = None,
    files: Sequence[str | Path] = (),
    model: str | None = None,
    runtime: Runtime | None = None,
    run_id: str | None = None,
    on_event: Callable[[DataEvent], None] | None = None,
    **options: Any,
) -> Answer:
    """Answer ``question`` as a durable run on ``runtime`` (default: the user's journal)."""
    open_source(db, list(files))  # fail fast, before a run is journaled, when the source is unusable
    rt = runtime or Runtime()
    token = _on_event.set(on_event)
    try:
        result = await rt.run(
            ask_run,
            question,
            db,
            [str(f) for f in files],
            model,
            {k: (str(v) if isinstance(v, Path) else v) for k, v in options.items()},
            run_id=run_id,
        )
    finally:
        _on_event.reset(token)
        if runtime is None:
            rt.close()
    return Answer.model_validate(result)
