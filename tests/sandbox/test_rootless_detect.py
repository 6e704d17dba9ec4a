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


def test_rootless_landlock_limits_name_exactly_what_is_weaker() -> None:
    weaker = {item.name for item in limits_of("landlock", delegated=False, root=False) if not item.ok}
    assert weaker == {"memory", "pids", "cpu time", "cpu cores", "scratch"}
    assert all(item.ok for item in limits_of("landlock", delegated=False, root=True))


def test_auto_falls_back_to_rootless_landlock_without_user_namespaces(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Not root and no user namespaces: the Landlock backend, rootless, with its weaker limits named."""
    from corral.sandbox import _detect

    if not _detect._landlock_abi():
        pytest.skip("this kernel has no Landlock")
    monkeypatch.setattr(_detect.os, "geteuid", lambda: 1000)
    monkeypatch.setattr(_detect, "_userns_works", lambda bwrap: (False, "user namespaces are off"))
    monkeypatch.delenv("CORRAL_SANDBOX_BACKEND", raising=False)
    report = check()
    assert report.backend == "landlock", report
    assert "no unprivileged user namespaces" in report.reason and "rootless" in report.reason
    weaker = {i.name for i in report.limits if not i.ok}
    assert weaker == {"memory", "pids", "cpu time", "cpu cores", "scratch"}
