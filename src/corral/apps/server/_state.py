"""What the server holds: its settings, the runtime over the journal, the token, the asks in flight."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from corral.apps.server._auth import TokenStore
from corral.apps.server._views import FactsCache
from corral.durable import Journal, Runtime, SqliteJournal, TracingJournal, Worker, tracer_provider_from_env
from corral.guards import Approvals


@dataclass(frozen=True, kw_only=True)
class ServerConfig:
    """Settings of ``corral serve``.

    ``sources`` names the data the Ask page may query: ``{"chinook": "examples/chinook/chinook.sqlite"}``
    (a SQLite or DuckDB file, a ``postgresql://`` URL, or CSV/Parquet files separated by commas).
    ``worker`` executes runnable runs in the server's process (so an approved run goes on without a
    separate ``corral worker``; the process must have imported the agents and workflows it resumes).
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
        self.provider = config.tracer_provider or tracer_provider_from_env()
        self._runtime: Runtime | None = None
        self._approvals: Approvals | None = None
        self.tokens = TokenStore(config.token_file)
        self.facts = FactsCache()
        self.asks: dict[str, asyncio.Task[object]] = {}
        #: Threads with a question in flight here, and its run: a thread takes one question at a time.
        self.threads: dict[str, str] = {}
        #: The data agent's typed events of the questions asked here (what it wrote, ran, noted, judged),
        #: by run: streamed beside the steps. In memory: a question asked elsewhere shows its steps only.
        self.ask_events: dict[str, list[dict[str, Any]]] = {}
        self.worker: Worker | None = None
        self.worker_task: asyncio.Task[None] | None = None

    @property
    def runtime(self) -> Runtime:
        """The runtime over the journal (opened on first use, again after ``stop``)."""
        if self._runtime is None:
            journal: Journal = SqliteJournal(self.config.journal)
            if self.provider is not None:
                journal = TracingJournal(journal, self.provider)
            self._runtime = Runtime(journal)
            self._approvals = Approvals(self._runtime)
        return self._runtime

    @property
    def approvals(self) -> Approvals:
        """Decide approval requests of the runs in the journal."""
        runtime = self.runtime
        if self._approvals is None:
            self._approvals = Approvals(runtime)
        return self._approvals

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
        self.asks.clear()
        self.worker = self.worker_task = None
        if self._runtime is not None:
            self._runtime.close()
            self._runtime = self._approvals = None
