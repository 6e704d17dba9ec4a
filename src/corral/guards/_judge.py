"""The judge as a guard: a second opinion on what an agent or a workflow node produced.

A judge is an LLM judge (:class:`LLMJudge`: a rubric, the evidence it sees, a verdict with its reason) or a
programmatic :class:`Validator`. :class:`Judging` attaches judges and says what a fail does: the reason
goes back for a bounded number of revisions; after the last one the run fails with the judges' reason,
accepts the output with the reason as a caution, or escalates to a human approval. Every judge call is a
durable step (a resumed run does not ask the judge again) and judges spend a budget of their own.

For a workflow node, :func:`judged` runs the whole loop around a function that produces (and revises) the
output:

>>> import asyncio
>>> from corral.durable import MemoryJournal, Runtime
>>> positive = Validator(lambda n: None if n > 0 else "the count must be positive", name="positive")
>>> async def node(ctx):
...     async def produce(feedback):
...         return -1 if feedback is None else 3   # revises once it hears why
...     outcome = await judged(ctx, produce, Judging(judges=[positive], max_revisions=1))
...     return outcome.output, outcome.outcome, outcome.revisions
>>> Runtime(MemoryJournal()).run_sync(node)
[3, 'passed', 1]
"""

from __future__ import annotations

import inspect
import json
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, Literal, Protocol, TypeVar, runtime_checkable

from pydantic import BaseModel, ConfigDict, Field
from pydantic_core import to_jsonable_python

from corral.durable import RunContext
from corral.guards._approvals import request_approval
from corral.guards._policy import ApprovalPolicy
from corral.guards.errors import GuardConfigError
from corral.models import (
    Message,
    Model,
    ModelSettings,
    OutputSchema,
    SystemMessage,
    Usage,
    UserMessage,
    durable_request,
)

T = TypeVar("T")

#: The reply an :class:`LLMJudge` must give. The reason comes first: a small model that states its reason
#: before its verdict contradicts itself less (the grammar makes it write keys in this order).
VERDICT_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "reason": {"type": "string"},
        "verdict": {"type": "string", "enum": ["pass", "fail"]},
    },
    "required": ["reason", "verdict"],
    "additionalProperties": False,
}


class Verdict(BaseModel):
    """One judge's opinion: pass or fail, and why (the reason is what a revision is told)."""

    model_config = ConfigDict(frozen=True)

    passed: bool
    reason: str = Field(default="", max_length=2000)
    judge: str = ""
    usage: Usage = Field(default_factory=Usage)
    #: Model calls the judge made (votes); 0 for a validator.
    calls: int = 0
    #: Failing votes the judge's ``check_fail`` dismissed (their reason did not hold against the evidence).
    dismissed: int = 0


class JudgeReport(BaseModel):
    """The verdicts of one round of judging. ``skipped`` says why judging stopped early (budget)."""

    model_config = ConfigDict(frozen=True)

    verdicts: list[Verdict] = Field(default_factory=list)
    skipped: str = ""

    @property
    def passed(self) -> bool:
        """Whether no judge failed (a round skipped for budget passes: no opinion is not a fail)."""
        return all(v.passed for v in self.verdicts)

    @property
    def reason(self) -> str:
        """The failing judges' reasons, one sentence each."""
        return "; ".join(
            f"{v.judge}: {v.reason}" if v.judge else v.reason for v in self.verdicts if not v.passed
        )


@runtime_checkable
class Judge(Protocol):
    """Anything with a ``name`` that gives a :class:`Verdict` on a subject, through the run's context."""

    name: str

    async def judge(self, ctx: RunContext, subject: Any) -> Verdict: ...


def default_evidence(subject: Any) -> str:
    """What a judge reads when no ``evidence`` function is given: text as is, a mapping as ``Key: value``
    lines, anything else as JSON.

    >>> print(default_evidence({"question": "How many?", "answer": 3}))
    Question: How many?
    Answer: 3
    """
    if isinstance(subject, str):
        return subject
    if isinstance(subject, dict):
        lines = []
        for key, value in subject.items():
            text = value if isinstance(value, str) else json.dumps(to_jsonable_python(value), default=str)
            lines.append(f"{str(key).replace('_', ' ').capitalize()}: {text}")
        return "\n".join(lines)
    return json.dumps(to_jsonable_python(subject), default=str)


class Validator:
    """A programmatic judge: ``check(subject)`` (sync or async) returns ``None``/``True`` to pass, a
    string (the reason) or ``False`` to fail. An exception fails the subject with the exception's text: a
    check that cannot run has not passed it.
    """

    def __init__(
        self, check: Callable[[Any], bool | str | Awaitable[bool | str | None] | None], *, name: str = ""
    ) -> None:
        self.check = check
        self.name = name or getattr(check, "__name__", "validator")

    async def _verdict(self, subject: Any) -> Verdict:
        try:
            out = self.check(subject)
            if inspect.isawaitable(out):
                out = await out
        except Exception as exc:
            return Verdict(
                passed=False, reason=f"the check raised {type(exc).__name__}: {exc}"[:2000], judge=self.name
            )
        if out is None or out is True:
            return Verdict(passed=True, judge=self.name)
        if out is False:
            return Verdict(passed=False, reason=f"{self.name} failed", judge=self.name)
        return Verdict(passed=False, reason=str(out)[:2000], judge=self.name)

    async def judge(self, ctx: RunContext, subject: Any) -> Verdict:
        """The verdict, journaled as the step ``judge:<name>``."""
        return await ctx.step(f"judge:{self.name}", self._verdict, subject, returns=Verdict)


def decided(votes: Sequence[tuple[bool, str, bool]], remaining: int) -> bool:
    """Whether ``remaining`` more votes can no longer change the majority (an unreadable one does not count):
    the passes already match the fails plus every vote to come, or the fails outnumber the passes plus them.

    >>> ok, bad = (True, "", False), (False, "", False)
    >>> decided([ok, ok], 1), decided([ok, bad], 1), decided([], 3), decided([bad, bad], 1)
    (True, False, False, True)
    """
    if not votes:
        return False
    fails = sum(1 for ok, _, _ in votes if not ok)
    passes = len(votes) - fails
    return passes >= fails + remaining or fails > passes + remaining


class LLMJudge:
    """A model that reads a rubric and the evidence and answers ``{"reason": ..., "verdict": ...}``.

    ``rubric``: the system prompt — what to check, when to fail. ``evidence(subject)``: the text the judge
    reads (default :func:`default_evidence`). ``votes``: ask up to this many times (the first at
    temperature 0, the others sampled) and fail only when more than half of the readable votes fail — a
    single unlucky sample of a small model then cannot fail a correct result. Asking stops once the votes
    still to come could not change the majority (two of three agree: the third is not asked).
    ``unreadable``: the verdict when a reply is not the JSON asked for (default pass: a judge that cannot say
    what is wrong has not found a fault).

    ``schema``: the reply's JSON schema when the rubric asks for more than ``reason`` and ``verdict``
    (it must keep both). ``check_fail(subject, reply)``: a failing vote counts only if its reply holds
    against the evidence — the function returns why it does not (the vote then counts as a pass, and
    ``Verdict.dismissed`` counts it) or ``None``. A fail must point at something checkable; a small model's
    vague doubt is not a reason to revise a correct output.
    """

    def __init__(
        self,
        model: Model,
        *,
        rubric: str,
        evidence: Callable[[Any], str] = default_evidence,
        name: str = "llm_judge",
        votes: int = 1,
        max_tokens: int = 120,
        unreadable: Literal["pass", "fail"] = "pass",
        schema: dict[str, Any] | None = None,
        check_fail: Callable[[Any, Mapping[str, Any]], str | None] | None = None,
    ) -> None:
        if votes < 1:
            raise GuardConfigError(f"LLMJudge(votes={votes}): must be at least 1")
        schema = schema if schema is not None else VERDICT_SCHEMA
        if not {"reason", "verdict"} <= set(schema.get("required") or ()):
            raise GuardConfigError("LLMJudge(schema=...): the reply must require 'reason' and 'verdict'")
        self.schema = schema
        self.check_fail = check_fail
        self.model = model
        self.rubric = rubric
        self.evidence = evidence
        self.name = name
        self.votes = votes
        self.max_tokens = max_tokens
        self.unreadable = unreadable

    def _read(self, text: str) -> dict[str, Any] | None:
        try:
            data = json.loads(text)
        except ValueError:
            return None
        if not isinstance(data, dict) or data.get("verdict") not in ("pass", "fail"):
            return None
        return data

    def _vote(self, subject: Any, data: dict[str, Any]) -> tuple[bool, str, bool]:
        """``(passed, reason, dismissed)`` of one readable reply, its fail checked by ``check_fail``."""
        reason = str(data.get("reason") or "")[:500]
        if data["verdict"] == "pass":
            return True, reason, False
        if self.check_fail is not None:
            why_not = self.check_fail(subject, data)
            if why_not:
                return True, f"a fail was dismissed: {why_not}"[:500], True
        return False, reason, False

    async def judge(self, ctx: RunContext, subject: Any) -> Verdict:
        """Ask the model ``votes`` times (each a durable model step); the verdict is journaled as
        ``judge:<name>``."""
        messages: list[Message] = [
            SystemMessage(content=self.rubric),
            UserMessage(content=self.evidence(subject)),
        ]
        schema = OutputSchema(name="verdict", json_schema=self.schema)
        usage = Usage()
        votes: list[tuple[bool, str, bool]] = []
        calls = 0
        while calls < self.votes and not decided(votes, self.votes - calls):
            settings = ModelSettings(
                max_tokens=self.max_tokens, temperature=0.0 if calls == 0 else 0.7, seed=calls
            )
            response = await durable_request(
                ctx, self.model, messages, output_schema=schema, settings=settings
            )
            calls += 1
            usage = usage + response.usage
            read = self._read(response.message.content or "")
            if read is not None:
                votes.append(self._vote(subject, read))
        verdict = self._tally(votes, usage, calls)
        return await ctx.step(f"judge:{self.name}", lambda: verdict, returns=Verdict)

    def _tally(self, votes: list[tuple[bool, str, bool]], usage: Usage, calls: int) -> Verdict:
        dismissed = sum(1 for _, _, d in votes if d)

        def verdict(passed: bool, reason: str) -> Verdict:
            return Verdict(
                passed=passed,
                reason=reason,
                judge=self.name,
                usage=usage,
                calls=calls,
                dismissed=dismissed,
            )

        if not votes:
            return verdict(self.unreadable == "pass", "the judge's reply was not readable")
        fails = [reason for ok, reason, _ in votes if not ok]
        if len(fails) * 2 > len(votes):
            return verdict(False, fails[0])
        # A pass's reason: a vote that passed on its own before one whose fail was dismissed.
        passes = sorted(((d, reason) for ok, reason, d in votes if ok), key=lambda p: p[0])
        return verdict(True, passes[0][1])


@dataclass(frozen=True, kw_only=True)
class Judging:
    """Judges attached to an agent or a node, and what a fail does.

    ``max_revisions``: how many times a failed output goes back with the reason. ``on_exhausted``, after the
    last revision still fails: ``"fail"`` the run with the judges' reason, ``"accept"`` the output with the
    reason as a caution, or ``"escalate"`` to a human (an approval request, with ``escalation``'s deadline
    and notification; the human approves, rejects, or edits the output). ``max_calls``/``max_tokens``:
    the judges' own budget per run; once spent, outputs are no longer judged (and the report says so).
    """

    judges: Sequence[Judge]
    max_revisions: int = 1
    on_exhausted: Literal["fail", "accept", "escalate"] = "fail"
    escalation: ApprovalPolicy | None = None
    max_calls: int | None = 20
    max_tokens: int | None = None

    def __post_init__(self) -> None:
        if not self.judges:
            raise GuardConfigError("Judging(judges=[]): attach at least one judge")
        for judge in self.judges:
            if not isinstance(judge, Judge):
                raise GuardConfigError(f"Judging: {judge!r} is not a judge (it needs .name and async .judge)")
        if self.max_revisions < 0:
            raise GuardConfigError(f"Judging(max_revisions={self.max_revisions}): must be 0 or more")
        if self.on_exhausted not in ("fail", "accept", "escalate"):
            raise GuardConfigError(f"Judging(on_exhausted={self.on_exhausted!r}): fail, accept or escalate")
        for name, value in (("max_calls", self.max_calls), ("max_tokens", self.max_tokens)):
            if value is not None and value < 1:
                raise GuardConfigError(f"Judging({name}={value}): must be positive, or None for no limit")


@dataclass
class JudgeState:
    """The judges' spending in one run: rebuilt by replay, like :class:`~corral.guards.GuardState`."""

    judging: Judging
    calls: int = 0
    usage: Usage = field(default_factory=Usage)
    revisions: int = 0

    def spent(self) -> str:
        """Why the budget is spent, or ``""``."""
        j = self.judging
        if j.max_calls is not None and self.calls >= j.max_calls:
            return f"the judges' budget of {j.max_calls} model calls is spent"
        if j.max_tokens is not None and self.usage.total_tokens >= j.max_tokens:
            return f"the judges' budget of {j.max_tokens} tokens is spent"
        return ""

    async def check(self, ctx: RunContext, subject: Any) -> JudgeReport:
        """One round: each judge in turn (the budget checked before each)."""
        verdicts: list[Verdict] = []
        for judge in self.judging.judges:
            spent = self.spent()
            if spent:
                return JudgeReport(verdicts=verdicts, skipped=spent)
            verdict = await judge.judge(ctx, subject)
            self.calls += verdict.calls
            self.usage = self.usage + verdict.usage
            verdicts.append(verdict)
        return JudgeReport(verdicts=verdicts)


class Judged(BaseModel, Generic[T]):
    """How judging ended. ``outcome``: ``passed``; ``accepted`` (failed, accepted by ``on_exhausted``,
    ``reason`` is the caution); ``approved`` (a human approved it, or with ``edited`` its corrected
    output); ``failed`` (``reason`` says why)."""

    output: T
    outcome: Literal["passed", "accepted", "approved", "failed"]
    reason: str = ""
    edited: bool = False
    revisions: int = 0
    report: JudgeReport = Field(default_factory=JudgeReport)

    @property
    def ok(self) -> bool:
        """Whether the output may be used."""
        return self.outcome != "failed"


async def exhausted(
    ctx: RunContext, judging: Judging, output: Any, report: JudgeReport, revisions: int
) -> Judged[Any]:
    """What ``on_exhausted`` does with an output that still fails after the last revision."""
    if judging.on_exhausted == "accept":
        return Judged(
            output=output, outcome="accepted", reason=report.reason, revisions=revisions, report=report
        )
    if judging.on_exhausted == "fail":
        return Judged(
            output=output, outcome="failed", reason=report.reason, revisions=revisions, report=report
        )
    decision = await request_approval(
        ctx,
        "judge_escalation",
        {"output": to_jsonable_python(output), "judges_said": report.reason},
        policy=judging.escalation,
        why=f"the judges failed the output after {revisions} revision(s): {report.reason}"[:1000],
    )
    if not decision.approved:
        reason = f"a human agreed with the judges: {decision.reason}"
        return Judged(output=output, outcome="failed", reason=reason, revisions=revisions, report=report)
    edited = decision.arguments is not None and "output" in decision.arguments
    final = decision.arguments["output"] if edited and decision.arguments is not None else output
    return Judged(
        output=final,
        outcome="approved",
        reason=f"approved by {decision.by} over the judges: {decision.reason}",
        edited=edited,
        revisions=revisions,
        report=report,
    )


async def judged(
    ctx: RunContext,
    produce: Callable[[str | None], Awaitable[T]],
    judging: Judging,
    *,
    subject: Callable[[T], Any] | None = None,
) -> Judged[Any]:
    """Produce an output, judge it, and revise it while the judges fail it and revisions are left.

    ``produce(feedback)`` makes the output: ``feedback`` is ``None`` the first time and then the judges'
    reason. Make it a durable step (or steps) of its own. ``subject(output)`` is what the judges see
    (default: the output). After the last revision, ``judging.on_exhausted`` decides (see :class:`Judged`).
    """
    state = JudgeState(judging)
    feedback: str | None = None
    while True:
        output = await produce(feedback)
        report = await state.check(ctx, output if subject is None else subject(output))
        if report.passed:
            return Judged(output=output, outcome="passed", revisions=state.revisions, report=report)
        if state.revisions >= judging.max_revisions:
            return await exhausted(ctx, judging, output, report, state.revisions)
        state.revisions += 1
        feedback = report.reason
