"""Child process of the thread crash test: the first question of thread ``t`` is answered, then the process
hangs in the query-writing call of the follow-up until the parent kills it with SIGKILL."""

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
            return '{"reason": "counts customers", "verdict": "pass"}'
        if "only Brazil" in str(messages[-1].content):
            Path(marker).write_text("in the follow-up")
            time.sleep(120)  # killed here
        return "```sql\nSELECT COUNT(*) AS n FROM Customer\n```"

    _run.make_runner = InProcessRunner
    _run.make_model = lambda name: ScriptedModel(reply)
    rt = Runtime.open(journal)
    asyncio.run(_run.ask("How many customers are there?", db=db, runtime=rt, thread="t"))
    asyncio.run(_run.ask("only Brazil", db=db, runtime=rt, thread="t"))


if __name__ == "__main__":
    main(*sys.argv[1:4])
