"""The resident process that keeps the local model and the sandbox pool warm between questions: start it,
stop it, ask it how it is, or run it (see ``_resident`` for how it works and what it accepts)."""

from __future__ import annotations

from corral.apps.data_agent._resident import main
from corral.apps.data_agent._resident_client import connect, start, status, stop
from corral.apps.data_agent._resident_wire import Hello

__all__ = ["Hello", "connect", "main", "start", "status", "stop"]
