"""Static checks of a workflow graph, before its first step: reachability, termination, worst-case cost.

- every node is reachable from the start;
- every node has a path to the end;
- every cycle passes through a node with ``max_visits`` (remove the bounded nodes: what is left has no
  cycle), so every run ends;
- from those bounds and each node's budget, the most one run may execute each node, and so the most model
  calls, tokens and dollars it may spend.

>>> from pydantic import BaseModel
>>> from corral.agents.workflow._graph import Graph, End, Budget
>>> class S(BaseModel):
...     n: int = 0
>>> g = Graph("loop", state=S)
>>> @g.node(next=["b"])
... async def a(ctx, s): return "b"
>>> @g.node(next=["a", End])
... async def b(ctx, s): return End()
>>> print(check_graph(g).problems[0])
cycle without a bound: a -> b (give one of these nodes max_visits=...)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from corral.agents.workflow._graph import END, Budget, Graph


@dataclass(frozen=True)
class GraphReport:
    """What :func:`check_graph` found: problems (empty when the graph passes) and the worst case of one run.

    ``visits`` is the most times one run may execute each node; ``worst`` the most it may spend (a field is
    ``None`` when a node on the way has no bound for it, e.g. an agent without ``max_tokens``). Budgets
    are checked before each model call, so a run can exceed the token and cost figures by one call's use.
    """

    workflow: str
    problems: list[str] = field(default_factory=list)
    visits: dict[str, int] = field(default_factory=dict)
    worst: Budget = field(default_factory=Budget)

    @property
    def ok(self) -> bool:
        """Whether the graph passed every check."""
        return not self.problems

    def describe(self) -> str:
        """The report as a few lines of text (what ``corral graph check`` prints)."""
        lines = [f"workflow {self.workflow}: " + ("ok" if self.ok else "REFUSED")]
        lines += [f"  problem: {p}" for p in self.problems]
        if self.ok:
            w = self.worst
            calls = "unbounded" if w.model_calls is None else str(w.model_calls)
            tokens = "unbounded" if w.tokens is None else f"{w.tokens:,}"
            cost = "unbounded" if w.cost_usd is None else f"${w.cost_usd:.4f}"
            lines.append(f"  worst case of one run: {calls} model calls, {tokens} tokens, {cost}")
            lines += [
                f"  {name}: at most {n} visit{'s' if n != 1 else ''}" for name, n in self.visits.items()
            ]
        return "\n".join(lines)


def _successors(graph: Graph[Any]) -> dict[str, list[str]]:
    return {name: [n for n in node.next if n != END] for name, node in graph.nodes.items()}


def _reach(start: list[str], edges: dict[str, list[str]]) -> set[str]:
    seen: set[str] = set()
    todo = list(start)
    while todo:
        name = todo.pop()
        if name not in seen:
            seen.add(name)
            todo.extend(edges.get(name, ()))
    return seen


def _cycles(nodes: list[str], edges: dict[str, list[str]]) -> list[list[str]]:
    """The strongly connected components of ``nodes`` that hold a cycle (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    allowed = set(nodes)
    for root in nodes:
        if root in index:
            continue
        work: list[tuple[str, int]] = [(root, 0)]
        while work:
            name, i = work.pop()
            if i == 0:
                index[name] = low[name] = len(index)
                stack.append(name)
                on_stack.add(name)
            succ = [s for s in edges.get(name, ()) if s in allowed]
            if i < len(succ):
                work.append((name, i + 1))
                nxt = succ[i]
                if nxt not in index:
                    work.append((nxt, 0))
                elif nxt in on_stack:
                    low[name] = min(low[name], index[nxt])
                continue
            if low[name] == index[name]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == name:
                        break
                if len(component) > 1 or name in succ:
                    found.append(sorted(component, key=nodes.index))
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[name])
    return found


def _visits(graph: Graph[Any], edges: dict[str, list[str]]) -> dict[str, int]:
    """The most executions of each node: a bounded node its bound; another the sum over the nodes that lead
    to it (each execution takes one edge), plus one for the start. The unbounded nodes form no cycle (else
    the check failed), so the recursion ends."""
    preds: dict[str, list[str]] = {name: [] for name in graph.nodes}
    for name, succ in edges.items():
        for s in succ:
            preds[s].append(name)
    memo: dict[str, int] = {}

    def visits(name: str) -> int:
        if name not in memo:
            bound = graph.nodes[name].max_visits
            if bound is not None:
                memo[name] = bound
            else:
                memo[name] = int(name == graph.start) + sum(visits(p) for p in preds[name])
        return memo[name]

    return {name: visits(name) for name in graph.nodes}


def check_graph(graph: Graph[Any]) -> GraphReport:
    """Check ``graph`` (see the module docstring); the report lists every problem, or the worst case."""
    problems: list[str] = []
    if graph.start is None:
        return GraphReport(graph.name, ["the workflow has no nodes"])
    edges = _successors(graph)
    for name, succ in edges.items():
        unknown = [s for s in succ if s not in graph.nodes]
        if unknown:
            problems.append(f"node {name} goes to undefined nodes: {', '.join(unknown)}")
    if problems:
        return GraphReport(graph.name, problems)
    names = list(graph.nodes)
    reachable = _reach([graph.start], edges)
    unreachable = [n for n in names if n not in reachable]
    if unreachable:
        problems.append(f"unreachable from the start ({graph.start}): {', '.join(unreachable)}")
    backwards: dict[str, list[str]] = {n: [] for n in names}
    for name, succ in edges.items():
        for s in succ:
            backwards[s].append(name)
    ending = [n for n in names if END in graph.nodes[n].next]
    finishing = _reach(ending, backwards)
    dead = [n for n in names if n not in finishing]
    if dead:
        problems.append(f"no path to the end from: {', '.join(dead)}")
    unbounded = [n for n in names if graph.nodes[n].max_visits is None]
    for cycle in _cycles(unbounded, edges):
        problems.append(
            f"cycle without a bound: {' -> '.join(cycle)} (give one of these nodes max_visits=...)"
        )
    if problems:
        return GraphReport(graph.name, problems)
    visits = _visits(graph, edges)
    worst = Budget()
    for name, node in graph.nodes.items():
        worst = worst + node.visit_budget().times(visits[name])
    return GraphReport(graph.name, [], visits, worst)
