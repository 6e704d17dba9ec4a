"""SQL inside the sandbox: the data sources the data agent queries, and turning a query into a sandbox job.

The database engine runs in the job process, after the privilege drop, like any model-written code: a crafted
query that finds an engine bug lands in the sandbox, not in the host. Inputs are passed as read-only file
descriptors and appear as ``/data/<file name>``. Read-only is the default and is enforced twice: by the files
(read-only descriptors, a read-only ``/data``) and by the engines (SQLite ``mode=ro`` with extension loading
off; DuckDB with ``enable_external_access=false``, only the source files allowed, and
``lock_configuration=true``).

A read-write grant never gives the job the host file: the job works on a copy in its scratch directory and the
host writes the new version back (atomically, and only if the file did not change meanwhile).
"""

from __future__ import annotations

import os
import stat
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictFloat,
    StrictInt,
    StrictStr,
    ValidationError,
)

from corral.sandbox._types import Limits, RunResult, SqlResult
from corral.sandbox.errors import SandboxUsageError

_SQLITE_SUFFIXES = {".sqlite", ".sqlite3", ".db", ".db3"}
_DUCKDB_SUFFIXES = {".duckdb", ".ddb"}
_FILE_FORMATS = {".csv": "csv", ".tsv": "csv", ".parquet": "parquet", ".pq": "parquet"}
_RESULT = ".sql-result.json"

_Scalar = None | StrictBool | StrictInt | Annotated[StrictFloat, Field(allow_inf_nan=False)] | StrictStr


class _SqlOutput(BaseModel):
    """The SQL job's result file (see ``sqljob.run``), parsed strictly: it is data a job wrote."""

    model_config = ConfigDict(strict=True, extra="forbid", frozen=True)

    columns: list[str] = []
    types: list[Annotated[str, Field(max_length=1000)]] = []
    rows: list[list[_Scalar]] = []
    row_count: Annotated[int, Field(ge=0)] = 0
    error: Annotated[str, Field(max_length=100_000)] | None = None


@dataclass(frozen=True)
class SQLiteSource:
    """A SQLite database file."""

    path: Path


@dataclass(frozen=True)
class DuckDBSource:
    """A DuckDB database file."""

    path: Path


@dataclass(frozen=True)
class FilesSource:
    """CSV and Parquet files queried together through DuckDB; each is a view named after its file stem."""

    paths: tuple[Path, ...]


Source = SQLiteSource | DuckDBSource | FilesSource
SourceLike = Source | str | os.PathLike[str] | Sequence[str | os.PathLike[str]]


def as_source(source: SourceLike) -> Source:
    """Interpret a path (by suffix), a directory (its CSV/Parquet files) or a list of data files as a source.

    >>> as_source("shop.sqlite")
        SQLiteSource(path=PosixPath('shop.sqlite'))
    """
    if isinstance(source, (SQLiteSource, DuckDBSource, FilesSource)):
        return source
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        if path.is_dir():
            # Regular files inside the directory only: not a symlink (it could point anywhere the host may
            # read), not a FIFO or device (opening one blocks or does worse).
            files = sorted(
                p
                for p in path.iterdir()
                if p.suffix.lower() in _FILE_FORMATS and stat.S_ISREG(p.lstat().st_mode)
            )
            if not files:
                raise SandboxUsageError(f"directory {path} holds no .csv or .parquet files to query")
            return FilesSource(tuple(files))
        suffix = path.suffix.lower()
        if suffix in _SQLITE_SUFFIXES:
            return SQLiteSource(path)
        if suffix in _DUCKDB_SUFFIXES:
            return DuckDBSource(path)
        if suffix in _FILE_FORMATS:
            return FilesSource((path,))
        raise SandboxUsageError(
            f"cannot tell what kind of data source {path} is from its suffix {suffix!r}; pass "
            "SQLiteSource(path), DuckDBSource(path) or FilesSource(paths) explicitly"
        )
    paths = tuple(Path(p) for p in source)
    if not paths:
        raise SandboxUsageError("an empty list of files is not a data source")
    return FilesSource(paths)


def prepare(
    query: str, source: Source, *, read_only: bool, max_rows: int
) -> tuple[dict[str, Any], dict[str, Path]]:
    """The job spec the worker's SQL runner executes, and the input files it needs (name -> host path)."""
    if not isinstance(query, str) or not query.strip():
        raise SandboxUsageError("run_sql needs a non-empty SQL string")
    if max_rows < 0:
        raise SandboxUsageError("max_rows must be >= 0")
    spec: dict[str, Any] = {"query": query, "read_only": read_only, "max_rows": max_rows}
    if isinstance(source, FilesSource):
        if not read_only:
            raise SandboxUsageError(
                "CSV/Parquet sources are read-only; load them into a database to change them"
            )
        inputs: dict[str, Path] = {}
        files = []
        for path in source.paths:
            fmt = _FILE_FORMATS.get(path.suffix.lower())
            if fmt is None:
                raise SandboxUsageError(f"{path}: only .csv, .tsv, .parquet and .pq files can be queried")
            if path.name in inputs:
                raise SandboxUsageError(f"two source files are named {path.name}; rename one")
            if not path.stem.isidentifier():
                raise SandboxUsageError(f"{path}: the file stem {path.stem!r} must be a valid table name")
            inputs[path.name] = path
            files.append({"name": path.stem, "path": f"/data/{path.name}", "format": fmt})
        spec.update(engine="files", files=files)
        return spec, inputs
    name = "db" + source.path.suffix.lower()
    spec.update(engine="sqlite" if isinstance(source, SQLiteSource) else "duckdb", path=f"/data/{name}")
    if not read_only:
        spec["copy_to"] = f"/work/{name}"
        spec["path"] = f"/work/{name}"
    return spec, {name: source.path}


def finish(run: RunResult, source: Source, spec: dict[str, Any], before: os.stat_result | None) -> SqlResult:
    """Turn the job's result file (untrusted JSON) into a :class:`SqlResult`; write back a granted change."""
    raw = run.files.get(_RESULT)
    data: _SqlOutput | None = None
    error: str | None = None
    if raw is not None:
        try:
            data = _SqlOutput.model_validate_json(raw)
        except ValidationError:
            error = "the query runner's result was malformed"
    if data is None:
        if run.limit is not None:
            error = f"the query was stopped by the sandbox's {run.limit} limit"
        elif error is None:
            error = (run.stderr.strip().splitlines() or ["the query runner produced no result"])[-1]
        data = _SqlOutput()
    else:
        error = data.error
    columns, types, rows = data.columns, data.types, [tuple(r) for r in data.rows]
    count = max(data.row_count, len(rows))
    if error is None and "copy_to" in spec:
        _write_back(run, source, spec, before)
    return SqlResult(
        columns=columns,
        types=types,
        rows=rows,
        row_count=count,
        truncated=count > len(rows),
        error=error,
        run=run,
    )


def _write_back(run: RunResult, source: Source, spec: dict[str, Any], before: os.stat_result | None) -> None:
    assert not isinstance(source, FilesSource)
    name = spec["copy_to"].rsplit("/", 1)[1]
    data = run.files.get(name)
    if data is None:
        raise SandboxUsageError(
            f"the changed database {source.path} could not be collected from the sandbox "
            f"({[s.reason for s in run.skipped if s.name == name] or 'missing'}); "
            "raise Limits.result_file_bytes"
        )
    now = os.stat(source.path)
    if before is not None and (now.st_mtime_ns, now.st_size) != (before.st_mtime_ns, before.st_size):
        raise SandboxUsageError(
            f"{source.path} changed while the query ran; its write was not applied, run it again"
        )
    fd, tmp = tempfile.mkstemp(dir=source.path.parent, prefix=f".{source.path.name}.")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, now.st_mode & 0o7777)
        os.replace(tmp, source.path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def limits_for(source: Source, limits: Limits, read_only: bool) -> Limits:
    """Room for a read-write copy of the database in the scratch directory and in the collected files."""
    if read_only or isinstance(source, FilesSource):
        return limits
    size = source.path.stat().st_size
    need = 2 * size + 16 * 1024 * 1024
    from dataclasses import replace

    return replace(
        limits,
        scratch_bytes=max(limits.scratch_bytes, need),
        result_file_bytes=max(limits.result_file_bytes, need),
        file_size_bytes=max(limits.file_size_bytes, need),
    )
