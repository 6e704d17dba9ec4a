"""Durable approvals: a run parks on a request; a decision is recorded once, bound to its run, step and
arguments; forged, replayed and second decisions are refused; a deadline decides once."""

from __future__ import annotations

import json
import sys
import threading
from pathlib import Path
from typing import Any

import pytest

from corral._errors import UsageError
from corral.durable import (
    FakeClock,
    LedgerRecord,
    MemoryJournal,
    RunContext,
    RunStatus,
    RunSuspended,
    Runtime,
    SqliteJournal,
    ledger_for,
)
from corral.guards import (
    ApprovalAlreadyDecided,
    ApprovalError,
    ApprovalMismatch,
    ApprovalNotFound,
    ApprovalPolicy,
    ApprovalRecord,
    Approvals,
    Decision,
    GuardConfigError,
    arguments_hash,
    request_approval,
)

effects: list[dict[str, Any]] = []


@pytest.fixture(autouse=True)
def _reset() -> None:
    effects.clear()


async def deploy(
    ctx: RunContext, version: str, timeout_s: float | None = None, default: str = "reject"
) -> str:
    policy = ApprovalPolicy(timeout_s=timeout_s, on_timeout=default)  # type: ignore[arg-type]
    decision = await request_approval(ctx, "deploy", {"version": version}, policy=policy, why="prod")
    if not decision.approved:
        return f"refused by {decision.by}: {decision.reason}"
    arguments = decision.arguments or {"version": version}

    def act() -> str:
        effects.append(arguments)
        return f"deployed {arguments['version']}"

    return await ctx.step("deploy", act)


async def park(rt: Runtime, run_id: str, *args: Any) -> ApprovalRecord:
    with pytest.raises(RunSuspended) as parked:
        await rt.run(deploy, *args, run_id=run_id)
    assert parked.value.signal is not None and parked.value.signal.startswith("approval:")
    (record,) = Approvals(rt).list(run_id=run_id)
    return record


@pytest.fixture
def rt() -> Runtime:
    return Runtime(MemoryJournal(), clock=FakeClock())


async def test_a_parked_request_is_listed_with_its_binding(rt: Runtime) -> None:
    record = await park(rt, "r1", "1.2")
    assert (record.status, record.action, record.arguments, record.why) == (
        "pending",
        "deploy",
        {"version": "1.2"},
        "prod",
    )
    assert record.args_hash == arguments_hash("deploy", {"version": "1.2"})
    assert rt.get_run("r1").status is RunStatus.WAITING and effects == []
    assert Approvals(rt).get(record.id) == record
    with pytest.raises(ApprovalNotFound):
        Approvals(rt).get("ap-nope")


async def test_approve_runs_the_action_once_and_records_who_when_why(rt: Runtime) -> None:
    record = await park(rt, "r1", "1.2")
    rt.clock.advance(30)  # type: ignore[attr-defined]
    decided = Approvals(rt).approve(record.id, by="ada", reason="looks fine")
    assert decided.status == "approved" and decided.decision is not None
    assert (decided.decision.by, decided.decision.reason) == ("ada", "looks fine")
    assert decided.decision.at == rt.clock.time()
    assert await rt.resume("r1") == "deployed 1.2"
    assert effects == [{"version": "1.2"}]
    assert await rt.resume("r1") == "deployed 1.2" and len(effects) == 1  # final: not run again
    assert Approvals(rt).list() == [] and Approvals(rt).list(status="approved")[0].id == record.id


async def test_reject_sends_the_reason_and_the_action_never_runs(rt: Runtime) -> None:
    record = await park(rt, "r1", "1.2")
    Approvals(rt).reject(record.id, by="ops", reason="freeze until Monday")
    assert await rt.resume("r1") == "refused by ops: freeze until Monday"
    assert effects == []
    with pytest.raises(UsageError, match="needs a reason"):
        Approvals(rt).reject(record.id, by="ops", reason=" ")


async def test_edit_runs_with_the_corrected_arguments(rt: Runtime) -> None:
    record = await park(rt, "r1", "1.2")
    Approvals(rt).edit(record.id, by="ada", arguments={"version": "1.2.1"}, reason="use the patch release")
    assert await rt.resume("r1") == "deployed 1.2.1"
    assert effects == [{"version": "1.2.1"}]
    assert Approvals(rt).get(record.id).status == "edited"


async def test_a_second_decision_is_refused(rt: Runtime) -> None:
    record = await park(rt, "r1", "1.2")
    approvals = Approvals(rt)
    approvals.approve(record.id, by="ada")
    with pytest.raises(ApprovalAlreadyDecided, match="already approved"):
        approvals.reject(record.id, by="bob", reason="no")
    with pytest.raises(ApprovalAlreadyDecided):
        approvals.approve(record.id, by="ada")
    assert await rt.resume("r1") == "deployed 1.2" and len(effects) == 1


async def test_a_decision_needs_a_decider(rt: Runtime) -> None:
    record = await park(rt, "r1", "1.2")
    with pytest.raises(UsageError, match="who decides"):
        Approvals(rt).approve(record.id, by="  ")
    with pytest.raises(UsageError, match="JSON object"):
        Approvals(rt).edit(record.id, by="ada", arguments=["1.3"])  # type: ignore[arg-type]


async def test_a_decision_for_other_arguments_is_refused(rt: Runtime) -> None:
    record = await park(rt, "r1", "1.2")
    stale = arguments_hash("deploy", {"version": "9.9"})
    with pytest.raises(ApprovalMismatch, match="look at the request again"):
        Approvals(rt).approve(record.id, by="ada", args_hash=stale)
    assert Approvals(rt).get(record.id).status == "pending"
    Approvals(rt).approve(record.id, by="ada", args_hash=record.args_hash)
    assert await rt.resume("r1") == "deployed 1.2"


async def test_a_forged_signal_does_not_approve(rt: Runtime) -> None:
    record = await park(rt, "r1", "1.2")
    # Anyone can send a signal (`corral signal`), with any payload: the run reads the ledger, not it.
    forged = {"outcome": "approve", "by": "mallory", "args_hash": record.args_hash, "approved": True}
    rt.send_signal("r1", record.signal, forged)
    with pytest.raises(RunSuspended):
        await rt.resume("r1")
    assert effects == [] and rt.get_run("r1").status is RunStatus.WAITING
    assert Approvals(rt).get(record.id).status == "pending"
    Approvals(rt).approve(record.id, by="ada")
    assert await rt.resume("r1") == "deployed 1.2" and len(effects) == 1


async def test_a_decision_replayed_onto_another_call_is_refused(rt: Runtime) -> None:
    # A decision copied in the ledger from one request onto another (different arguments) must not count.
    first = await park(rt, "r1", "1.2")
    second = await park(rt, "r2", "6.6.6")
    Approvals(rt).approve(first.id, by="ada")
    ledger = ledger_for(rt.journal)
    approved = Approvals(rt).get(first.id)
    copied = approved.model_copy(update={"id": second.id, "run_id": "r2"})  # first's args, hash, decision
    assert ledger.transition(
        "approval", second.id, expect="pending", to="decided", data=copied.model_dump_json(), now=1.0
    )
    rt.send_signal("r2", second.signal, None)
    out = await rt.resume("r2")
    assert out.startswith(
        "refused by corral: the decision recorded for this request was not made for this call"
    )
    assert effects == []
    assert await rt.resume("r1") == "deployed 1.2" and effects == [{"version": "1.2"}]


async def test_a_tampered_ledger_row_is_refused(rt: Runtime) -> None:
    record = await park(rt, "r1", "1.2")
    ledger = ledger_for(rt.journal)
    assert ledger.transition("approval", record.id, expect="pending", to="decided", data="{not json", now=1.0)
    rt.send_signal("r1", record.signal, None)
    assert (await rt.resume("r1")).startswith("refused by corral")
    assert effects == []


async def test_the_deadline_applies_the_default_decision_once(rt: Runtime) -> None:
    record = await park(rt, "r1", "1.2", 60.0, "reject")
    assert record.deadline == record.created_at + 60
    rt.clock.advance(30)  # type: ignore[attr-defined]
    with pytest.raises(RunSuspended):  # not due yet
        await rt.resume("r1")
    rt.clock.advance(31)  # type: ignore[attr-defined]
    out = await rt.resume("r1")
    assert out == "refused by timeout: nobody decided before the deadline; the policy's default is to reject"
    expired = Approvals(rt).get(record.id)
    assert (
        expired.status == "expired"
        and expired.decision is not None
        and expired.decision.at == record.deadline
    )
    with pytest.raises(ApprovalAlreadyDecided, match="already expired"):
        Approvals(rt).approve(record.id, by="late")
    assert await rt.resume("r1") == out and effects == []


async def test_a_deadline_may_default_to_approve(rt: Runtime) -> None:
    await park(rt, "r1", "1.2", 5.0, "approve")
    rt.clock.advance(6)  # type: ignore[attr-defined]
    assert await rt.resume("r1") == "deployed 1.2" and len(effects) == 1


async def test_a_human_who_decides_before_the_deadline_run_wins(rt: Runtime) -> None:
    record = await park(rt, "r1", "1.2", 5.0, "reject")
    rt.clock.advance(6)  # type: ignore[attr-defined]
    Approvals(rt).approve(record.id, by="ada")  # just after the deadline, before a worker woke the run
    assert await rt.resume("r1") == "deployed 1.2"
    assert Approvals(rt).get(record.id).status == "approved"


async def test_notify_runs_once_per_new_request(rt: Runtime) -> None:
    told: list[ApprovalRecord] = []

    async def flow(ctx: RunContext) -> bool:
        decision = await request_approval(
            ctx, "rm", {"path": "/tmp/x"}, policy=ApprovalPolicy(notify=told.append)
        )
        return decision.approved

    with pytest.raises(RunSuspended):
        await rt.run(flow, run_id="n1")
    with pytest.raises(RunSuspended):
        await rt.resume("n1")  # a replay does not notify again
    assert [r.action for r in told] == ["rm"]
    Approvals(rt).approve(told[0].id, by="ada")
    assert await rt.resume("n1") is True and len(told) == 1


async def test_a_notify_command_gets_the_request_on_stdin(rt: Runtime, tmp_path: Path) -> None:
    out = tmp_path / "told.json"
    script = (
        f"import os,sys; open({str(out)!r}, 'w').write(os.environ['CORRAL_APPROVAL_ID'] + sys.stdin.read())"
    )
    policy = ApprovalPolicy(notify=[sys.executable, "-c", script])

    async def flow(ctx: RunContext) -> bool:
        return (await request_approval(ctx, "rm", {"path": "/x"}, policy=policy)).approved

    with pytest.raises(RunSuspended):
        await rt.run(flow, run_id="n2")
    (record,) = Approvals(rt).list()
    text = out.read_text()
    assert text.startswith(record.id) and json.loads(text[len(record.id) :])["arguments"] == {"path": "/x"}


async def test_a_failing_notify_hook_does_not_fail_the_run(
    rt: Runtime, caplog: pytest.LogCaptureFixture
) -> None:
    def broken(record: ApprovalRecord) -> None:
        raise RuntimeError("chat is down")

    async def flow(ctx: RunContext) -> bool:
        policy = ApprovalPolicy(notify=broken)
        return (await request_approval(ctx, "rm", {}, policy=policy)).approved

    with pytest.raises(RunSuspended):
        await rt.run(flow, run_id="n3")
    assert "chat is down" in caplog.text and len(Approvals(rt).list()) == 1


def test_policy_config_errors() -> None:
    with pytest.raises(GuardConfigError, match="timeout_s"):
        ApprovalPolicy(timeout_s=0)
    with pytest.raises(GuardConfigError, match="on_timeout"):
        ApprovalPolicy(on_timeout="maybe")  # type: ignore[arg-type]
    with pytest.raises(GuardConfigError, match="list of arguments"):
        ApprovalPolicy(notify="notify-send hi")  # type: ignore[arg-type]
    with pytest.raises(GuardConfigError, match="rule function"):
        ApprovalPolicy(ask="sometimes")  # type: ignore[arg-type]


async def test_deliver_wakes_a_run_whose_signal_was_lost(rt: Runtime) -> None:
    record = await park(rt, "r1", "1.2")
    approvals = Approvals(rt)
    # A decider that died after recording the decision and before signalling the run.
    decision = Decision(outcome="approve", by="ada", at=1.0, args_hash=record.args_hash)
    decided = record.model_copy(update={"decision": decision})
    ledger_for(rt.journal).transition(
        "approval", record.id, expect="pending", to="decided", data=decided.model_dump_json(), now=1.0
    )
    assert rt.get_run("r1").status is RunStatus.WAITING
    assert approvals.deliver() == 1
    assert rt.get_run("r1").status is RunStatus.PENDING
    assert approvals.deliver() == 0
    assert await rt.resume("r1") == "deployed 1.2"


def test_two_deciders_racing_on_sqlite_one_wins(tmp_path: Path) -> None:
    path = tmp_path / "journal.sqlite"
    rt = Runtime(SqliteJournal(path))
    rt.start(deploy, "1.2", run_id="r")  # a run that is not over: its requests may be decided
    ledger = ledger_for(rt.journal)
    for i in range(20):
        record = ApprovalRecord(
            id=f"ap-{i}", run_id="r", position=i, action="x", arguments={}, args_hash="h", created_at=0.0
        )
        ledger.insert(LedgerRecord("approval", record.id, "r", "pending", record.model_dump_json(), 0.0, 0.0))
    wins: list[str] = []
    refused: list[str] = []

    def decide(who: str) -> None:
        # Each decider its own process-like runtime: a connection of its own to the same file.
        mine = Approvals(Runtime(SqliteJournal(path)))
        for i in range(20):
            try:
                mine.approve(f"ap-{i}", by=who)
                wins.append(f"{i}:{who}")
            except ApprovalAlreadyDecided:
                refused.append(f"{i}:{who}")

    threads = [threading.Thread(target=decide, args=(f"d{n}",)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(wins) == 20 and len(refused) == 60
    assert sorted(int(w.split(":")[0]) for w in wins) == list(range(20))
    for w in wins:
        i, who = w.split(":")
        got = Approvals(rt).get(f"ap-{i}").decision
        assert got is not None and got.by == who


async def test_a_request_of_a_cancelled_run_is_not_listed_nor_decidable(rt: Runtime) -> None:
    record = await park(rt, "r1", "1.2")
    rt.cancel("r1")
    assert Approvals(rt).list() == []
    with pytest.raises(ApprovalError, match="is cancelled"):
        Approvals(rt).approve(record.id, by="ada")


async def test_an_oversized_reason_is_a_clear_error(rt: Runtime) -> None:
    record = await park(rt, "r1", "1.2")
    with pytest.raises(UsageError, match="not valid"):
        Approvals(rt).reject(record.id, by="ada", reason="x" * 5000)
    assert Approvals(rt).get(record.id).status == "pending"


@pytest.mark.parametrize(
    "forge",
    [
        # The record is this request's, but the decision was made for other arguments.
        lambda rec, d: rec.model_copy(update={"decision": d.model_copy(update={"args_hash": "0" * 64})}),
        # The decision matches these arguments, but the record says another run or another step.
        lambda rec, d: rec.model_copy(update={"decision": d, "run_id": "elsewhere"}),
        lambda rec, d: rec.model_copy(update={"decision": d, "position": rec.position + 1}),
        lambda rec, d: rec.model_copy(update={"decision": d, "action": "other"}),
        lambda rec, d: rec.model_copy(update={"decision": d, "args_hash": "0" * 64}),
    ],
)
async def test_each_part_of_the_binding_is_checked(rt: Runtime, forge: Any) -> None:
    record = await park(rt, "r1", "1.2")
    decision = Decision(outcome="approve", by="mallory", at=1.0, args_hash=record.args_hash)
    forged = forge(record, decision)
    ledger = ledger_for(rt.journal)
    assert ledger.transition(
        "approval", record.id, expect="pending", to="decided", data=forged.model_dump_json(), now=1.0
    )
    rt.send_signal("r1", record.signal, None)
    assert (await rt.resume("r1")).startswith(
        "refused by corral: the decision recorded for this request was not"
    )
    assert effects == []
