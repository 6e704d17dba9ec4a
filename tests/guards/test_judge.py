"""The judge as a guard: verdicts as durable steps, bounded revisions, fail / accept / escalate, a budget."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import pytest

from corral.durable import MemoryJournal, RunContext, RunSuspended, Runtime
from corral.guards import (
    Approvals,
    GuardConfigError,
    Judged,
    JudgeState,
    Judging,
    LLMJudge,
    Validator,
)
from corral.models import ScriptedModel, Usage

RUBRIC = "Fail when the answer is not a positive count."


def verdicts(*items: str) -> list[str]:
    return [
        json.dumps({"reason": reason, "verdict": verdict})
        for verdict, reason in (i.split(":", 1) for i in items)
    ]


async def judge_once(judge: Any, subject: Any) -> Any:
    rt = Runtime(MemoryJournal())

    async def flow(ctx: RunContext) -> Any:
        return (await judge.judge(ctx, subject)).model_dump()

    return await rt.run(flow)


async def test_validator_outcomes() -> None:
    assert (await judge_once(Validator(lambda s: None), 1))["passed"] is True
    assert (await judge_once(Validator(lambda s: True), 1))["passed"] is True
    failed = await judge_once(Validator(lambda s: False, name="nonzero"), 1)
    assert (failed["passed"], failed["reason"]) == (False, "nonzero failed")
    assert (await judge_once(Validator(lambda s: "too small"), 1))["reason"] == "too small"

    def boom(subject: Any) -> None:
        raise KeyError("total")

    crashed = await judge_once(Validator(boom), 1)
    assert crashed["passed"] is False and "KeyError" in crashed["reason"]


async def test_llm_judge_reads_rubric_and_evidence() -> None:
    model = ScriptedModel(verdicts("fail:the count is negative"))
    judge = LLMJudge(model, rubric=RUBRIC, evidence=lambda s: f"Answer: {s}")
    out = await judge_once(judge, -3)
    assert (out["passed"], out["reason"], out["judge"], out["calls"]) == (
        False,
        "the count is negative",
        "llm_judge",
        1,
    )
    (call,) = model.calls
    assert call.messages[0].content == RUBRIC and call.messages[1].content == "Answer: -3"
    assert call.output_schema is not None and call.output_schema.name == "verdict"


async def test_a_fail_that_does_not_hold_against_the_evidence_is_dismissed() -> None:
    schema = {
        "type": "object",
        "properties": {
            "reason": {"type": "string"},
            "where": {"type": "string"},
            "verdict": {"type": "string", "enum": ["pass", "fail"]},
        },
        "required": ["reason", "where", "verdict"],
    }

    def points_at_the_answer(subject: Any, reply: Any) -> str | None:
        # A fail must name a part of the subject; anything else is not a reason to revise.
        return None if reply.get("where") in subject else f"{reply.get('where')!r} is not in the answer"

    replies = [
        json.dumps({"reason": "made up", "where": "total", "verdict": "fail"}),
        json.dumps({"reason": "count is negative", "where": "count", "verdict": "fail"}),
        json.dumps({"reason": "ok", "where": "", "verdict": "pass"}),
    ]
    model = ScriptedModel(replies)
    judge = LLMJudge(model, rubric=RUBRIC, votes=3, schema=schema, check_fail=points_at_the_answer)
    out = await judge_once(judge, {"count": -3})
    # Two fails, one dismissed: one fail of three readable votes is no majority.
    assert (out["passed"], out["dismissed"], out["reason"]) == (True, 1, "ok")
    assert model.calls[0].output_schema is not None and model.calls[0].output_schema.json_schema == schema
    with pytest.raises(GuardConfigError, match="must require 'reason' and 'verdict'"):
        LLMJudge(model, rubric=RUBRIC, schema={"type": "object", "required": ["verdict"]})


async def test_llm_judge_votes_fail_only_on_a_majority() -> None:
    one_fail = ScriptedModel(verdicts("fail:looks off", "pass:fine", "pass:fine"))
    assert (await judge_once(LLMJudge(one_fail, rubric=RUBRIC, votes=3), 1))["passed"] is True
    temps = [c.settings.temperature for c in one_fail.calls if c.settings is not None]
    assert temps == [0.0, 0.7, 0.7]
    two_fail = ScriptedModel(verdicts("fail:wrong table", "pass:fine", "fail:wrong filter"))
    out = await judge_once(LLMJudge(two_fail, rubric=RUBRIC, votes=3), 1)
    assert (out["passed"], out["reason"]) == (False, "wrong table")


@pytest.mark.parametrize(
    ("replies", "passed", "calls"),
    [
        (("pass:fine", "pass:fine", "fail:never asked"), True, 2),
        (("fail:wrong table", "fail:wrong filter", "pass:never asked"), False, 2),
        (("pass:fine", "fail:wrong table", "fail:wrong filter"), False, 3),
        (("not json", "pass:fine", "fail:never asked"), True, 2),
    ],
)
async def test_llm_judge_stops_asking_once_the_majority_is_decided(
    replies: tuple[str, ...], passed: bool, calls: int
) -> None:
    model = ScriptedModel([r if r == "not json" else verdicts(r)[0] for r in replies])
    out = await judge_once(LLMJudge(model, rubric=RUBRIC, votes=3), 1)
    # Two agreeing votes of three decide: the third is not asked. An unreadable vote counts for neither
    # side: after it, one pass already outweighs the one fail still possible.
    assert (out["passed"], out["calls"], model.call_count) == (passed, calls, calls)


async def test_llm_judge_unreadable_replies() -> None:
    model = ScriptedModel(["not json"])
    out = await judge_once(LLMJudge(model, rubric=RUBRIC), 1)
    assert (out["passed"], out["reason"]) == (True, "the judge's reply was not readable")
    strict = await judge_once(
        LLMJudge(ScriptedModel(['{"verdict": "maybe"}']), rubric=RUBRIC, unreadable="fail"), 1
    )
    assert strict["passed"] is False


def test_judging_config_errors() -> None:
    with pytest.raises(GuardConfigError, match="at least one judge"):
        Judging(judges=[])
    with pytest.raises(GuardConfigError, match="not a judge"):
        Judging(judges=[lambda s: None])  # type: ignore[list-item]
    with pytest.raises(GuardConfigError, match="max_revisions"):
        Judging(judges=[Validator(lambda s: None)], max_revisions=-1)
    with pytest.raises(GuardConfigError, match="max_calls"):
        Judging(judges=[Validator(lambda s: None)], max_calls=0)
    with pytest.raises(GuardConfigError, match="votes"):
        LLMJudge(ScriptedModel([]), rubric="x", votes=0)


def counting_node(judging: Judging, produced: list[str | None], outputs: Sequence[int]) -> Any:
    async def node(ctx: RunContext) -> dict[str, Any]:
        async def produce(feedback: str | None) -> int:
            def make() -> int:
                produced.append(feedback)  # an effect: counted only when the step really runs
                return outputs[len(produced) - 1]

            return await ctx.step("produce", make)

        out: Judged[Any] = await judge_node(ctx, produce, judging)
        return {
            "output": out.output,
            "outcome": out.outcome,
            "reason": out.reason,
            "revisions": out.revisions,
        }

    return node


async def judge_node(ctx: RunContext, produce: Any, judging: Judging) -> Judged[Any]:
    from corral.guards import judged

    return await judged(ctx, produce, judging)


POSITIVE = Validator(lambda n: None if n > 0 else f"{n} is not positive", name="positive")


async def test_revision_gets_the_reason_and_passes() -> None:
    produced: list[str | None] = []
    node = counting_node(Judging(judges=[POSITIVE], max_revisions=2), produced, [-1, 0, 4])
    out = await Runtime(MemoryJournal()).run(node)
    assert out == {"output": 4, "outcome": "passed", "reason": "", "revisions": 2}
    assert produced == [None, "positive: -1 is not positive", "positive: 0 is not positive"]


async def test_after_the_last_revision_fail_or_accept() -> None:
    produced: list[str | None] = []
    node = counting_node(Judging(judges=[POSITIVE], max_revisions=1), produced, [-1, -2])
    out = await Runtime(MemoryJournal()).run(node)
    assert out == {
        "output": -2,
        "outcome": "failed",
        "reason": "positive: -2 is not positive",
        "revisions": 1,
    }
    assert len(produced) == 2
    produced.clear()
    node = counting_node(Judging(judges=[POSITIVE], max_revisions=0, on_exhausted="accept"), produced, [-1])
    out = await Runtime(MemoryJournal()).run(node)
    assert (out["outcome"], out["output"], len(produced)) == ("accepted", -1, 1)


@pytest.mark.parametrize(
    ("decide", "expected"),
    [
        (lambda a, i: a.approve(i, by="ada", reason="negative is right here"), ("approved", -1)),
        (lambda a, i: a.edit(i, by="ada", arguments={"output": 7}), ("approved", 7)),
        (lambda a, i: a.reject(i, by="ada", reason="indeed wrong"), ("failed", -1)),
    ],
)
async def test_escalation_parks_for_a_human(decide: Any, expected: tuple[str, int]) -> None:
    rt = Runtime(MemoryJournal())
    produced: list[str | None] = []
    node = counting_node(Judging(judges=[POSITIVE], max_revisions=0, on_exhausted="escalate"), produced, [-1])
    with pytest.raises(RunSuspended):
        await rt.run(node, run_id="esc")
    (request,) = Approvals(rt).list()
    assert request.action == "judge_escalation" and request.arguments["output"] == -1
    assert "positive: -1 is not positive" in request.why
    decide(Approvals(rt), request.id)
    out = await rt.resume("esc")
    assert (out["outcome"], out["output"]) == expected
    assert len(produced) == 1  # the producer's step was replayed, not run again


async def test_judge_calls_are_durable_steps_and_spend_their_own_budget() -> None:
    model = ScriptedModel(verdicts("fail:no", "fail:no", "fail:no", "fail:no"))
    judging = Judging(judges=[LLMJudge(model, rubric=RUBRIC, votes=2)], max_revisions=5, max_calls=3)
    produced: list[str | None] = []
    rt = Runtime(MemoryJournal())
    out = await rt.run(counting_node(judging, produced, [1, 2, 3, 4, 5, 6]), run_id="b")
    # Two rounds of two votes (the budget is checked before each judge, so it overshoots by one call at
    # most); the third round is skipped: no opinion is not a fail.
    assert out["outcome"] == "passed" and out["revisions"] == 2 and model.call_count == 4
    names = [s.name for s in rt.steps("b")]
    assert names.count("judge:llm_judge") == 2 and names.count("model:scripted") == 4
    # A replay answers from the journal: the judge is not asked again.
    again = Runtime(rt.journal)
    assert await again.resume("b") == out and model.call_count == 4


async def test_judge_state_budget_in_tokens() -> None:
    state = JudgeState(Judging(judges=[POSITIVE], max_tokens=10))
    assert state.spent() == ""
    state.usage = Usage(input_tokens=8, output_tokens=3)
    assert "10 tokens" in state.spent()
