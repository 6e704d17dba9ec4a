"""Guards: budgets, retry guards and approvals that keep an agent loop bounded (see ``docs/agents.md``)."""

from corral.guards._approval import (
    ApprovalDecision,
    ApprovalRequest,
    Approver,
    approve_all,
    deny_all,
    terminal_approver,
)
from corral.guards._guards import CorrectionKind, Guards, GuardState, GuardTrip, TerminalReason
from corral.guards.errors import GuardConfigError

__all__ = [
    "ApprovalDecision",
    "ApprovalRequest",
    "Approver",
    "CorrectionKind",
    "GuardConfigError",
    "GuardState",
    "GuardTrip",
    "Guards",
    "TerminalReason",
    "approve_all",
    "deny_all",
    "terminal_approver",
]
