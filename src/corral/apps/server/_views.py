"""What the API and the pages show of a run and its steps, read from the journal alone.

A step's ``value`` is JSON whose shape depends on what the step was (a model response, a tool outcome, a
sandbox query, a judge's verdict…); :func:`timeline_item` recognises the step by its name and picks the
fields a person reads. Everything here is data for the page: the page sets it as text, never as markup.

>>> from corral.durable import StepRecord, StepStatus
>>> step = StepRecord("r1", 0, "tool:add", StepStatus.OK, '{"content": "3", "error_kind": null}')
>>> item = timeline_item(step)
>>> item.kind, item.title, item.fields["result"]
('tool', 'add → 3', '3')
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import BaseModel, Field

from corral.durable import RunRecord, RunStatus, StepRecord, StepStatus

#: Longest text of one field sent to the page; the rest is cut (the journal keeps all of it).
MAX_FIELD = 20_000

StepKind = Literal[
    "model", "tool", "approval", "judge", "sandbox", "workflow", "node", "guard", "finish", "wait", "step"
]

_AGENT = "corral.agents._agent:"
_WORKFLOW = "corral.agents.workflow._run:"
_ASK = "corral.apps.data_agent._run:ask_run"


class UsageView(BaseModel):
    """Tokens and cost of a model call or a run."""

    model: str = ""
    requests: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float = 0.0


class RunView(BaseModel):
    """One run as the runs list shows it."""

    run_id: str
    function: str
    label: str = Field(description="The agent, the workflow or the data agent the run belongs to.")
    status: RunStatus
    created_at: float
    updated_at: float
    created: str = Field(description="created_at as UTC text")
    waiting_for: str | None = None
    worker_id: str | None = None
    lease_expires_at: float | None = None
    cost_usd: float = 0.0
    tokens: int = 0
    parent: str | None = None


class TimelineItem(BaseModel):
    """One step of a run, as the live timeline shows it."""

    position: int
    name: str
    kind: StepKind
    status: str
    started_at: float
    ended_at: float | None = None
    duration_ms: float | None = None
    title: str
    fields: dict[str, str] = Field(default_factory=dict)
    usage: UsageView | None = None


class RunDetail(RunView):
    """A run with its input, output and steps."""

    input: Any = None
    output: Any = None
    steps: list[TimelineItem] = Field(default_factory=list)
    trace_id: str = Field(description="The OpenTelemetry trace id of the run (hex).")


def when(ts: float | None) -> str:
    """A timestamp as UTC text."""
    return "" if ts is None else datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M:%S")


def _loads(text: str | None) -> Any:
    if text is None:
        return None
    try:
        return json.loads(text)
    except ValueError:
        return text


def _clip(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value, indent=2, ensure_ascii=False, default=str)
    return text if len(text) <= MAX_FIELD else text[:MAX_FIELD] + f"… ({len(text) - MAX_FIELD} more chars)"


def _usage_of(output: Any) -> UsageView | None:
    """The ``usage`` of a run's output: an agent's summary, a data agent's answer, a workflow's state."""
    for candidate in (output, output.get("summary") if isinstance(output, dict) else None):
        if isinstance(candidate, dict) and isinstance(candidate.get("usage"), dict):
            try:
                return UsageView.model_validate(candidate["usage"], strict=False)
            except ValueError:
                return None
    return None


def label(run: RunRecord, data: Any) -> str:
    """What the run is: ``agent <name>``, ``workflow <name>``, ``data agent``, or its function."""
    args = data.get("args") if isinstance(data, dict) else None
    first = args[0] if isinstance(args, list) and args and isinstance(args[0], str) else None
    if run.function.startswith(_WORKFLOW) and first:
        return f"workflow {first}"
    if run.function == _ASK:
        return "data agent"
    if run.function.startswith(_AGENT):
        return f"agent {first}" if run.function.endswith(":run_agent") and first else "agent"
    return run.function


@dataclass(frozen=True, slots=True)
class RunFacts:
    """What the runs list filters on, read from a run's input and output (JSON): worth keeping."""

    label: str
    haystack: str
    cost_usd: float
    tokens: int
    parent: str | None


def run_facts(run: RunRecord) -> RunFacts:
    """Parse what the list needs of ``run`` once."""
    data = _loads(run.input)
    usage = _usage_of(_loads(run.output)) if run.output is not None else None
    parent = data.get("parent") if isinstance(data, dict) else None
    name = label(run, data)
    return RunFacts(
        label=name,
        haystack=f"{name} {run.function}".lower(),
        cost_usd=usage.cost_usd if usage else 0.0,
        tokens=(usage.input_tokens + usage.output_tokens) if usage else 0,
        parent=parent if isinstance(parent, str) else None,
    )


class FactsCache:
    """:func:`run_facts` by run, kept while the run's row is unchanged (its ``updated_at``), so listing
    10,000 runs parses each run's JSON once, not once per request."""

    def __init__(self, size: int = 200_000) -> None:
        self.size = size
        self._lock = threading.Lock()
        self._facts: dict[str, tuple[float, RunStatus, RunFacts]] = {}

    def get(self, run: RunRecord) -> RunFacts:
        """The facts of ``run`` (parsed now if its row changed since)."""
        found = self._facts.get(run.run_id)
        if found is not None and found[0] == run.updated_at and found[1] is run.status:
            return found[2]
        facts = run_facts(run)
        with self._lock:
            if len(self._facts) >= self.size:
                self._facts.clear()
            self._facts[run.run_id] = (run.updated_at, run.status, facts)
        return facts


def run_view(run: RunRecord, facts: RunFacts | None = None) -> RunView:
    """The row of a run in the list (its cost and tokens from its output, when it has ended)."""
    facts = facts or run_facts(run)
    return RunView(
        run_id=run.run_id,
        function=run.function,
        label=facts.label,
        status=run.status,
        created_at=run.created_at,
        updated_at=run.updated_at,
        created=when(run.created_at),
        waiting_for=run.waiting_for,
        worker_id=run.worker_id,
        lease_expires_at=run.lease_expires_at,
        cost_usd=facts.cost_usd,
        tokens=facts.tokens,
        parent=facts.parent,
    )


def run_detail(run: RunRecord, steps: list[StepRecord], trace_id: str) -> RunDetail:
    """A run with its steps as timeline items."""
    return RunDetail(
        **run_view(run).model_dump(),
        input=_loads(run.input),
        output=_loads(run.output),
        steps=[timeline_item(s) for s in steps],
        trace_id=trace_id,
    )


def _kind(name: str, status: StepStatus) -> StepKind:
    if status is StepStatus.WAITING:
        return "wait"
    head = name.split(":", 1)[0].split(".", 1)[0]
    kinds: dict[str, StepKind] = {
        "model": "model",
        "tool": "tool",
        "approval": "approval",
        "judge": "judge",
        "query": "sandbox",
        "chart": "sandbox",
        "frames": "sandbox",
        "code": "sandbox",
        "schema": "sandbox",
        "sandbox": "sandbox",
        "workflow": "workflow",
        "node": "node",
        "agent": "finish",
    }
    return kinds.get(head, "step")


def timeline_item(step: StepRecord) -> TimelineItem:
    """A step as the timeline shows it: a one-line title and the fields worth reading in full."""
    value = _loads(step.value)
    kind = _kind(step.name, step.status)
    item = TimelineItem(
        position=step.position,
        name=step.name,
        kind=kind,
        status=step.status.value,
        started_at=step.started_at,
        ended_at=step.ended_at,
        duration_ms=None if step.duration is None else round(step.duration * 1000, 3),
        title=step.name,
    )
    if step.status is StepStatus.ERROR:
        item.title = f"{step.name} failed"
        item.fields["error"] = _clip(value)
        return item
    if step.status is not StepStatus.OK or value is None:
        if value is not None:
            item.fields["state"] = _clip(value)
        return item
    _describe(item, value)
    return item


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _describe(item: TimelineItem, value: Any) -> None:
    fields = item.fields
    short = item.name.split(":", 1)[-1]
    if item.kind == "model" and isinstance(value, dict):
        message = _dict(value.get("message"))
        text = message.get("content")
        calls = message.get("tool_calls") or []
        if text:
            fields["output"] = _clip(text)
        if calls:
            fields["tool calls"] = _clip(calls)
        try:
            item.usage = UsageView.model_validate(
                {**_dict(value.get("usage")), "model": str(value.get("model") or short)}
            )
        except ValueError:
            item.usage = UsageView(model=short)
        item.title = f"{short}: {item.usage.input_tokens}→{item.usage.output_tokens} tokens" + (
            f", {len(calls)} tool call(s)" if calls else ""
        )
    elif item.kind == "tool" and isinstance(value, dict):
        content = str(value.get("content", ""))
        fields["result"] = _clip(content)
        if value.get("error_kind"):
            fields["error kind"] = str(value["error_kind"])
        item.title = f"{short} → {content[:80]}" if not value.get("error_kind") else f"{short} failed"
    elif item.kind == "sandbox" and isinstance(value, dict):
        keys = ("sql", "columns", "row_count", "error", "stdout", "stderr", "exit_code", "limit", "elapsed_s")
        for key in keys:
            if value.get(key) not in (None, "", []):
                fields[key] = _clip(value[key])
        rows = value.get("rows")
        if isinstance(rows, list) and rows:
            fields["rows"] = _clip(rows[:20])
        item.title = item.name + (f": {value['row_count']} rows" if "row_count" in value else "")
        if value.get("error"):
            item.title = f"{item.name}: error"
        elif value.get("exit_code") not in (None, 0):
            item.title = f"{item.name}: exit {value['exit_code']}"
    elif item.kind == "judge" and isinstance(value, dict):
        item.title = f"judge {short}: {'pass' if value.get('ok', value.get('passed')) else 'fail'}"
        fields["verdict"] = _clip(value)
    elif item.kind == "finish" and isinstance(value, dict):
        reason = value.get("reason")
        if reason not in (None, "completed"):
            item.kind = "guard"
            item.title = f"guard tripped: {reason}"
        else:
            item.title = "agent finished"
        fields["summary"] = _clip(value)
        usage = _usage_of(value)
        item.usage = usage
    elif item.kind == "node":
        item.title = f"node {short} → {value}"
    elif item.kind == "workflow":
        item.title = f"workflow {short}"
        fields["graph"] = _clip(value)
    else:
        fields["value"] = _clip(value)
