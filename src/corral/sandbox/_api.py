"""The module-level functions: run code or a query on the process-wide pool (or a given one)."""

from __future__ import annotations

import asyncio
import os
import socket
from collections.abc import Mapping

from corral.sandbox import _sql
from corral.sandbox._pool import InputValue, SandboxPool, default_pool
from corral.sandbox._types import Limits, RunResult, SqlResult

DEFAULT_MAX_ROWS = 1000


def run_python_sync(
    code: str,
    *,
    inputs: Mapping[str, InputValue] | None = None,
    limits: Limits | None = None,
    pool: SandboxPool | None = None,
    queue_timeout: float | None = None,
    sockets: Mapping[str, socket.socket] | None = None,
) -> RunResult:
    """Run model-written Python in the sandbox and wait for the result.

    ``inputs`` maps file names to host paths or bytes; the job reads them (read-only) as ``/data/<name>``. The
    job's working directory is an empty scratch directory, ``/work``; regular files it leaves there come back
    in :attr:`RunResult.files`. The job cannot reach the network, the host's files or environment, or other
    jobs.

    ``sockets`` maps names to AF_UNIX stream sockets (one end of ``socket.socketpair()``; anything else is a
    :class:`~corral.sandbox.errors.SandboxUsageError`): the job inherits each as a descriptor, and
    ``/data/<name>`` is a link to ``/proc/self/fd/<N>``, so ``socket.socket(fileno=N)`` with
    ``N = int(os.readlink("/data/<name>").rsplit("/", 1)[1])`` opens it. The host keeps the other end (for
    example to relay one database connection); the job still cannot create a network socket itself.

    Raises :class:`~corral.sandbox.errors.SandboxBusy` when no worker frees up in time and
    :class:`~corral.sandbox.errors.SandboxUnavailable` when this machine cannot isolate code (it never runs it
    unisolated). The job's own failure is not an exception: see :attr:`RunResult.exit_code` and ``limit``.
    """
    return (pool or default_pool()).run_python_sync(
        code, inputs=inputs, limits=limits, queue_timeout=queue_timeout, sockets=sockets
    )


async def run_python(
    code: str,
    *,
    inputs: Mapping[str, InputValue] | None = None,
    limits: Limits | None = None,
    pool: SandboxPool | None = None,
    queue_timeout: float | None = None,
    sockets: Mapping[str, socket.socket] | None = None,
) -> RunResult:
    """Async :func:`run_python_sync`. Cancelling the caller does not stop the job early; its limits do."""
    return await asyncio.to_thread(
        run_python_sync,
        code,
        inputs=inputs,
        limits=limits,
        pool=pool,
        queue_timeout=queue_timeout,
        sockets=sockets,
    )


def run_sql_sync(
    query: str,
    source: _sql.SourceLike,
    *,
    read_only: bool = True,
    max_rows: int = DEFAULT_MAX_ROWS,
    limits: Limits | None = None,
    pool: SandboxPool | None = None,
    queue_timeout: float | None = None,
) -> SqlResult:
    """Run one SQL statement against ``source`` inside the sandbox.

    ``source`` is a SQLite file, a DuckDB file, or CSV/Parquet files (a path, a directory, a list, or an
    explicit :class:`SQLiteSource` / :class:`DuckDBSource` / :class:`FilesSource`); CSV/Parquet files are
    views named after their stems, queried through DuckDB. The database is opened read-only unless
    ``read_only=False`` is passed — an explicit write grant (which the guards layer ties to a human approval).
    A failing query returns :attr:`SqlResult.error` with the database's own message, for the model to correct
    itself.
    """
    src = _sql.as_source(source)
    spec, inputs = _sql.prepare(query, src, read_only=read_only, max_rows=max_rows)
    chosen = pool or default_pool()
    run_limits = _sql.limits_for(src, limits or chosen.default_limits, read_only)
    before = None if read_only or isinstance(src, _sql.FilesSource) else os.stat(src.path)
    run = chosen.run_sql_job(spec, inputs, run_limits, queue_timeout)
    return _sql.finish(run, src, spec, before)


async def run_sql(
    query: str,
    source: _sql.SourceLike,
    *,
    read_only: bool = True,
    max_rows: int = DEFAULT_MAX_ROWS,
    limits: Limits | None = None,
    pool: SandboxPool | None = None,
    queue_timeout: float | None = None,
) -> SqlResult:
    """Async :func:`run_sql_sync`."""
    return await asyncio.to_thread(
        run_sql_sync,
        query,
        source,
        read_only=read_only,
        max_rows=max_rows,
        limits=limits,
        pool=pool,
        queue_timeout=queue_timeout,
    )
