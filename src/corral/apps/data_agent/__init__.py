"""The data agent: questions over databases and files, answered with SQL or pandas run in the sandbox.

See ``docs/data-agent.md``. The main entry points are :func:`open_source` (what ``--db``/``--files`` name),
:class:`SandboxQueryRunner` (runs queries in corral's sandbox), :class:`SandboxPandasRunner` (runs pandas
code over files in it), :class:`DataAgent` (a workflow, see ``_loop``) and :func:`ask` (one question as a
durable run, what ``corral ask`` and ``corral serve`` call)::

    agent = DataAgent(model=resolve_model("local"), runner=SandboxQueryRunner(open_source("chinook.sqlite")))
    answer = await agent.ask("How many tracks are there?")
    answer.to_json()   # the --json contract
"""

from corral.apps.data_agent._agent import DataAgent
from corral.apps.data_agent._answer import CONTRACT_KEYS, MAX_ROWS, Answer, Status, prose_answer
from corral.apps.data_agent._chart import chart_shape, vega_lite_spec
from corral.apps.data_agent._checks import Finding, sanity_check
from corral.apps.data_agent._eval import EvalReport
from corral.apps.data_agent._evalrun import run_eval
from corral.apps.data_agent._events import (
    Answered,
    CheckNoted,
    DataEvent,
    Judged,
    QueryRan,
    QueryWritten,
    SchemaRead,
    data_event_adapter,
)
from corral.apps.data_agent._front import answer_question
from corral.apps.data_agent._lessons import Lesson, LessonStore
from corral.apps.data_agent._pandas_runner import CodeRunner, SandboxPandasRunner
from corral.apps.data_agent._run import ask, resume
from corral.apps.data_agent._runner import QueryResult, QueryRunner
from corral.apps.data_agent._sandbox_runner import SandboxQueryRunner
from corral.apps.data_agent._schema import Column, ForeignKey, Schema, Table, load_schema, narrow
from corral.apps.data_agent._sources import FileTable, Source, open_source, table_name_for
from corral.apps.data_agent._sqlcheck import check_read_only, extract_sql, is_read_only, quote_identifier
from corral.apps.data_agent._thread import Turn, next_turn
from corral.apps.data_agent._thread import asked as thread_question
from corral.apps.data_agent._thread import check_name as check_thread_name
from corral.apps.data_agent._thread import turns as thread_runs
from corral.apps.data_agent._timings import Warmup, run_timings
from corral.apps.data_agent._timings import render as render_timings
from corral.apps.data_agent._verified import VerifiedQuery, closest, load_verified
from corral.apps.data_agent.errors import (
    DataAgentError,
    EvalSetError,
    QueryRunnerError,
    SourceError,
    WriteRefusedError,
)

__all__ = [
    "CONTRACT_KEYS",
    "MAX_ROWS",
    "Answer",
    "Answered",
    "CheckNoted",
    "CodeRunner",
    "Column",
    "DataAgent",
    "DataAgentError",
    "DataEvent",
    "EvalReport",
    "EvalSetError",
    "FileTable",
    "Finding",
    "ForeignKey",
    "Judged",
    "Lesson",
    "LessonStore",
    "QueryRan",
    "QueryResult",
    "QueryRunner",
    "QueryRunnerError",
    "QueryWritten",
    "SandboxPandasRunner",
    "SandboxQueryRunner",
    "Schema",
    "SchemaRead",
    "Source",
    "SourceError",
    "Status",
    "Table",
    "Turn",
    "VerifiedQuery",
    "Warmup",
    "WriteRefusedError",
    "answer_question",
    "ask",
    "chart_shape",
    "check_read_only",
    "check_thread_name",
    "closest",
    "data_event_adapter",
    "extract_sql",
    "is_read_only",
    "load_schema",
    "load_verified",
    "narrow",
    "next_turn",
    "open_source",
    "prose_answer",
    "quote_identifier",
    "render_timings",
    "resume",
    "run_eval",
    "run_timings",
    "sanity_check",
    "table_name_for",
    "thread_question",
    "thread_runs",
    "vega_lite_spec",
]
