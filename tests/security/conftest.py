"""Fixtures for the attack suite: one warm pool, planted secrets, and a check that nothing is left behind."""

from __future__ import annotations

import os
import secrets
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from corral.sandbox import Limits, RunResult, SandboxPool
from corral.sandbox._pool import leftovers

pytestmark = pytest.mark.sandbox

if shutil.which("bwrap") is None:
    pytest.skip("bubblewrap is not installed (apt-get install -y bubblewrap)", allow_module_level=True)


@dataclass(frozen=True)
class Secrets:
    """Real secrets planted on the host, so that read attempts have something to fail to read."""

    value: str
    root_file: Path
    """Owned by root, mode 600, under /root."""
    world_file: Path
    """World-readable, in the host's /tmp: only the sandbox's own view of the filesystem keeps it out."""
    env_name: str


@pytest.fixture(scope="session")
def planted() -> Iterator[Secrets]:
    value = "corral-secret-" + secrets.token_hex(12)
    # Rootless, the "root" file is the host user's own private file: the job's uid maps to that user, so
    # only the sandbox's view of the filesystem keeps it out.
    root_dir = Path(tempfile.mkdtemp(prefix="corral-secret-", dir="/root" if AS_ROOT else None))
    root_file = root_dir / "secret.txt"
    root_file.write_text(value)
    root_file.chmod(0o600)
    world_fd, world_name = tempfile.mkstemp(prefix="corral-secret-", dir="/tmp")
    os.write(world_fd, value.encode())
    os.close(world_fd)
    os.chmod(world_name, 0o644)
    env_name = "CORRAL_TEST_SECRET"
    os.environ[env_name] = value
    try:
        yield Secrets(value, root_file, Path(world_name), env_name)
    finally:
        os.environ.pop(env_name, None)
        shutil.rmtree(root_dir, ignore_errors=True)
        Path(world_name).unlink(missing_ok=True)


AS_ROOT = os.geteuid() == 0
#: The attack suite runs against each backend: bubblewrap (the default) and the Landlock fallback, forced, as
#: root; the rootless backend and the Landlock fallback run rootless as an unprivileged user
#: (``test_rootless.py`` runs the suite again that way).
BACKENDS = ["bubblewrap", "landlock"] if AS_ROOT else ["rootless", "landlock"]

#: Where the rootless backend is weaker, as ``docs/sandbox.md``'s table says: no cgroup, so memory is an
#: rlimit per process (MemoryError, no OOM kill, no peak), and cores are not limited.
weaker_rootless = pytest.mark.skipif(
    not AS_ROOT, reason="rootless without a delegated cgroup: weaker limit, see docs/sandbox.md's table"
)


def weaker_rootless_landlock(pool: SandboxPool, why: str) -> None:
    """Skip: the Landlock backend run rootless (no mounts, no cgroup) is weaker here, as docs/sandbox.md's
    table says."""
    if pool.backend == "landlock" and not AS_ROOT:
        pytest.skip(f"rootless Landlock: {why} (docs/sandbox.md's table)")


@pytest.fixture(scope="session", params=BACKENDS)
def pool(planted: Secrets, request: pytest.FixtureRequest) -> Iterator[SandboxPool]:
    """One warm pool per backend for the whole attack suite; after it closes, nothing of it may remain."""
    p = SandboxPool(2, queue_timeout=60, backend=request.param)
    p.start()
    assert p.backend == request.param
    landlock_base = p._landlock.base if p._landlock is not None else None
    try:
        yield p
    finally:
        p.close()
        left = leftovers()
        assert not left, f"the sandbox left things behind: {left}"
        assert landlock_base is None or not landlock_base.exists(), f"{landlock_base} was left behind"


class Sandbox:
    """Runs an attack, then proves the pool still serves with a canary job."""

    def __init__(self, pool: SandboxPool) -> None:
        self.pool = pool

    def run(self, code: str, **limits: float) -> RunResult:
        result = self.pool.run_python_sync(code, limits=Limits(**limits) if limits else None)
        canary = self.pool.run_python_sync("print('alive', 6 * 7)")
        assert canary.ok and canary.stdout == "alive 42\n", (
            f"the pool stopped serving after the attack: {canary}"
        )
        return result


@pytest.fixture
def sandbox(pool: SandboxPool) -> Sandbox:
    return Sandbox(pool)
