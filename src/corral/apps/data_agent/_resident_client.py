"""The client side of the resident process: send a question, get its events and answer, start one if needed.

:func:`ask_resident` is what ``corral ask`` calls; :func:`use_resident` says whether it should (a local
model, the product's own model and sandbox, no write to approve on this terminal).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from corral._config import journal_path
from corral.apps.data_agent import _run
from corral.apps.data_agent._answer import Answer
from corral.apps.data_agent._events import DataEvent
from corral.apps.data_agent._resident import runtime_dir, socket_path
from corral.apps.data_agent._resident_wire import (
    MAX_LINE,
    AnswerLine,
    AskOptions,
    AskRequest,
    ErrorLine,
    EventLine,
    Hello,
    PingRequest,
    StopRequest,
    code_fingerprint,
    parse_reply,
)
from corral.apps.data_agent._sandbox_runner import SandboxQueryRunner
from corral.apps.data_agent._timings import Warmup
from corral.apps.data_agent.errors import DataAgentError
from corral.models import resolve_model

#: How long a client waits for a resident it started to listen (loading happens after, per question).
START_TIMEOUT_S = 30.0

Stream = tuple[asyncio.StreamReader, asyncio.StreamWriter]


def use_resident(model: str | None) -> bool:
    """Whether ``corral ask`` should go through the resident: only for the product's model factory and
    sandbox (a process that plugged its own runs them itself) and a local model (a hosted model's key and
    settings live in the caller's environment, which a resident started earlier does not share)."""
    if _run.make_model is not resolve_model or _run.make_runner is not SandboxQueryRunner:
        return False
    return model_name(model).startswith("local")


def model_name(model: str | None) -> str:
    """The model's name as the resident must read it: the caller's default, a GGUF path made absolute."""
    from corral._config import get_setting

    name = (model or get_setting("model", default="local")).strip()
    kind, _, rest = name.partition(":")
    if kind == "local" and ("/" in rest or rest.endswith(".gguf")):
        return f"local:{Path(rest).expanduser().resolve()}"
    return name


async def _open(path: Path) -> Stream | None:
    try:
        return await asyncio.open_unix_connection(path, limit=MAX_LINE)
    except (FileNotFoundError, ConnectionRefusedError):
        return None


async def _hello(stream: Stream) -> Hello:
    reply = parse_reply(await stream[0].readline())
    if not isinstance(reply, Hello):
        raise DataAgentError("the resident process did not greet first")
    return reply


def start(idle_timeout_s: float | None = None) -> int:
    """Start a resident in the background, detached (it outlives this command), logging to resident.log;
    returns its pid. (Spawned without a ``Popen`` object, which would warn that the child outlived it.)"""
    log = os.open(runtime_dir() / "resident.log", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    null = os.open(os.devnull, os.O_RDONLY)
    argv = [sys.executable, "-m", "corral.apps.data_agent._resident"]
    if idle_timeout_s is not None:
        argv += ["--idle", str(idle_timeout_s)]
    try:
        return os.posix_spawn(
            sys.executable,
            argv,
            os.environ,
            file_actions=[
                (os.POSIX_SPAWN_DUP2, null, 0),
                (os.POSIX_SPAWN_DUP2, log, 1),
                (os.POSIX_SPAWN_DUP2, log, 2),
            ],
            setsid=True,
        )
    finally:
        os.close(log)
        os.close(null)


def _failed(pid: int) -> bool:
    """Whether the started resident exited with an error (exit 0: another one runs, wait for it)."""
    try:
        done, status = os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        return False
    return done == pid and os.waitstatus_to_exitcode(status) != 0


async def connect(*, start_if_needed: bool = True) -> tuple[Stream, Hello] | None:
    """A connection to a resident running this very code (an outdated one is told to stop and replaced),
    starting one when none runs and ``start_if_needed``; ``None`` when there is none to use."""
    path = await asyncio.to_thread(socket_path)
    stream = await _open(path)
    if stream is not None:
        hello = await _hello(stream)
        if hello.code == code_fingerprint():
            return stream, hello
        await _request(stream, StopRequest())
        await _gone(path)
    if not start_if_needed:
        return None
    child = start()
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        stream = await _open(path)
        if stream is not None:
            hello = await _hello(stream)
            if hello.code == code_fingerprint():
                return stream, hello
            stream[1].close()
        if _failed(child):
            break
        await asyncio.sleep(0.05)
    raise DataAgentError(
        f"the resident process did not start (see {runtime_dir() / 'resident.log'}); use --no-resident"
    )


async def _request(stream: Stream, request: StopRequest | PingRequest | AskRequest) -> None:
    stream[1].write(request.model_dump_json().encode() + b"\n")
    await stream[1].drain()


async def _gone(path: Path) -> None:
    await asyncio.to_thread(_wait_gone, path, 10.0)


def _wait_gone(path: Path, seconds: float) -> None:
    # A resident removes its socket as it exits.
    deadline = time.monotonic() + seconds
    while path.exists() and time.monotonic() < deadline:
        time.sleep(0.05)


async def stop() -> bool:
    """Stop the running resident; ``False`` when none runs."""
    stream = await _open(socket_path())
    if stream is None:
        return False
    await _hello(stream)
    await _request(stream, StopRequest())
    stream[1].close()
    await _gone(socket_path())
    return True


async def status() -> Hello | None:
    """The running resident's hello, or ``None``."""
    stream = await _open(socket_path())
    if stream is None:
        return None
    hello = await _hello(stream)
    await _request(stream, PingRequest())
    stream[1].close()
    return hello


def _ask_request(
    question: str,
    db: str | None,
    files: Sequence[str | Path],
    model: str | None,
    thread: str | None,
    options: AskOptions,
) -> AskRequest:
    # The resident has its own working directory: every path it gets is absolute.
    if db is not None and "://" not in db:
        db = str(Path(db).expanduser().resolve())
    return AskRequest(
        question=question,
        db=db,
        files=[str(Path(f).expanduser().resolve()) for f in files],
        model=model_name(model),
        journal=str(journal_path().expanduser().resolve()),
        thread=thread,
        options=options,
    )


async def ask_resident(
    question: str,
    *,
    db: str | None = None,
    files: Sequence[str | Path] = (),
    model: str | None = None,
    thread: str | None = None,
    options: AskOptions | None = None,
    on_event: Callable[[DataEvent], None] | None = None,
) -> tuple[Answer, Warmup]:
    """Answer ``question`` in the resident process (started if none runs): the answer, and what the
    resident paid to warm up for it."""
    request = _ask_request(question, db, files, model, thread, options or AskOptions())
    connected = await connect()
    assert connected is not None
    stream, _hello_line = connected
    try:
        await _request(stream, request)
        while line := await stream[0].readline():
            reply = parse_reply(line)
            if isinstance(reply, EventLine) and on_event is not None:
                on_event(reply.event)
            elif isinstance(reply, AnswerLine):
                return reply.answer, reply.warmup
            elif isinstance(reply, ErrorLine):
                raise DataAgentError(reply.message)
    except ValueError as exc:  # a line over MAX_LINE
        raise DataAgentError(f"the resident process sent an oversized reply: {exc}") from None
    finally:
        with contextlib.suppress(OSError):
            stream[1].close()
    raise DataAgentError(
        "the resident process ended before answering; the question is in the journal "
        "(`corral runs list`, then `corral runs resume RUN_ID`)"
    )
