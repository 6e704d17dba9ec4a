"""Choosing the rootless backend, and what `check` says about its limits (the backend itself runs in
``tests/security/test_rootless.py``, as an unprivileged user)."""

from __future__ import annotations

import os

import pytest

from corral.sandbox import SandboxPool, SandboxUnavailable, check
from corral.sandbox._detect import limits_of

from .conftest import needs_bwrap

pytestmark = [pytest.mark.sandbox, needs_bwrap]


@pytest.mark.skipif(os.geteuid() != 0, reason="as root")
def test_rootless_is_refused_as_root() -> None:
    """bubblewrap started as root keeps root's power: forcing the rootless backend as root must not run."""
    report = check("rootless")
    assert report.backend is None
    assert "as root, use bubblewrap" in report.reason
    with pytest.raises(SandboxUnavailable):
        SandboxPool(1, backend="rootless").start()


@pytest.mark.skipif(os.geteuid() != 0, reason="as root")
def test_auto_picks_bubblewrap_as_root_and_all_limits_hold() -> None:
    report = check()
    assert report.backend == "bubblewrap"
    assert report.limits and all(item.ok for item in report.limits)


def test_rootless_limits_name_exactly_what_is_weaker() -> None:
    weaker = {item.name for item in limits_of("rootless", delegated=False) if not item.ok}
    assert weaker == {"memory", "cpu time", "cpu cores"}
    assert all(item.ok for item in limits_of("rootless", delegated=True))
    assert limits_of(None, delegated=False) == []
