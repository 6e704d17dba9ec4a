"""Errors of the agents layer.

An agent run does not raise for what a model or a tool does wrong: mistakes are fed back to the model,
and a run that cannot go on ends with a terminal reason in its :class:`~corral.agents.AgentResult`. What
raises is misuse of the API, and the durable layer's own errors (a journal that fails, a run that another
worker holds).

Exception tree::

    CorralError
    └── UsageError
        ├── AgentConfigError    an agent that can never work: two tools with one name, a bad output type
        ├── AgentNotFound       a worker got a run of a named agent this process has not built
        ├── WorkflowCheckError  a workflow graph failed a static check (names the offending nodes)
        ├── WorkflowEdgeError   a workflow node took an undeclared edge, or went past a node's bound
        ├── WorkflowNotFound    a worker got a run of a named workflow this process has not built
        └── NoProcess           a send, call or kill names a process that does not exist or has exited
    CallTimeout                 no reply to ``System.call`` within its timeout
    SystemStopped               the top supervisor gave up (its restart intensity was exceeded)
"""

from __future__ import annotations

from corral._errors import CorralError, UsageError


class AgentConfigError(UsageError):
    """An agent that can never work: two tools sharing a name, an output type pydantic cannot validate."""


class AgentNotFound(UsageError):
    """A run of a named agent reached a process that has not built that ``Agent(name=...)``."""


class WorkflowCheckError(UsageError):
    """A workflow graph that fails a static check (:meth:`~corral.agents.Workflow.check`): an unreachable
    node, a node with no path to the end, a cycle without a bound. ``problems`` lists them, each naming its
    nodes; the workflow is refused before its first step."""

    def __init__(self, workflow: str, problems: list[str]) -> None:
        super().__init__(f"workflow {workflow!r} is refused: " + "; ".join(problems))
        self.workflow = workflow
        self.problems = problems


class WorkflowEdgeError(UsageError):
    """A workflow node returned an edge it did not declare, or asked for a node past its ``max_visits``."""


class WorkflowNotFound(UsageError):
    """A run (or a branch) of a named workflow reached a process that has not built that workflow."""


class NoProcess(UsageError):
    """A send, call, kill or link names a process that does not exist or has exited."""


class CallTimeout(CorralError):
    """No reply to a :meth:`~corral.agents.System.call` within its timeout."""


class SystemStopped(CorralError):
    """The top supervisor of a system exceeded its restart intensity: the system stopped with ``reason``."""

    def __init__(self, reason: str) -> None:
        super().__init__(f"the agent system stopped: {reason}")
        self.reason = reason
