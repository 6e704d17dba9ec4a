"""Questions asked from the web: the data agent runs in the server's event loop as a durable run of the
same journal, so its steps stream to the page like any run's, and a killed server's question can be
resumed (``corral runs resume``)."""

from __future__ import annotations

import asyncio
import logging
import uuid

from corral import CorralError
from corral.apps.data_agent import DataAgentError, DataEvent, Turn, next_turn
from corral.apps.server._problems import ProblemError
from corral.apps.server._state import ServerState

log = logging.getLogger("corral.server")
#: Questions whose events the server keeps in memory (the oldest are forgotten first).
MAX_REMEMBERED = 200


FILE_SUFFIXES = (".csv", ".parquet")


def split_source(where: str) -> tuple[str | list[str] | None, list[str]]:
    """A configured source as the data agent takes it: databases (``db``: one, or a list when there are
    several) and CSV/Parquet files, from a comma-separated list; several are queried together.

    >>> split_source("shop.sqlite"), split_source("a.csv,b.parquet")
    (('shop.sqlite', []), (None, ['a.csv', 'b.parquet']))
    >>> split_source("shop.sqlite, stock.duckdb, prices.csv")
    (['shop.sqlite', 'stock.duckdb'], ['prices.csv'])
    """
    if "://" in where:
        return where, []  # a database URL is one source, whatever it contains
    parts = [p.strip() for p in where.split(",") if p.strip()]
    files = [p for p in parts if p.lower().endswith(FILE_SUFFIXES)]
    dbs = [p for p in parts if p not in files]
    return (dbs[0] if len(dbs) == 1 else dbs or None), files


async def _place(state: ServerState, thread: str, question: str) -> tuple[str, Turn | None, bool]:
    """The question's run id in ``thread``, the turn it follows, and whether it is already answered; the
    thread is held for the question from here on (``state.threads``) unless it is already answered."""
    busy = state.threads.get(thread)
    if busy is not None:
        raise ProblemError(409, f"thread {thread!r} is answering {busy!r}: ask again once it is answered")
    state.threads[thread] = "a question being placed"  # held before the first await: no two placements
    held = False
    try:
        run_id, previous, resumed = await next_turn(state.runtime, thread, question)
        held = resumed is None
        if held:
            state.threads[thread] = run_id
        return run_id, previous, not held
    except DataAgentError as exc:
        raise ProblemError(400, str(exc)) from None
    finally:
        if not held:
            state.threads.pop(thread, None)


async def start_ask(
    state: ServerState, question: str, source: str, language: str, *, thread: str | None = None
) -> str:
    """Start answering ``question`` over the configured ``source``; return the run's id at once. In
    ``thread``, the question follows up the thread's previous one (its runs are ``THREAD.1``, ``THREAD.2``,
    …, as with ``corral ask --thread``); a thread takes one question at a time."""
    # The data agent's durable entry point (the one `corral ask` uses).
    from corral.apps.data_agent import ask

    where = state.config.sources.get(source)
    if where is None:
        known = ", ".join(sorted(state.config.sources)) or "none; start the server with --source NAME=PATH"
        raise ProblemError(404, f"no source named {source!r} (configured: {known})")
    db, files = split_source(where)
    state.config.chart_dir.mkdir(parents=True, exist_ok=True)
    run_id, previous = "ask-" + uuid.uuid4().hex[:12], None
    if thread is not None:
        # From here to the task's start nothing can fail: the task's end lets go of the thread.
        run_id, previous, answered = await _place(state, thread, question)
        if answered:
            return run_id  # the thread's last question, killed mid-way and asked again: it is answered now

    events = state.ask_events.setdefault(run_id, [])
    while len(state.ask_events) > MAX_REMEMBERED:
        del state.ask_events[next(iter(state.ask_events))]

    def on_event(event: DataEvent) -> None:
        events.append({**event.model_dump(mode="json"), "kind": event.kind})

    failures: list[str] = []

    async def answer() -> object:
        try:
            return await ask(
                question,
                db=db,
                files=files,
                model=state.config.model,
                runtime=state.runtime,
                run_id=run_id,
                language=language,
                chart_dir=str(state.config.chart_dir),
                on_event=on_event,
                previous=previous,
            )
        except CorralError as exc:  # recorded in the journal as the run's failure, or raised before it
            log.info("ask %s failed: %s", run_id, exc)
            failures.append(str(exc))
            return None
        except Exception as exc:
            log.warning("ask %s failed: %s: %s", run_id, type(exc).__name__, exc)
            return None
        finally:
            state.asks.pop(run_id, None)
            if thread is not None:
                state.threads.pop(thread, None)

    task = asyncio.create_task(answer(), name=f"corral-ask-{run_id}")
    state.asks[run_id] = task
    # The run exists in the journal once its first write happened: wait for it so a client can follow it.
    for _ in range(200):
        if state.runtime.journal.get_run(run_id) is not None or task.done():
            break
        await asyncio.sleep(0.01)
    if task.done() and state.runtime.journal.get_run(run_id) is None:
        why = failures[0] if failures else "it failed before its first step"
        raise ProblemError(400, f"the question could not be started over {source!r}: {why}")
    return run_id
