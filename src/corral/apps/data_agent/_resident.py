"""The resident process: keeps the local model and the sandbox pool warm between questions.

``corral ask`` with a local model sends its question here when a resident runs (and starts one when none
does); the resident answers it as the same durable run ``corral ask`` would have started, in the same
journal (the client names it), streaming the events back. Loading the weights and starting the sandbox pool
are then paid once, not per question, and llama.cpp keeps the previous prompts' prefix in its cache.

The socket is a UNIX socket in a directory only the user can enter, itself readable and writable by the user
alone, and the resident also checks each peer's uid (``SO_PEERCRED``). A lock file makes it single: a second
resident started at the same moment exits. It exits by itself after ``idle_timeout_s`` without a question.
Run it in the foreground with ``python -m corral.apps.data_agent._resident`` (``corral resident start``).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import fcntl
import logging
import os
import socket
import struct
import time
from pathlib import Path
from typing import Any

from corral import CorralError
from corral._config import data_dir, get_setting
from corral.apps.data_agent import _run
from corral.apps.data_agent._events import DataEvent
from corral.apps.data_agent._resident_wire import (
    MAX_LINE,
    AnswerLine,
    AskRequest,
    ErrorLine,
    EventLine,
    Hello,
    PingRequest,
    StopRequest,
    code_fingerprint,
    parse_request,
)
from corral.apps.data_agent._sandbox_runner import SandboxQueryRunner
from corral.apps.data_agent._timings import Warmup, warm_up
from corral.apps.data_agent.errors import DataAgentError
from corral.durable import Runtime

_log = logging.getLogger("corral.resident")
#: Seconds without a question after which the resident exits (the setting ``resident_idle_s``).
DEFAULT_IDLE_S = 900.0


def runtime_dir() -> Path:
    """The resident's directory (socket, lock, log): ``$XDG_RUNTIME_DIR/corral``, else ``<data dir>/run``;
    created owner-only, and refused if someone else owns it or can enter it."""
    base = os.environ.get("XDG_RUNTIME_DIR")
    path = Path(base) / "corral" if base and Path(base).is_dir() else data_dir() / "run"
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    info = path.stat()
    if info.st_uid != os.getuid() or info.st_mode & 0o077:
        raise DataAgentError(
            f"{path} must belong to you and be private (chmod 700): the resident's socket lives there"
        )
    return path


def socket_path() -> Path:
    """Where the resident listens."""
    return runtime_dir() / "resident.sock"


def idle_timeout() -> float:
    """The setting ``resident_idle_s``, else :data:`DEFAULT_IDLE_S`."""
    text = get_setting("resident_idle_s", default=str(DEFAULT_IDLE_S))
    try:
        return max(1.0, float(text))
    except ValueError:
        raise DataAgentError(
            f"the setting resident_idle_s must be a number of seconds, not {text!r}"
        ) from None


def _peer_uid(writer: asyncio.StreamWriter) -> int | None:
    sock = writer.get_extra_info("socket")
    if sock is None:
        return None
    creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    _pid, uid, _gid = struct.unpack("3i", creds)
    return int(uid)


class Resident:
    """One resident process's server (see the module docstring)."""

    def __init__(self, path: Path, *, idle_timeout_s: float) -> None:
        self.path = path
        self.idle_timeout_s = idle_timeout_s
        self.code = code_fingerprint()
        self.active = 0
        self.questions = 0
        self.last = time.monotonic()
        self.stopping = asyncio.Event()

    async def serve(self) -> bool:
        """Listen until idle or stopped; ``False`` at once when another resident holds the lock."""
        lock = os.open(self.path.with_suffix(".lock"), os.O_CREAT | os.O_RDWR, 0o600)
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(lock)
            return False
        try:
            with contextlib.suppress(FileNotFoundError):
                self.path.unlink()  # a socket left by a resident that was killed
            old = os.umask(0o177)
            try:
                server = await asyncio.start_unix_server(self._handle, self.path, limit=MAX_LINE)
            finally:
                os.umask(old)
            os.chmod(self.path, 0o600)
            # Warm the default model and the pool now, so the first question finds them (or waits less).
            warming = asyncio.create_task(asyncio.to_thread(_warm_quietly))
            async with server:
                await self._until_idle()
            warming.cancel()
            with contextlib.suppress(FileNotFoundError):
                self.path.unlink()
            return True
        finally:
            os.close(lock)

    async def _until_idle(self) -> None:
        while not self.stopping.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.stopping.wait(), min(5.0, self.idle_timeout_s))
            if self.active == 0 and time.monotonic() - self.last > self.idle_timeout_s:
                _log.info("idle for %.0f s: exiting", self.idle_timeout_s)
                return

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.active += 1
        try:
            if _peer_uid(writer) != os.getuid():
                return  # another user's process: no hello, nothing
            hello = Hello(pid=os.getpid(), code=self.code, idle_timeout_s=self.idle_timeout_s)
            _send(writer, hello.model_copy(update={"questions": self.questions}))
            try:
                request = parse_request(await reader.readline())
            except (ValueError, DataAgentError) as exc:  # ValueError: a line over MAX_LINE
                _send(writer, ErrorLine(message=str(exc)[:20_000]))
                return
            if isinstance(request, StopRequest):
                self.stopping.set()
            elif isinstance(request, AskRequest):
                self.questions += 1
                await self._ask(request, writer)
            else:
                assert isinstance(request, PingRequest)
            await writer.drain()
        except (ConnectionError, OSError):
            _log.info("a client went away before its answer was sent")
        finally:
            self.active -= 1
            self.last = time.monotonic()
            writer.close()

    async def _ask(self, request: AskRequest, writer: asyncio.StreamWriter) -> None:
        def send(event: DataEvent) -> None:
            if not writer.is_closing():
                _send(writer, EventLine(event=event))

        options: dict[str, Any] = request.options.model_dump(exclude_none=True)
        try:
            warmup = await asyncio.to_thread(_warm, request.model)
            rt = Runtime.open(request.journal)
            try:
                answer = await _run.ask(
                    request.question,
                    db=request.db,
                    files=request.files,
                    model=request.model,
                    runtime=rt,
                    on_event=send,
                    thread=request.thread,
                    **options,
                )
            finally:
                rt.close()
        except CorralError as exc:
            _send(writer, ErrorLine(message=str(exc)[:20_000]))
            return
        except Exception as exc:  # a bug: the client gets its name, the log the traceback
            _log.exception("question %r failed", request.question[:80])
            _send(
                writer,
                ErrorLine(message=f"the resident process failed: {type(exc).__name__}: {exc}"[:20_000]),
            )
            return
        _send(writer, AnswerLine(answer=answer, warmup=warmup))


def _warm(model: str | None) -> Warmup:
    # The sandbox pool is the product's runner's; a process that plugged another one has none to warm.
    return warm_up(_run.loaded_model(model), sandbox=_run.make_runner is SandboxQueryRunner)


def _warm_quietly() -> None:
    try:
        _warm(None)
    except Exception:  # the first question reports what is wrong, to the person who asked it
        _log.exception("warming the default model and the sandbox pool failed")


def _send(writer: asyncio.StreamWriter, line: Any) -> None:
    writer.write(line.model_dump_json().encode() + b"\n")


def main(argv: list[str] | None = None) -> int:
    """Run a resident in the foreground; exit status 0 also when another one already runs."""
    parser = argparse.ArgumentParser(prog="python -m corral.apps.data_agent._resident")
    parser.add_argument("--idle", type=float, default=None, help="idle timeout in seconds")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    resident = Resident(socket_path(), idle_timeout_s=args.idle or idle_timeout())
    served = asyncio.run(resident.serve())
    if not served:
        _log.info("another resident already runs at %s", resident.path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
