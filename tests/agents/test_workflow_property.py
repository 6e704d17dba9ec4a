"""The static checks as a property: for random graphs, what ``check`` promises holds for every run.

A graph that passes: every run that takes declared edges (and respects the bounds) reaches the end
within the reported number of visits of each node. A graph refused for an unbounded cycle really has a
cycle among its unbounded nodes; one refused for a dead end really has a node that cannot reach the end.
"""

from __future__ import annotations

import random
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import BaseModel

from corral.agents import End
from corral.agents.workflow import END, Graph, check_graph


class S(BaseModel):
    pass


async def _noop(ctx: Any, state: S) -> Any:
    return End()


@st.composite
def graphs(draw: st.DrawFn) -> Graph[S]:
    n = draw(st.integers(1, 6))
    names = [f"n{i}" for i in range(n)]
    g: Graph[S] = Graph("random", state=S)
    for name in names:
        targets = draw(st.lists(st.sampled_from([*names, END]), max_size=3, unique=True))
        bound = draw(st.one_of(st.none(), st.integers(1, 3)))
        g.node(_noop, name=name, next=[End if t == END else t for t in targets], max_visits=bound)
    return g


def _has_unbounded_cycle(g: Graph[S]) -> bool:
    free = {n for n, node in g.nodes.items() if node.max_visits is None}

    def reaches(start: str, at: str, seen: set[str]) -> bool:
        for nxt in g.nodes[at].next:
            if nxt == start:
                return True
            if nxt in free and nxt not in seen:
                seen.add(nxt)
                if reaches(start, nxt, seen):
                    return True
        return False

    return any(reaches(n, n, set()) for n in free)


def _reaches_end(g: Graph[S], start: str) -> bool:
    seen, todo = {start}, [start]
    while todo:
        for nxt in g.nodes[todo.pop()].next:
            if nxt == END:
                return True
            if nxt not in seen:
                seen.add(nxt)
                todo.append(nxt)
    return False


def _walk(g: Graph[S], rng: random.Random) -> tuple[dict[str, int], bool]:
    """One run taking random declared edges that respect the bounds; whether it reached the end."""
    visits = dict.fromkeys(g.nodes, 0)
    node = g.start
    assert node is not None
    for _ in range(1_000):
        visits[node] += 1
        options = [
            t
            for t in g.nodes[node].next
            if t == END or g.nodes[t].max_visits is None or visits[t] < (g.nodes[t].max_visits or 0)
        ]
        if not options:
            return visits, False  # stuck: the run would fail on the bound, not loop
        node = rng.choice(options)
        if node == END:
            return visits, True
    raise AssertionError("a run of a graph that passed the checks did not end within 1,000 steps")


@settings(max_examples=300, deadline=None)
@given(graphs(), st.integers(0, 2**32))
def test_what_the_check_promises_holds_for_random_graphs(g: Graph[S], seed: int) -> None:
    report = check_graph(g)
    if any(p.startswith("cycle without a bound") for p in report.problems):
        assert _has_unbounded_cycle(g)
    dead = [n for n in g.nodes if not _reaches_end(g, n)]
    for problem in report.problems:
        if problem.startswith("no path to the end from: "):
            assert problem.removeprefix("no path to the end from: ").split(", ") == dead
    if not report.problems:
        assert not _has_unbounded_cycle(g) and not dead
        rng = random.Random(seed)
        for _ in range(20):
            visits, _ = _walk(g, rng)
            over = {n: v for n, v in visits.items() if v > report.visits[n]}
            assert not over, f"visits beyond the reported worst case: {over} > {report.visits}"
