"""A workflow run's graph drawn server-side: boxes and arrows laid out by distance from the start, the
nodes and edges the run took marked, the node it is in now outlined.

The drawing is data (coordinates and names) that an autoescaped template turns into SVG, so a node name
is text in the page, never markup.

>>> spec = {"start": "a", "nodes": {"a": {"next": ["b"]}, "b": {"next": ["a", "end"]}}}
>>> drawing = layout(spec, ["a", "b", "end"], None)
>>> [(n.name, n.taken) for n in drawing.nodes]
[('a', True), ('b', True), ('end', True)]
>>> [(e.source, e.target, e.count) for e in drawing.edges]
[('a', 'b', 1), ('b', 'a', 0), ('b', 'end', 1)]
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from itertools import pairwise
from typing import Any

from corral.agents.workflow import END

BOX_W, BOX_H, GAP_X, GAP_Y, PAD = 150, 40, 70, 24, 20


@dataclass(frozen=True)
class Box:
    name: str
    x: int
    y: int
    taken: bool
    current: bool


@dataclass(frozen=True)
class Arrow:
    source: str
    target: str
    path: str
    count: int
    label_x: int
    label_y: int


@dataclass
class Drawing:
    width: int
    height: int
    nodes: list[Box] = field(default_factory=list)
    edges: list[Arrow] = field(default_factory=list)
    path: list[str] = field(default_factory=list)


def _levels(spec: dict[str, Any]) -> dict[str, int]:
    nodes: dict[str, Any] = spec["nodes"]
    level = {spec["start"]: 0}
    queue = [spec["start"]]
    while queue:
        name = queue.pop(0)
        for nxt in nodes.get(name, {}).get("next", []):
            if nxt not in level:
                level[nxt] = level[name] + 1
                queue.append(nxt)
    deepest = max(level.values(), default=0)
    for name in nodes:
        level.setdefault(name, deepest + 1)  # unreachable nodes (a check reports them) at the far right
    level[END] = max(v for k, v in level.items() if k != END) + 1
    return level


def layout(spec: dict[str, Any], path: Sequence[str], current: str | None) -> Drawing:
    """Where each node and edge of ``spec`` goes, with the run's ``path`` marked."""
    level = _levels(spec)
    columns: dict[int, list[str]] = {}
    for name in [*spec["nodes"], END]:
        columns.setdefault(level[name], []).append(name)
    where: dict[str, tuple[int, int]] = {}
    for col, names in columns.items():
        for row, name in enumerate(names):
            where[name] = (PAD + col * (BOX_W + GAP_X), PAD + row * (BOX_H + GAP_Y))
    taken_nodes = set(path)
    counts = Counter(pairwise(path))
    drawing = Drawing(
        width=PAD * 2 + (max(columns) + 1) * (BOX_W + GAP_X) - GAP_X,
        height=PAD * 2 + max(len(v) for v in columns.values()) * (BOX_H + GAP_Y) - GAP_Y + 30,
        path=list(path),
    )
    for name, (x, y) in where.items():
        drawing.nodes.append(Box(name, x, y, name in taken_nodes, name == current))
    for name, node in spec["nodes"].items():
        for nxt in node.get("next", []):
            drawing.edges.append(_arrow(name, nxt, where, counts[(name, nxt)]))
    return drawing


def _arrow(source: str, target: str, where: dict[str, tuple[int, int]], count: int) -> Arrow:
    (x1, y1), (x2, y2) = where[source], where[target]
    if x2 > x1:  # forward: right side to left side
        sx, sy, tx, ty = x1 + BOX_W, y1 + BOX_H // 2, x2, y2 + BOX_H // 2
        mid = (sx + tx) // 2
        d = f"M{sx},{sy} C{mid},{sy} {mid},{ty} {tx},{ty}"
        return Arrow(source, target, d, count, mid, (sy + ty) // 2 - 4)
    # backward or same column: a loop under the boxes
    sx, sy, tx, ty = x1 + BOX_W // 2, y1 + BOX_H, x2 + BOX_W // 2, y2 + BOX_H
    low = max(sy, ty) + 28
    d = f"M{sx},{sy} C{sx},{low} {tx},{low} {tx},{ty}"
    return Arrow(source, target, d, count, (sx + tx) // 2, low - 2)
