"""Live progress of a run in the terminal: what the model asked, what the tools returned, the cost.

:class:`Progress` is the one renderer of the CLI: an ``on_event`` callback for an
:class:`~corral.agents.Agent` and for the data agent (``corral ask``), whose typed events it shows as one
line per step. Three modes:

- ``"live"`` (default): one readable line per step (rich), a spinner while the model thinks (on a terminal
  only), tool results cut to ``max_chars``, tokens, cost and elapsed time;
- ``"json"``: each event as one JSON line (``corral ask --json``), parseable with
  :data:`corral.agents.event_adapter`;
- ``"quiet"``: nothing (``--quiet``); the caller prints the answer.

>>> import io
>>> from rich.console import Console
>>> from corral.agents import Agent
>>> from corral.durable import MemoryJournal, Runtime
>>> from corral.models import ScriptedModel
>>> out = io.StringIO()
>>> progress = Progress(console=Console(file=out, width=100, color_system=None))
>>> model = ScriptedModel([("add", {"a": 2, "b": 3}), "It is 5."])
>>> def add(a: int, b: int) -> int:
...     return a + b
>>> _ = Agent(model, tools=[add], on_event=progress).run_sync("2+3?", runtime=Runtime(MemoryJournal()))
>>> print(out.getvalue().replace("\\r", ""))  # doctest: +ELLIPSIS
▶ run ... · model scripted · tools: add
  ... turn 1 · calls add(a=2, b=3) · ... tok
  ...   add → 5 (...)
  ... turn 2 · answers: It is 5. · ... tok
✔ completed · 2 turns · 1 tool call · ... tokens · $0.0000 · ...
<BLANKLINE>
"""

from __future__ import annotations

import json
import sys
import time
from typing import Any, Literal, TextIO

from rich.console import Console
from rich.markup import escape
from rich.status import Status

from corral.agents import (
    AgentEvent,
    ApprovalDecided,
    CorrectionSent,
    GuardTripped,
    ModelResponded,
    RunFinished,
    RunStarted,
    ToolCalled,
    ToolReturned,
)
from corral.apps.data_agent import (
    Answered,
    CheckNoted,
    DataEvent,
    Judged,
    QueryRan,
    QueryWritten,
    SchemaRead,
)

ProgressMode = Literal["live", "json", "quiet"]

_ICONS = {"schema": "◆", "sql": "✎", "code": "✎", "query": "▶", "check": "⚑", "judge": "⚖", "answer": "✔"}
#: What the data agent does after each kind of event, shown under a spinner until the next one.
_FOLLOWING = {
    "schema": "writing a query…",
    "sql": "running it in the sandbox…",
    "code": "running it in the sandbox…",
    "query": "checking…",
}


_DATA_EVENTS = (SchemaRead, QueryWritten, QueryRan, CheckNoted, Judged, Answered)


def _cut(text: str, limit: int) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


def _arguments(arguments: dict[str, Any] | None, limit: int) -> str:
    if arguments is None:
        return "(malformed arguments)"
    inner = ", ".join(f"{k}={json.dumps(v, default=str)}" for k, v in arguments.items())
    return _cut(inner, limit)


class Progress:
    """An ``on_event`` callback that shows an agent run as it happens (see the module docstring).

    ``console`` is where live output goes (default: stderr, so stdout stays for the answer); ``file`` is
    where JSON lines go (default: stdout). ``max_chars`` cuts model text and tool results.
    """

    def __init__(
        self,
        mode: ProgressMode = "live",
        *,
        console: Console | None = None,
        file: TextIO | None = None,
        max_chars: int = 160,
    ) -> None:
        self.mode = mode
        self.console = console or Console(stderr=True)
        self.file = file
        self.max_chars = max_chars
        self._started = time.monotonic()
        self._status: Status | None = None

    @classmethod
    def from_flags(cls, *, json: bool = False, quiet: bool = False, **options: Any) -> Progress:
        """The renderer for a command's ``--json`` / ``--quiet`` flags (``--json`` wins)."""
        mode: ProgressMode = "json" if json else "quiet" if quiet else "live"
        return cls(mode, **options)

    def __call__(self, event: AgentEvent | DataEvent) -> None:
        """Show one event."""
        if self.mode == "quiet":
            return
        if self.mode == "json":
            out = self.file or sys.stdout
            out.write(event.model_dump_json() + "\n")
            out.flush()
            return
        self._stop_spinner()
        if isinstance(event, _DATA_EVENTS):
            self._data(event)
            return
        line = self._line(event)
        if line is not None:
            self.console.print(line, highlight=False, soft_wrap=True)
        if isinstance(event, RunStarted | ToolReturned | CorrectionSent | ApprovalDecided):
            self._spin("waiting for the model…")
        elif isinstance(event, ToolCalled) and not event.needs_approval:
            # No spinner over an approval prompt: the terminal approver asks on this terminal.
            self._spin(f"running {event.tool}…")

    def close(self) -> None:
        """Stop the spinner, if one runs (call when a run ends abnormally)."""
        self._stop_spinner()

    def _data(self, event: DataEvent) -> None:
        """One line per step of the data agent, and a spinner for the work that follows it."""
        kind = event.kind
        text = _cut(event.message, max(self.max_chars, 220))
        failed = isinstance(event, QueryRan) and not event.ok
        line = f"{self._elapsed()} {_ICONS.get(kind, '·')} [bold]{kind}[/bold] {escape(text)}"
        self.console.print(f"[red]{line}[/red]" if failed else line, highlight=False, soft_wrap=True)
        if kind in _FOLLOWING:
            self._spin(_FOLLOWING[kind])

    def _elapsed(self) -> str:
        return f"[dim]{time.monotonic() - self._started:6.1f}s[/dim]"

    def _spin(self, text: str) -> None:
        # A spinner only makes sense on a terminal; in a pipe or a log it would be noise.
        if self.console.is_terminal:
            self._status = self.console.status(text)
            self._status.start()

    def _stop_spinner(self) -> None:
        if self._status is not None:
            self._status.stop()
            self._status = None

    def _line(self, event: AgentEvent) -> str | None:
        cut = self.max_chars
        if isinstance(event, RunStarted):
            self._started = time.monotonic()
            tools = ", ".join(event.tools) or "none"
            return f"[bold]▶ run {escape(event.run_id)}[/bold] · model {escape(event.model)} · tools: {tools}"
        if isinstance(event, ModelResponded):
            tokens = f"[dim]{event.usage.total_tokens} tok[/dim]"
            if event.tool_calls:
                asked = "; ".join(f"{c.name}({_arguments(c.arguments, cut // 2)})" for c in event.tool_calls)
                what = f"calls [cyan]{escape(asked)}[/cyan]"
            else:
                what = f"answers: {escape(_cut(event.text or '', cut))}"
            return f"  {self._elapsed()} turn {event.turn} · {what} · {tokens}"
        if isinstance(event, ToolCalled):
            return None  # shown with the model's turn; the result line follows
        if isinstance(event, ToolReturned):
            took = f"[dim]({event.duration_s:.2f} s)[/dim]"
            if event.error_kind is None:
                return (
                    f"  {self._elapsed()}   {escape(event.tool)} → {escape(_cut(event.content, cut))} {took}"
                )
            return (
                f"  {self._elapsed()}   [red]✗ {escape(event.tool)} {event.error_kind}:[/red] "
                f"{escape(_cut(event.content, cut))} {took}"
            )
        if isinstance(event, CorrectionSent):
            return f"  {self._elapsed()}   [yellow]↺ {event.kind}:[/yellow] {escape(_cut(event.detail, cut))}"
        if isinstance(event, ApprovalDecided):
            verdict = "[green]approved[/green]" if event.approved else "[red]refused[/red]"
            return f"  {self._elapsed()}   {escape(event.tool)} {verdict} by {escape(event.by)}"
        if isinstance(event, GuardTripped):
            return f"[red bold]■ stopped: {event.reason}[/red bold] — {escape(event.detail)}"
        return self._finished(event)

    def _finished(self, event: RunFinished) -> str:
        usage = event.usage
        calls = f"{event.tool_calls} tool call{'s' if event.tool_calls != 1 else ''}"
        mark = "[green]✔[/green]" if event.status == "completed" else "[red]✘[/red]"
        return (
            f"{mark} {event.status} · {event.turns} turns · {calls} · {usage.total_tokens} tokens · "
            f"${usage.cost_usd:.4f} · {time.monotonic() - self._started:.1f} s"
        )
