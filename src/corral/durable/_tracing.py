"""OpenTelemetry traces of runs, observed from the journal: a span per run, per workflow node, per model
call (GenAI semantic conventions: model, tokens, cost), per tool call and per sandbox job.

:class:`TracingJournal` wraps any :class:`~corral.durable.Journal`: it passes every call through unchanged
and, when a step row is written final (``ok``/``error``), records a span with the step's own start and end
times under its run's span. Nothing in the run context or the runtime changes, and a journal that is not
wrapped costs nothing. The trace id of a run is derived from its id (:func:`trace_id_for`), so the spans
of a run resumed by another process join the same trace, and the web UI shows the id without asking the
exporter.

Spans are exported over OTLP/HTTP when an endpoint is configured (``OTEL_EXPORTER_OTLP_ENDPOINT`` or
``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``) and not at all otherwise: see :func:`tracer_provider_from_env`.
Every ``Runtime`` wraps its journal so when the endpoint is set (:func:`traced_from_env`); without it the
runtime keeps its journal as given and OpenTelemetry is not even imported.

>>> trace_id_for("r1") == trace_id_for("r1"), len(trace_id_for("r1"))
(True, 32)
"""

from __future__ import annotations

import contextvars
import hashlib
import json
import logging
import os
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from corral.durable._journal import Journal, RunRecord, RunStatus, StepRecord, StepStatus
from corral.durable.errors import JournalCorrupt

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.trace import Span, Tracer


def trace_id_for(run_id: str) -> str:
    """The run's trace id, 32 hex digits, the same in every process that executes the run."""
    digest = hashlib.sha256(b"corral-run:" + run_id.encode("utf-8", "surrogatepass")).hexdigest()
    return digest[:32] if int(digest[:32], 16) else "1" * 32


log = logging.getLogger("corral.durable")

#: The trace id the next root span of this thread/task takes (set around a run span's start).
_next_trace_id: contextvars.ContextVar[int | None] = contextvars.ContextVar("corral_trace_id", default=None)

#: Step names whose span is a sandbox job (the data agent's queries, schema scans, charts, frames).
SANDBOX_STEPS = frozenset({"query", "chart", "frames", "schema"})
_GENAI_SYSTEM = "corral"


def _ns(seconds: float) -> int:
    return int(seconds * 1_000_000_000)


def _json(text: str | None) -> Any:
    if text is None:
        return None
    try:
        return json.loads(text)
    except ValueError:
        return None


def run_id_generator() -> Any:
    """An OpenTelemetry ``IdGenerator`` whose root spans of runs take :func:`trace_id_for` ``(run_id)``:
    random ids otherwise. :func:`tracer_provider` installs it."""
    from opentelemetry.sdk.trace.id_generator import RandomIdGenerator

    class RunIdGenerator(RandomIdGenerator):
        def generate_trace_id(self) -> int:
            wanted = _next_trace_id.get()
            return wanted if wanted is not None else super().generate_trace_id()

    return RunIdGenerator()


def tracer_provider(*processors: Any, service_name: str = "corral") -> TracerProvider:
    """A tracer provider whose run traces have the ids the web UI shows, with ``processors`` added."""
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider

    provider = TracerProvider(
        resource=Resource.create({"service.name": service_name}), id_generator=run_id_generator()
    )
    for processor in processors:
        provider.add_span_processor(processor)
    return provider


def otlp_endpoint() -> str | None:
    """The OTLP endpoint the environment configures, or ``None`` (tracing off)."""
    return os.environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or os.environ.get(
        "OTEL_EXPORTER_OTLP_ENDPOINT"
    )


def tracer_provider_from_env() -> TracerProvider | None:
    """A provider exporting over OTLP/HTTP (protobuf) when an endpoint is configured; ``None`` otherwise."""
    return None if otlp_endpoint() is None else _otlp_provider()


def _otlp_provider() -> TracerProvider:
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    return tracer_provider(BatchSpanProcessor(OTLPSpanExporter()))


_process_providers: dict[tuple[str | None, str | None], TracerProvider] = {}
_process_lock = threading.Lock()


def _process_provider() -> TracerProvider | None:
    """The process's provider for the endpoint the environment configures, made once (one exporter and
    batch thread, however many runtimes the process makes); ``None`` when no endpoint is configured."""
    key = (
        os.environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"),
        os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT"),
    )
    if not any(key):
        return None
    with _process_lock:
        provider = _process_providers.get(key)
        if provider is None:
            provider = _process_providers[key] = _otlp_provider()
        return provider


def traced_from_env(journal: Journal) -> Journal:
    """``journal`` in a :class:`TracingJournal` exporting over OTLP when the environment configures an
    endpoint; ``journal`` itself when it does not (nothing imported, nothing recorded) or when it is
    already traced. ``Runtime`` calls it on the journal it is given, so every run of the process is traced.
    """
    if isinstance(journal, TracingJournal):
        return journal
    provider = _process_provider()
    return journal if provider is None else TracingJournal(journal, provider)


@dataclass
class _Live:
    """The spans open for one run executing in this process."""

    run: Span
    node: Span | None = None
    node_name: str | None = None
    started: dict[int, float] = field(default_factory=dict)


class TracingJournal(Journal):
    """A journal that records OpenTelemetry spans of what is written through it (see the module's doc).

    >>> from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    >>> from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
    >>> from corral.durable import MemoryJournal, Runtime
    >>> spans = InMemorySpanExporter()
    >>> journal = TracingJournal(MemoryJournal(), tracer_provider(SimpleSpanProcessor(spans)))
    >>> async def hello(ctx):
    ...     return await ctx.step("sandbox:echo", lambda: "hi")
    >>> Runtime(journal).run_sync(hello, run_id="r1")
    'hi'
    >>> [(s.name, s.parent is not None) for s in spans.get_finished_spans()]
    [('sandbox echo', True), ('run hello', False)]
    """

    def __init__(self, inner: Journal, provider: TracerProvider | None = None) -> None:
        from opentelemetry import trace

        self.inner = inner
        self.provider = provider
        source = provider if provider is not None else trace.get_tracer_provider()
        self._tracer: Tracer = source.get_tracer("corral.durable")
        self._lock = threading.Lock()
        self._live: dict[str, _Live] = {}

    @staticmethod
    def _safely(record: Any, *args: Any, **kwargs: Any) -> None:
        """Record spans without ever failing the journal call: tracing is an observer, never a cause."""
        try:
            record(*args, **kwargs)
        except Exception as exc:
            log.warning("corral: a span could not be recorded: %s: %s", type(exc).__name__, exc)

    def __getattr__(self, name: str) -> Any:
        # ``path``, ``synchronous``… of the wrapped journal (the ledger lives beside it).
        return getattr(self.inner, name)

    # -- run spans ---------------------------------------------------------------------------------------
    def _open(self, run: RunRecord, *, resumed: bool) -> None:
        from opentelemetry.trace import SpanKind

        with self._lock:
            if run.run_id in self._live:
                return
        token = _next_trace_id.set(int(trace_id_for(run.run_id), 16))
        try:
            from opentelemetry import context

            span = self._tracer.start_span(
                f"run {run.function.rsplit(':', 1)[-1]}",
                context=context.Context(),  # a run is a root: never a child of whatever is current here
                kind=SpanKind.INTERNAL,
                start_time=_ns(run.updated_at),
                attributes={
                    "corral.run_id": run.run_id,
                    "corral.function": run.function,
                    "corral.resumed": resumed,
                    **_agent_attributes(run),
                },
            )
        finally:
            _next_trace_id.reset(token)
        live = _Live(span)
        if resumed:
            self._resume_node(live, run.run_id, run.updated_at)
        with self._lock:
            self._live[run.run_id] = live

    def _close(self, run_id: str, status: str, now: float) -> None:
        from opentelemetry.trace import Status, StatusCode

        with self._lock:
            live = self._live.pop(run_id, None)
        if live is None:
            return
        if live.node is not None:
            live.node.set_attribute("corral.node.status", status)
            live.node.end(end_time=_ns(now))
        live.run.set_attribute("corral.status", status)
        if status == RunStatus.FAILED.value:
            live.run.set_status(Status(StatusCode.ERROR))
        live.run.end(end_time=_ns(now))

    # -- node spans -------------------------------------------------------------------------------------
    def _start_node(self, live: _Live, name: str, at: float) -> None:
        from opentelemetry import trace

        live.node_name = name
        live.node = self._tracer.start_span(
            f"node {name}",
            context=trace.set_span_in_context(live.run),
            start_time=_ns(at),
            attributes={"corral.node": name},
        )

    def _resume_node(self, live: _Live, run_id: str, at: float) -> None:
        current: str | None = None
        for step in self.inner.load_steps(run_id):
            value = _json(step.value) if step.status is StepStatus.OK else None
            if step.name.startswith("workflow:") and isinstance(value, dict):
                current = value.get("start") if isinstance(value.get("start"), str) else None
            elif step.name.startswith("node:") and isinstance(value, str):
                current = None if value == "end" else value
        if current is not None:
            self._start_node(live, current, at)

    def _node_step(self, live: _Live, step: StepRecord, value: Any) -> None:
        end = step.ended_at or step.started_at
        if (
            step.name.startswith("workflow:")
            and isinstance(value, dict)
            and isinstance(value.get("start"), str)
        ):
            self._start_node(live, value["start"], end)
        elif step.name.startswith("node:") and live.node is not None:
            live.node.set_attribute("corral.node.next", str(value))
            live.node.end(end_time=_ns(end))
            live.node = None
            if isinstance(value, str) and value != "end":
                self._start_node(live, value, end)

    # -- step spans -------------------------------------------------------------------------------------
    def _step_span(self, step: StepRecord) -> None:
        from opentelemetry import trace
        from opentelemetry.trace import Status, StatusCode

        with self._lock:
            live = self._live.get(step.run_id)
        if live is None:
            return
        value = _json(step.value)
        if step.name.startswith(("workflow:", "node:")):
            if step.status is StepStatus.OK:
                self._node_step(live, step, value)
            return
        name, attributes = describe_step(step.name, value if step.status is StepStatus.OK else None)
        attributes["corral.step.position"] = step.position
        parent = live.node if live.node is not None else live.run
        span = self._tracer.start_span(
            name,
            context=trace.set_span_in_context(parent),
            start_time=_ns(step.started_at),
            attributes=attributes,
        )
        if step.status is StepStatus.ERROR:
            kind = value.get("type") if isinstance(value, dict) else None
            span.set_attribute("error.type", str(kind or "error"))
            span.set_status(Status(StatusCode.ERROR))
        span.end(end_time=_ns(step.ended_at or step.started_at))

    # -- the Journal interface, passed through ----------------------------------------------------------
    def create_run(self, run: RunRecord, *, lease_seconds: float | None = None) -> bool:
        created = self.inner.create_run(run, lease_seconds=lease_seconds)
        if created and lease_seconds is not None:
            self._safely(self._open, run, resumed=False)
        return created

    def get_run(self, run_id: str) -> RunRecord | None:
        return self.inner.get_run(run_id)

    def list_runs(
        self, *, statuses: Sequence[RunStatus] | None = None, limit: int = 100, offset: int = 0
    ) -> list[RunRecord]:
        return self.inner.list_runs(statuses=statuses, limit=limit, offset=offset)

    def finish_run(
        self,
        run_id: str,
        status: RunStatus,
        output: str | None,
        output_type: str | None,
        *,
        worker_id: str,
        now: float,
        generation: int | None = None,
    ) -> bool:
        done = self.inner.finish_run(
            run_id, status, output, output_type, worker_id=worker_id, now=now, generation=generation
        )
        self._safely(self._close, run_id, status.value if done else "lost", now)
        return done

    def park_run(
        self,
        run_id: str,
        *,
        signal: str | None,
        wake_at: float | None,
        worker_id: str,
        now: float,
        generation: int | None = None,
    ) -> RunStatus | None:
        status = self.inner.park_run(
            run_id, signal=signal, wake_at=wake_at, worker_id=worker_id, now=now, generation=generation
        )
        self._safely(self._close, run_id, "parked" if status is not None else "lost", now)
        return status

    def cancel_run(self, run_id: str, *, now: float) -> RunRecord:
        return self.inner.cancel_run(run_id, now=now)

    def release(self, run_id: str, *, worker_id: str, now: float) -> None:
        self.inner.release(run_id, worker_id=worker_id, now=now)
        self._safely(self._close, run_id, "released", now)

    def load_steps(self, run_id: str) -> list[StepRecord]:
        return self.inner.load_steps(run_id)

    def write_step(self, step: StepRecord, *, generation: int | None = None) -> bool:
        written = self.inner.write_step(step, generation=generation)
        if written and step.status in (StepStatus.OK, StepStatus.ERROR):
            self._safely(self._step_span, step)
        return written

    def send_signal(self, run_id: str, name: str, payload: str, *, now: float) -> None:
        self.inner.send_signal(run_id, name, payload, now=now)

    def consume_signal(
        self, run_id: str, name: str, step: StepRecord, *, generation: int | None = None
    ) -> StepRecord | None:
        taken = self.inner.consume_signal(run_id, name, step, generation=generation)
        if taken is not None and taken.status in (StepStatus.OK, StepStatus.ERROR):
            self._safely(self._step_span, taken)
        return taken

    def claim(
        self,
        *,
        worker_id: str,
        now: float,
        lease_seconds: float,
        limit: int = 1,
        run_id: str | None = None,
        steal_from: str | None = None,
    ) -> list[RunRecord]:
        claimed = self.inner.claim(
            worker_id=worker_id,
            now=now,
            lease_seconds=lease_seconds,
            limit=limit,
            run_id=run_id,
            steal_from=steal_from,
        )
        for run in claimed:
            self._safely(self._open, run, resumed=True)
        return claimed

    def renew(self, *, worker_id: str, run_ids: Sequence[str], now: float, lease_seconds: float) -> set[str]:
        return self.inner.renew(worker_id=worker_id, run_ids=run_ids, now=now, lease_seconds=lease_seconds)

    def verify(self, run_id: str | None = None) -> list[JournalCorrupt]:
        # The wrapped backend's own check (it verifies its checksums), not the generic read-everything one.
        return self.inner.verify(run_id)

    def close(self) -> None:
        with self._lock:
            open_runs = list(self._live)
        for run_id in open_runs:
            self._safely(self._close, run_id, "closed", time.time())
        self.inner.close()
        if self.provider is not None:
            self.provider.force_flush()


def _agent_attributes(run: RunRecord) -> dict[str, Any]:
    """GenAI's ``invoke_agent`` attributes for a run of a named agent (its name is the first argument)."""
    if not run.function.endswith(":run_agent"):
        return {}
    data = _json(run.input)
    args = data.get("args") if isinstance(data, dict) else None
    if not isinstance(args, list) or not args or not isinstance(args[0], str):
        return {}
    return {"gen_ai.operation.name": "invoke_agent", "gen_ai.agent.name": args[0]}


def describe_step(name: str, value: Any) -> tuple[str, dict[str, Any]]:
    """The span name and attributes of a step: GenAI semantic conventions for model and tool calls.

    >>> describe_step("model:local", {"model": "qwen", "usage": {"input_tokens": 5, "output_tokens": 2,
    ...     "cost_usd": 0.0}, "finish_reason": "stop"})[0]
    'chat qwen'
    """
    head, _, rest = name.partition(":")
    attributes: dict[str, Any] = {"corral.step": name}
    if head == "model":
        found = value.get("usage") if isinstance(value, dict) else None
        usage: dict[str, Any] = found if isinstance(found, dict) else {}
        model = str(value.get("model") or rest) if isinstance(value, dict) else rest
        attributes.update(
            {
                "gen_ai.operation.name": "chat",
                "gen_ai.system": _GENAI_SYSTEM,
                "gen_ai.provider.name": rest or _GENAI_SYSTEM,
                "gen_ai.request.model": rest or model,
                "gen_ai.response.model": model,
                "gen_ai.usage.input_tokens": int(usage.get("input_tokens", 0) or 0),
                "gen_ai.usage.output_tokens": int(usage.get("output_tokens", 0) or 0),
                "corral.cost_usd": float(usage.get("cost_usd", 0.0) or 0.0),
            }
        )
        if isinstance(value, dict) and isinstance(value.get("finish_reason"), str):
            attributes["gen_ai.response.finish_reasons"] = [value["finish_reason"]]
        return f"chat {model}", attributes
    if head == "tool":
        attributes.update({"gen_ai.operation.name": "execute_tool", "gen_ai.tool.name": rest})
        if isinstance(value, dict) and value.get("error_kind"):
            attributes["error.type"] = str(value["error_kind"])
        return f"execute_tool {rest}", attributes
    if head in SANDBOX_STEPS or head == "sandbox":
        attributes["corral.sandbox.job"] = rest or head
        if isinstance(value, dict):
            if isinstance(value.get("row_count"), int):
                attributes["corral.sandbox.row_count"] = value["row_count"]
            if value.get("error"):
                attributes["error.type"] = "query_error"
        return f"sandbox {rest or head}", attributes
    return f"step {name}", attributes
