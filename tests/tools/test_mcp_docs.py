"""The examples in docs/mcp.md run (against the real time and git servers) and its configuration parses."""

from __future__ import annotations

import doctest
import json
import re
from pathlib import Path

import pytest

from corral.tools import HttpServer, StdioServer, servers_from_config, toolsets_from_config

DOC = Path(__file__).resolve().parents[2] / "docs" / "mcp.md"


@pytest.mark.timeout(120)
def test_mcp_page_examples_run() -> None:
    result = doctest.testfile(
        str(DOC), module_relative=False, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE
    )
    assert result.attempted >= 15
    assert result.failed == 0, f"{result.failed} example(s) in {DOC} failed"


def test_the_desktop_configuration_on_the_page_is_one_corral_reads() -> None:
    (block,) = re.findall(r"```json\n(.*?)```", DOC.read_text(), re.DOTALL)
    config = json.loads(block)
    servers = servers_from_config(config)
    assert isinstance(servers["corral"], StdioServer) and servers["corral"].args[:2] == ("mcp", "serve")
    assert isinstance(servers["corral-remote"], HttpServer)
    assert [t.prefix for t in toolsets_from_config(config)] == ["corral", "corral-remote"]
