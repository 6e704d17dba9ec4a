"""Several sources in one question: databases (SQLite, DuckDB) and CSV/Parquet files queried together.

``--db a.sqlite --db b.duckdb --files c.csv`` makes one ``multi`` :class:`~._sources.Source`. In the sandbox
the driver opens one DuckDB connection over all of them (:func:`corral.sandbox.sqljob.connect_attached`):
each database is a catalog named by its alias (the file stem: ``shop.sqlite`` → ``shop``), attached
read-only (DuckDB) or copied into memory from a hardened read-only SQLite image; files are views named after
their stems, as for ``--files``. Every table of a database also gets a one-part name, ``<alias>_<table>``
(``shop_orders``), which is what the schema shows the model: a small model writes one-part names more
reliably than catalog-qualified ones, and the system's repairs and hints work on one-part names. Queries are
DuckDB SQL; ``shop.orders`` works too.

Each source stays read-only: the host refuses any statement that is not a read (sqlglot); in the job,
DuckDB's own parser must read the query as one SELECT (no second statement, no ATTACH, DETACH, COPY, SET,
INSTALL, LOAD); DuckDB files are attached ``READ_ONLY``; SQLite data is a copy in memory; external access
is off with only the source files readable; the configuration is locked; and the sandbox mounts the files
read-only. PostgreSQL cannot be combined yet (its connection is relayed per query, and DuckDB's PostgreSQL
reader is an extension).

The sources are combined by :func:`._sources.open_source` (aliases: :func:`._sources.aliases_for`); this
module maps them into the sandbox.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any


def mount(spec: dict[str, Any], inputs: dict[str, Path | bytes]) -> dict[str, Any]:
    """``spec`` with each part's files remapped to the sandbox's ``/data``, adding them to ``inputs``."""
    parts = []
    for i, part in enumerate(spec["parts"]):
        part = dict(part)
        if part["kind"] == "files":
            tables = []
            for j, table in enumerate(part["tables"]):
                name = f"p{i}t{j}{Path(table['path']).suffix.lower()}"
                inputs[name] = Path(table["path"])
                tables.append({**table, "path": f"/data/{name}"})
            part["tables"] = tables
        else:
            name = f"p{i}db{Path(part['path']).suffix.lower()}"
            inputs[name] = Path(part["path"])
            part["path"] = f"/data/{name}"
        parts.append(part)
    return {"kind": "multi", "parts": parts}
