"""`corral serve` as a user starts it: a real process on a port of 127.0.0.1, the token printed on the first
start only, refused requests without it, and `--rotate-token`."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner

from corral.apps.cli import app

pytestmark = pytest.mark.slow


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _serve(home: Path, port: int) -> subprocess.Popen[str]:
    env = {**os.environ, "CORRAL_HOME": str(home), "CORRAL_JOURNAL": str(home / "journal.db")}
    return subprocess.Popen(
        [str(Path(sys.executable).parent / "corral"), "serve", "--port", str(port)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _wait_up(port: int) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            httpx.get(f"http://127.0.0.1:{port}/login", timeout=1)
            return
        except httpx.TransportError:
            time.sleep(0.1)
    raise AssertionError("corral serve did not start")


def _stop(proc: subprocess.Popen[str]) -> str:
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=20)
    return err


def test_serve_prints_the_token_once_and_requires_it(tmp_path: Path) -> None:
    port = _free_port()
    first = _serve(tmp_path, port)
    try:
        _wait_up(port)
        base = f"http://127.0.0.1:{port}"
        assert httpx.get(base + "/api/runs").status_code == 401
        assert httpx.get(base + "/runs").status_code == 401
    finally:
        err = _stop(first)
    lines = err.splitlines()
    token = lines[lines.index(next(line for line in lines if line.startswith("token"))) + 1].strip()
    assert len(token) >= 40
    assert f"on http://127.0.0.1:{port}/" in err
    second = _serve(tmp_path, port)
    try:
        _wait_up(port)
        ok = httpx.get(f"http://127.0.0.1:{port}/api/runs", headers={"Authorization": f"Bearer {token}"})
        assert ok.status_code == 200 and ok.json()["runs"] == []
    finally:
        err = _stop(second)
    assert token not in err and "token (shown once" not in err


def test_rotate_token_replaces_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CORRAL_HOME", str(tmp_path))
    result = CliRunner().invoke(app, ["serve", "--rotate-token"])
    assert result.exit_code == 0, result.output
    token = result.output.strip().splitlines()[-1]
    digest = (tmp_path / "server-token").read_text()
    again = CliRunner().invoke(app, ["serve", "--rotate-token"])
    assert again.output.strip().splitlines()[-1] != token
    assert (tmp_path / "server-token").read_text() != digest


def test_a_malformed_source_is_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CORRAL_HOME", str(tmp_path))
    result = CliRunner().invoke(app, ["serve", "--source", "no-equals-sign"])
    assert result.exit_code == 2 and "NAME=PATH" in result.output
