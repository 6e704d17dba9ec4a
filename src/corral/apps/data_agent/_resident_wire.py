"""What crosses the resident process's socket: JSON lines, each parsed strictly on arrival.

A client sends one request per connection; the resident answers with a :class:`Hello`, then (for a question)
:class:`EventLine` s as the question goes, and one :class:`AnswerLine` or :class:`ErrorLine`. Every line is
bounded (:data:`MAX_LINE`) and validated against these models on both sides: a line that does not parse is
a :class:`~.errors.DataAgentError` naming what was wrong, never a half-read answer.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Annotated, Literal, TypeAlias

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from corral import __version__
from corral.apps.data_agent._answer import Answer
from corral.apps.data_agent._events import DataEvent
from corral.apps.data_agent._timings import Warmup
from corral.apps.data_agent.errors import DataAgentError

#: The longest line either side accepts: an answer carries at most 1,000 rows.
MAX_LINE = 16 * 1024 * 1024


class _Line(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class AskOptions(_Line):
    """The options of ``corral ask`` a resident honours (writes need a terminal: they stay in process)."""

    judge: bool = True
    chart_dir: str | None = Field(default=None, max_length=4096)
    language: Literal["auto", "sql", "python"] = "auto"
    verified: str | None = Field(default=None, max_length=4096)
    lessons: bool = True


class AskRequest(_Line):
    """One question, for the journal at ``journal`` (the client's: the run is journaled where it would be)."""

    type: Literal["ask"] = "ask"
    question: str = Field(min_length=1, max_length=10_000)
    db: str | None = Field(default=None, max_length=4096)
    files: list[Annotated[str, Field(max_length=4096)]] = Field(default_factory=list, max_length=256)
    model: str | None = Field(default=None, max_length=512)
    journal: str = Field(min_length=1, max_length=4096)
    thread: str | None = Field(default=None, max_length=64)
    options: AskOptions = AskOptions()


class StopRequest(_Line):
    """Ask the resident to exit (``corral resident stop``, or a client that found an outdated one)."""

    type: Literal["stop"] = "stop"


class PingRequest(_Line):
    """Only the hello (``corral resident status``)."""

    type: Literal["ping"] = "ping"


Request: TypeAlias = Annotated[AskRequest | StopRequest | PingRequest, Field(discriminator="type")]


class Hello(_Line):
    """The resident's first line: who it is, and which code it runs."""

    type: Literal["hello"] = "hello"
    pid: int
    code: str
    idle_timeout_s: float
    questions: int = 0


class EventLine(_Line):
    type: Literal["event"] = "event"
    event: DataEvent


class AnswerLine(_Line):
    type: Literal["answer"] = "answer"
    answer: Answer
    #: What this question paid to warm the resident up (0 when it was warm).
    warmup: Warmup = Warmup()


class ErrorLine(_Line):
    """A question that could not start or ended in an error (the message a person reads)."""

    type: Literal["error"] = "error"
    message: str = Field(max_length=20_000)


Reply: TypeAlias = Annotated[Hello | EventLine | AnswerLine | ErrorLine, Field(discriminator="type")]

request_adapter: TypeAdapter[Request] = TypeAdapter(Request)
reply_adapter: TypeAdapter[Reply] = TypeAdapter(Reply)


def parse_request(line: bytes) -> Request:
    """A client's request, or a :class:`DataAgentError` saying why it is not one."""
    try:
        return request_adapter.validate_json(line)
    except ValidationError as exc:
        raise DataAgentError(f"not a valid request to the resident process: {_first(exc)}") from None


def parse_reply(line: bytes) -> Reply:
    """A resident's reply line, or a :class:`DataAgentError` saying why it is not one."""
    try:
        return reply_adapter.validate_json(line)
    except ValidationError as exc:
        raise DataAgentError(f"the resident process sent an invalid reply: {_first(exc)}") from None


def _first(exc: ValidationError) -> str:
    error = exc.errors()[0]
    where = ".".join(str(p) for p in error.get("loc", ()))
    return f"{where}: {error.get('msg', 'invalid')}" if where else str(error.get("msg", "invalid"))


def code_fingerprint() -> str:
    """Which corral code a process runs: the version and its source files' sizes and times. A client that
    finds a resident running other code (an upgrade, an edit) replaces it rather than get other answers."""
    import corral

    root = Path(corral.__file__).parent
    digest = hashlib.sha256(__version__.encode())
    for path in sorted(root.rglob("*.py")):
        stat = path.stat()
        digest.update(f"{path.relative_to(root)}:{stat.st_size}:{stat.st_mtime_ns}".encode())
    return digest.hexdigest()[:16]
