"""Data sources: what ``--db`` and ``--files`` name, recognised and described as plain data.

A :class:`Source` is a description (kind, paths or URL, SQL dialect), not a connection: connections are
opened only by :mod:`._driver`, inside the sandbox. CSV and Parquet files are queried together through
DuckDB, each as a table named after its file stem (sanitised: ``sales 2024.csv`` becomes ``sales_2024``).

>>> table_name_for(Path("/data/sales 2024.csv")), table_name_for(Path("2019-08_edges.csv"))
('sales_2024', 't_2019_08_edges')

Several databases, or databases and files, are one ``multi`` source (see :mod:`._multi`), each database
under an alias:

>>> aliases_for(["/d/shop.sqlite", "/e/shop.duckdb", "/f/main.db"])
['shop', 'shop_2', 'db_main']
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from corral.apps.data_agent.errors import SourceError
from corral.sandbox.sqljob import RESERVED_ALIASES

SourceKind = Literal["sqlite", "duckdb", "files", "postgres", "multi"]

_SQLITE_MAGIC = b"SQLite format 3\x00"
_DUCKDB_MAGIC = b"DUCK"  # at offset 8 of a DuckDB file


@dataclass(frozen=True)
class FileTable:
    """One CSV or Parquet file and the table name it gets."""

    name: str
    path: Path
    format: Literal["csv", "parquet"]


@dataclass(frozen=True)
class Source:
    """A data source the agent can query.

    ``spec()`` is the JSON-able description the sandboxed driver opens; ``fingerprint()`` changes whenever the
    data may have changed (path, size and modification time of every file), so a cached schema is never stale.
    """

    kind: SourceKind
    path: Path | None = None
    url: str | None = None
    tables: tuple[FileTable, ...] = field(default_factory=tuple)
    #: ``multi``: the sources queried together, each with its alias (see :mod:`._multi`).
    parts: tuple[tuple[str, Source], ...] = field(default_factory=tuple)

    @property
    def dialect(self) -> str:
        """The sqlglot dialect name of the queries this source runs."""
        if self.kind in ("files", "multi"):
            return "duckdb"
        return {"sqlite": "sqlite", "duckdb": "duckdb", "postgres": "postgres"}[self.kind]

    @property
    def files(self) -> list[Path]:
        """Every local file the query must be able to read (what the sandbox mounts)."""
        if self.kind == "multi":
            return [f for _, part in self.parts for f in part.files]
        if self.kind == "files":
            return [t.path for t in self.tables]
        return [self.path] if self.path is not None else []

    def spec(self) -> dict[str, Any]:
        """The description :mod:`._driver` opens (paths as given; the runner may remap them)."""
        if self.kind == "multi":
            return {"kind": "multi", "parts": [{"alias": a, **p.spec()} for a, p in self.parts]}
        if self.kind == "files":
            return {
                "kind": "files",
                "tables": [{"name": t.name, "path": str(t.path), "format": t.format} for t in self.tables],
            }
        if self.kind == "postgres":
            return {"kind": "postgres", "url": self.url}
        return {"kind": self.kind, "path": str(self.path)}

    def fingerprint(self) -> str:
        """A key that changes when the data may have changed."""
        parts: list[str] = [self.kind, *(f"{alias}:{part.kind}" for alias, part in self.parts)]
        if self.kind == "postgres":
            parts.append(_redact(self.url or ""))
        for path in self.files:
            st = path.stat()
            parts.append(f"{path.resolve()}|{st.st_size}|{st.st_mtime_ns}")
        return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:32]

    def describe(self) -> str:
        """A short human description, safe to print (no password)."""
        if self.kind == "multi":
            return "; ".join(f"{a}: {p.describe()}" for a, p in self.parts)
        if self.kind == "postgres":
            return f"PostgreSQL {_redact(self.url or '')}"
        if self.kind == "files":
            return ", ".join(f"{t.path.name} (table {t.name})" for t in self.tables)
        return f"{self.kind} file {self.path}"


def _redact(url: str) -> str:
    return re.sub(r"//([^:/@]+):[^@]*@", r"//\1:***@", url)


def without_password(url: str) -> str:
    """``url`` with the password of its user part (and a ``password=`` parameter) removed.

    >>> without_password("postgresql://ann:s3cr%40t@db.example:5432/sales?sslmode=require&password=x")
    'postgresql://ann@db.example:5432/sales?sslmode=require'
    """
    url = re.sub(r"//([^:/@]+):[^@]*@", r"//\1@", url)
    url = re.sub(r"([?&])password=[^&]*&?", r"\1", url)
    return url.rstrip("?&")


def table_name_for(path: Path) -> str:
    """The table name a data file gets: its stem, with anything but letters, digits and ``_`` made ``_``."""
    name = re.sub(r"\W+", "_", path.stem, flags=re.ASCII).strip("_") or "data"
    if name[0].isdigit():
        name = "t_" + name
    return name


def _file_table(path: Path, taken: set[str]) -> FileTable:
    suffix = path.suffix.lower()
    if suffix in (".csv", ".tsv", ".txt"):
        fmt: Literal["csv", "parquet"] = "csv"
    elif suffix in (".parquet", ".pq"):
        fmt = "parquet"
    else:
        raise SourceError(
            f"{path}: only .csv/.tsv and .parquet files can be queried as tables (got '{suffix}')"
        )
    name = base = table_name_for(path)
    n = 2
    while name.lower() in taken:
        name = f"{base}_{n}"
        n += 1
    taken.add(name.lower())
    return FileTable(name=name, path=path, format=fmt)


def open_source(db: str | Sequence[str] | None = None, files: Sequence[str | Path] = ()) -> Source:
    """Recognise what the user named: a SQLite or DuckDB file, a PostgreSQL URL, or CSV/Parquet files; several
    databases, or databases and files, become one ``multi`` source queried together (see :mod:`._multi`).

    Raises :class:`SourceError` with what to do when nothing usable is named or a file does not exist.
    """
    if db is not None and not isinstance(db, str):
        dbs = list(db)
        if len(dbs) > 1 or (dbs and files):
            return combine([open_source(d) for d in dbs], open_source(files=files) if files else None)
        db = dbs[0] if dbs else None
    if db is not None and files:
        return combine([open_source(db)], open_source(files=files))
    if db is None and not files:
        raise SourceError(
            "name the data: --db PATH_OR_URL (SQLite, DuckDB, postgresql://...) or --files F ..."
        )
    if db is not None and re.match(r"^postgres(ql)?(\+\w+)?://", db):
        return Source(kind="postgres", url=db)
    paths = [Path(f).expanduser() for f in ([db] if db is not None else files)]
    for path in paths:
        if not path.is_file():
            raise SourceError(f"{path}: no such file")
    if db is not None:
        path = paths[0]
        if path.suffix.lower() in (".csv", ".tsv", ".parquet", ".pq"):
            return open_source(files=[path])
        head = path.read_bytes()[:16] if path.stat().st_size else b""
        if head.startswith(_SQLITE_MAGIC):
            return Source(kind="sqlite", path=path.resolve())
        if head[8:12] == _DUCKDB_MAGIC:
            return Source(kind="duckdb", path=path.resolve())
        raise SourceError(f"{path}: not a SQLite or DuckDB database (for CSV or Parquet files use --files)")
    taken: set[str] = set()
    return Source(kind="files", tables=tuple(_file_table(p.resolve(), taken) for p in paths))


def aliases_for(paths: Sequence[str | Path]) -> list[str]:
    """One alias per database file: its sanitised stem, made unique and never a name DuckDB reserves."""
    taken: set[str] = set()
    out = []
    for path in paths:
        base = table_name_for(Path(path)).lower()
        if base in RESERVED_ALIASES or base == "files":
            base = f"db_{base}"
        alias, n = base, 2
        while alias in taken:
            alias = f"{base}_{n}"
            n += 1
        taken.add(alias)
        out.append(alias)
    return out


def combine(dbs: list[Source], files: Source | None) -> Source:
    """The ``multi`` source over ``dbs`` (SQLite or DuckDB files) and ``files`` (CSV/Parquet, if any)."""
    for db in dbs:
        if db.kind == "postgres":
            raise SourceError(
                "a PostgreSQL database cannot be combined with other sources yet: ask it alone, or export "
                "the tables you need to Parquet and pass them with --files"
            )
        if db.kind == "files":
            raise SourceError(f"{db.describe()}: pass CSV/Parquet files with --files, not --db")
    aliases = aliases_for([db.path for db in dbs if db.path is not None])
    parts: list[tuple[str, Source]] = list(zip(aliases, dbs, strict=True))
    if files is not None:
        parts.append(("files", files))
    return Source(kind="multi", parts=tuple(parts))
