"""Run model-written Python and SQL isolated, limited, clean and fast.

>>> from corral.sandbox import SandboxPool, run_python_sync
>>> with SandboxPool(1) as pool:
...     run_python_sync("print(6 * 7)", pool=pool).stdout
'42\\n'

The default backend is a pool of warm workers under Debian's bubblewrap, each its own unprivileged uid with
the data libraries preloaded in zygotes that never hold a job's data, cloning a fresh namespaced,
seccomp-filtered, cgroup-limited process per job. See ``docs/sandbox.md`` for the design and :func:`check` for
what this machine supports.
"""

from corral.sandbox._api import DEFAULT_MAX_ROWS, run_python, run_python_sync, run_sql, run_sql_sync
from corral.sandbox._command import VettedExecutable, run_command, run_command_sync, vet_executable
from corral.sandbox._detect import CheckItem, SandboxReport, check
from corral.sandbox._pool import DEFAULT_PRELOAD, SandboxPool, default_pool, shutdown_default_pool
from corral.sandbox._sql import DuckDBSource, FilesSource, SQLiteSource, as_source
from corral.sandbox._types import Limits, RunResult, SkippedFile, SqlResult
from corral.sandbox.errors import (
    SandboxBusy,
    SandboxCrashed,
    SandboxError,
    SandboxUnavailable,
    SandboxUsageError,
)

__all__ = [
    "DEFAULT_MAX_ROWS",
    "DEFAULT_PRELOAD",
    "CheckItem",
    "DuckDBSource",
    "FilesSource",
    "Limits",
    "RunResult",
    "SQLiteSource",
    "SandboxBusy",
    "SandboxCrashed",
    "SandboxError",
    "SandboxPool",
    "SandboxReport",
    "SandboxUnavailable",
    "SandboxUsageError",
    "SkippedFile",
    "SqlResult",
    "VettedExecutable",
    "as_source",
    "check",
    "default_pool",
    "run_command",
    "run_command_sync",
    "run_python",
    "run_python_sync",
    "run_sql",
    "run_sql_sync",
    "shutdown_default_pool",
    "vet_executable",
]
