"""Approval policies: which calls need a human's decision, how long to wait for it, and whom to tell.

A policy covers some tools (by name, or every tool) and says when to ask: ``"always"``, ``"never"``, or a
*rule* — a function of the call that returns why a human must look (or ``None`` to let the call through).
Rules make action classes: "SQL that writes", "a shell command", "a sandbox job that asks for network", "a
cost above a threshold", whatever tool the call goes to. An agent (or a workflow node) checks its policies
in order; the first that decides wins:

>>> policies = [
...     ApprovalPolicy(tools="run_sql", ask=sql_writes()),
...     ApprovalPolicy(tools="search", ask="never"),
... ]
>>> approval_needed(policies, "run_sql", {"sql": "SELECT * FROM t"}) is None
True
>>> approval_needed(policies, "run_sql", {"sql": "DELETE FROM t"})[1]
'SQL that writes: DELETE'
>>> approval_needed(policies, "search", {"q": "x"}, needs_approval=True) is None
True
"""

from __future__ import annotations

import shlex
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, TypeAlias

import sqlglot
from sqlglot import exp

from corral.guards.errors import GuardConfigError

if TYPE_CHECKING:
    from corral.guards._approvals import ApprovalRecord

#: A rule over one call: ``rule(tool_name, arguments)`` returns why a human must decide, or ``None``.
Rule: TypeAlias = Callable[[str, Mapping[str, Any]], "str | None"]

#: Told of each new approval request: a Python callable (sync or async), or a command (argv list) that
#: gets the request as JSON on stdin and its id in ``$CORRAL_APPROVAL_ID``.
Notify: TypeAlias = "Callable[[ApprovalRecord], Awaitable[None] | None] | Sequence[str]"


@dataclass(frozen=True, kw_only=True)
class ApprovalPolicy:
    """When calls of some tools need a human's decision, and what happens while nobody decides.

    ``tools``: a tool name, a tuple of names, or ``"*"`` for every tool. ``ask``: ``"always"``,
    ``"never"``, or a :data:`Rule`. ``timeout_s``: how long the run waits (parked, holding nothing) before
    ``on_timeout`` decides for the human (``None``: wait for ever). ``notify``: run on each new request
    (default: the ``approval_notify`` setting, ``$CORRAL_APPROVAL_NOTIFY``, a command line).
    """

    tools: str | tuple[str, ...] = "*"
    ask: Literal["always", "never"] | Rule = "always"
    timeout_s: float | None = None
    on_timeout: Literal["approve", "reject"] = "reject"
    notify: Notify | None = None

    def __post_init__(self) -> None:
        if self.timeout_s is not None and not self.timeout_s > 0:
            raise GuardConfigError(
                f"ApprovalPolicy(timeout_s={self.timeout_s}): must be positive, or None to wait for ever"
            )
        if self.on_timeout not in ("approve", "reject"):
            raise GuardConfigError(f"ApprovalPolicy(on_timeout={self.on_timeout!r}): 'approve' or 'reject'")
        if not (self.ask in ("always", "never") or callable(self.ask)):
            raise GuardConfigError(f"ApprovalPolicy(ask={self.ask!r}): 'always', 'never' or a rule function")
        if isinstance(self.notify, str):
            raise GuardConfigError(
                "ApprovalPolicy(notify=...): give a command as a list of arguments, e.g. "
                f"{shlex.split(self.notify)!r}, or a Python callable"
            )

    def covers(self, tool: str) -> bool:
        """Whether this policy speaks about calls of ``tool``."""
        if self.tools == "*":
            return True
        return tool == self.tools if isinstance(self.tools, str) else tool in self.tools


def approval_needed(
    policies: Sequence[ApprovalPolicy],
    tool: str,
    arguments: Mapping[str, Any],
    *,
    needs_approval: bool = False,
) -> tuple[ApprovalPolicy, str] | None:
    """The policy that asks for a decision on this call and why, or ``None`` when the call may run.

    Policies covering ``tool`` are checked in order: ``"always"`` asks, ``"never"`` lets the call run,
    a rule asks when it gives a reason and otherwise passes to the next policy. When none decides, a tool
    declared with ``needs_approval=True`` asks (with a default policy: wait for ever).
    """
    for policy in policies:
        if not policy.covers(tool):
            continue
        if policy.ask == "never":
            return None
        if policy.ask == "always":
            return policy, f"every call of {tool} needs approval"
        why = policy.ask(tool, arguments)
        if why:
            return policy, why
    if needs_approval:
        return ApprovalPolicy(), f"{tool} is declared needs_approval"
    return None


# -- rules (action classes) ------------------------------------------------------------------------------

_READS = (exp.Select, exp.Union, exp.Intersect, exp.Except, exp.Describe, exp.Show)


def sql_writes(*, arg: str = "sql", dialect: str | None = None) -> Rule:
    """Ask when the SQL in ``arguments[arg]`` does anything but read (parsed by sqlglot, never split by
    hand). SQL that does not parse asks too: what cannot be read cannot be called harmless.

    >>> rule = sql_writes()
    >>> rule("q", {"sql": "WITH x AS (SELECT 1) SELECT * FROM x"}), rule("q", {"sql": "DROP TABLE t"})
    (None, 'SQL that writes: DROP')
    """

    def rule(tool: str, arguments: Mapping[str, Any]) -> str | None:
        sql = arguments.get(arg)
        if not isinstance(sql, str):
            return None
        try:
            statements = [s for s in sqlglot.parse(sql, read=dialect) if s is not None]
        except sqlglot.errors.SqlglotError:
            return "SQL that could not be parsed (it may write)"
        kinds = [type(s).__name__.upper() for s in statements if not isinstance(s, _READS)]
        return f"SQL that writes: {', '.join(dict.fromkeys(kinds))}" if kinds else None

    return rule


def shell_commands(*, arg: str = "command", allow: Sequence[str] = ()) -> Rule:
    """Ask for every shell command in ``arguments[arg]`` (a string or an argv list) unless its program is
    in ``allow`` and it chains nothing (no ``;``, ``|``, ``&&``, redirections, substitutions).

    >>> rule = shell_commands(allow=["ls"])
    >>> rule("sh", {"command": "ls -l"}), rule("sh", {"command": "ls; rm -rf /"})
    (None, 'a shell command: ls; rm -rf /')
    """
    allowed = frozenset(allow)

    def rule(tool: str, arguments: Mapping[str, Any]) -> str | None:
        command = arguments.get(arg)
        if command is None:
            return None
        text = command if isinstance(command, str) else shlex.join(str(c) for c in command)
        try:
            words = shlex.split(text) if isinstance(command, str) else [str(c) for c in command]
        except ValueError:
            return f"a shell command that does not parse: {text[:200]}"
        chained = isinstance(command, str) and any(c in text for c in ";|&<>`$\n")
        if words and words[0] in allowed and not chained:
            return None
        return f"a shell command: {text[:200]}"

    return rule


def network_requested(*, arg: str = "network") -> Rule:
    """Ask when a sandbox job asks for network (``arguments[arg]`` is truthy).

    >>> network_requested()("run_python", {"code": "...", "network": True})
    'a sandbox job that asks for network'
    """

    def rule(tool: str, arguments: Mapping[str, Any]) -> str | None:
        return "a sandbox job that asks for network" if arguments.get(arg) else None

    return rule


def cost_above(usd: float, *, arg: str = "cost_usd") -> Rule:
    """Ask when ``arguments[arg]`` (a cost in US dollars) exceeds ``usd``; a cost that is not a number asks.

    >>> cost_above(5)("order", {"cost_usd": 12.5})
    'a cost of $12.50, above $5.00'
    """

    def rule(tool: str, arguments: Mapping[str, Any]) -> str | None:
        if arg not in arguments:
            return None
        value = arguments[arg]
        if isinstance(value, bool) or not isinstance(value, int | float):
            return f"a cost that is not a number: {str(value)[:50]!r}"
        return f"a cost of ${value:.2f}, above ${usd:.2f}" if value > usd else None

    return rule
