"""What the server holds: its settings, the runtime over the journal, the token, the asks in flight."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from corral.apps.server._auth import TokenStore
from corral.durable import Journal, Runtime, SqliteJournal, TracingJournal, Worker, tracer_provider_from_env
from corral.guards import Approvals


@dataclass(frozen=True, kw_only=True)
class ServerConfig:
    """Settings of ``corral serve``.

    ``sources`` names the data the Ask page may query: ``{"chinook": "examples/chinook/chinook.sqlite"}``
    (a SQLite or DuckDB file or a ``postgresql://`` URL). ``worker`` executes runnable runs in the server's
    process (so an approved run goes on without a separate ``corral worker``); ``imports`` are modules to
    import first, so the agents and workflows they define can be resumed here.
    """

    journal: Path
    token_file: Path
    chart_dir: Path
    sources: dict[str, str] = field(default_factory=dict)
    model: str | None = None
    worker: bool = False
    decider: str = "web"
    poll_interval: float = 0.1
    #: An OpenTelemetry ``TracerProvider`` for the runs' spans; default: OTLP when the environment
    #: configures an endpoint (``OTEL_EXPORTER_OTLP_ENDPOINT``), else no tracing.
    tracer_provider: Any = None


class ServerState:
    """One per app: the runtime every route uses (the same journal the CLI uses)."""

    def __init__(self, config: ServerConfig) -> None:
        self.config = config
        journal: Journal = SqliteJournal(config.journal)
        provider = config.tracer_provider or tracer_provider_from_env()
        self.tracing = provider is not None
        if provider is not None:
            journal = TracingJournal(journal, provider)
        self.runtime = Runtime(journal)
        self.approvals = Approvals(self.runtime)
        self.tokens = TokenStore(config.token_file)
        self.asks: dict[str, asyncio.Task[object]] = {}
        #: The data agent's typed events of the questions asked here (what it wrote, ran, noted, judged),
        #: by run: streamed beside the steps. In memory: a question asked elsewhere shows its steps only.
        self.ask_events: dict[str, list[dict[str, Any]]] = {}
        self.worker: Worker | None = None
        self.worker_task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Start the in-process worker, when configured."""
        if self.config.worker:
            self.worker = Worker(self.runtime, poll_interval=self.config.poll_interval)
            self.worker_task = asyncio.create_task(self.worker.serve(), name="corral-serve-worker")

    async def stop(self) -> None:
        """Stop the worker and the asks in flight (their runs stay in the journal, to be resumed)."""
        if self.worker is not None:
            self.worker.stop()
        for task in [*self.asks.values(), *([self.worker_task] if self.worker_task else [])]:
            task.cancel()
        for task in [*self.asks.values(), *([self.worker_task] if self.worker_task else [])]:
            try:
                await task
            except (asyncio.CancelledError, Exception):  # the journal has the run either way
                continue
        self.runtime.close()
