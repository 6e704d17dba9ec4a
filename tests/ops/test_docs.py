"""The examples in docs/ops-agent.md run and print what the page says."""

from __future__ import annotations

import doctest
from pathlib import Path

import pytest

DOC = Path(__file__).resolve().parents[2] / "docs" / "ops-agent.md"


@pytest.mark.slow
def test_ops_agent_page_examples_run(tmp_path: Path) -> None:
    result = doctest.testfile(
        str(DOC),
        module_relative=False,
        globs={"cores_dir": tmp_path / "cores"},
        optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE,
    )
    assert result.attempted > 15
    assert result.failed == 0, f"{result.failed} example(s) in {DOC} failed"
