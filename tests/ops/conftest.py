"""Fixtures of the ops agent's tests: a private core store, an agent factory, and the faults."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from corral.apps.ops_agent import CoreStore, OpsAgent, OpsEvent, OpsTools
from corral.models import Model


@pytest.fixture
def store(tmp_path: Path) -> CoreStore:
    return CoreStore(tmp_path / "cores")


@pytest.fixture
def make_agent(store: CoreStore):  # type: ignore[no-untyped-def]
    def make(model: Model | None = None, events: list[OpsEvent] | None = None) -> OpsAgent:
        return OpsAgent(
            model=model, tools=OpsTools(store=store), on_event=events.append if events is not None else None
        )

    return make


needs_gdb = pytest.mark.skipif(
    shutil.which("gdb") is None or shutil.which("gcore") is None,
    reason="gdb is not installed (scripts/_setup.sh installs it)",
)


@pytest.fixture
def small_volume(tmp_path: Path) -> Iterator[Path]:
    """A 24 MiB tmpfs of its own (root only), so filling a disk fills only it."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    volume = tmp_path / "vol"
    volume.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=24m", "tmpfs", str(volume)], capture_output=True, check=False
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")
    try:
        yield volume
    finally:
        with contextlib.suppress(Exception):
            subprocess.run(["umount", "-l", str(volume)], check=False, timeout=30)
