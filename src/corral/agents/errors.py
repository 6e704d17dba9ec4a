"""Errors of the agents layer.

An agent run does not raise for what a model or a tool does wrong: mistakes are fed back to the model,
and a run that cannot go on ends with a terminal reason in its :class:`~corral.agents.AgentResult`. What
raises is misuse of the API, and the durable layer's own errors (a journal that fails, a run that another
worker holds).

Exception tree::

    CorralError
    └── UsageError
        ├── AgentConfigError    an agent that can never work: two tools with one name, a bad output type
        └── AgentNotFound       a worker got a run of a named agent this process has not built
"""

from __future__ import annotations

from corral._errors import UsageError


class AgentConfigError(UsageError):
    """An agent that can never work: two tools sharing a name, an output type pydantic cannot validate."""


class AgentNotFound(UsageError):
    """A run of a named agent reached a process that has not built that ``Agent(name=...)``."""
