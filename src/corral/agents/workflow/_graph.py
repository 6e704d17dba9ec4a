"""The shape of a workflow: nodes over one typed state, declared edges, bounds and budgets.

A node is an async function of ``(ctx, state)`` that returns the next node (its name, or the node function
itself) or :class:`End`. Its edges are declared when it is added, so the graph is known — checked, drawn,
costed — before it runs. This module holds the declarations only; running them is :mod:`._run`.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, Generic, Literal, TypeAlias, TypeVar

from pydantic import BaseModel

from corral.agents.errors import WorkflowEdgeError
from corral.durable import RunContext

if TYPE_CHECKING:
    from corral.agents._agent import Agent, AgentResult

S = TypeVar("S", bound=BaseModel)
R = TypeVar("R")

#: The name the end of a workflow goes by in edges, the journal and drawings.
END = "end"

NodeKind = Literal["node", "agent", "parallel"]


@dataclass(frozen=True, slots=True)
class End:
    """Returned by a node to finish the workflow; ``value`` becomes the run's output."""

    value: Any = None


#: What a node returns: the next node (its name or its function) or ``End(...)``.
Next: TypeAlias = "str | Callable[..., Any] | End"
#: What ``next=`` names: node names, node functions, or the ``End`` class for "may finish here".
EdgeSpec: TypeAlias = "str | Callable[..., Any] | type[End]"
NodeFn: TypeAlias = Callable[[RunContext, Any], Awaitable[Any]]


@dataclass(frozen=True, slots=True)
class Budget:
    """The most one visit of a node may spend: model calls, tokens, dollars. ``None`` means unbounded.

    Plain nodes declare theirs (default: no model calls); agent nodes take theirs from the agent's
    :class:`~corral.guards.Guards` (``max_steps``, ``max_tokens``, ``max_cost_usd``).
    """

    model_calls: int | None = 0
    tokens: int | None = 0
    cost_usd: float | None = 0.0

    def times(self, n: int) -> Budget:
        """This budget spent ``n`` times."""
        return Budget(
            None if self.model_calls is None else self.model_calls * n,
            None if self.tokens is None else self.tokens * n,
            None if self.cost_usd is None else self.cost_usd * n,
        )

    def __add__(self, other: Budget) -> Budget:
        def add(a: Any, b: Any) -> Any:
            return None if a is None or b is None else a + b

        return Budget(
            add(self.model_calls, other.model_calls),
            add(self.tokens, other.tokens),
            add(self.cost_usd, other.cost_usd),
        )


def _edge_name(edge: EdgeSpec | Next, known: dict[int, str]) -> str:
    """The node name an edge (or a node's return value) stands for: ``"end"`` for ``End``, a string as it
    is, a function by the name it was added under in this graph (``known``: by identity), else its own."""
    if edge is End or isinstance(edge, End):
        return END
    if isinstance(edge, str):
        return edge
    name = known.get(id(edge)) or getattr(edge, "__name__", None)
    if not isinstance(name, str):
        raise WorkflowEdgeError(f"{edge!r} is not a node: name a node, pass its function, or End")
    return name


@dataclass(frozen=True, slots=True)
class Node:
    """One node of a workflow: its function, declared edges, bound on visits and budget per visit."""

    name: str
    fn: NodeFn
    #: The declared edges, as node names (``"end"`` for the end).
    edges: tuple[str, ...]
    kind: NodeKind = "node"
    max_visits: int | None = None
    budget: Budget = field(default_factory=Budget)
    #: For a parallel node: the most branches one visit starts (its budget is per branch).
    max_branches: int = 1

    @property
    def next(self) -> tuple[str, ...]:
        """The names of the nodes this node may go to (``"end"`` for the end)."""
        return tuple(dict.fromkeys(self.edges))

    def visit_budget(self) -> Budget:
        """What one visit may spend (a parallel node: every branch)."""
        return self.budget.times(self.max_branches)


def agent_budget(agent: Agent[Any]) -> Budget:
    """The most one run of ``agent`` may spend, from its guards (model calls = ``max_steps``)."""
    guards = agent.guards
    return Budget(guards.max_steps, guards.max_tokens, guards.max_cost_usd)


class Graph(Generic[S]):
    """The declarations of a workflow (the base of :class:`~corral.agents.Workflow`): nodes and edges."""

    def __init__(self, name: str, *, state: type[S]) -> None:
        self.name = name
        self.state_type = state
        self.nodes: dict[str, Node] = {}
        self.start: str | None = None
        #: The branch function of each parallel node.
        self.branches: dict[str, Callable[..., Awaitable[Any]]] = {}
        # The name each node function was added under, by identity: one function may be two nodes' in
        # two graphs, under different names.
        self._names: dict[int, str] = {}
        # Each node's edges as declared (functions resolve to names once the graph knows them).
        self._declared: dict[str, tuple[EdgeSpec, ...]] = {}

    def _add(self, node: Node, declared: Sequence[EdgeSpec], *, start: bool) -> None:
        if node.name in self.nodes or node.name == END:
            raise WorkflowEdgeError(f"workflow {self.name!r}: two nodes are named {node.name!r}")
        if node.max_visits is not None and node.max_visits < 1:
            raise WorkflowEdgeError(f"workflow {self.name!r}: node {node.name!r} has max_visits < 1")
        self.nodes[node.name] = node
        self._names.setdefault(id(node.fn), node.name)
        self._declared[node.name] = tuple(declared)
        # A function named in next= before it was added to this graph resolves to its name here now.
        for name, declared in self._declared.items():
            self.nodes[name] = replace(self.nodes[name], edges=self._edges(declared))
        if start or self.start is None:
            self.start = node.name

    def node(
        self,
        fn: NodeFn | None = None,
        *,
        next: Sequence[EdgeSpec],
        name: str | None = None,
        start: bool = False,
        max_visits: int | None = None,
        budget: Budget | None = None,
    ) -> Any:
        """Add a node (a decorator): ``async def fn(ctx, state) -> next node | End``.

        ``next`` declares every edge the node may take (``End`` for "may finish"); taking another one
        fails the run. The first node added is the start unless ``start=True`` names another.
        ``max_visits`` bounds how often one run executes the node: every cycle needs a bounded node.
        ``budget`` is the most one visit may spend on models (for the worst-case cost).
        """

        def add(f: NodeFn) -> NodeFn:
            node_name = name or f.__name__
            node = Node(node_name, f, self._edges(next), "node", max_visits, budget or Budget())
            self._add(node, next, start=start)
            return f

        return add(fn) if fn is not None else add

    def agent(
        self,
        name: str,
        agent: Agent[Any],
        *,
        prompt: Callable[[S], str],
        then: Callable[[S, AgentResult[Any]], Next],
        next: Sequence[EdgeSpec],
        start: bool = False,
        max_visits: int | None = None,
    ) -> None:
        """Add an agent node: ``agent`` runs on ``prompt(state)`` as part of this run (its model and tool
        calls are steps of the workflow's run), then ``then(state, result)`` stores what it needs and picks
        the edge. Agency is at this node only; its budget comes from the agent's guards."""

        async def run_agent_node(ctx: RunContext, state: S) -> Next:
            result = await agent.run(prompt(state), ctx=ctx)
            return then(state, result)

        node = Node(name, run_agent_node, self._edges(next), "agent", max_visits, agent_budget(agent))
        self._add(node, next, start=start)

    def parallel(
        self,
        name: str,
        branch: Callable[[RunContext, S, Any], Awaitable[R]],
        *,
        plan: Callable[[S], Sequence[Any]],
        combine: Callable[[S, list[R]], Next],
        next: Sequence[EdgeSpec],
        max_branches: int,
        budget: Budget | None = None,
        start: bool = False,
        max_visits: int | None = None,
    ) -> None:
        """Add a parallel node: ``plan(state)`` lists one JSON item per branch (at most ``max_branches``);
        each ``branch(ctx, state, item)`` runs concurrently as a durable child run of its own (so a branch
        can take many steps and still replay exactly); ``combine(state, results)`` merges the results in
        plan order and picks the edge. ``budget`` is per branch."""
        from corral.agents.workflow._run import run_parallel

        async def run_parallel_node(ctx: RunContext, state: S) -> Next:
            results: list[R] = await run_parallel(ctx, self.name, name, state, plan(state), max_branches)
            return combine(state, results)

        node = Node(
            name,
            run_parallel_node,
            self._edges(next),
            "parallel",
            max_visits,
            budget or Budget(),
            max_branches,
        )
        self._add(node, next, start=start)
        self.branches[name] = branch

    def _edges(self, edges: Sequence[EdgeSpec]) -> tuple[str, ...]:
        return tuple(_edge_name(e, self._names) for e in edges)

    def edge_name(self, node: str, returned: Next) -> str:
        """The name of the edge ``returned`` by ``node``; a :class:`WorkflowEdgeError` if undeclared."""
        taken = _edge_name(returned, self._names)
        declared = self.nodes[node].next
        if taken not in declared:
            raise WorkflowEdgeError(
                f"workflow {self.name!r}: node {node!r} went to {taken!r}, which it does not declare "
                f"(next={list(declared)}); add it to the node's next=..."
            )
        return taken

    def spec(self) -> dict[str, Any]:
        """The graph as JSON (journaled with each run, so a run can be drawn without importing code)."""
        return {
            "workflow": self.name,
            "start": self.start,
            "nodes": {
                n.name: {"next": list(n.next), "kind": n.kind, "max_visits": n.max_visits}
                for n in self.nodes.values()
            },
        }
