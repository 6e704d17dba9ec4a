"""In-process approvers: functions that decide a call at once, inside the run's process.

The default way a call is approved is a durable wait (:mod:`corral.guards._approvals`): the run parks
until a human decides from anywhere. An in-process approver is for tests, trusted scripts and interactive
sessions: ``approve_all``, ``deny_all``, or ``terminal_approver`` (asks on the terminal when there is one,
refuses otherwise — a non-interactive run never performs an approval-needing action silently). The agent
records each such decision as a durable step, so a resumed run does not ask twice.

>>> request = ApprovalRequest(run_id="r1", tool="drop_table", arguments={"name": "t"}, tool_call_id="c1")
>>> approve_all(request).approved
True
"""

from __future__ import annotations

import json
import sys
from collections.abc import Awaitable, Callable
from typing import Any, TypeAlias

from pydantic import BaseModel, ConfigDict


class ApprovalRequest(BaseModel):
    """A tool call waiting for a human's decision."""

    model_config = ConfigDict(frozen=True)

    run_id: str
    tool: str
    arguments: dict[str, Any]
    tool_call_id: str


class ApprovalDecision(BaseModel):
    """A human's (or a policy's) answer; ``reason`` is fed back to the model when refused.

    ``arguments``: when not ``None``, a human approved the call with these corrected arguments.
    """

    model_config = ConfigDict(frozen=True)

    approved: bool
    reason: str = ""
    by: str = ""
    arguments: dict[str, Any] | None = None


#: Decides an :class:`ApprovalRequest`; may be sync or async.
Approver: TypeAlias = Callable[[ApprovalRequest], "ApprovalDecision | Awaitable[ApprovalDecision]"]


def approve_all(request: ApprovalRequest) -> ApprovalDecision:
    """Approve every call (tests, trusted scripts)."""
    return ApprovalDecision(approved=True, reason="approved by policy", by="approve_all")


def deny_all(request: ApprovalRequest) -> ApprovalDecision:
    """Refuse every call."""
    return ApprovalDecision(approved=False, reason="refused by policy", by="deny_all")


def terminal_approver(request: ApprovalRequest) -> ApprovalDecision:
    """Ask on the terminal when stdin is one; refuse with an explanation otherwise."""
    if not sys.stdin or not sys.stdin.isatty():
        return ApprovalDecision(
            approved=False,
            reason=f"tool {request.tool!r} needs a human's approval and this run has no terminal to ask on; "
            "do not call it again, answer without it",
            by="terminal_approver",
        )
    arguments = json.dumps(request.arguments, indent=2, default=str)
    prompt = f"\nRun {request.run_id} wants to call {request.tool} with\n{arguments}\nAllow? [y/N] "
    try:
        answer = input(prompt).strip().lower()
    except EOFError:
        answer = ""
    if answer in ("y", "yes"):
        return ApprovalDecision(approved=True, reason="approved on the terminal", by="terminal")
    return ApprovalDecision(
        approved=False,
        reason=f"a human refused the call of {request.tool!r}; do not call it again with these arguments",
        by="terminal",
    )
