"""The examples in docs/sandbox.md run and print what the page says."""

from __future__ import annotations

import doctest
from pathlib import Path

import pytest

from .conftest import needs_bwrap

DOC = Path(__file__).resolve().parents[2] / "docs" / "sandbox.md"

pytestmark = [pytest.mark.sandbox, needs_bwrap]


def test_sandbox_page_examples_run() -> None:
    result = doctest.testfile(
        str(DOC), module_relative=False, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE
    )
    assert result.attempted > 20
    assert result.failed == 0, f"{result.failed} example(s) in {DOC} failed"
