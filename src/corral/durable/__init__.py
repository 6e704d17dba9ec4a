"""Durable execution: runs whose every effect is a journaled step, resumable after any crash.

>>> import asyncio
>>> from corral.durable import MemoryJournal, RunContext, Runtime
>>> async def greet(ctx: RunContext, name: str) -> str:
...     text = await ctx.step("compose", lambda: f"hello {name}")
...     return text
>>> rt = Runtime(MemoryJournal())
>>> asyncio.run(rt.run(greet, "ada", run_id="r1"))
'hello ada'
>>> [s.name for s in rt.steps("r1")]
['compose']

See ``docs/durability.md`` for the guarantees (exactly-once vs at-least-once, NORMAL vs FULL, determinism).
"""

from corral.durable._clock import Clock, FakeClock, SystemClock
from corral.durable._context import RetryPolicy, RunContext, StepInfo, current_context, current_step
from corral.durable._journal import Journal, MemoryJournal, RunRecord, RunStatus, StepRecord, StepStatus
from corral.durable._ledger import Ledger, LedgerRecord, MemoryLedger, SqliteLedger, ledger_for
from corral.durable._mailbox import (
    Batch,
    Envelope,
    MailboxStore,
    MemoryMailboxStore,
    SqliteMailboxStore,
    mailbox_for,
)
from corral.durable._runtime import Runtime, function_path
from corral.durable._sqlite import SCHEMA_VERSION, SqliteJournal
from corral.durable._tracing import TracingJournal, trace_id_for, tracer_provider, tracer_provider_from_env
from corral.durable._worker import Worker
from corral.durable.errors import (
    Cancel,
    DeterminismError,
    DurableError,
    FunctionNotFound,
    JournalCorrupt,
    JournalError,
    JournalFull,
    JournalTooNew,
    LeaseLost,
    NotSerializable,
    Park,
    RunBusy,
    RunCancelled,
    RunExists,
    RunInterrupt,
    RunNotFound,
    RunSuspended,
    StepError,
    WaitTimeout,
)
from corral.durable.testing import check_journal

__all__ = [
    "SCHEMA_VERSION",
    "Batch",
    "Cancel",
    "Clock",
    "DeterminismError",
    "DurableError",
    "Envelope",
    "FakeClock",
    "FunctionNotFound",
    "Journal",
    "JournalCorrupt",
    "JournalError",
    "JournalFull",
    "JournalTooNew",
    "LeaseLost",
    "Ledger",
    "LedgerRecord",
    "MailboxStore",
    "MemoryJournal",
    "MemoryLedger",
    "MemoryMailboxStore",
    "NotSerializable",
    "Park",
    "RetryPolicy",
    "RunBusy",
    "RunCancelled",
    "RunContext",
    "RunExists",
    "RunInterrupt",
    "RunNotFound",
    "RunRecord",
    "RunStatus",
    "RunSuspended",
    "Runtime",
    "SqliteJournal",
    "SqliteLedger",
    "SqliteMailboxStore",
    "StepError",
    "StepInfo",
    "StepRecord",
    "StepStatus",
    "SystemClock",
    "TracingJournal",
    "WaitTimeout",
    "Worker",
    "check_journal",
    "current_context",
    "current_step",
    "function_path",
    "ledger_for",
    "mailbox_for",
    "trace_id_for",
    "tracer_provider",
    "tracer_provider_from_env",
]
