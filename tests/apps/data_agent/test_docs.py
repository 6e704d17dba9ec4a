"""The Python examples of docs/data-agent.md run as written (against the real sandbox)."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from .conftest import ROOT

DOC = ROOT / "docs" / "data-agent.md"


def _blocks() -> list[str]:
    return re.findall(r"^```python\n(.*?)^```$", DOC.read_text(encoding="utf-8"), re.DOTALL | re.MULTILINE)


@pytest.mark.sandbox
@pytest.mark.parametrize("index", range(len(_blocks())))
def test_doc_example_runs(
    index: int, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(ROOT)
    exec(compile(_blocks()[index], f"{DOC.name}[{index}]", "exec"), {"__name__": "__doc_example__"})
    out = capsys.readouterr().out
    expected = re.findall(r"print\(.*\)\s+# (.*)", _blocks()[index])
    for line in expected:
        assert line.strip() in out


def test_the_doc_has_examples() -> None:
    assert _blocks(), f"{DOC} lost its Python examples"
    assert os.path.exists(DOC)
    assert Path(DOC).read_text(encoding="utf-8").count("## Decisions") == 1
