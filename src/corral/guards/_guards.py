"""Budgets and retry guards: the limits that stop an agent loop that is going nowhere or costing too much.

:class:`Guards` is the configuration (all keyword-only, with defaults that suit a small interactive agent);
:class:`GuardState` is the bookkeeping of one run. The state is a pure function of what the run recorded —
model usage, tool outcomes, the run clock (``ctx.now()``) — so when a run resumes after a crash, replaying
its journal rebuilds the same state: a resumed run keeps the budget it had, not a fresh one.

Every guard that trips ends the run with its own :data:`TerminalReason`, never a traceback:

>>> state = GuardState(Guards(max_identical_calls=2), started_at=0.0)
>>> state.before_tool("search", {"q": "x"}, now=1.0) is None
True
>>> state.before_tool("search", {"q": "x"}, now=2.0).reason
'loop_detected'
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Literal

from corral.guards.errors import GuardConfigError
from corral.models import Usage

#: Why a run ended. ``completed`` is the only success; each other value names the guard (or failure) that
#: stopped it, so callers can branch on it and a UI can explain it.
TerminalReason = Literal[
    "completed",  # the model gave a final answer that validated
    "max_steps",  # the model was asked max_steps times without finishing
    "token_budget",  # the run used max_tokens tokens
    "cost_budget",  # the run cost max_cost_usd
    "time_budget",  # the run (by its own clock, across restarts) took max_wall_s seconds
    "loop_detected",  # the same tool with the same arguments max_identical_calls times in a row
    "repeated_error",  # the same error max_same_error times: feeding it back is not helping
    "circuit_open",  # one tool failed breaker_threshold times in a row: it is down
    "tool_timeout",  # one tool timed out max_tool_timeouts times
    "retries_exhausted",  # a kind of mistake (bad arguments, unknown tool, bad output) max_retries+1 times
    "approval_denied",  # a human (or the lack of one) refused a call and the guards say stop on refusal
    "judge_failed",  # the judges failed the answer after the last revision (and no human overruled them)
    "model_error",  # the model could not be reached at all (after its own retries)
]

#: The kinds of mistakes the loop corrects by feeding them back, each with its own retry count.
CorrectionKind = Literal["invalid_arguments", "unknown_tool", "invalid_output"]


@dataclass(frozen=True, kw_only=True)
class Guards:
    """The limits of one agent run. ``None`` switches a budget off.

    ``max_steps`` counts model turns. Token, cost and wall-time budgets are checked before each model
    call (and wall time before each tool call too), so a run may overshoot by one call's usage.
    ``max_retries`` bounds *consecutive* corrections of one kind (a turn without that mistake resets it).
    ``tool_timeout_s`` is the timeout of tools that declare none. ``max_tool_output_chars`` cuts a tool's
    result before it reaches the model. ``stop_on_denial`` ends the run when an approval is refused
    (otherwise the refusal is fed back and the model may try something else).
    """

    max_steps: int = 25
    max_tokens: int | None = None
    max_cost_usd: float | None = None
    max_wall_s: float | None = 900.0
    max_identical_calls: int = 3
    max_same_error: int = 3
    breaker_threshold: int = 3
    tool_timeout_s: float | None = 60.0
    max_tool_timeouts: int = 2
    max_retries: int = 3
    max_tool_output_chars: int = 20_000
    stop_on_denial: bool = False

    def __post_init__(self) -> None:
        positive_ints = {
            "max_steps": self.max_steps,
            "max_identical_calls": self.max_identical_calls,
            "max_same_error": self.max_same_error,
            "breaker_threshold": self.breaker_threshold,
            "max_tool_timeouts": self.max_tool_timeouts,
            "max_tool_output_chars": self.max_tool_output_chars,
        }
        for name, value in positive_ints.items():
            if value < 1:
                raise GuardConfigError(f"Guards({name}={value}): must be at least 1")
        if self.max_retries < 0:
            raise GuardConfigError(f"Guards(max_retries={self.max_retries}): must be 0 or more")
        budgets = {
            "max_tokens": self.max_tokens,
            "max_cost_usd": self.max_cost_usd,
            "max_wall_s": self.max_wall_s,
            "tool_timeout_s": self.tool_timeout_s,
        }
        for name, budget in budgets.items():
            if budget is not None and budget <= 0:
                raise GuardConfigError(f"Guards({name}={budget}): must be positive, or None for no limit")


@dataclass(frozen=True)
class GuardTrip:
    """A guard's decision to stop the run: the reason and a sentence saying what was exceeded."""

    reason: TerminalReason
    detail: str


def _signature(name: str, arguments: Any) -> str:
    # Key order must not hide a repeat: {"a":1,"b":2} and {"b":2,"a":1} are the same call.
    return f"{name}:{json.dumps(arguments, sort_keys=True, default=str)}"


@dataclass
class GuardState:
    """The guards' bookkeeping for one run; fed by the agent loop, rebuilt by replaying the run.

    Each ``before_*``/``record_*`` method returns a :class:`GuardTrip` when the run must stop, else
    ``None``.
    """

    guards: Guards
    started_at: float
    usage: Usage = field(default_factory=Usage)
    turns: int = 0
    #: Seconds the run spent parked for a human (approvals): not the run's own time, so not in its budget.
    waited: float = 0.0
    _last_call: str | None = None
    _repeats: int = 0
    _errors: Counter[str] = field(default_factory=Counter)
    _failures: Counter[str] = field(default_factory=Counter)
    _timeouts: Counter[str] = field(default_factory=Counter)
    _corrections: Counter[str] = field(default_factory=Counter)

    def elapsed(self, now: float) -> float:
        """Seconds since the run started, by the run's recorded clock, less the time it waited for humans."""
        return now - self.started_at - self.waited

    def record_wait(self, seconds: float) -> None:
        """Leave ``seconds`` spent waiting for a human's decision out of the time budget: a run that waited
        a day for an approval has not worked for a day."""
        self.waited += max(seconds, 0.0)

    def _time_trip(self, now: float) -> GuardTrip | None:
        limit = self.guards.max_wall_s
        if limit is not None and self.elapsed(now) >= limit:
            return GuardTrip(
                "time_budget", f"the run has taken {self.elapsed(now):.1f} s; its budget is {limit:g} s"
            )
        return None

    def before_model(self, now: float) -> GuardTrip | None:
        """Check the step count and the budgets before asking the model again."""
        g = self.guards
        if self.turns >= g.max_steps:
            return GuardTrip("max_steps", f"the model was asked {self.turns} times without finishing")
        if g.max_tokens is not None and self.usage.total_tokens >= g.max_tokens:
            return GuardTrip(
                "token_budget", f"the run used {self.usage.total_tokens} tokens; its budget is {g.max_tokens}"
            )
        if g.max_cost_usd is not None and self.usage.cost_usd >= g.max_cost_usd:
            return GuardTrip(
                "cost_budget", f"the run cost ${self.usage.cost_usd:.4f}; its budget is ${g.max_cost_usd:.4f}"
            )
        return self._time_trip(now)

    def record_response(self, usage: Usage) -> None:
        """Count one model turn and its usage."""
        self.turns += 1
        self.usage = self.usage + usage

    def before_tool(self, name: str, arguments: Any, now: float) -> GuardTrip | None:
        """Check wall time and loop detection before a tool call (which this records)."""
        trip = self._time_trip(now)
        if trip is not None:
            return trip
        signature = _signature(name, arguments)
        self._repeats = self._repeats + 1 if signature == self._last_call else 1
        self._last_call = signature
        if self._repeats >= self.guards.max_identical_calls:
            return GuardTrip(
                "loop_detected",
                f"{name!r} was called {self._repeats} times in a row with the same arguments: "
                f"{json.dumps(arguments, sort_keys=True, default=str)[:200]}",
            )
        return None

    def record_tool(self, name: str, *, error_kind: str | None, error: str | None) -> GuardTrip | None:
        """Record a tool's outcome (``error_kind`` is ``None`` on success); trip on repeated failures.

        Argument errors and refusals are the model's (or a human's) doing, not the tool's, so they do not
        count towards the circuit breaker; every error counts towards the repeated-error guard.
        """
        if error_kind is None or error is None:
            self._failures[name] = 0
            return None
        return self._error_trip(error) or self._tool_failure_trip(name, error_kind)

    def _error_trip(self, error: str) -> GuardTrip | None:
        self._errors[error] += 1
        if self._errors[error] >= self.guards.max_same_error:
            return GuardTrip(
                "repeated_error", f"the same error came back {self._errors[error]} times: {error[:300]}"
            )
        return None

    def _tool_failure_trip(self, name: str, error_kind: str) -> GuardTrip | None:
        if error_kind == "timeout":
            self._timeouts[name] += 1
            if self._timeouts[name] >= self.guards.max_tool_timeouts:
                return GuardTrip("tool_timeout", f"{name!r} timed out {self._timeouts[name]} times")
        if error_kind in ("arguments", "refused"):
            return None
        self._failures[name] += 1
        if self._failures[name] >= self.guards.breaker_threshold:
            return GuardTrip(
                "circuit_open", f"{name!r} failed {self._failures[name]} times in a row; it looks down"
            )
        return None

    def record_turn_problems(self, kinds: set[CorrectionKind], details: list[str]) -> GuardTrip | None:
        """Record the mistakes of one model turn (empty when it had none): retries and repeated errors."""
        for kind in ("invalid_arguments", "unknown_tool", "invalid_output"):
            if kind in kinds:
                self._corrections[kind] += 1
            else:
                self._corrections[kind] = 0
        last = details[-1][:300] if details else ""
        for kind in sorted(kinds):
            if self._corrections[kind] > self.guards.max_retries:
                return GuardTrip(
                    "retries_exhausted",
                    f"{kind.replace('_', ' ')}: {self._corrections[kind]} times in a row, "
                    f"after {self.guards.max_retries} corrections; last: {last}",
                )
        for detail in details:
            trip = self._error_trip(detail)
            if trip is not None:
                return trip
        return None
