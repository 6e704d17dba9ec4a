"""Checksums of journal rows and a check of the SQLite write-ahead log for committed frames it would drop.

Row checksums catch a changed byte that SQLite cannot see (``PRAGMA quick_check`` verifies the b-tree, not the
values in it). The WAL check catches the other silent loss: SQLite's recovery keeps a WAL only up to its first
damaged frame, so one flipped byte in the middle of the WAL would otherwise replay as a shorter history.
"""

from __future__ import annotations

import os
import struct
import threading
import time
import zlib
from pathlib import Path

_SEP = "\x1f"
_WAL_MAGIC = (0x377F0682, 0x377F0683)
_WAL_HEADER = 32
_FRAME_HEADER = 24
_SHM_HEADER = 48
_TIMES = struct.Struct("<dd").pack


def _crc(text: str) -> int:
    # ``surrogatepass``: a string the driver will refuse anyway must not fail here first with another error.
    return zlib.crc32(text.encode("utf-8", "surrogatepass"))


def step_checksum(
    run_id: str,
    position: int,
    name: str,
    status: str,
    value: str | None,
    value_type: str | None,
    key: str | None,
    args_hash: int | None,
    started_at: float,
    ended_at: float | None,
) -> int:
    """CRC-32 of a step row: every column, so a changed payload, key, name, position or time is detected.

    On the hot path of every step write: the times go in as their 8 bytes (``repr`` of a float is slow).
    """
    text = f"{run_id}{_SEP}{position}{_SEP}{name}{_SEP}{status}{_SEP}{value_type}{_SEP}{key}{_SEP}{args_hash}"
    crc = zlib.crc32(f"{text}{_SEP}{value}".encode("utf-8", "surrogatepass"))
    return zlib.crc32(_TIMES(started_at, -1.0 if ended_at is None else ended_at), crc)


def run_checksum(
    run_id: str, function: str, run_input: str, output: str | None, output_type: str | None
) -> int:
    """CRC-32 of what a run row must never silently change: its function, input and outcome."""
    return _crc(f"{run_id}{_SEP}{function}{_SEP}{run_input}{_SEP}{output}{_SEP}{output_type}")


def signal_checksum(run_id: str, name: str, payload: str) -> int:
    """CRC-32 of a queued signal."""
    return _crc(f"{run_id}{_SEP}{name}{_SEP}{payload}")


def _wal_sum(data: bytes | memoryview, big_endian: bool, s0: int, s1: int) -> tuple[int, int]:
    """SQLite's WAL checksum (``walChecksumBytes``) over ``data``, continued from ``(s0, s1)``."""
    words = struct.unpack(f"{'>' if big_endian else '<'}{len(data) // 4}I", data)
    mask = 0xFFFFFFFF
    for i in range(0, len(words), 2):
        s0 = (s0 + words[i] + s1) & mask
        s1 = (s1 + words[i + 1] + s0) & mask
    return s0, s1


#: Descriptors of files SQLite locks (the WAL index, the database), opened once per file and process and
#: never closed: closing *any* descriptor of a file drops every POSIX lock the process holds on it, SQLite's
#: included. A dropped lock on the WAL index lets the next process to open the journal think it is the
#: first, reset the index under this process's feet, and kill it with SIGBUS (seen: a CLI parked on an
#: approval while another process opened the journal).
_KEPT: dict[tuple[int, int], int] = {}
_KEPT_LOCK = threading.Lock()


def _read_head(path: Path, size: int) -> bytes:
    """The first ``size`` bytes of ``path`` through a descriptor kept open (see :data:`_KEPT`)."""
    st = os.stat(path)
    key = (st.st_dev, st.st_ino)
    with _KEPT_LOCK:
        fd = _KEPT.get(key)
        if fd is None:
            fd = _KEPT[key] = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    return os.pread(fd, size, 0)


def _max_frame(shm: Path) -> int | None:
    """``mxFrame`` of the WAL index: the last frame SQLite considers committed (None if unreadable)."""
    try:
        head = _read_head(shm, 2 * _SHM_HEADER)
    except OSError:
        return None
    if len(head) < 2 * _SHM_HEADER or head[:_SHM_HEADER] != head[_SHM_HEADER:] or not head[12]:
        return None  # being written, or not initialised: no reliable answer
    return int(struct.unpack_from("=I", head, 16)[0])


def wal_damage(path: Path) -> str | None:
    """Why committed frames of ``path``'s WAL would be dropped, or None (see ``_wal_damage``).

    Damage stays; a writer in another process that restarts the WAL while it is read does not. So a finding
    is confirmed by a second look before it is reported.
    """
    if _wal_damage(path) is None:
        return None
    time.sleep(0.05)
    return _wal_damage(path)


def _wal_damage(path: Path) -> str | None:
    """Why committed frames of ``path``'s WAL would be dropped, or None if none would be.

    Call it after a read on the database (so SQLite has recovered the WAL index). SQLite keeps WAL frames only
    up to the first frame whose checksum fails; a later *commit* frame of the same WAL generation (same salts)
    that is intact (it chains from the checksum stored in the frame before it) proves that committed
    transactions are being thrown away. A process killed while committing leaves a torn tail instead: its
    commit frame is the one that fails, so nothing intact follows the break.
    """
    wal = Path(f"{path}-wal")
    try:
        with wal.open("rb") as f:
            head = f.read(_WAL_HEADER)
            size = os.fstat(f.fileno()).st_size
            if len(head) < _WAL_HEADER:
                return None
            magic, _version, page_size, _seq, salt0, salt1, ck0, ck1 = struct.unpack_from(">8I", head)
            big = bool(magic & 1)
            frame = _FRAME_HEADER + page_size
            header_ok = (
                magic in _WAL_MAGIC
                and 512 <= page_size <= 65536
                and _wal_sum(head[:24], big, 0, 0) == (ck0, ck1)
            )
            last = _max_frame(Path(f"{path}-shm"))
            frames = (size - _WAL_HEADER) // frame if header_ok else 0
            if header_ok and (last is None or frames <= last):
                return None  # the usual case: nothing past what SQLite keeps, and the WAL is not read
            f.seek(0)
            data = f.read()
    except OSError:
        return None
    if data[:_WAL_HEADER] != head or _max_frame(Path(f"{path}-shm")) != last:
        return None  # a writer restarted or grew the WAL meanwhile: what was read is no evidence
    if not header_ok:
        return _damaged_header(data, path)
    assert last is not None
    frames = (len(data) - _WAL_HEADER) // frame
    s0, s1 = _stored_sum(data, _WAL_HEADER + (last - 1) * frame) if last > 0 else (ck0, ck1)
    view = memoryview(data)
    broken: int | None = None
    for index in range(last + 1, frames + 1):
        at = _WAL_HEADER + (index - 1) * frame
        commit, f_salt0, f_salt1, f_ck0, f_ck1 = struct.unpack_from(">5I", data, at + 4)
        same = (f_salt0, f_salt1) == (salt0, salt1)
        if broken is None:
            if same:
                s0, s1 = _frame_sum(view, at, frame, big, s0, s1)
            if not same or (s0, s1) != (f_ck0, f_ck1):
                broken = index
            continue
        if (
            same
            and commit
            and _frame_sum(view, at, frame, big, *_stored_sum(data, at - frame)) == (f_ck0, f_ck1)
        ):
            # An intact commit frame (it chains from the frame before it) after the break: committed data.
            # A torn write of a killed process never looks like this: its commit frame is the torn one.
            return (
                f"its write-ahead log {wal.name} is damaged at frame {broken}: committed frames up to frame "
                f"{index} follow it and SQLite would drop them, replaying a shorter history"
            )
    return None


def _stored_sum(data: bytes, at: int) -> tuple[int, int]:
    s0, s1 = struct.unpack_from(">II", data, at + 16)
    return int(s0), int(s1)


def _frame_sum(view: memoryview, at: int, frame: int, big: bool, s0: int, s1: int) -> tuple[int, int]:
    s0, s1 = _wal_sum(view[at : at + 8], big, s0, s1)
    return _wal_sum(view[at + _FRAME_HEADER : at + frame], big, s0, s1)


def _damaged_header(data: bytes, path: Path) -> str | None:
    """A WAL whose header is damaged is ignored whole by SQLite: damage if it holds any commit frame."""
    try:
        db_header = _read_head(path, 100)
        page_size = struct.unpack_from(">H", db_header, 16)[0] if len(db_header) >= 18 else 4096
    except OSError:
        page_size = 4096
    page_size = 65536 if page_size == 1 else page_size
    frame = _FRAME_HEADER + page_size
    for at in range(_WAL_HEADER, len(data) - frame + 1, frame):
        if struct.unpack_from(">I", data, at + 4)[0]:
            return (
                f"the header of its write-ahead log {Path(f'{path}-wal').name} is damaged, so SQLite would "
                f"ignore every committed frame in it"
            )
    return None
