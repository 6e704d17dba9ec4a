"""The attack suite again, on the rootless backend, as an unprivileged user (``unprivileged.py``)."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from .unprivileged import argv_as_user, ensure_user

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


def test_sandbox_check_as_an_unprivileged_user_runs_landlock_rootless_when_forced() -> None:
    """The Landlock fallback (what "auto" picks without user namespaces) as an unprivileged user."""
    corral = str(Path(sys.executable).parent / "corral")
    proc = _as_user(["env", "CORRAL_SANDBOX_BACKEND=landlock", corral, "sandbox", "check"], 120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "backend: landlock" in proc.stdout, proc.stdout
    for weaker in ("memory", "pids", "cpu time", "cpu cores", "scratch"):
        assert re.search(rf"^!!  limit {weaker} ", proc.stdout, re.M), proc.stdout
    assert re.search(r"^ok  limit wall ", proc.stdout, re.M), proc.stdout


def test_attack_suite_passes_on_the_rootless_backends() -> None:
    """The whole suite as the unprivileged user, against the rootless backend and the Landlock backend run
    rootless (conftest's ``BACKENDS``)."""
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
        1800,
    )
    tail = (proc.stdout + proc.stderr)[-3000:]
    assert proc.returncode == 0, tail
    passed = re.search(r"(\d+) passed", tail)
    assert passed and int(passed.group(1)) >= 200, tail  # about 130 on rootless, 100 more on Landlock


@pytest.fixture
def home() -> Iterator[Path]:
    """A fresh home directory of the unprivileged user (pytest's own temporary directories are root's)."""
    path = Path(tempfile.mkdtemp(prefix="corral-test-home-"))
    user = ensure_user()
    os.chown(path, user.pw_uid, user.pw_gid)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def test_corral_ask_answers_as_an_unprivileged_user(home: Path) -> None:
    """The data agent, end to end, as a user with nothing but its own (fresh) home: the model cache, the
    journal and the chart all land there, and the sandbox is the rootless backend."""
    user = ensure_user()
    corral = str(Path(sys.executable).parent / "corral")
    script = (
        f"cd {home} && {corral} models install >/dev/null && "
        f"{corral} ask 'How many tracks does each genre have?' --json "
        f"--db {ROOT / 'examples' / 'chinook' / 'chinook.sqlite'} --chart-dir {home}"
    )
    proc = subprocess.run(
        argv_as_user(["sh", "-c", script], env={"HOME": str(home), "PYTHONDONTWRITEBYTECODE": "1"}),
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
    answer = json.loads(proc.stdout)
    assert [row[-1] for row in answer["rows"] if row[0] == "Rock"] == [1297], answer
    assert (home / ".local" / "share" / "corral" / "journal.sqlite").is_file()
    assert (home / ".local" / "share" / "corral" / "journal.sqlite").stat().st_uid == user.pw_uid
    assert list((home / ".cache" / "corral" / "models").glob("*.gguf"))
