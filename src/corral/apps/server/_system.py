"""The System page's facts: the sandbox backend and pool, the local models installed, the workers holding
leases on runs, and whether traces are exported."""

from __future__ import annotations

import os
import time
from functools import lru_cache

from pydantic import BaseModel

from corral.apps.server._state import ServerState
from corral.durable import RunStatus
from corral.models import DEFAULT_LOCAL, KNOWN_WEIGHTS, weights_path


class SandboxView(BaseModel):
    backend: str | None
    reason: str
    checks: list[dict[str, str | bool]]
    pool_size: int | None = None
    pool_backend: str | None = None
    pool_workers: list[int] = []


class ModelView(BaseModel):
    name: str
    installed: bool
    default: bool
    size_bytes: int | None = None


class LeaseView(BaseModel):
    run_id: str
    expires_in_s: float | None


class WorkerView(BaseModel):
    worker_id: str
    runs: list[LeaseView]


class SystemView(BaseModel):
    """What the System page shows."""

    journal: str
    sandbox: SandboxView
    models: list[ModelView]
    workers: list[WorkerView]
    in_process_worker: str | None
    asks_in_flight: int
    traces: str


@lru_cache(maxsize=1)
def _sandbox_report() -> tuple[str | None, str, tuple[tuple[str, bool, str], ...]]:
    from corral.sandbox import check

    report = check()
    return report.backend, report.reason, tuple((i.name, i.ok, i.detail) for i in report.items)


def sandbox_view() -> SandboxView:
    """The backend this machine would use (probed once per process) and the process's pool, if any."""
    from corral.sandbox import default_pool

    backend, reason, items = _sandbox_report()
    pool = default_pool()  # built lazily: constructing it starts no worker
    return SandboxView(
        backend=backend,
        reason=reason,
        checks=[{"name": n, "ok": ok, "detail": d} for n, ok, d in items],
        pool_size=pool.size,
        pool_backend=pool.backend,
        pool_workers=pool.worker_pids,
    )


def models_view() -> list[ModelView]:
    """The known local models and which are installed."""
    found = []
    for name in sorted(KNOWN_WEIGHTS):
        path = weights_path(name)
        size = path.stat().st_size if path.is_file() else None
        found.append(
            ModelView(
                name=f"local:{name}",
                installed=size is not None,
                default=name == DEFAULT_LOCAL,
                size_bytes=size,
            )
        )
    return found


def workers_view(state: ServerState) -> list[WorkerView]:
    """Workers holding leases on running runs, with how long each lease has left."""
    now = time.time()
    by_worker: dict[str, list[LeaseView]] = {}
    for run in state.runtime.list_runs(status=RunStatus.RUNNING, limit=10_000):
        left = None if run.lease_expires_at is None else round(run.lease_expires_at - now, 1)
        by_worker.setdefault(run.worker_id or "(none)", []).append(
            LeaseView(run_id=run.run_id, expires_in_s=left)
        )
    return [WorkerView(worker_id=w, runs=r) for w, r in sorted(by_worker.items())]


def system_view(state: ServerState) -> SystemView:
    """Everything the System page shows."""
    endpoint = os.environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or os.environ.get(
        "OTEL_EXPORTER_OTLP_ENDPOINT"
    )
    return SystemView(
        journal=str(state.config.journal),
        sandbox=sandbox_view(),
        models=models_view(),
        workers=workers_view(state),
        in_process_worker=state.worker.worker_id if state.worker is not None else None,
        asks_in_flight=len(state.asks),
        traces=(
            "off (set OTEL_EXPORTER_OTLP_ENDPOINT)"
            if state.provider is None
            else f"OTLP to {endpoint}"
            if endpoint and state.config.tracer_provider is None
            else "on (the configured tracer provider)"
        ),
    )
