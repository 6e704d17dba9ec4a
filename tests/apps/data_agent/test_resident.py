"""The resident process: a question sent over its socket is answered as the same durable run, in the
client's journal, with its events streamed back; every line is parsed strictly; it is private to its user,
single, and leaves when idle."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import stat
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from corral.apps.data_agent import _resident_client as client
from corral.apps.data_agent import _run
from corral.apps.data_agent._events import DataEvent
from corral.apps.data_agent._resident import Resident, socket_path
from corral.apps.data_agent._resident_wire import MAX_LINE, AskOptions, Hello, parse_reply, parse_request
from corral.apps.data_agent.errors import DataAgentError
from corral.durable import Runtime

from .conftest import InProcessRunner, routed_model


@pytest.fixture
async def resident(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> AsyncIterator[Resident]:
    """A resident served by this test's event loop, with the scripted model and the test runner."""
    model = routed_model(["```sql\nSELECT COUNT(*) AS n FROM Genre\n```"] * 3)
    monkeypatch.setattr(_run, "make_runner", InProcessRunner)
    monkeypatch.setattr(_run, "make_model", lambda name: model)
    monkeypatch.setattr(_run, "_models", {})
    monkeypatch.setenv("CORRAL_JOURNAL", str(tmp_path / "journal.sqlite"))
    monkeypatch.delenv("XDG_RUNTIME_DIR", raising=False)
    res = Resident(socket_path(), idle_timeout_s=60)
    task = asyncio.create_task(res.serve())
    for _ in range(200):
        if res.path.exists():
            break
        await asyncio.sleep(0.01)
    yield res
    res.stopping.set()
    await task


async def test_a_question_is_answered_as_a_run_of_the_clients_journal(
    resident: Resident, chinook: Path, tmp_path: Path
) -> None:
    events: list[DataEvent] = []
    answer, warmup = await client.ask_resident(
        "How many genres are there?", db=str(chinook), options=AskOptions(judge=True), on_event=events.append
    )
    assert answer.status == "answered" and answer.rows == [[25]]
    assert next(e.type for e in events) == "schema" and events[-1].type == "answer"
    assert warmup.model_load_s == 0.0  # a scripted model has no weights
    rt = Runtime.open(tmp_path / "journal.sqlite")
    try:
        assert rt.get_run(answer.run_id).status.is_final
    finally:
        rt.close()
    assert resident.questions == 1


async def test_the_socket_is_private(resident: Resident) -> None:
    assert stat.S_IMODE(resident.path.stat().st_mode) == 0o600
    assert stat.S_IMODE(resident.path.parent.stat().st_mode) == 0o700


async def test_a_bad_request_gets_an_error_and_the_resident_goes_on(
    resident: Resident, chinook: Path
) -> None:
    reader, writer = await asyncio.open_unix_connection(resident.path, limit=MAX_LINE)
    assert isinstance(parse_reply(await reader.readline()), Hello)
    writer.write(b'{"type": "ask", "question": "x", "journal": "/j", "rm": "-rf"}\n')
    reply = parse_reply(await reader.readline())
    assert reply.type == "error" and "rm" in reply.message
    writer.close()
    answer, _ = await client.ask_resident("How many genres are there?", db=str(chinook))
    assert answer.rows == [[25]]


async def test_an_error_of_the_question_reaches_the_client(resident: Resident, tmp_path: Path) -> None:
    with pytest.raises(DataAgentError, match="nope"):
        await client.ask_resident("Anything?", db=str(tmp_path / "nope.sqlite"))


async def test_a_second_resident_gives_way(resident: Resident) -> None:
    assert await Resident(resident.path, idle_timeout_s=60).serve() is False


async def test_an_idle_resident_leaves(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_run, "make_runner", InProcessRunner)
    monkeypatch.setattr(_run, "make_model", lambda name: routed_model([]))
    monkeypatch.setattr(_run, "_models", {})
    res = Resident(tmp_path / "r.sock", idle_timeout_s=0.2)
    started = time.monotonic()
    assert await asyncio.wait_for(res.serve(), 10) is True
    assert time.monotonic() - started < 5 and not res.path.exists()


@pytest.mark.parametrize(
    "line",
    [
        b'{"type": "answer"}',
        b'{"type": "event", "event": {"type": "nope", "message": "x"}}',
        b'{"type": "hello", "pid": 1, "code": "c", "idle_timeout_s": 1, "extra": 1}',
        b"not json",
    ],
)
def test_replies_are_parsed_strictly(line: bytes) -> None:
    with pytest.raises(DataAgentError, match="invalid reply"):
        parse_reply(line)


def test_requests_are_bounded() -> None:
    with pytest.raises(DataAgentError, match="question"):
        parse_request(b'{"type": "ask", "question": "' + b"x" * 10_001 + b'", "journal": "/j"}')
    with pytest.raises(DataAgentError):
        parse_request(b'{"type": "ask", "question": "q", "journal": "/j", "options": {"language": "sh"}}')


def test_only_the_products_local_model_goes_to_the_resident(monkeypatch: pytest.MonkeyPatch) -> None:
    assert client.use_resident("local") is True
    assert client.use_resident("openai:gpt-4o") is False
    monkeypatch.setattr(_run, "make_runner", InProcessRunner)
    assert client.use_resident("local") is False  # a process that plugged its own runner runs it itself


@pytest.mark.slow
def test_a_real_resident_process_starts_reports_and_stops(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Started the way `corral ask` starts it on demand (detached), with a model that loads nothing.
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path))
    monkeypatch.setenv("CORRAL_MODEL", "openai:unused")
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    pid = client.start(30)
    try:
        hello = None
        deadline = time.monotonic() + 30
        while hello is None and time.monotonic() < deadline:
            hello = asyncio.run(client.status())
            time.sleep(0.05)
        assert hello is not None and hello.pid == pid and hello.idle_timeout_s == 30
        assert asyncio.run(client.stop()) is True
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
        assert not (tmp_path / "corral" / "resident.sock").exists()
        assert asyncio.run(client.status()) is None
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
