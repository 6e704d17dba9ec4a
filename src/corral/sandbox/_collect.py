"""Reading result files out of a job's scratch directory without trusting anything the job left there.

The host is root; the job is hostile. A naive ``open("scratch/result.csv")`` follows a planted symlink to
``/etc/shadow``, blocks forever on a FIFO, or reads a hard link to a file the job could not read itself. So
every open is relative to a directory fd, with ``O_NOFOLLOW | O_NONBLOCK``, and only regular files with one
link and a bounded size are read (checked with ``fstat`` on the opened fd, so there is no check-then-open
race). Sizes count what the job actually stored: a sparse file (fewer allocated blocks than its length
claims) is skipped, so a job cannot make the host read hundreds of MiB of holes, and the files read from one
job add up to at most a per-job total. Everything else is skipped and reported.
"""

from __future__ import annotations

import contextlib
import os
import stat

from corral.sandbox._types import SkippedFile

_MAX_DEPTH = 4
_MAX_ENTRIES = 1000


def collect(
    dir_fd: int, *, max_files: int, max_file_bytes: int, max_total_bytes: int | None = None
) -> tuple[dict[str, bytes], list[SkippedFile]]:
    """Collect regular files under the directory ``dir_fd`` refers to (an ``O_PATH`` fd is fine)."""
    files: dict[str, bytes] = {}
    skipped: list[SkippedFile] = []
    seen = 0
    budget = max_total_bytes if max_total_bytes is not None else max_files * max_file_bytes

    def walk(fd: int, prefix: str, depth: int) -> None:
        nonlocal seen, budget
        try:
            names = sorted(os.listdir(fd))
        except OSError as exc:
            skipped.append(SkippedFile(prefix or ".", f"cannot list: {exc.strerror}"))
            return
        for name in names:
            seen += 1
            rel = prefix + name
            if seen > _MAX_ENTRIES:
                skipped.append(SkippedFile(rel, "too many entries in the scratch directory"))
                return
            try:
                child = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=fd)
            except OSError as exc:
                reason = "symbolic link" if exc.errno == 40 else f"cannot open: {exc.strerror}"  # 40 = ELOOP
                skipped.append(SkippedFile(rel, reason))
                continue
            try:
                st = os.fstat(child)
                if stat.S_ISDIR(st.st_mode):
                    if depth >= _MAX_DEPTH:
                        skipped.append(SkippedFile(rel, "directory nested too deep"))
                    else:
                        walk(child, rel + "/", depth + 1)
                    continue
                if not stat.S_ISREG(st.st_mode):
                    skipped.append(SkippedFile(rel, f"not a regular file ({_kind(st.st_mode)})"))
                    continue
                if st.st_nlink != 1:
                    skipped.append(SkippedFile(rel, f"hard link ({st.st_nlink} links)"))
                    continue
                if st.st_size > max_file_bytes:
                    skipped.append(SkippedFile(rel, f"too large ({st.st_size} bytes > {max_file_bytes})"))
                    continue
                if st.st_blocks * 512 < st.st_size:
                    skipped.append(SkippedFile(rel, "sparse file (holes are not collected)"))
                    continue
                if st.st_size > budget:
                    skipped.append(SkippedFile(rel, "the job's result files exceed their total size"))
                    continue
                if len(files) >= max_files:
                    skipped.append(SkippedFile(rel, f"more than {max_files} result files"))
                    continue
                cap = min(max_file_bytes, budget)
                data = _read_capped(child, cap)
                if data is None:
                    skipped.append(SkippedFile(rel, f"grew past {cap} bytes while being read"))
                    continue
                budget -= len(data)
                files[rel] = data
            finally:
                os.close(child)

    # Reopen so a directory fd (not O_PATH) is what walk lists from.
    with contextlib.suppress(OSError):
        top = os.open(".", os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dir_fd)
        try:
            walk(top, "", 0)
        finally:
            os.close(top)
    return files, skipped


def _read_capped(fd: int, cap: int) -> bytes | None:
    chunks: list[bytes] = []
    total = 0
    while True:
        chunk = os.read(fd, min(1 << 20, cap + 1 - total))
        if not chunk:
            return b"".join(chunks)
        chunks.append(chunk)
        total += len(chunk)
        if total > cap:
            return None


def _kind(mode: int) -> str:
    if stat.S_ISFIFO(mode):
        return "FIFO"
    if stat.S_ISSOCK(mode):
        return "socket"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "device"
    return "special file"
