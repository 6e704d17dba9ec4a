"""Workflows: graphs of durable steps and agents whose edges the developer fixes (see ``docs/workflows.md``).

:class:`Workflow` holds nodes over one pydantic state; each node returns the next node or :class:`End`.
Edges are declared, so :meth:`Workflow.check` proves before the first step that every node is reachable,
every node can reach the end, every cycle is bounded, and computes the worst-case model calls, tokens and
cost of one run. :mod:`corral.agents.workflow.patterns` builds the five common shapes from it.
"""

from corral.agents.workflow._check import GraphReport, check_graph
from corral.agents.workflow._graph import END, Budget, End, Graph, Node, agent_budget
from corral.agents.workflow._mermaid import mermaid, run_path
from corral.agents.workflow._run import NodeVisit, WorkflowResult, current_visit, run_workflow
from corral.agents.workflow._workflow import Workflow

__all__ = [
    "END",
    "Budget",
    "End",
    "Graph",
    "GraphReport",
    "Node",
    "NodeVisit",
    "Workflow",
    "WorkflowResult",
    "agent_budget",
    "check_graph",
    "current_visit",
    "mermaid",
    "run_path",
    "run_workflow",
]
