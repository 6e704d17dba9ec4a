"""Errors of the tools layer.

A failing tool call is feedback for the model, never a crash of the run: the agent loop turns each
:class:`ToolError` into a tool result marked as an error, whose text says what went wrong and what to do.
Only :class:`ToolDefinitionError` (a function that cannot be a tool) is raised to the programmer.

Exception tree::

    CorralError
    ├── ToolError                 a tool call failed; its message is fed back to the model
    │   ├── ToolArgumentsError    the arguments did not validate against the tool's schema
    │   ├── ToolTimeoutError      the call did not finish within the tool's timeout
    │   ├── ToolBusyError         the tool's bulkhead is full (max_concurrency running, queue full)
    │   ├── ToolRefusedError      a call that needs approval was refused (or nobody could approve it)
    │   ├── ToolUnavailableError  the tool's server is down, cannot be started, or its breaker is open
    │   ├── ToolReplyError        the tool's server sent a reply that is malformed or out of bounds
    │   └── ToolRaisedError       the tool's own code raised; ``__cause__`` is the original exception
    └── UsageError
        └── ToolDefinitionError   a function cannot become a tool (missing type hints, ``*args``)

Every error names the tool (``tool``) and, when known, the call (``tool_call_id``).
"""

from __future__ import annotations

from corral._errors import CorralError, UsageError


class ToolError(CorralError):
    """A tool call failed. ``str(error)`` is written for the model: what went wrong and what to do."""

    #: A short, stable name of the failure, recorded in events ("arguments", "timeout", "busy", ...).
    kind: str = "error"

    def __init__(self, message: str, *, tool: str, tool_call_id: str | None = None) -> None:
        super().__init__(message)
        self.tool = tool
        self.tool_call_id = tool_call_id


class ToolArgumentsError(ToolError):
    """The arguments did not validate against the tool's schema; the message lists each problem."""

    kind = "arguments"


class ToolTimeoutError(ToolError):
    """The call did not finish within ``timeout_s`` seconds (waiting for a free slot included)."""

    kind = "timeout"

    def __init__(self, message: str, *, tool: str, tool_call_id: str | None = None, timeout_s: float) -> None:
        super().__init__(message, tool=tool, tool_call_id=tool_call_id)
        self.timeout_s = timeout_s


class ToolBusyError(ToolError):
    """The tool's bulkhead is full: ``max_concurrency`` calls are running and the queue is full."""

    kind = "busy"


class ToolRefusedError(ToolError):
    """A call that needs approval was refused, or could not be approved (no terminal to ask on)."""

    kind = "refused"


class ToolUnavailableError(ToolError):
    """The server behind the tool (an MCP server) is down, cannot be started, or fails fast for a while."""

    kind = "unavailable"


class ToolReplyError(ToolError):
    """The server behind the tool sent a reply that breaks the protocol or the bounds set for it."""

    kind = "bad_reply"


class ToolRaisedError(ToolError):
    """The tool's own code raised an exception (kept as ``__cause__``)."""

    kind = "raised"


class ToolDefinitionError(UsageError):
    """A function cannot become a tool: a parameter without a type hint, ``*args``, a bad name."""
