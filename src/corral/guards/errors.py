"""Errors of the guards layer.

Guards do not raise while a run goes: a tripped guard ends the run with a
:data:`~corral.guards.TerminalReason`, which the agent reports in its result; a refused approval goes back
to the model as the tool's result. What raises is misuse, and a decision that cannot be taken.

Exception tree::

    CorralError
    ├── UsageError
    │   └── GuardConfigError        a guard limit that can never work (zero steps, a negative budget)
    └── ApprovalError               a decision on an approval request could not be recorded
        ├── ApprovalNotFound        no approval request has this id
        ├── ApprovalAlreadyDecided  the request was decided (or timed out) already: decisions are single-use
        └── ApprovalMismatch        the decision names other arguments than the request's (stale or forged)
"""

from __future__ import annotations

from corral._errors import CorralError, UsageError


class GuardConfigError(UsageError):
    """A guard limit that can never work, e.g. ``max_steps=0`` or a negative budget."""


class ApprovalError(CorralError):
    """A decision on an approval request could not be recorded."""


class ApprovalNotFound(ApprovalError):
    """No approval request has this id."""

    def __init__(self, approval_id: str) -> None:
        super().__init__(
            f"no approval request with id {approval_id!r}; list them with `corral approvals list --all`"
        )
        self.approval_id = approval_id


class ApprovalAlreadyDecided(ApprovalError):
    """The request has a decision already; a second one is refused."""

    def __init__(self, approval_id: str, status: str, by: str) -> None:
        super().__init__(
            f"approval {approval_id!r} is already {status} (by {by}); a request takes one decision only"
        )
        self.approval_id = approval_id
        self.status = status
        self.by = by


class ApprovalMismatch(ApprovalError):
    """The decision was made for other arguments than the request's (a stale page, or a forged decision)."""
