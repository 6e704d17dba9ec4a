"""SIGKILL a real workflow process inside each kind of node, then resume the run in a new process.

Each completed model call, tool call and step runs exactly once across both processes; the call the
process died in runs again (it had not completed), and the run ends as an uninterrupted one does.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

SCRIPT = Path(__file__).with_name("_crash_workflow.py")
EXPECTED = {
    "output": 3,
    "state": {
        "fetched": ["a", "b"],
        "summary": "corral is durable.",
        "branches": ["branch 0 done", "branch 1 done", "branch 2 done"],
    },
    "path": ["fetch", "summarise", "fan"],
}
#: Every call of one uninterrupted run, once each.
ONCE = Counter(
    [
        "step:a",
        "step:b",
        "model:agent:0",
        "tool:lookup",
        "model:agent:1",
        *(f"model:branch {i}" for i in range(3)),
        *(f"step:branch{i}" for i in range(3)),
    ]
)


def start(tmp_path: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, str(SCRIPT), str(tmp_path / "journal.sqlite"), str(tmp_path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def calls(tmp_path: Path) -> Counter[str]:
    path = tmp_path / "calls.log"
    return Counter(path.read_text().splitlines() if path.exists() else [])


def finish(tmp_path: Path) -> dict[str, Any]:
    proc = start(tmp_path)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    result: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
    return result


def test_an_uninterrupted_run_makes_each_call_once(tmp_path: Path) -> None:
    assert finish(tmp_path) == EXPECTED
    assert calls(tmp_path) == ONCE


@pytest.mark.slow
@pytest.mark.parametrize(
    ("hang_in", "repeated"),
    [("step:b", "step:b"), ("tool:lookup", "tool:lookup"), ("branch", "step:branch1")],
    ids=["plain-node", "agent-node", "parallel-branch"],
)
def test_killed_inside_a_node_then_resumed(tmp_path: Path, hang_in: str, repeated: str) -> None:
    (tmp_path / "hang_in").write_text(hang_in)
    proc = start(tmp_path)
    deadline = time.monotonic() + 60
    while not (tmp_path / "inside").exists():
        if proc.poll() is not None:
            raise AssertionError(f"the workflow exited before the kill: {proc.communicate()}")
        assert time.monotonic() < deadline, "the workflow never reached the call"
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    proc.communicate(timeout=10)
    assert proc.returncode == -signal.SIGKILL
    before = calls(tmp_path)
    (tmp_path / "resume").touch()

    assert finish(tmp_path) == EXPECTED
    # Each completed call ran once; only the one the process died in ran a second time.
    assert calls(tmp_path) == ONCE + Counter([repeated])
    assert before[repeated] == 1
