"""Workflow graphs as Mermaid state diagrams, optionally with the path one run took drawn over them.

The input is a graph's :meth:`~corral.agents.workflow._graph.Graph.spec` (JSON), so a run's graph can be
drawn from its journal alone, without importing the code that defined it.

>>> spec = {"start": "a", "nodes": {"a": {"next": ["b"], "kind": "node", "max_visits": None},
...                                  "b": {"next": ["a", "end"], "kind": "agent", "max_visits": 3}}}
>>> print(mermaid(spec))
stateDiagram-v2
  a: a
  b: b (agent, ≤3)
  [*] --> a
  a --> b
  b --> a
  b --> [*]
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence
from typing import Any

from corral.agents.workflow._graph import END


def _label(name: str, node: dict[str, Any]) -> str:
    notes = [] if node.get("kind", "node") == "node" else [str(node["kind"])]
    if node.get("max_visits") is not None:
        notes.append(f"≤{node['max_visits']}")
    return f"{name} ({', '.join(notes)})" if notes else name


def _ref(name: str) -> str:
    # Mermaid state ids are words; the label keeps the node's own name.
    return "[*]" if name in (END, "[*]") else re.sub(r"\W", "_", name)


def mermaid(spec: dict[str, Any], path: Sequence[str] = (), *, current: str | None = None) -> str:
    """The graph as a Mermaid ``stateDiagram-v2``. With ``path`` (the nodes a run executed, in order, then
    ``"end"`` if it finished), the edges it took are labelled with how often, its nodes are styled
    ``taken``, and ``current`` (the node a run that did not finish is in) is styled ``current``."""
    nodes: dict[str, dict[str, Any]] = spec["nodes"]
    taken = Counter(zip(["[*]", *path], path, strict=False))
    lines = ["stateDiagram-v2"]
    lines += [f"  {_ref(name)}: {_label(name, node)}" for name, node in nodes.items()]
    first = ("[*]", spec["start"])
    lines.append(f"  [*] --> {_ref(spec['start'])}" + (f": {taken[first]}×" if taken.get(first) else ""))
    for name, node in nodes.items():
        for nxt in node["next"]:
            count = taken.get((name, nxt), 0)
            lines.append(f"  {_ref(name)} --> {_ref(nxt)}" + (f": {count}×" if count else ""))
    visited = [_ref(n) for n in dict.fromkeys(path) if n in nodes]
    if visited:
        lines.append("  classDef taken fill:#d4f4dd,stroke:#2b8a3e")
        lines.append(f"  class {','.join(visited)} taken")
    if current is not None and current in nodes:
        lines.append("  classDef current fill:#ffe8a3,stroke:#e67700")
        lines.append(f"  class {_ref(current)} current")
    return "\n".join(lines)


def run_path(steps: Sequence[tuple[str, Any]]) -> tuple[dict[str, Any] | None, list[str], str | None]:
    """From a run's step ``(name, value)`` rows: the graph it journaled, the nodes it executed in order
    (then ``"end"`` if it finished), and the node it is in now if it did not finish."""
    spec: dict[str, Any] | None = None
    path: list[str] = []
    current: str | None = None
    for name, value in steps:
        if name.startswith("workflow:") and isinstance(value, dict) and "nodes" in value:
            if spec is not None:
                break  # a second workflow inside the same run: draw the first
            spec = value
            current = value.get("start")
        elif name.startswith("node:") and spec is not None and isinstance(value, str):
            path.append(name[len("node:") :])
            current = None if value == END else value
            if value == END:
                path.append(END)
    return spec, path, current
