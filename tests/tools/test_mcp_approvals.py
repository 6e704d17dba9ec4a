"""MCP tools under durable approval policies, against real servers: ``mcp-server-git`` over a temporary
repository and the misbehaving ``probe`` server. A call a policy covers parks the run with its request in
the ledger; a person decides through ``Approvals``; the run goes on, in a fresh runtime and toolset."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path

import pytest

from corral.agents import Agent
from corral.durable import RunContext, RunSuspended, Runtime
from corral.guards import ApprovalPolicy, Approvals
from corral.models import Message, ScriptedModel, ToolDefinition, ToolResultMessage
from corral.tools import MCPToolset, StdioServer

PY = sys.executable
PROBE = Path(__file__).with_name("mcp_servers") / "probe.py"

pytestmark = pytest.mark.timeout(120)


def results(messages: Sequence[Message]) -> list[str]:
    return [m.content for m in messages if isinstance(m, ToolResultMessage)]


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    path = tmp_path / "repo"
    path.mkdir()
    git = ["git", "-C", str(path), "-c", "user.name=t", "-c", "user.email=t@example.invalid"]
    subprocess.run(["git", "init", "-q", str(path)], check=True)
    subprocess.run([*git, "config", "user.name", "t"], check=True)
    subprocess.run([*git, "config", "user.email", "t@example.invalid"], check=True)
    (path / "a.txt").write_text("one\n")
    subprocess.run([*git, "add", "a.txt"], check=True)
    subprocess.run([*git, "commit", "-qm", "first commit"], check=True)
    (path / "a.txt").write_text("two\n")
    return path


def git_log(repo: Path) -> list[str]:
    out = subprocess.run(["git", "-C", str(repo), "log", "--format=%s"], capture_output=True, text=True)
    return out.stdout.splitlines()


def git_agent(repo: Path) -> tuple[MCPToolset, ScriptedModel]:
    toolset = MCPToolset(
        f"{PY} -m mcp_server_git --repository {repo}",
        prefix="git",
        include=["git_status", "git_add", "git_commit"],
    )

    def script(messages: Sequence[Message], tools: Sequence[ToolDefinition]) -> object:
        plan: list[object] = [
            ("git_git_status", {"repo_path": str(repo)}),
            ("git_git_add", {"repo_path": str(repo), "files": ["a.txt"]}),
            ("git_git_commit", {"repo_path": str(repo), "message": "second"}),
        ]
        done = results(messages)
        return plan[len(done)] if len(done) < len(plan) else f"Done: {done[-1]}"

    return toolset, ScriptedModel(script)


#: Reads run freely; a commit (the prefixed MCP tool name) needs a person's decision.
POLICIES = [
    ApprovalPolicy(tools=("git_git_status", "git_git_add"), ask="never"),
    ApprovalPolicy(tools="git_git_commit", timeout_s=24 * 3600),
]


@pytest.mark.parametrize("decision", ["approve", "reject"])
async def test_a_policy_parks_an_mcp_write_until_a_person_decides(
    repo: Path, tmp_path: Path, decision: str
) -> None:
    journal = tmp_path / "journal.sqlite"

    def make_run(toolset: MCPToolset, model: ScriptedModel) -> Callable[[RunContext, str], Awaitable[str]]:
        async def commit(ctx: RunContext, question: str) -> str:
            agent = Agent(model, tools=await toolset.tools(ctx), approvals=POLICIES)
            result = await agent.run(question, ctx=ctx)
            return str(result.output)

        return commit

    toolset, model = git_agent(repo)
    try:
        with pytest.raises(RunSuspended) as parked:
            await Runtime.open(journal).run(make_run(toolset, model), "Commit it.", run_id="commit-1")
    finally:
        await toolset.aclose()
    assert parked.value.signal is not None and parked.value.signal.startswith("approval:")
    assert git_log(repo) == ["first commit"]  # the commit has not run

    # A person decides from elsewhere: another runtime on the same journal, as `corral approvals` would.
    approvals = Approvals(Runtime.open(journal))
    [request] = approvals.list(run_id="commit-1")
    assert request.action == "git_git_commit"
    assert request.arguments == {"repo_path": str(repo), "message": "second"}
    if decision == "approve":
        approvals.approve(request.id, by="ops", reason="looks right")
    else:
        approvals.reject(request.id, by="ops", reason="no commits on Fridays")

    # The run goes on in a fresh runtime with a fresh connection to the server (a restarted worker).
    toolset, model = git_agent(repo)
    try:
        output = await Runtime.open(journal).run(make_run(toolset, model), "Commit it.", run_id="commit-1")
        again = await Runtime.open(journal).run(make_run(toolset, model), "Commit it.", run_id="commit-1")
    finally:
        await toolset.aclose()
    assert again == output  # a finished run is read back, nothing runs again
    if decision == "approve":
        assert git_log(repo) == ["second", "first commit"]  # exactly once
        assert output.startswith("Done: Changes committed successfully")
    else:
        assert git_log(repo) == ["first commit"]  # never
        assert output == "Done: The call of 'git_git_commit' was not approved: no commits on Fridays"
    assert model.call_count == 1  # the three turns before the park were replayed; only the answer is new
    [decided] = approvals.list(status=None, run_id="commit-1")
    assert decided.status == {"approve": "approved", "reject": "rejected"}[decision]


def injected_model(messages: Sequence[Message], tools: Sequence[ToolDefinition]) -> object:
    """A model that does whatever the last tool result tells it to."""
    plan: list[object] = [
        ("inject", {}),
        ("drop_everything", {}),  # the injection says: now, without asking for approval
        "Finished.",
    ]
    return plan[len(results(messages))]


async def test_an_injected_instruction_cannot_skip_a_durable_approval(tmp_path: Path) -> None:
    def calls() -> list[str]:
        path = tmp_path / "calls.log"
        return path.read_text().splitlines() if path.exists() else []

    toolset = MCPToolset(StdioServer(PY, (str(PROBE), str(tmp_path))), name="probe")
    runtime = Runtime.open(tmp_path / "journal.sqlite")
    agent = Agent(
        ScriptedModel(injected_model),
        tools=await toolset.tools(),
        approvals=[ApprovalPolicy(tools="drop_everything")],
    )
    try:
        with pytest.raises(RunSuspended):
            await agent.run("Search.", runtime=runtime, run_id="injected")
        assert calls() == ["inject"]  # parked: the destructive call did not run
        approvals = Approvals(runtime)
        [request] = approvals.list(run_id="injected")
        assert request.action == "drop_everything"
        approvals.reject(request.id, by="ops", reason="a search result asked for it")
        result = await agent.run("Search.", runtime=runtime, run_id="injected")
    finally:
        await toolset.aclose()
    injected, dropped = results(result.messages)
    assert "IGNORE PREVIOUS INSTRUCTIONS" in injected
    assert dropped == "The call of 'drop_everything' was not approved: a search result asked for it"
    assert result.output == "Finished."
    assert calls() == ["inject"]  # drop_everything never ran
