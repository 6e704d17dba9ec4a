"""The one path a front end (``corral ask``, ``corral chat``) takes to a question: through the resident
process when it fits (see ``_resident``), else in this process."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from corral.apps.data_agent import _run
from corral.apps.data_agent._answer import Answer
from corral.apps.data_agent._events import DataEvent
from corral.apps.data_agent._resident_client import ask_resident, use_resident
from corral.apps.data_agent._resident_wire import AskOptions
from corral.apps.data_agent._sandbox_runner import SandboxQueryRunner
from corral.apps.data_agent._timings import Warmup, warm_up


async def answer_question(
    question: str,
    *,
    db: str | Sequence[str] | None,
    files: Sequence[str | Path],
    model: str | None,
    thread: str | None,
    resident: bool,
    timings: bool,
    on_event: Callable[[DataEvent], None] | None,
    options: dict[str, Any],
) -> tuple[Answer, Warmup]:
    """The answer to ``question`` and what warming up for it cost: in the resident process when
    ``resident`` and it fits (a local model, no write to approve here), else in this process."""
    # An unusable source or option is an error here, before any process starts.
    source = _run.check_question(db, files, options.get("language", "auto"))
    # PostgreSQL stays here too: its password may come from this process's PGPASSWORD.
    fits = not options.get("allow_writes") and source.kind != "postgres" and use_resident(model)
    if resident and fits and (db is None or isinstance(db, str)):  # several databases: in this process
        wire = AskOptions(**{k: v for k, v in options.items() if k != "allow_writes"})
        return await ask_resident(
            question, db=db, files=files, model=model, thread=thread, options=wire, on_event=on_event
        )
    warmup = Warmup()
    if timings:
        # A program that plugged its own runner (tests) has no sandbox pool to start.
        sandbox = _run.make_runner is SandboxQueryRunner
        warmup = await asyncio.to_thread(warm_up, _run.loaded_model(model), sandbox=sandbox)
    answer = await _run.ask(
        question, db=db, files=files, model=model, on_event=on_event, thread=thread, **options
    )
    return answer, warmup
