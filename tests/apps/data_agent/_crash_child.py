"""Child process of the crash test: asks a question as a durable run and hangs in the judge's model call
(after the query-writing call and the query are journaled) until the parent kills it with SIGKILL."""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from corral.apps.data_agent import _run
from corral.durable import Runtime
from corral.models import Message, ScriptedModel, SystemMessage, ToolDefinition

from .conftest import InProcessRunner


def main(journal: str, db: str, marker: str) -> None:
    def reply(messages: Sequence[Message], tools: Sequence[ToolDefinition]) -> str:
        system = messages[0].content if isinstance(messages[0], SystemMessage) else ""
        if system.startswith("You check whether"):
            Path(marker).write_text("in judge")
            time.sleep(120)  # killed here
        return "```sql\nSELECT Name FROM Genre ORDER BY Name\n```"

    _run.make_runner = InProcessRunner
    _run.make_model = lambda name: ScriptedModel(reply)
    rt = Runtime.open(journal)
    asyncio.run(_run.ask("List the names of the genres.", db=db, runtime=rt, run_id="crash-1"))


if __name__ == "__main__":
    main(*sys.argv[1:4])
