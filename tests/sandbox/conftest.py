"""A warm pool shared by the sandbox API tests, and the check that it leaves nothing behind."""

from __future__ import annotations

import shutil
from collections.abc import Iterator

import pytest

from corral.sandbox import SandboxPool
from corral.sandbox._pool import leftovers

needs_bwrap = pytest.mark.skipif(
    shutil.which("bwrap") is None, reason="needs bubblewrap (apt-get install -y bubblewrap)"
)


@pytest.fixture(scope="session")
def pool() -> Iterator[SandboxPool]:
    p = SandboxPool(2, queue_timeout=60)
    p.start()
    try:
        yield p
    finally:
        p.close()


@pytest.fixture(scope="session", autouse=True)
def nothing_left_behind() -> Iterator[None]:
    yield
    from corral.sandbox import shutdown_default_pool

    shutdown_default_pool()
    left = leftovers()
    assert not left, f"the sandbox left processes or cgroups behind: {left}"
