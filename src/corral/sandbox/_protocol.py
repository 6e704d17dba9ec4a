"""The one parser of everything a worker sends the host: strict schemas, bounded sizes, typed errors.

A worker runs as the same unprivileged uid as the jobs it serves, so the host treats its messages as hostile
(DESIGN principle 8): every message is length-prefixed and capped before it is read, parsed by a pydantic
model in strict mode (exact types, no extra keys, bounded strings and numbers, no NaN or infinity, nesting
refused by the types themselves), and checked against the job it answers. Anything malformed becomes a
:class:`~corral.sandbox.errors.SandboxCrashed` — typed, with the worker recycled — never a ``ValueError``,
a ``RecursionError`` or a text the job chose.
"""

from __future__ import annotations

import base64
import binascii
import math
import os
import socket
import stat
import struct
from dataclasses import dataclass
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from corral.sandbox.errors import SandboxCrashed

#: Largest message a worker may send outside a job's answer (the "ready" greeting).
HELLO_BYTES = 16 * 1024
_TEXT = 4000
_HEAD = struct.Struct(">I")


class _Strict(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid", frozen=True)


class Hello(_Strict):
    """A worker's greeting: ready to serve, or why not."""

    ready: bool
    pid: Annotated[int, Field(ge=1)] | None = None
    error: Annotated[str, Field(max_length=_TEXT)] | None = None


class Reply(_Strict):
    """A worker's answer to one job, as sent; :func:`parse_reply` checks it against the job."""

    id: Annotated[int, Field(ge=1)]
    stdout: str
    stderr: str
    stdout_total: Annotated[int, Field(ge=0, le=1 << 62)]
    stderr_total: Annotated[int, Field(ge=0, le=1 << 62)]
    wall: Annotated[float, Field(ge=0, le=1e7, allow_inf_nan=False)]
    killed_for: Literal["wall", "cpu", "protocol"] | None
    setup_error: Annotated[str, Field(max_length=_TEXT)] | None
    exit: Annotated[int, Field(ge=0, le=255)] | None
    wstatus: Annotated[int, Field(ge=0, le=0xFFFF)] | None
    cpu_ns: Annotated[int, Field(ge=0, le=1 << 62)] | None = None


@dataclass(frozen=True)
class Answer:
    """A validated reply: decoded output, and how the job ended."""

    reply: Reply
    stdout: bytes
    stderr: bytes


def max_reply_bytes(output_bytes: int) -> int:
    """The largest reply a job with this output cap can produce (two base64 streams and a little JSON)."""
    return 2 * (4 * math.ceil(output_bytes / 3)) + 64 * 1024


def receive(sock: socket.socket, max_bytes: int, max_fds: int) -> tuple[bytes, list[int]]:
    """One length-prefixed message and the descriptors attached to its prefix; refuses anything oversized."""
    head, fds, flags, _addr = socket.recv_fds(sock, _HEAD.size, max(1, max_fds))
    try:
        if not head:
            raise EOFError("worker closed its socket")
        if flags & socket.MSG_CTRUNC or len(fds) > max_fds:
            raise SandboxCrashed("worker attached more descriptors than the protocol allows")
        while len(head) < _HEAD.size:
            more = sock.recv(_HEAD.size - len(head))
            if not more:
                raise EOFError("worker closed its socket")
            head += more
        (size,) = _HEAD.unpack(head)
        if size > max_bytes:
            raise SandboxCrashed(f"worker sent an oversized message ({size} bytes > {max_bytes})")
        chunks: list[bytes] = []
        while size:
            chunk = sock.recv(min(size, 1 << 20))
            if not chunk:
                raise EOFError("worker closed its socket mid-message")
            chunks.append(chunk)
            size -= len(chunk)
    except BaseException:
        for fd in fds:
            os.close(fd)
        raise
    return b"".join(chunks), fds


def parse_hello(raw: bytes) -> Hello:
    try:
        return Hello.model_validate_json(raw)
    except ValidationError as exc:
        raise SandboxCrashed(f"worker sent a malformed greeting ({exc.error_count()} errors)") from None


def parse_reply(raw: bytes, fds: list[int], *, job_id: int, output_bytes: int) -> Answer:
    """Validate a job's reply and its descriptors (at most one: the scratch directory), or raise typed."""
    try:
        reply = Reply.model_validate_json(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first.get("loc", ()))[:80]
        raise SandboxCrashed(
            f"worker sent a malformed reply ({exc.error_count()} errors, first at {where or 'top'!r}: "
            f"{first.get('type')})"
        ) from None
    if reply.id != job_id:
        raise SandboxCrashed(f"worker answered job {reply.id} while job {job_id} was running")
    ended = (reply.exit is not None) + (reply.wstatus is not None)
    if reply.setup_error is None and ended != 1:
        raise SandboxCrashed("worker's reply must carry exactly one of exit code and wait status")
    if len(fds) > 1 or any(not stat.S_ISDIR(os.fstat(fd).st_mode) for fd in fds):
        raise SandboxCrashed("worker attached something other than one scratch directory to its reply")
    try:
        stdout = base64.b64decode(reply.stdout, validate=True)
        stderr = base64.b64decode(reply.stderr, validate=True)
    except (binascii.Error, ValueError):
        raise SandboxCrashed("worker sent output that is not base64") from None
    if len(stdout) > output_bytes or len(stderr) > output_bytes:
        raise SandboxCrashed("worker sent more output than the job's cap")
    return Answer(reply, stdout, stderr)
