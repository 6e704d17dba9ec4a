"""Kill a real agent process with SIGKILL in the middle of a tool call, then resume the run.

A completed tool call or model call is never made twice; the call the process died in is made again (it
had not completed), a side-effect tool with the same idempotency key; budgets carry over.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

SCRIPT = Path(__file__).with_name("_crash_agent.py")


def start(mode: str, tmp_path: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, str(SCRIPT), mode, str(tmp_path / "journal.sqlite"), str(tmp_path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def kill_inside_tool(mode: str, tmp_path: Path, hang_in: str) -> None:
    (tmp_path / "hang_in").write_text(hang_in)
    proc = start(mode, tmp_path)
    deadline = time.monotonic() + 60
    while not (tmp_path / "inside").exists():
        if proc.poll() is not None:
            raise AssertionError(f"the agent exited before the kill: {proc.communicate()}")
        assert time.monotonic() < deadline, "the agent never reached the tool"
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    proc.communicate(timeout=10)
    assert proc.returncode == -signal.SIGKILL
    (tmp_path / "resume").touch()


def finish(mode: str, tmp_path: Path) -> dict[str, Any]:
    proc = start(mode, tmp_path)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    result: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
    return result


def lines(tmp_path: Path, name: str) -> list[str]:
    path = tmp_path / f"{name}.log"
    return path.read_text().splitlines() if path.exists() else []


def test_killed_in_a_side_effect_tool_then_resumed(tmp_path: Path) -> None:
    kill_inside_tool("weather", tmp_path, "send:2")
    assert lines(tmp_path, "lookup") == ["Oslo"] and len(lines(tmp_path, "send")) == 1
    result = finish("weather", tmp_path)
    assert result == {
        "output": "Sent the weather in Oslo to ops.",
        "reason": "completed",
        "turns": 3,
        "tokens": result["tokens"],
        "tool_calls": 2,
    }
    # The completed lookup was not made again; the model was asked once per turn in all.
    assert lines(tmp_path, "lookup") == ["Oslo"]
    assert lines(tmp_path, "model") == ["0", "1", "2"]
    # The send the process died in ran again, with the same idempotency key.
    keys = lines(tmp_path, "send")
    assert len(keys) == 2 and keys[0] == keys[1] == "weather/2/call_1_0"


def test_the_token_budget_is_carried_across_a_kill(tmp_path: Path) -> None:
    # 100 tokens a turn, budget 500: the run stops before turn 6, whether or not it was killed at turn 3.
    kill_inside_tool("budget", tmp_path, "lookup:3")
    assert lines(tmp_path, "model") == ["0", "1", "2"]
    result = finish("budget", tmp_path)
    assert (result["reason"], result["turns"], result["tokens"]) == ("token_budget", 5, 500)
    assert lines(tmp_path, "model") == ["0", "1", "2", "3", "4"]
    assert lines(tmp_path, "lookup") == ["city0", "city1", "city2", "city2", "city3", "city4"]
