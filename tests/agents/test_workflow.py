"""Workflows: running, the static checks and their refusals, worst-case cost, drawing, replay, branches."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from pydantic import BaseModel, Field
from typer.testing import CliRunner

from corral.agents import (
    Agent,
    Budget,
    End,
    Workflow,
    WorkflowCheckError,
    WorkflowEdgeError,
    current_visit,
)
from corral.agents.workflow import check_graph, mermaid, run_path
from corral.apps.cli import app
from corral.durable import DeterminismError, MemoryJournal, RunContext, RunSuspended, Runtime, SqliteJournal
from corral.guards import Guards
from corral.models import ScriptedModel


class Doc(BaseModel):
    text: str = ""
    reviews: int = 0
    log: list[str] = Field(default_factory=list)


def review_loop(name: str = "review-loop", *, bound: int | None = 3) -> Workflow[Doc]:
    wf = Workflow(name, state=Doc)

    @wf.node(next=["review"])
    async def write(ctx: RunContext, state: Doc) -> Any:
        state.text = await ctx.step("write", lambda: state.text + "w")
        return "review"

    @wf.node(next=[write, End], max_visits=bound)
    async def review(ctx: RunContext, state: Doc) -> Any:
        state.reviews += 1
        return End(state.text) if state.reviews == 3 else write

    return wf


def test_a_workflow_runs_its_nodes_and_journals_each_boundary() -> None:
    rt = Runtime(MemoryJournal())
    result = review_loop().run_sync(Doc(), runtime=rt, run_id="r1")
    assert (result.output, result.state.reviews, result.run_id) == ("www", 3, "r1")
    assert result.path == ["write", "review"] * 3
    names = [s.name for s in rt.steps("r1")]
    assert names[0] == "workflow:review-loop"
    assert names[1:4] == ["write", "node:write", "node:review"]
    assert names.count("node:review") == 3


def test_a_node_that_takes_an_undeclared_edge_fails_the_run_naming_it() -> None:
    wf = Workflow("undeclared", state=Doc)

    @wf.node(next=["b"])
    async def a(ctx: RunContext, state: Doc) -> Any:
        return End()  # declared only "b"

    @wf.node(next=[End])
    async def b(ctx: RunContext, state: Doc) -> Any:
        return End()

    with pytest.raises(WorkflowEdgeError, match=r"node 'a' went to 'end', which it does not declare"):
        wf.run_sync(Doc(), runtime=Runtime(MemoryJournal()))


def test_a_node_past_its_bound_fails_the_run() -> None:
    # The loop needs 3 reviews; a bound of 2 stops it at the third visit.
    with pytest.raises(WorkflowEdgeError, match=r"'review' a 3th time; it is bounded to max_visits=2"):
        review_loop("tight", bound=2).run_sync(Doc(), runtime=Runtime(MemoryJournal()))


def test_current_visit_counts_the_entries_of_a_node() -> None:
    wf = Workflow("visits", state=Doc)

    @wf.node(next=["a", End], max_visits=3)
    async def a(ctx: RunContext, state: Doc) -> Any:
        visit = current_visit()
        assert visit is not None and visit.node == "a"
        state.log.append(str(visit.visit))
        return End() if visit.visit == 3 else a

    assert wf.run_sync(Doc(), runtime=Runtime(MemoryJournal())).state.log == ["1", "2", "3"]
    assert current_visit() is None


# -- static checks -----------------------------------------------------------------------------------------
def test_an_unbounded_cycle_is_refused_before_the_first_step() -> None:
    wf = review_loop("unbounded", bound=None)
    report = wf.check()
    assert report.problems == [
        "cycle without a bound: write -> review (give one of these nodes max_visits=...)"
    ]
    journal = MemoryJournal()
    with pytest.raises(WorkflowCheckError, match="cycle without a bound: write -> review") as caught:
        wf.run_sync(Doc(), runtime=Runtime(journal))
    assert caught.value.workflow == "unbounded"
    assert journal.list_runs(statuses=None, limit=10, offset=0) == []  # refused: no run was journaled


def test_a_self_loop_without_a_bound_is_refused() -> None:
    wf = Workflow("self-loop", state=Doc)

    @wf.node(next=["spin", End])
    async def spin(ctx: RunContext, state: Doc) -> Any:
        return End()

    assert wf.check().problems == ["cycle without a bound: spin (give one of these nodes max_visits=...)"]


def test_a_dead_end_is_refused_naming_the_nodes() -> None:
    wf = Workflow("dead-end", state=Doc)

    @wf.node(next=["trap", End])
    async def start(ctx: RunContext, state: Doc) -> Any:
        return End()

    @wf.node(next=["pit"], max_visits=2)
    async def trap(ctx: RunContext, state: Doc) -> Any:
        return "pit"

    @wf.node(next=["trap"])
    async def pit(ctx: RunContext, state: Doc) -> Any:
        return "trap"

    assert wf.check().problems == ["no path to the end from: trap, pit"]
    with pytest.raises(WorkflowCheckError, match="no path to the end from: trap, pit"):
        wf.run_sync(Doc(), runtime=Runtime(MemoryJournal()))


def test_an_unreachable_node_is_refused() -> None:
    wf = Workflow("island", state=Doc)

    @wf.node(next=[End])
    async def start(ctx: RunContext, state: Doc) -> Any:
        return End()

    @wf.node(next=[End])
    async def orphan(ctx: RunContext, state: Doc) -> Any:
        return End()

    assert wf.check().problems == ["unreachable from the start (start): orphan"]


def test_an_edge_to_an_undefined_node_is_refused() -> None:
    wf = Workflow("typo", state=Doc)

    @wf.node(next=["reveiw", End])
    async def start(ctx: RunContext, state: Doc) -> Any:
        return End()

    assert wf.check().problems == ["node start goes to undefined nodes: reveiw"]


def test_worst_case_cost_of_a_graph_with_an_agent_node_and_a_bounded_cycle() -> None:
    # plan (an agent: 4 steps, 1,000 tokens, $0.01) -> write (1 call, 500 tokens, $0.001)
    #   -> review (1 call, 200 tokens, $0.0005; at most 3 visits) -> write | end
    agent = Agent(ScriptedModel([]), guards=Guards(max_steps=4, max_tokens=1_000, max_cost_usd=0.01))
    wf = Workflow("costed", state=Doc)
    wf.agent("plan", agent, prompt=lambda s: s.text, then=lambda s, r: "write", next=["write"])

    @wf.node(next=["review"], budget=Budget(model_calls=1, tokens=500, cost_usd=0.001))
    async def write(ctx: RunContext, state: Doc) -> Any:
        return "review"

    @wf.node(next=["write", End], max_visits=3, budget=Budget(model_calls=1, tokens=200, cost_usd=0.0005))
    async def review(ctx: RunContext, state: Doc) -> Any:
        return End()

    report = check_graph(wf)
    assert report.ok
    # review: its bound, 3. write: entered once from plan and once after each review, 1 + 3 = 4. plan: 1.
    assert report.visits == {"plan": 1, "write": 4, "review": 3}
    # calls 4 + 4*1 + 3*1 = 11; tokens 1,000 + 4*500 + 3*200 = 3,600; cost 0.01 + 0.004 + 0.0015 = 0.0155.
    assert report.worst.model_calls == 11
    assert report.worst.tokens == 3_600
    assert report.worst.cost_usd == pytest.approx(0.0155)
    assert "11 model calls, 3,600 tokens, $0.0155" in report.describe()


def test_an_agent_without_a_token_budget_makes_the_worst_case_unbounded() -> None:
    wf = Workflow("open-ended", state=Doc)
    wf.agent("ask", Agent(ScriptedModel([])), prompt=lambda s: s.text, then=lambda s, r: End(), next=[End])
    report = wf.check()
    assert report.ok and report.worst.model_calls == 25 and report.worst.tokens is None
    assert "25 model calls, unbounded tokens, unbounded" in report.describe()


# -- drawing ------------------------------------------------------------------------------------------------
def test_mermaid_draws_declared_edges_and_bounds() -> None:
    text = review_loop("drawn").mermaid()
    assert text.splitlines() == [
        "stateDiagram-v2",
        "  write: write",
        "  review: review (≤3)",
        "  [*] --> write",
        "  write --> review",
        "  review --> write",
        "  review --> [*]",
    ]


def test_a_runs_path_is_drawn_over_its_graph_from_the_journal_alone(tmp_path: Any) -> None:
    journal = tmp_path / "journal.sqlite"
    rt = Runtime(SqliteJournal(journal))
    review_loop("path").run_sync(Doc(), runtime=rt, run_id="p1")
    rt.close()
    result = CliRunner().invoke(app, ["runs", "show", "p1", "--graph", "--journal", str(journal)])
    assert result.exit_code == 0, result.output
    assert "  write --> review: 3×" in result.output
    assert "  review --> write: 2×" in result.output
    assert "  review --> [*]: 1×" in result.output
    assert "class write,review taken" in result.output
    assert "%% path: write → review → write → review → write → review → end" in result.output


def test_run_path_names_the_node_an_unfinished_run_is_in() -> None:
    spec = review_loop("unfinished").spec()
    steps = [("workflow:unfinished", spec), ("write", "w"), ("node:write", "review")]
    found, path, current = run_path(steps)
    assert (found, path, current) == (spec, ["write"], "review")
    assert "class review current" in mermaid(spec, path, current=current)


def test_cli_graph_show_and_check(tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    module = tmp_path / "flows_for_cli.py"
    module.write_text(
        "from pydantic import BaseModel\n"
        "from corral.agents import End, Workflow\n"
        "class S(BaseModel):\n    n: int = 0\n"
        "good = Workflow('cli-good', state=S)\n"
        "@good.node(next=[End])\nasync def only(ctx, s):\n    return End()\n"
        "bad = Workflow('cli-bad', state=S)\n"
        "@bad.node(next=['loop', End])\nasync def loop(ctx, s):\n    return End()\n"
    )
    monkeypatch.chdir(tmp_path)
    shown = CliRunner().invoke(app, ["graph", "show", "flows_for_cli:good"])
    assert shown.exit_code == 0 and "[*] --> only" in shown.output
    ok = CliRunner().invoke(app, ["graph", "check", "flows_for_cli:good"])
    assert ok.exit_code == 0 and "workflow cli-good: ok" in ok.output
    refused = CliRunner().invoke(app, ["graph", "check", "flows_for_cli:bad"])
    assert refused.exit_code == 1
    assert "REFUSED" in refused.output and "cycle without a bound: loop" in refused.output
    wrong = CliRunner().invoke(app, ["graph", "show", "flows_for_cli:S"])
    assert wrong.exit_code != 0 and "is not a corral Workflow" in wrong.output


# -- replay ------------------------------------------------------------------------------------------------
def test_a_replayed_node_that_takes_another_edge_is_a_determinism_error() -> None:
    journal = MemoryJournal()
    choice = {"edge": "a"}
    wf = Workflow("fickle", state=Doc)

    @wf.node(next=["a", "b"])
    async def pick(ctx: RunContext, state: Doc) -> Any:
        return choice["edge"]

    @wf.node(next=[End])
    async def a(ctx: RunContext, state: Doc) -> Any:
        await ctx.wait("go")  # parks the run after pick's boundary is journaled
        return End()

    @wf.node(next=[End])
    async def b(ctx: RunContext, state: Doc) -> Any:
        return End()

    rt = Runtime(journal)
    with pytest.raises(RunSuspended):
        wf.run_sync(Doc(), runtime=rt, run_id="f1")
    choice["edge"] = "b"  # the code now decides otherwise
    rt.send_signal("f1", "go")
    with pytest.raises(DeterminismError, match=r"'pick -> a' here but the code now asks for 'pick -> b'"):
        asyncio.run(rt.resume("f1"))


# -- parallel branches ---------------------------------------------------------------------------------------
def test_parallel_branches_run_concurrently_as_child_runs() -> None:
    started: list[int] = []
    all_started = asyncio.Event()

    async def branch(ctx: RunContext, state: Doc, item: int) -> str:
        started.append(item)
        if len(started) == 3:
            all_started.set()
        # Each branch waits until every branch has started: a sequential run would never get here.
        await asyncio.wait_for(all_started.wait(), timeout=5)
        return await ctx.step("work", lambda: f"done {item}")

    def combine(state: Doc, results: list[str]) -> Any:
        state.log = results
        return End(len(results))

    wf = Workflow("fan-out", state=Doc)
    wf.parallel("fan", branch, plan=lambda s: [0, 1, 2], combine=combine, next=[End], max_branches=3)
    rt = Runtime(MemoryJournal())
    result = wf.run_sync(Doc(), runtime=rt, run_id="fan1")
    assert result.state.log == ["done 0", "done 1", "done 2"] and result.output == 3
    children = [f"fan1/fan.1.{i}" for i in range(3)]
    assert [rt.get_run(c).status.value for c in children] == ["completed"] * 3
    assert [s.name for s in rt.steps(children[1])] == ["work"]


def test_a_plan_with_more_branches_than_declared_fails() -> None:
    async def branch(ctx: RunContext, state: Doc, item: int) -> int:
        return item

    wf = Workflow("too-wide", state=Doc)
    wf.parallel(
        "fan", branch, plan=lambda s: [1, 2, 3], combine=lambda s, r: End(), next=[End], max_branches=2
    )
    with pytest.raises(WorkflowEdgeError, match="planned 3 branches; it is bounded to max_branches=2"):
        wf.run_sync(Doc(), runtime=Runtime(MemoryJournal()))


def test_a_failing_branch_fails_the_workflow_with_its_error() -> None:
    async def branch(ctx: RunContext, state: Doc, item: int) -> int:
        if item == 1:
            raise ValueError("branch 1 broke")
        return item

    wf = Workflow("one-breaks", state=Doc)
    wf.parallel("fan", branch, plan=lambda s: [0, 1], combine=lambda s, r: End(r), next=[End], max_branches=2)
    with pytest.raises(ValueError, match="branch 1 broke"):
        wf.run_sync(Doc(), runtime=Runtime(MemoryJournal()))


def test_a_node_function_returned_as_an_edge_is_found_by_the_name_this_graph_gave_it() -> None:
    async def shared(ctx: RunContext, state: Doc) -> Any:
        return End(state.text)

    first, second = Workflow("names-1", state=Doc), Workflow("names-2", state=Doc)
    for wf, name in ((first, "finish_one"), (second, "finish_two")):

        @wf.node(next=[shared])
        async def begin(ctx: RunContext, state: Doc) -> Any:
            return shared  # the function object, not its name

        wf.node(shared, name=name, next=[End])
    assert first.nodes["begin"].next == ("finish_one",) and second.nodes["begin"].next == ("finish_two",)
    assert second.run_sync(Doc(text="x"), runtime=Runtime(MemoryJournal())).path == ["begin", "finish_two"]
