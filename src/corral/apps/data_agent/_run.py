"""A question as a durable run: what ``corral ask`` starts, so a killed process resumes where it stopped.

:func:`ask_run` is the run function (its arguments are JSON, as the journal requires); every model call and
query inside it is a step of the run. :func:`ask` starts it on a runtime (the user's journal by default) and
returns the :class:`Answer`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextvars import ContextVar
from pathlib import Path
from typing import Any

from corral.apps.data_agent._agent import DataAgent
from corral.apps.data_agent._answer import Answer
from corral.apps.data_agent._events import DataEvent
from corral.apps.data_agent._lessons import LessonStore
from corral.apps.data_agent._pandas_runner import CodeRunner, SandboxPandasRunner
from corral.apps.data_agent._runner import QueryRunner
from corral.apps.data_agent._sandbox_runner import SandboxQueryRunner
from corral.apps.data_agent._sources import Source, open_source, without_password
from corral.apps.data_agent._thread import Turn, context_text, followup_question, next_turn
from corral.apps.data_agent._verified import load_verified
from corral.apps.data_agent.errors import DataAgentError
from corral.durable import RunContext, Runtime
from corral.models import Model, resolve_model

#: Builds the query runner of a source. The product's is the sandbox; tests replace it (and only tests).
RunnerFactory = Callable[[Source], QueryRunner]
make_runner: RunnerFactory = SandboxQueryRunner
#: Builds the pandas runner of a file source (the sandbox; tests may replace it).
make_code_runner: Callable[[Source], CodeRunner] = SandboxPandasRunner


def code_runner_for(source: Source, language: str = "auto") -> CodeRunner | None:
    """The pandas runner a question over ``source`` uses: one for files unless SQL is asked for."""
    if source.kind != "files" or language == "sql":
        return None
    return make_code_runner(source)


def lessons_for(option: bool | str | None) -> LessonStore | None:
    """The lesson store a question uses: the default one (``True``), the file named, or none."""
    if option is None or option is False:
        return None
    return LessonStore(None if option is True else option)


#: Builds the model from its user-typed name (tests replace it with a scripted model).
make_model: Callable[[str | None], Model] = resolve_model

_on_event: ContextVar[Callable[[DataEvent], None] | None] = ContextVar(
    "corral_data_agent_events", default=None
)
_models: dict[str | None, Model] = {}
#: PostgreSQL URLs with their password, by the URL without it that the journal keeps.
_passwords: dict[str, str] = {}


def loaded_model(name: str | None) -> Model:
    # Loading a local model takes seconds: one instance per name and process.
    if name not in _models:
        _models[name] = make_model(name)
    return _models[name]


async def ask_run(
    ctx: RunContext,
    question: str,
    db: str | list[str] | None = None,
    files: Sequence[str] = (),
    model: str | None = None,
    options: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The run function of one question (arguments and result are JSON)."""
    opts = options or {}
    # A follow-up in a thread: the turn before it, as journaled with this run's arguments.
    previous = Turn.model_validate(opts["previous"]) if opts.get("previous") else None
    # A URL journaled without its password gets it back from this process (a run resumed in another one
    # takes it from PGPASSWORD).
    source = open_source(_passwords.get(db, db) if isinstance(db, str) else db, list(files))
    agent = DataAgent(
        model=loaded_model(model),
        runner=make_runner(source),
        code_runner=code_runner_for(source, opts.get("language", "auto")),
        language=opts.get("language", "auto"),
        verified=load_verified(opts["verified"]) if opts.get("verified") else (),
        judge=bool(opts.get("judge", True)),
        charts=bool(opts.get("charts", True)),
        chart_dir=Path(opts["chart_dir"]) if opts.get("chart_dir") else None,
        on_event=_on_event.get(),
        # A write parks the question until a person decides (`corral approvals`, or the terminal that
        # asked, through the same ledger); without --allow-writes it is refused.
        allow_writes=bool(opts.get("allow_writes")),
        previous=context_text(previous) if previous else "",
        lessons=lessons_for(opts.get("lessons", True)),
    )
    answer = await agent.answer(ctx, followup_question(previous, question) if previous else question)
    return answer.model_dump(mode="json")


def check_question(db: str | Sequence[str] | None, files: Sequence[str | Path], language: str) -> Source:
    """The source of a question, or the error that stops it before a run is journaled."""
    source = open_source(db, list(files))
    if language not in ("auto", "sql", "python"):
        raise DataAgentError(f"unknown language {language!r}: use auto, sql or python")
    if language == "python" and source.kind != "files":
        raise DataAgentError("pandas code runs over CSV/Parquet files (--files); query databases with SQL")
    return source


async def ask(
    question: str,
    *,
    db: str | Sequence[str] | None = None,
    files: Sequence[str | Path] = (),
    model: str | None = None,
    runtime: Runtime | None = None,
    run_id: str | None = None,
    on_event: Callable[[DataEvent], None] | None = None,
    thread: str | None = None,
    previous: Turn | None = None,
    **options: Any,
) -> Answer:
    """Answer ``question`` as a durable run on ``runtime`` (default: the user's journal); in ``thread``, as a
    follow-up of the thread's previous question (see :mod:`._thread`). ``previous``: the turn this question
    follows, for a caller that placed it in its thread itself with :func:`next_turn` (as the server does, to
    know the run id first)."""
    source = check_question(db, files, options.get("language", "auto"))
    journaled_db: str | list[str] | None = db if db is None or isinstance(db, str) else [str(d) for d in db]
    if isinstance(db, str) and source.kind == "postgres":
        # The journal keeps a run's arguments in plain text: the password stays in this process's memory.
        journaled_db = without_password(db)
        if journaled_db != db:
            _passwords[journaled_db] = db
    rt = runtime or Runtime()
    token = _on_event.set(on_event)
    try:
        if thread is not None:
            if run_id is not None or previous is not None:
                raise DataAgentError("give a thread or a run id and a previous turn, not both")
            run_id, previous, resumed = await next_turn(rt, thread, question)
            if resumed is not None:
                return resumed
        if previous is not None:
            options = {**options, "previous": previous.model_dump(mode="json")}
        result = await rt.run(
            ask_run,
            question,
            journaled_db,
            [str(f) for f in files],
            model,
            {k: (str(v) if isinstance(v, Path) else v) for k, v in options.items()},
            run_id=run_id,
        )
    finally:
        _on_event.reset(token)
        if runtime is None:
            rt.close()
    return Answer.model_validate(result)


async def resume(
    run_id: str, *, runtime: Runtime, on_event: Callable[[DataEvent], None] | None = None
) -> Answer:
    """Go on with a question's run that was parked (a write waiting for a decision) once it is decided;
    ``RunSuspended`` again if it is still waiting."""
    token = _on_event.set(on_event)
    try:
        result = await runtime.resume(run_id)
    finally:
        _on_event.reset(token)
    return Answer.model_validate(result)
