"""Child process of the write-approval tests: ``corral ask --allow-writes`` (the real CLI, in this process)
with a scripted model that proposes an INSERT and a runner that can write. It parks on the approval and,
on a terminal, offers to decide; the parent kills it there, or decides from outside."""

from __future__ import annotations

import sys
from collections.abc import Sequence

from corral.apps.cli import app
from corral.apps.data_agent import _run
from corral.models import Message, ScriptedModel, SystemMessage, ToolDefinition

from .conftest import WritableRunner

INSERT = "INSERT INTO Genre (Name) VALUES ('Polka')"


def reply(messages: Sequence[Message], tools: Sequence[ToolDefinition]) -> str:
    system = messages[0].content if isinstance(messages[0], SystemMessage) else ""
    if system.startswith("You check whether"):
        return '{"reason": "fine", "missing": "", "verdict": "pass"}'
    return f"```sql\n{INSERT}\n```"


def main(db: str) -> None:
    _run.make_runner = WritableRunner
    _run.make_model = lambda name: ScriptedModel(reply)
    app(["ask", "Add a genre called Polka", "--db", db, "--allow-writes", "--quiet"])


if __name__ == "__main__":
    main(sys.argv[1])
