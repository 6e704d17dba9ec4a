"""Agents and durable run functions a process offers through ``corral mcp serve``, by name.

>>> from corral.durable import RunContext
>>> async def shout(ctx: RunContext, text: str) -> str:
...     '''Repeat a text, louder.'''
...     return text.upper()
>>> expose(shout).name, exposed()["shout"].description
('shout', 'Repeat a text, louder.')
>>> _EXPOSED.clear()
"""

from __future__ import annotations

import importlib
import inspect
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Literal

from corral._errors import UsageError
from corral.agents import Agent, Workflow

_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
#: Names the server uses for its own tools.
RESERVED = frozenset({"ask", "ops_diagnose", "run_python", "run_sql", "run_status"})


@dataclass(frozen=True)
class Exposed:
    """One tool of the server that runs a user's agent (``kind="agent"``), run function (``"run"``) or
    workflow (``"workflow"``)."""

    name: str
    description: str
    kind: Literal["agent", "run", "workflow"]
    target: Agent[Any] | Workflow[Any] | Callable[..., Awaitable[Any]]


_EXPOSED: dict[str, Exposed] = {}


def expose(
    target: Agent[Any] | Workflow[Any] | Callable[..., Awaitable[Any]],
    *,
    name: str | None = None,
    description: str | None = None,
) -> Exposed:
    """Offer ``target`` as a tool of ``corral mcp serve`` in this process.

    An :class:`~corral.agents.Agent` becomes a tool taking ``prompt``; an async run function
    ``fn(ctx: RunContext, ...)`` becomes a tool taking its other (typed) parameters; a
    :class:`~corral.agents.Workflow` becomes a tool taking the fields of its state model. Each call is a
    durable run of its own on the server's journal. The name defaults to the agent's, workflow's or
    function's.
    """
    kind: Literal["agent", "run", "workflow"]
    if isinstance(target, Agent):
        chosen = name or target.name
        kind = "agent"
        text = description or target.instructions.split("\n\n", 1)[0] or f"Ask the agent {chosen!r}."
    elif isinstance(target, Workflow):
        chosen = name or target.name
        kind = "workflow"
        text = description or f"Run the workflow {target.name!r} on its state ({target.state_type.__name__})."
        target.check_or_raise()  # a graph that fails its checks is refused now, not at the first call
    elif inspect.iscoroutinefunction(target):
        chosen = name or target.__name__
        kind = "run"
        text = description or inspect.getdoc(target) or f"Run {chosen!r} as a durable run."
        if not list(inspect.signature(target).parameters):
            raise UsageError(f"{chosen!r} must take the run context as its first parameter")
    else:
        raise UsageError(f"only an Agent, a Workflow or an async run function can be exposed, not {target!r}")
    if not chosen or not _NAME.match(chosen):
        raise UsageError(f"expose({target!r}): give a tool name of 1-64 letters, digits, '_' or '-'")
    if chosen in RESERVED:
        raise UsageError(f"{chosen!r} is a tool of corral's own server; expose it under another name")
    entry = Exposed(name=chosen, description=text, kind=kind, target=target)
    _EXPOSED[chosen] = entry
    return entry


def exposed() -> dict[str, Exposed]:
    """What this process exposes now, by tool name."""
    return dict(_EXPOSED)


def expose_reference(reference: str) -> Exposed | None:
    """Import ``module:attribute`` and expose it (an Agent, a Workflow or a run function); a bare
    ``module`` is only imported (it may call :func:`expose` itself), and ``None`` is returned."""
    module_name, _, attribute = reference.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise UsageError(f"cannot import {module_name!r} to expose it: {exc}") from exc
    if not attribute:
        return None
    target = getattr(module, attribute, None)
    if target is None:
        raise UsageError(f"{module_name!r} has no attribute {attribute!r}")
    return expose(target)
