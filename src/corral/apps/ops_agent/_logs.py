"""Logs: tail and search files and journald within a time window, bounded in bytes, lines and time."""

from __future__ import annotations

import os
import re
import shutil
import stat
import subprocess
from datetime import UTC, datetime, timedelta

from pydantic import BaseModel, Field

from corral.apps.ops_agent.errors import EvidenceError

# A timestamp at (or near) the start of a line: ISO 8601 or syslog's "Dec  1 15:59:35".
_ISO = re.compile(r"(\d{4}-\d{2}-\d{2})[T ](\d{2}:\d{2}:\d{2})(?:[.,]\d+)?(Z|[+-]\d{2}:?\d{2})?")
_SYSLOG = re.compile(r"^([A-Z][a-z]{2})\s+(\d{1,2}) (\d{2}:\d{2}:\d{2})")


class LogLines(BaseModel):
    """Lines read from one log source (a file or a journald unit)."""

    source: str
    lines: list[str] = Field(default_factory=list)
    matched: int = 0
    cut: bool = False


def line_time(line: str, *, now: datetime) -> datetime | None:
    """The timestamp a log line starts with, if it has one (local time when it names no zone).

    >>> line_time("2026-12-01T10:00:00Z boot", now=datetime.now(UTC)).isoformat()
    '2026-12-01T10:00:00+00:00'
    >>> line_time("2026-12-01 10:00:00+02:00 boot", now=datetime.now(UTC)).isoformat()
    '2026-12-01T10:00:00+02:00'
    """
    m = _ISO.search(line[:64])
    if m:
        zone = (m.group(3) or "").replace("Z", "+00:00")
        try:
            when = datetime.fromisoformat(f"{m.group(1)}T{m.group(2)}{zone}")
        except ValueError:
            return None
        return when if when.tzinfo is not None else when.astimezone()
    m = _SYSLOG.match(line)
    if m:
        try:
            parsed = datetime.strptime(
                f"{now.year} {m.group(1)} {m.group(2)} {m.group(3)}", "%Y %b %d %H:%M:%S"
            )
        except ValueError:
            return None
        return parsed.astimezone()
    return None


def read_log(
    path: str,
    *,
    pattern: str | None = None,
    since_s: float | None = None,
    lines: int = 200,
    max_bytes: int = 1 << 20,
    follow: bool = True,
) -> LogLines:
    """The last ``lines`` lines of ``path`` (from its last ``max_bytes``) that match ``pattern`` (a regular
    expression, case-insensitive) and are no older than ``since_s`` seconds (lines without a timestamp
    are kept)."""
    try:
        # Never a FIFO or a device (an open that blocks, a read that never ends); ``follow=False`` refuses a
        # symlink, so a link planted where logs are found cannot make the agent read another file.
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | (0 if follow else os.O_NOFOLLOW))
    except OSError as exc:
        raise EvidenceError(f"cannot read the log {path}: {exc.strerror}") from exc
    with os.fdopen(fd, "rb") as f:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise EvidenceError(f"{path} is not a regular file: not read")
        size = st.st_size
        f.seek(max(0, size - max_bytes))
        raw = f.read(max_bytes)
    text = raw.decode("utf-8", "replace").splitlines()
    if size > max_bytes and text:
        text = text[1:]  # the first line is cut
    return _select(path, text, pattern, since_s, lines, cut=size > max_bytes)


def _select(
    source: str, text: list[str], pattern: str | None, since_s: float | None, lines: int, *, cut: bool
) -> LogLines:
    try:
        regex = re.compile(pattern, re.IGNORECASE) if pattern else None
    except re.error as exc:
        raise EvidenceError(f"bad log search pattern {pattern!r}: {exc}") from exc
    now = datetime.now(UTC)
    floor = now - timedelta(seconds=since_s) if since_s is not None else None
    kept = []
    for line in text:
        if regex is not None and not regex.search(line[:4096]):
            continue
        if floor is not None:
            when = line_time(line, now=now)
            if when is not None and when < floor:
                continue
        kept.append(line[:1000])
    return LogLines(source=source, lines=kept[-lines:], matched=len(kept), cut=cut)


def read_journal(
    unit: str | None,
    *,
    pattern: str | None = None,
    since_s: float = 3600,
    lines: int = 200,
    timeout_s: float = 10.0,
) -> LogLines:
    """journald's lines of ``unit`` (or of the whole machine) from the last ``since_s`` seconds."""
    journalctl = shutil.which("journalctl")
    if journalctl is None:
        raise EvidenceError("journalctl is not installed: no journald logs on this machine")
    argv = [
        journalctl,
        "--no-pager",
        "-o",
        "short-iso",
        "-n",
        str(min(lines * 20, 20_000)),
        "--since",
        f"-{int(since_s)}s",
    ]
    if unit:
        argv += ["-u", unit]
    try:
        done = subprocess.run(argv, capture_output=True, timeout=timeout_s, check=False)
    except subprocess.TimeoutExpired as exc:
        raise EvidenceError(f"journalctl did not answer within {timeout_s:g} s") from exc
    if done.returncode != 0 and not done.stdout:
        message = done.stderr.decode("utf-8", "replace").strip()[:300]
        raise EvidenceError(f"journalctl failed: {message or done.returncode}")
    text = done.stdout[-(4 << 20) :].decode("utf-8", "replace").splitlines()
    return _select(f"journald:{unit or '*'}", text, pattern, None, lines, cut=False)
