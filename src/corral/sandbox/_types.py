"""The sandbox's value types: limits in, results out."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from corral.sandbox.errors import SandboxUsageError

_MiB = 1024 * 1024

#: Which limit stopped a job: the wall clock, CPU time, the memory cgroup, the file-size rlimit, or a full
#: scratch/tmp filesystem or process table as seen by the job (those surface as the job's own errors instead).
LimitName = Literal["wall", "cpu", "memory", "file_size"]


@dataclass(frozen=True, kw_only=True)
class Limits:
    """Per-run resource limits. Every field has a default; override the ones a run needs.

    >>> Limits(wall_seconds=5).cpu_seconds
        10.0
    """

    wall_seconds: float = 30.0
    """Host-side wall clock; the job is SIGKILLed when it runs out."""
    cpu_seconds: float = 10.0
    """CPU time (RLIMIT_CPU: SIGXCPU, then SIGKILL one second later)."""
    memory_bytes: int = 512 * _MiB
    """Memory the job may add to the worker's (memory cgroup; the job is OOM-killed past it)."""
    pids: int = 64
    """Processes and threads the job may create (pids cgroup)."""
    cpu_cores: float = 1.0
    """CPUs' worth of time the job may use at once (CFS bandwidth of the worker's cgroup), so that a job
    running many busy processes cannot take the cores of the other workers' jobs."""
    scratch_bytes: int = 64 * _MiB
    """Size of the job's scratch directory ``/work`` (a fresh tmpfs), where result files go."""
    scratch_inodes: int = 4096
    """Files the job may create in ``/work``, ``/tmp`` and ``/dev/shm`` each."""
    tmp_bytes: int = 64 * _MiB
    """Size of ``/tmp`` and of ``/dev/shm`` (each a fresh tmpfs)."""
    file_size_bytes: int = 64 * _MiB
    """Largest file the job may write (RLIMIT_FSIZE)."""
    open_files: int = 256
    """Open file descriptors (RLIMIT_NOFILE)."""
    output_bytes: int = 1 * _MiB
    """Bytes of stdout and of stderr kept (each); the rest is drained and counted, not kept."""
    result_files: int = 32
    """Most result files collected from ``/work``."""
    result_file_bytes: int = 16 * _MiB
    """Largest result file collected; bigger ones are skipped and reported."""

    def __post_init__(self) -> None:
        for name, value in asdict(self).items():
            if not isinstance(value, (int, float)) or isinstance(value, bool) or value <= 0:
                raise SandboxUsageError(f"sandbox limit {name}={value!r} must be a positive number")

    def to_wire(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class SkippedFile:
    """A file in the scratch directory the host refused to collect, and why (symlink, FIFO, hard link...)."""

    name: str
    reason: str


@dataclass(frozen=True, kw_only=True)
class RunResult:
    """What a sandboxed job did. Nothing here is trusted: it is data the job produced, already size-capped."""

    stdout: str
    stderr: str
    exit_code: int | None
    """The job's exit status; ``None`` when a signal ended it."""
    signal: int | None = None
    """The signal that ended the job, if one did."""
    limit: LimitName | None = None
    """The limit that stopped the job, if one did."""
    files: dict[str, bytes] = field(default_factory=dict)
    """Regular files the job left in ``/work`` (path relative to it), collected safely."""
    skipped: tuple[SkippedFile, ...] = ()
    stdout_truncated: bool = False
    stderr_truncated: bool = False
    cpu_seconds: float = 0.0
    peak_memory_bytes: int | None = None
    """Memory the job added on top of the idle worker at its peak (cgroup), when the kernel reports it."""
    wall_seconds: float = 0.0
    throttled: bool = False
    """True when the ``cpu_cores`` limit slowed the job down at least once."""

    @property
    def ok(self) -> bool:
        """True when the job exited 0 within its limits."""
        return self.exit_code == 0 and self.limit is None


@dataclass(frozen=True, kw_only=True)
class SqlResult:
    """A query's answer: columns, the first ``max_rows`` rows and the total count, or the database's error."""

    columns: list[str]
    types: list[str]
    rows: list[tuple[Any, ...]]
    row_count: int
    truncated: bool
    error: str | None
    """The database's own error message (fed back to the model as is), or a sandbox limit's description."""
    run: RunResult
    """The sandbox run that executed the query (resource use, limits)."""

    @property
    def ok(self) -> bool:
        return self.error is None
