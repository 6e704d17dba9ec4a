"""The examples in docs/durability.md and the durable package's docstrings run and print what they show."""

from __future__ import annotations

import doctest
from pathlib import Path

import pytest

import corral.durable
import corral.durable._clock

DOC = Path(__file__).resolve().parents[2] / "docs" / "durability.md"


def test_durability_md_examples_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CORRAL_JOURNAL", str(tmp_path / "journal.sqlite"))
    failed, attempted = doctest.testfile(str(DOC), module_relative=False, optionflags=doctest.ELLIPSIS)
    assert attempted > 20
    assert failed == 0


@pytest.mark.parametrize("module", [corral.durable, corral.durable._clock])
def test_docstring_examples_run(module: object) -> None:
    failed, attempted = doctest.testmod(module)  # type: ignore[arg-type]
    assert attempted > 0 and failed == 0
