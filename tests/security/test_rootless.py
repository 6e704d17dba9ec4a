"""The attack suite again, on the rootless backend, as an unprivileged user (``unprivileged.py``)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from .unprivileged import argv_as_user

ROOT = Path(__file__).resolve().parents[2]

pytestmark = [
    pytest.mark.sandbox,
    pytest.mark.slow,
    pytest.mark.skipif(os.geteuid() != 0, reason="creates the unprivileged user; runs as root only"),
]


def _as_user(argv: list[str], timeout: float) -> subprocess.CompletedProcess[str]:
    env = {"PYTHONDONTWRITEBYTECODE": "1", "HOME": "/tmp"}
    return subprocess.run(
        argv_as_user(argv, env=env), cwd=ROOT, capture_output=True, text=True, timeout=timeout, check=False
    )


def test_sandbox_check_as_an_unprivileged_user_picks_rootless_and_names_weaker_limits() -> None:
    proc = _as_user([str(Path(sys.executable).parent / "corral"), "sandbox", "check"], 120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "backend: rootless" in proc.stdout, proc.stdout
    assert re.search(r"^!!  limit memory ", proc.stdout, re.M), proc.stdout
    assert re.search(r"^ok  limit pids ", proc.stdout, re.M), proc.stdout


def test_attack_suite_passes_on_the_rootless_backend() -> None:
    proc = _as_user(
        [
            sys.executable,
            "-m",
            "pytest",
            "tests/security",
            "-q",
            "-rs",
            "-p",
            "no:cacheprovider",
            "-p",
            "no:randomly",
        ],
        900,
    )
    tail = (proc.stdout + proc.stderr)[-3000:]
    assert proc.returncode == 0, tail
    passed = re.search(r"(\d+) passed", tail)
    assert passed and int(passed.group(1)) >= 100, tail
