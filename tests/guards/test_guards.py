"""Guard state: each guard trips with its own reason, at the threshold and not before."""

from __future__ import annotations

import sys

import pytest

import corral.guards
from corral.guards import (
    ApprovalRequest,
    GuardConfigError,
    Guards,
    GuardState,
    approve_all,
    deny_all,
    terminal_approver,
)
from corral.models import Usage


def test_public_names_are_sorted_and_exported() -> None:
    assert corral.guards.__all__ == sorted(corral.guards.__all__)
    for name in corral.guards.__all__:
        assert hasattr(corral.guards, name)


def state(**limits: object) -> GuardState:
    return GuardState(Guards(**limits), started_at=100.0)  # type: ignore[arg-type]


def test_max_steps_counts_model_turns() -> None:
    s = state(max_steps=2)
    for _ in range(2):
        assert s.before_model(100.0) is None
        s.record_response(Usage(requests=1))
    trip = s.before_model(100.0)
    assert trip is not None and trip.reason == "max_steps" and "2 times" in trip.detail


def test_token_and_cost_budgets() -> None:
    s = state(max_tokens=100, max_cost_usd=0.5)
    s.record_response(Usage(input_tokens=60, output_tokens=39, cost_usd=0.2))
    assert s.before_model(100.0) is None
    s.record_response(Usage(output_tokens=1))
    trip = s.before_model(100.0)
    assert trip is not None and trip.reason == "token_budget" and "100 tokens" in trip.detail

    s = state(max_cost_usd=0.5)
    s.record_response(Usage(cost_usd=0.5))
    trip = s.before_model(100.0)
    assert trip is not None and trip.reason == "cost_budget"


def test_wall_time_uses_the_given_run_clock() -> None:
    s = state(max_wall_s=10)
    assert s.before_model(109.9) is None
    trip = s.before_model(110.0)
    assert trip is not None and trip.reason == "time_budget"
    trip = s.before_tool("t", {}, 111.0)
    assert trip is not None and trip.reason == "time_budget"


def test_loop_detection_needs_identical_calls_in_a_row() -> None:
    s = state(max_identical_calls=3)
    assert s.before_tool("search", {"q": "a", "n": 1}, 100) is None
    assert s.before_tool("search", {"n": 1, "q": "a"}, 100) is None  # same call, keys reordered
    assert s.before_tool("search", {"q": "b", "n": 1}, 100) is None  # different: resets
    assert s.before_tool("search", {"q": "b", "n": 1}, 100) is None
    trip = s.before_tool("search", {"q": "b", "n": 1}, 100)
    assert trip is not None and trip.reason == "loop_detected" and '"q": "b"' in trip.detail


def test_repeated_error_counts_the_same_text_across_tools() -> None:
    s = state(max_same_error=3, breaker_threshold=10)
    assert s.record_tool("a", error_kind="raised", error="boom") is None
    assert s.record_tool("b", error_kind="raised", error="other") is None
    assert s.record_tool("b", error_kind="raised", error="boom") is None
    trip = s.record_tool("a", error_kind="raised", error="boom")
    assert trip is not None and trip.reason == "repeated_error" and "3 times" in trip.detail


def test_circuit_breaker_counts_consecutive_failures_of_one_tool() -> None:
    s = state(breaker_threshold=3, max_same_error=10)
    assert s.record_tool("db", error_kind="raised", error="e1") is None
    assert s.record_tool("db", error_kind="raised", error="e2") is None
    assert s.record_tool("db", error_kind=None, error=None) is None  # a success closes it again
    assert s.record_tool("db", error_kind="raised", error="e3") is None
    assert (
        s.record_tool("db", error_kind="arguments", error="bad args") is None
    )  # model's fault, not the tool's
    assert s.record_tool("db", error_kind="raised", error="e4") is None
    trip = s.record_tool("db", error_kind="busy", error="e5")
    assert trip is not None and trip.reason == "circuit_open" and "'db'" in trip.detail


def test_tool_timeouts() -> None:
    s = state(max_tool_timeouts=2, max_same_error=10, breaker_threshold=10)
    assert s.record_tool("slow", error_kind="timeout", error="t1") is None
    trip = s.record_tool("slow", error_kind="timeout", error="t2")
    assert trip is not None and trip.reason == "tool_timeout"


def test_corrections_are_bounded_per_kind_and_reset_by_a_clean_turn() -> None:
    s = state(max_retries=2, max_same_error=10)
    assert s.record_turn_problems({"invalid_output"}, ["d1"]) is None
    assert s.record_turn_problems({"invalid_output"}, ["d2"]) is None
    assert s.record_turn_problems(set(), []) is None  # resets
    assert s.record_turn_problems({"invalid_output", "unknown_tool"}, ["d3"]) is None
    assert s.record_turn_problems({"invalid_output"}, ["d4"]) is None
    trip = s.record_turn_problems({"invalid_output"}, ["d5"])
    assert trip is not None and trip.reason == "retries_exhausted"
    assert "invalid output: 3 times in a row" in trip.detail and "d5" in trip.detail


@pytest.mark.parametrize(
    "limits",
    [{"max_steps": 0}, {"max_tokens": 0}, {"max_cost_usd": -1.0}, {"max_retries": -1}, {"max_wall_s": 0}],
)
def test_limits_that_can_never_work_are_refused(limits: dict[str, object]) -> None:
    with pytest.raises(GuardConfigError, match=next(iter(limits))):
        Guards(**limits)  # type: ignore[arg-type]


REQUEST = ApprovalRequest(run_id="r1", tool="drop", arguments={"table": "t"}, tool_call_id="c1")


def test_policy_approvers() -> None:
    assert approve_all(REQUEST).approved is True
    assert deny_all(REQUEST).approved is False


def test_terminal_approver_refuses_without_a_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    class NotATty:
        def isatty(self) -> bool:
            return False

    monkeypatch.setattr(sys, "stdin", NotATty())
    decision = terminal_approver(REQUEST)
    assert decision.approved is False and "no terminal" in decision.reason


@pytest.mark.parametrize(("answer", "approved"), [("y", True), ("yes", True), ("n", False), ("", False)])
def test_terminal_approver_asks_on_a_terminal(
    monkeypatch: pytest.MonkeyPatch, answer: str, approved: bool
) -> None:
    class Tty:
        def isatty(self) -> bool:
            return True

    prompts: list[str] = []
    monkeypatch.setattr(sys, "stdin", Tty())
    monkeypatch.setattr("builtins.input", lambda prompt: prompts.append(prompt) or answer)
    assert terminal_approver(REQUEST).approved is approved
    assert "drop" in prompts[0] and '"table": "t"' in prompts[0]
