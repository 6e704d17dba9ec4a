"""A diagnosis as a durable run that any worker can resume: what ``corral ops diagnose`` starts.

:func:`ops_run` is the run function: defined at module level, its arguments JSON (the request, the model's
name, whether to use one), so ``corral worker`` or ``corral runs resume`` finds it again by its path and
rebuilds the agent from its arguments — unlike :meth:`OpsAgent.diagnose`, whose run function is a closure
over an agent object (tools, model) that only the process holding it can resume. :func:`diagnose` starts
or resumes it on a runtime (the user's journal by default) and returns the :class:`Report`.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from contextvars import ContextVar
from typing import Any

from corral.apps.ops_agent._agent import DiagnoseRequest, OpsAgent, OpsEvent
from corral.apps.ops_agent._redact import Redactor
from corral.apps.ops_agent._report import Report
from corral.durable import RunContext, Runtime
from corral.models import Model, resolve_model

#: Builds the model from its user-typed name (tests replace it with a scripted model).
make_model: Callable[[str | None], Model] = resolve_model

_on_event: ContextVar[Callable[[OpsEvent], None] | None] = ContextVar("corral_ops_events", default=None)
_models: dict[str | None, Model] = {}


def _model(name: str | None) -> Model:
    # Loading a local model takes seconds: one instance per name and process.
    if name not in _models:
        _models[name] = make_model(name)
    return _models[name]


async def ops_run(
    ctx: RunContext, request: dict[str, Any], model: str | None = None, use_model: bool = True
) -> dict[str, Any]:
    """The run function of one diagnosis (arguments and result are JSON)."""
    agent = OpsAgent(model=_model(model) if use_model else None, on_event=_on_event.get())
    report = await agent.diagnose_in(ctx, DiagnoseRequest.model_validate(request))
    return report.model_dump(mode="json")


async def diagnose(
    request: DiagnoseRequest | str,
    *,
    model: str | None = None,
    use_model: bool = True,
    runtime: Runtime | None = None,
    run_id: str | None = None,
    on_event: Callable[[OpsEvent], None] | None = None,
) -> Report:
    """Diagnose ``request`` as a durable run of :func:`ops_run` on ``runtime`` (default: the user's journal).

    A run parked on an approval raises :class:`~corral.durable.RunSuspended`; once it is decided any process
    goes on with it: :func:`resume`, ``corral ops resume``, ``corral runs resume`` or ``corral worker``."""
    req = DiagnoseRequest(symptom=request) if isinstance(request, str) else request
    # The request is the run's journaled input: a secret typed into the symptom is not kept.
    req = req.model_copy(update={"symptom": Redactor().text(req.symptom)})
    args = (req.model_dump(mode="json"), model, use_model)
    return await _drive(lambda rt: rt.run(ops_run, *args, run_id=run_id), runtime, on_event)


async def resume(
    run_id: str, *, runtime: Runtime | None = None, on_event: Callable[[OpsEvent], None] | None = None
) -> Report:
    """Go on with the diagnosis ``run_id`` with its recorded request and model (or return its report)."""
    return await _drive(lambda rt: rt.resume(run_id), runtime, on_event)


async def _drive(
    go: Callable[[Runtime], Awaitable[Any]],
    runtime: Runtime | None,
    on_event: Callable[[OpsEvent], None] | None,
) -> Report:
    rt = runtime or Runtime()
    token = _on_event.set(on_event)
    try:
        result = await go(rt)
    finally:
        _on_event.reset(token)
        if runtime is None:
            rt.close()
    return Report.model_validate(result)
