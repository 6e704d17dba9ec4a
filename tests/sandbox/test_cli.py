"""`corral sandbox check` and `corral sandbox run`."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from corral.apps.cli import app

from .conftest import needs_bwrap

pytestmark = [pytest.mark.sandbox, needs_bwrap]


def test_check_reports_the_backend_and_exits_0(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CORRAL_SANDBOX_BACKEND", raising=False)
    result = CliRunner().invoke(app, ["sandbox", "check"])
    assert result.exit_code == 0, result.output
    assert "backend: bubblewrap" in result.output
    assert "user namespaces" in result.output and "seccomp" in result.output


def test_check_exits_1_when_code_cannot_run(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", "/nonexistent")  # no bwrap to be found
    monkeypatch.setenv("CORRAL_SANDBOX_BACKEND", "bubblewrap")  # and no fallback allowed
    result = CliRunner().invoke(app, ["sandbox", "check"])
    assert result.exit_code == 1
    assert "apt-get install -y bubblewrap" in result.output


def test_check_falls_back_to_landlock_without_bubblewrap(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", "/nonexistent")
    monkeypatch.delenv("CORRAL_SANDBOX_BACKEND", raising=False)
    result = CliRunner().invoke(app, ["sandbox", "check"])
    assert result.exit_code == 0, result.output
    assert "backend: landlock" in result.output and "bubblewrap is not installed" in result.output


def test_check_reports_a_forced_backend(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CORRAL_SANDBOX_BACKEND", "landlock")
    result = CliRunner().invoke(app, ["sandbox", "check"])
    assert result.exit_code == 0, result.output
    assert "backend: landlock" in result.output and "forced by configuration" in result.output
    monkeypatch.setenv("CORRAL_SANDBOX_BACKEND", "docker")
    result = CliRunner().invoke(app, ["sandbox", "check"])
    assert result.exit_code == 1 and "unknown sandbox backend 'docker'" in result.output


def test_run_prints_output_usage_and_files(tmp_path: Path) -> None:
    script = tmp_path / "job.py"
    script.write_text("print('hello from the sandbox')\nopen('out.csv', 'w').write('a\\n1\\n')\n")
    out = tmp_path / "out"
    result = CliRunner().invoke(app, ["sandbox", "run", str(script), "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "hello from the sandbox" in result.output and "[exit 0;" in result.output
    assert (out / "out.csv").read_text() == "a\n1\n"


def test_run_exits_1_when_the_job_fails(tmp_path: Path) -> None:
    script = tmp_path / "job.py"
    script.write_text("import time\ntime.sleep(5)\n")
    result = CliRunner().invoke(app, ["sandbox", "run", str(script), "--wall", "0.5"])
    assert result.exit_code == 1
    assert "stopped by the wall limit" in result.output
