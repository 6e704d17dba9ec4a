"""Disk use by directory, the biggest and the newest files under a path: one bounded walk.

The walk stays on the filesystem it starts on, never follows symlinks, and stops after ``max_entries``
entries or ``max_seconds`` (the result says it was cut), so a huge tree cannot hang the agent.
"""

from __future__ import annotations

import heapq
import os
import stat
import time
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, Field

T = TypeVar("T", bound=tuple[Any, ...])


class FileEntry(BaseModel):
    """One file: its path, size, and how long ago it was last written."""

    path: str
    size_mb: float
    modified_s_ago: float


class DirectoryCount(BaseModel):
    """How many files one top-level directory holds (what uses up inodes)."""

    path: str
    files: int


class DiskUsage(BaseModel):
    """What one walk of ``root`` found."""

    root: str
    total_mb: float
    files: int
    by_directory: list[FileEntry] = Field(default_factory=list)
    most_files: list[DirectoryCount] = Field(default_factory=list)
    biggest: list[FileEntry] = Field(default_factory=list)
    newest: list[FileEntry] = Field(default_factory=list)
    cut: bool = False


def disk_usage(root: str, *, top: int = 10, max_entries: int = 50_000, max_seconds: float = 3.0) -> DiskUsage:
    """Walk ``root`` (one filesystem, no symlinks) and sum sizes per top-level directory."""
    start = time.monotonic()
    now = time.time()
    base = Path(root)
    device = base.stat().st_dev
    per_dir: dict[str, int] = {}
    count_dir: dict[str, int] = {}
    biggest: list[tuple[int, str, float]] = []
    newest: list[tuple[float, str, int]] = []
    total = files = seen = 0
    cut = False
    todo = [str(base)]
    while todo:
        current = todo.pop()
        try:
            entries = list(os.scandir(current))
        except OSError:
            continue
        for entry in entries:
            seen += 1
            if seen > max_entries or time.monotonic() - start > max_seconds:
                cut, todo = True, []
                break
            try:
                st = entry.stat(follow_symlinks=False)
            except OSError:
                continue
            if stat.S_ISDIR(st.st_mode) and st.st_dev == device:
                todo.append(entry.path)
            elif stat.S_ISREG(st.st_mode):
                size = st.st_blocks * 512
                files += 1
                total += size
                rel = os.path.relpath(entry.path, base)
                top_dir = rel.split(os.sep, 1)[0] if os.sep in rel else "."
                per_dir[top_dir] = per_dir.get(top_dir, 0) + size
                count_dir[top_dir] = count_dir.get(top_dir, 0) + 1
                _push(biggest, (size, entry.path, st.st_mtime), top)
                _push(newest, (st.st_mtime, entry.path, size), top)

    def listed(path: str, size: float, mtime: float) -> FileEntry:
        return FileEntry(path=path, size_mb=round(size / 2**20, 2), modified_s_ago=round(now - mtime, 1))

    dirs = sorted(per_dir.items(), key=lambda kv: -kv[1])[:top]
    return DiskUsage(
        root=str(base),
        total_mb=round(total / 2**20, 2),
        files=files,
        by_directory=[
            FileEntry(path=os.path.join(root, d), size_mb=round(s / 2**20, 2), modified_s_ago=0.0)
            for d, s in dirs
        ],
        most_files=[
            DirectoryCount(path=os.path.join(root, d), files=n)
            for d, n in sorted(count_dir.items(), key=lambda kv: -kv[1])[:top]
        ],
        biggest=[listed(p, s, m) for s, p, m in sorted(biggest, reverse=True)],
        newest=[listed(p, s, m) for m, p, s in sorted(newest, reverse=True)],
        cut=cut,
    )


def _push(heap: list[T], item: T, top: int) -> None:
    if len(heap) < top:
        heapq.heappush(heap, item)
    elif item > heap[0]:
        heapq.heapreplace(heap, item)
