"""Errors of the guards layer.

Guards do not raise while a run goes: a tripped guard ends the run with a
:data:`~corral.guards.TerminalReason`, which the agent reports in its result. The only error is misuse.

Exception tree::

    CorralError
    └── UsageError
        └── GuardConfigError    a guard limit that can never work (zero steps, a negative budget)
"""

from __future__ import annotations

from corral._errors import UsageError


class GuardConfigError(UsageError):
    """A guard limit that can never work, e.g. ``max_steps=0`` or a negative budget."""
