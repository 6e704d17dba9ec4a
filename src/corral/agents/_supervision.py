"""Supervision trees as data: the child and supervisor specs, and the restart-intensity rule.

The meanings are OTP's (``supervisor.erl``): a supervisor restarts a child that exits according to the
child's restart type — ``permanent`` always, ``transient`` only after an abnormal exit (a reason other than
``normal`` or ``shutdown``), ``temporary`` never — and its strategy: ``one_for_one`` restarts that child,
``one_for_all`` terminates the others (in reverse start order) and restarts all (in start order),
``rest_for_one`` does so for the children started after it. More than ``intensity`` restarts within
``period`` seconds and the supervisor gives up: it terminates its children and exits with reason
``shutdown``, which its own supervisor handles as the exit of a child.

>>> tree = Supervisor("root", [Child("a", "echo"), Supervisor("team", [Child("b", "echo")])])
>>> [c.name for c in tree.children]
['a', 'team']
>>> within_intensity([1.0, 2.0], now=3.0, intensity=2, period=5.0)
(False, [1.0, 2.0, 3.0])
>>> within_intensity([1.0, 2.0], now=9.0, intensity=2, period=5.0)
(True, [9.0])
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

from corral._errors import UsageError

Strategy = Literal["one_for_one", "one_for_all", "rest_for_one"]
RestartType = Literal["permanent", "transient", "temporary"]

_STRATEGIES = ("one_for_one", "one_for_all", "rest_for_one")
_RESTARTS = ("permanent", "transient", "temporary")
#: Exit reasons that are not a failure: a transient child is not restarted after them.
NORMAL_REASONS = frozenset({"normal", "shutdown"})


@dataclass(frozen=True, slots=True)
class Child:
    """A worker process: ``behaviour`` names a handler registered with the system; ``state`` is its first
    state (JSON)."""

    name: str
    behaviour: str
    state: Any = None
    restart: RestartType = "permanent"

    def __post_init__(self) -> None:
        _check_name(self.name)
        if self.restart not in _RESTARTS:
            raise UsageError(f"child {self.name!r}: restart must be one of {_RESTARTS}, not {self.restart!r}")


@dataclass(frozen=True, slots=True)
class Supervisor:
    """A supervisor and its children, started in order. At most ``intensity`` restarts in ``period``
    seconds (OTP's defaults: 1 in 5)."""

    name: str
    children: Sequence[Child | Supervisor]
    strategy: Strategy = "one_for_one"
    intensity: int = 1
    period: float = 5.0
    restart: RestartType = "permanent"

    def __post_init__(self) -> None:
        _check_name(self.name)
        if self.strategy not in _STRATEGIES:
            raise UsageError(f"supervisor {self.name!r}: strategy must be one of {_STRATEGIES}")
        if self.restart not in _RESTARTS:
            raise UsageError(f"supervisor {self.name!r}: restart must be one of {_RESTARTS}")
        if self.intensity < 0 or self.period <= 0:
            raise UsageError(f"supervisor {self.name!r}: intensity must be >= 0 and period > 0")
        names = [c.name for c in self.children]
        if len(set(names)) != len(names):
            raise UsageError(f"supervisor {self.name!r}: two children share a name")

    def walk(self) -> list[Child | Supervisor]:
        """This supervisor and every node below it, parents before children."""
        out: list[Child | Supervisor] = [self]
        for child in self.children:
            out.extend(child.walk() if isinstance(child, Supervisor) else [child])
        return out


def _check_name(name: str) -> None:
    if not name or name.startswith("$") or len(name) > 200:
        raise UsageError(f"a process name must be 1-200 characters and not start with '$', not {name!r}")


def within_intensity(
    history: Sequence[float], *, now: float, intensity: int, period: float
) -> tuple[bool, list[float]]:
    """Record one more restart at ``now``: (whether it is still allowed, the restarts within the period)."""
    recent = [t for t in history if t > now - period]
    recent.append(now)
    return len(recent) <= intensity, recent


def restart_targets(strategy: Strategy, children: Sequence[str], failed: str) -> list[str]:
    """The children a strategy restarts when ``failed`` exits, in start order.

    >>> restart_targets("rest_for_one", ["a", "b", "c"], "b")
    ['b', 'c']
    """
    if strategy == "one_for_one":
        return [failed]
    if strategy == "one_for_all":
        return list(children)
    return list(children[children.index(failed) :])
