"""OpenTelemetry: a span per run, workflow node, model call (GenAI attributes), tool call and sandbox job;
names, parents and attributes checked with an in-process exporter; OTLP/HTTP export to a local receiver."""

from __future__ import annotations

import http.server
import os
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import pytest
from fastapi.testclient import TestClient
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from corral.apps.server import ServerConfig, create_app
from corral.durable import (
    MemoryJournal,
    Runtime,
    SqliteJournal,
    TracingJournal,
    trace_id_for,
    tracer_provider,
    tracer_provider_from_env,
)

from ._runs import Essay, essay, hostile, park_remover


@pytest.fixture
def spans() -> InMemorySpanExporter:
    return InMemorySpanExporter()


@pytest.fixture
def traced(spans: InMemorySpanExporter) -> Iterator[Runtime]:
    rt = Runtime(TracingJournal(MemoryJournal(), tracer_provider(SimpleSpanProcessor(spans))))
    yield rt
    rt.close()


def _by_name(spans: InMemorySpanExporter) -> dict[str, list[ReadableSpan]]:
    found: dict[str, list[ReadableSpan]] = {}
    for span in spans.get_finished_spans():
        found.setdefault(span.name, []).append(span)
    return found


def _parent(span: ReadableSpan) -> int | None:
    return span.parent.span_id if span.parent is not None else None


def test_a_workflow_run_is_one_trace_with_a_span_per_node(
    traced: Runtime, spans: InMemorySpanExporter
) -> None:
    essay.run_sync(Essay(topic="t"), runtime=traced, run_id="w1")
    names = _by_name(spans)
    [run] = names["run run_workflow"]
    assert run.parent is None and run.attributes is not None and run.attributes["corral.run_id"] == "w1"
    assert run.attributes["corral.status"] == "completed"
    assert f"{run.context.trace_id:032x}" == trace_id_for("w1")
    assert len(names["node write"]) == 2 and len(names["node review"]) == 2
    nodes = [*names["node write"], *names["node review"]]
    assert {_parent(n) for n in nodes} == {run.context.span_id}
    steps = names["step write"]
    assert len(steps) == 2
    assert {_parent(s) for s in steps} <= {n.context.span_id for n in names["node write"]}
    for span in spans.get_finished_spans():
        assert span.context.trace_id == run.context.trace_id
        assert span.start_time is not None and span.end_time is not None and span.start_time <= span.end_time


def test_model_and_tool_calls_carry_genai_attributes(traced: Runtime, spans: InMemorySpanExporter) -> None:
    hostile().run_sync("Echo.", runtime=traced, run_id="a1")
    names = _by_name(spans)
    [run] = names["run run_agent"]
    assert (run.attributes or {})["gen_ai.agent.name"] == "hostile"
    assert (run.attributes or {})["gen_ai.operation.name"] == "invoke_agent"
    chats = names["chat scripted"]
    assert len(chats) == 2
    for chat in chats:
        attrs = chat.attributes or {}
        assert _parent(chat) == run.context.span_id
        assert attrs["gen_ai.operation.name"] == "chat"
        assert attrs["gen_ai.request.model"] == "scripted" and attrs["gen_ai.response.model"] == "scripted"
        assert attrs["gen_ai.usage.input_tokens"] > 0 and attrs["gen_ai.usage.output_tokens"] > 0
        assert attrs["corral.cost_usd"] == 0.0
    [tool] = names["execute_tool echo"]
    assert (tool.attributes or {})["gen_ai.tool.name"] == "echo"
    assert _parent(tool) == run.context.span_id
    assert chats[0].end_time <= tool.start_time <= tool.end_time <= chats[1].start_time  # type: ignore[operator]


def test_a_parked_run_ends_its_span_and_the_resumed_one_joins_the_trace(
    traced: Runtime, spans: InMemorySpanExporter
) -> None:
    from corral.guards import Approvals

    park_remover(traced)
    [first] = _by_name(spans)["run run_agent"]
    assert (first.attributes or {})["corral.status"] == "parked"
    approvals = Approvals(traced)
    [request] = approvals.list()
    approvals.approve(request.id, by="ada")
    from ._runs import remover

    remover().run_sync("Remove bob.", runtime=traced, run_id="remove-bob")
    runs = _by_name(spans)["run run_agent"]
    assert len(runs) == 2 and runs[1].context.trace_id == first.context.trace_id
    assert (runs[1].attributes or {})["corral.resumed"] is True
    assert (runs[1].attributes or {})["corral.status"] == "completed"


@pytest.mark.sandbox
async def test_sandbox_jobs_of_the_data_agent_are_spans(spans: InMemorySpanExporter, tmp_path: Path) -> None:
    from corral.apps.data_agent import _run

    from .conftest import CHINOOK, data_model

    _run._models.clear()
    original = _run.make_model
    _run.make_model = lambda name: data_model(["```sql\nSELECT COUNT(*) AS n FROM Album\n```"])
    rt = Runtime(
        TracingJournal(SqliteJournal(tmp_path / "j.db"), tracer_provider(SimpleSpanProcessor(spans)))
    )
    try:
        answer = await _run.ask("How many albums?", db=str(CHINOOK), runtime=rt, run_id="q1")
    finally:
        _run.make_model = original
        _run._models.clear()
        rt.close()
    assert answer.rows == [[347]]
    names = _by_name(spans)
    [run] = names["run ask_run"]
    query = names["sandbox query"][0]
    assert query.context.trace_id == run.context.trace_id
    assert (query.attributes or {})["corral.sandbox.row_count"] == 1
    assert names["sandbox schema"] and names["chat scripted"]


def test_the_server_traces_its_runs_and_shows_the_trace_id(
    config: ServerConfig, token: str, spans: InMemorySpanExporter
) -> None:
    from dataclasses import replace

    traced = replace(config, tracer_provider=tracer_provider(SimpleSpanProcessor(spans)))
    with TestClient(create_app(traced)) as client:
        client.headers["Authorization"] = f"Bearer {token}"
        park_remover(Runtime(SqliteJournal(config.journal)))  # parked by another process's runtime
        [request] = client.get("/api/approvals").json()
        client.post(f"/api/approvals/{request['id']}/approve", json={})
        deadline = time.monotonic() + 20
        while client.get("/api/runs/remove-bob").json()["status"] != "completed":
            assert time.monotonic() < deadline
            time.sleep(0.05)
        shown = client.get("/api/runs/remove-bob").json()["trace_id"]
    [run] = _by_name(spans)["run run_agent"]  # the part the server's worker executed
    assert f"{run.context.trace_id:032x}" == shown
    assert "execute_tool run_sql" in _by_name(spans)


class _Receiver(http.server.BaseHTTPRequestHandler):
    bodies: ClassVar[list[tuple[str, str, bytes]]] = []

    def do_POST(self) -> None:
        length = int(self.headers.get("content-length", 0))
        self.bodies.append((self.path, self.headers.get("content-type", ""), self.rfile.read(length)))
        self.send_response(200)
        self.send_header("content-type", "application/x-protobuf")
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


def test_spans_are_exported_over_otlp_to_a_local_receiver(monkeypatch: pytest.MonkeyPatch) -> None:
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Receiver)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    _Receiver.bodies = []
    try:
        monkeypatch.delenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", raising=False)
        monkeypatch.delenv("OTEL_EXPORTER_OTLP_ENDPOINT", raising=False)
        assert tracer_provider_from_env() is None  # off unless configured
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", f"http://127.0.0.1:{server.server_port}")
        provider = tracer_provider_from_env()
        assert provider is not None
        rt = Runtime(TracingJournal(MemoryJournal(), provider))
        essay.run_sync(Essay(topic="t"), runtime=rt, run_id="otlp-1")
        rt.close()  # flushes the batch
        provider.shutdown()
    finally:
        server.shutdown()
        server.server_close()
    assert _Receiver.bodies, "nothing reached the receiver"
    path, content_type, _ = _Receiver.bodies[0]
    assert path == "/v1/traces" and content_type == "application/x-protobuf"
    request = ExportTraceServiceRequest()
    for _, _, raw in _Receiver.bodies:
        request.MergeFromString(raw)
    names = [s.name for rs in request.resource_spans for ss in rs.scope_spans for s in ss.spans]
    assert "run run_workflow" in names and names.count("node write") == 2
    trace_ids = {s.trace_id.hex() for rs in request.resource_spans for ss in rs.scope_spans for s in ss.spans}
    assert trace_ids == {trace_id_for("otlp-1")}
    service = {a.key: a.value.string_value for a in request.resource_spans[0].resource.attributes}
    assert service["service.name"] == "corral"


def test_a_span_that_cannot_be_recorded_never_fails_the_run(
    traced: Runtime, spans: InMemorySpanExporter, monkeypatch: pytest.MonkeyPatch
) -> None:
    from corral.durable import _tracing

    def broken(name: str, value: Any) -> Any:
        raise ValueError("an exporter or a value the tracer cannot take")

    monkeypatch.setattr(_tracing, "describe_step", broken)
    result = hostile().run_sync("Echo.", runtime=traced, run_id="still-runs")
    assert result.status == "completed"
    assert [s.name for s in spans.get_finished_spans()] == ["run run_agent"]  # the run span still ends


def test_the_tracing_journal_passes_the_journal_conformance_suite(tmp_path: Path) -> None:
    from itertools import count

    from corral.durable import check_journal

    spans = InMemorySpanExporter()
    provider = tracer_provider(SimpleSpanProcessor(spans))
    check_journal(lambda: TracingJournal(MemoryJournal(), provider))
    numbers = count()
    check_journal(lambda: TracingJournal(SqliteJournal(tmp_path / f"j{next(numbers)}.db"), provider))
    assert spans.get_finished_spans()  # the suite's runs were traced on the way


def test_the_tracing_journal_asks_the_wrapped_journal_to_verify_itself() -> None:
    from corral.durable import JournalCorrupt

    class SelfChecking(MemoryJournal):
        """A backend with checks of its own (as SQLite's quick_check and WAL scan) beyond reading rows."""

        def verify(self, run_id: str | None = None) -> list[JournalCorrupt]:
            return [JournalCorrupt("j", f"damage found by the backend's own check of {run_id}")]

    found = TracingJournal(SelfChecking()).verify("r1")
    assert [str(e) for e in found] == [str(e) for e in SelfChecking().verify("r1")]


@pytest.fixture
def receiver(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A local OTLP/HTTP receiver (its bodies in ``_Receiver.bodies``); yields its endpoint. The OTLP
    variables are cleared, so a test sets the one it means."""
    monkeypatch.delenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", raising=False)
    monkeypatch.delenv("OTEL_EXPORTER_OTLP_ENDPOINT", raising=False)
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Receiver)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    _Receiver.bodies = []
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        server.server_close()


def _received() -> dict[str, list[Any]]:
    """The spans the receiver got, by name."""
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

    request = ExportTraceServiceRequest()
    for _, _, raw in _Receiver.bodies:
        request.MergeFromString(raw)
    found: dict[str, list[Any]] = {}
    for rs in request.resource_spans:
        for ss in rs.scope_spans:
            for span in ss.spans:
                found.setdefault(span.name, []).append(span)
    return found


def test_a_plain_runtime_is_traced_when_an_endpoint_is_configured(
    receiver: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", receiver)
    journal = MemoryJournal()
    rt = Runtime(journal)
    assert isinstance(rt.journal, TracingJournal) and rt.journal.inner is journal
    result = hostile().run_sync("Echo.", runtime=rt, run_id="plain-1")
    assert result.status == "completed"
    rt.close()  # flushes the batch
    names = _received()
    [run] = names["run run_agent"]
    assert run.trace_id.hex() == trace_id_for("plain-1")
    assert len(names["chat scripted"]) == 2 and len(names["execute_tool echo"]) == 1
    for span in [*names["chat scripted"], *names["execute_tool echo"]]:
        assert span.trace_id == run.trace_id and span.parent_span_id == run.span_id


def test_the_traces_variable_alone_turns_tracing_on(receiver: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", f"{receiver}/v1/traces")
    rt = Runtime(MemoryJournal())
    essay.run_sync(Essay(topic="t"), runtime=rt, run_id="plain-2")
    rt.close()
    assert _received()["run run_workflow"]


def test_tracing_is_off_by_default_and_a_traced_journal_is_not_wrapped_again(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", raising=False)
    monkeypatch.delenv("OTEL_EXPORTER_OTLP_ENDPOINT", raising=False)
    journal = MemoryJournal()
    assert Runtime(journal).journal is journal
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:9")
    traced = TracingJournal(MemoryJournal(), tracer_provider())
    assert Runtime(traced).journal is traced


def test_off_by_default_the_durable_layer_does_not_import_opentelemetry() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_EXPORTER_OTLP")}
    code = (
        "import sys; from corral.durable import MemoryJournal, Runtime\n"
        "async def f(ctx): return await ctx.step('s', lambda: 1)\n"
        "assert Runtime(MemoryJournal()).run_sync(f) == 1\n"
        "print(sorted(m for m in sys.modules if m.startswith('opentelemetry')))"
    )
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


_JOB = """
from corral.durable import RunContext


async def job(ctx: RunContext, text: str) -> str:
    reply = await ctx.step("model:scripted", lambda: {"model": "scripted", "usage": {"input_tokens": 3}})
    return await ctx.step("tool:echo", lambda: f"{reply['model']}: {text}")
"""


def test_corral_worker_exports_the_spans_of_the_runs_it_executes(
    receiver: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "traced_job.py").write_text(textwrap.dedent(_JOB))
    monkeypatch.syspath_prepend(str(tmp_path))
    from traced_job import job  # type: ignore[import-not-found]

    journal = tmp_path / "j.db"
    starter = Runtime(SqliteJournal(journal))  # this process is not traced: no endpoint set here
    assert not isinstance(starter.journal, TracingJournal)
    starter.start(job, "hi", run_id="w-1")
    starter.close()
    env = {**os.environ, "OTEL_EXPORTER_OTLP_ENDPOINT": receiver}
    done = subprocess.run(
        [str(Path(sys.executable).parent / "corral"), "worker", "--once", "--journal", str(journal)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert "executed 1 run(s), 0 failed" in done.stderr
    names = _received()
    [run] = names["run job"]
    assert run.trace_id.hex() == trace_id_for("w-1")
    [chat] = names["chat scripted"]
    [tool] = names["execute_tool echo"]
    assert chat.parent_span_id == tool.parent_span_id == run.span_id


def test_the_server_wraps_its_journal_once_when_an_endpoint_is_configured(
    config: ServerConfig, monkeypatch: pytest.MonkeyPatch
) -> None:
    from corral.apps.server._state import ServerState

    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:9")
    state = ServerState(config)
    journal = state.runtime.journal
    try:
        assert isinstance(journal, TracingJournal) and isinstance(journal.inner, SqliteJournal)
    finally:
        state.runtime.close()
