"""Human approval as a durable wait, and the API that decides it.

The run side (:func:`request_approval`): a call that needs approval journals its request (a step that also
writes the request to the journal's ledger and notifies), then waits for the signal ``approval:<id>`` with
``ctx.wait`` — the run *parks*: no thread, no process, for minutes or days, across restarts. When it wakes,
it reads the decision from the ledger in a step and checks that it was made for this run, this step and
these arguments (their hash); anything else — a signal sent by hand, a decision copied from another
request — is refused. A deadline wakes the run too, and the policy's default decision is recorded in the
ledger under the same compare-and-set, so a human and the deadline cannot both decide.

The deciding side (:class:`Approvals`, and ``corral approvals``): list, show, approve, reject (the reason
goes to the model as the tool's result), edit (the call runs with corrected arguments). Each decision
records who, when and why, and is accepted once.

>>> import asyncio
>>> from corral.durable import MemoryJournal, Runtime, RunSuspended
>>> rt = Runtime(MemoryJournal())
>>> async def deploy(ctx, version):
...     decision = await request_approval(ctx, "deploy", {"version": version})
...     return "deployed" if decision.approved else f"not deployed: {decision.reason}"
>>> try:
...     rt.run_sync(deploy, "1.2", run_id="d1")
... except RunSuspended:
...     print("parked")
parked
>>> approvals = Approvals(rt)
>>> [(a.action, a.arguments, a.status) for a in approvals.list()]
[('deploy', {'version': '1.2'}, 'pending')]
>>> approvals.reject(approvals.list()[0].id, by="ops", reason="freeze until Monday").status
'rejected'
>>> asyncio.run(rt.resume("d1"))
'not deployed: freeze until Monday'
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import inspect
import json
import logging
import os
import shlex
from collections.abc import Sequence
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from corral._config import get_setting
from corral._errors import UsageError
from corral.durable import (
    Ledger,
    LedgerRecord,
    RunContext,
    RunNotFound,
    RunStatus,
    Runtime,
    WaitTimeout,
    ledger_for,
)
from corral.guards._approval import ApprovalDecision
from corral.guards._policy import ApprovalPolicy, Notify
from corral.guards.errors import (
    ApprovalAlreadyDecided,
    ApprovalError,
    ApprovalMismatch,
    ApprovalNotFound,
)

_log = logging.getLogger("corral.guards")

#: The ledger kind of approval requests.
KIND = "approval"
#: What a decider's edited arguments may weigh (they are journaled and shown to the model's tool).
MAX_ARGUMENTS_BYTES = 64 * 1024

ApprovalStatus = Literal["pending", "approved", "rejected", "edited", "expired"]
_STATUS_OF = {"approve": "approved", "reject": "rejected", "edit": "edited"}


class Decision(BaseModel):
    """A decision on one request: who, when (epoch seconds), why, and the arguments hash it was made for.

    ``outcome`` ``"edit"`` approves the call with ``arguments`` instead of the requested ones. ``expired``
    marks the policy's default decision, taken at the deadline (``by`` is ``"timeout"``).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    outcome: Literal["approve", "reject", "edit"]
    by: str = Field(min_length=1, max_length=200)
    at: float
    reason: str = Field(default="", max_length=4000)
    arguments: dict[str, Any] | None = None
    args_hash: str
    expired: bool = False


class ApprovalRecord(BaseModel):
    """One approval request as the ledger stores it: bound to its run, its step (``position``) and the
    hash of its action and arguments; ``decision`` is ``None`` while it is pending."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    id: str
    run_id: str
    position: int
    action: str
    arguments: dict[str, Any]
    args_hash: str
    why: str = ""
    created_at: float
    deadline: float | None = None
    on_timeout: Literal["approve", "reject"] = "reject"
    decision: Decision | None = None

    @property
    def status(self) -> ApprovalStatus:
        """``pending``, or how it was decided (``expired``: the deadline's default decided)."""
        if self.decision is None:
            return "pending"
        if self.decision.expired:
            return "expired"
        status: ApprovalStatus = _STATUS_OF[self.decision.outcome]  # type: ignore[assignment]
        return status

    @property
    def signal(self) -> str:
        """The signal the parked run waits for."""
        return f"approval:{self.id}"

    def as_decision(self) -> ApprovalDecision:
        """The decision as the agent loop reads it (``arguments`` set when a human edited the call)."""
        d = self.decision
        if d is None:
            raise UsageError(f"approval {self.id!r} is still pending")
        reason = d.reason or ("approved" if d.outcome != "reject" else "rejected")
        return ApprovalDecision(
            approved=d.outcome != "reject",
            reason=reason,
            by=d.by,
            arguments=d.arguments if d.outcome == "edit" else None,
        )


def arguments_hash(action: str, arguments: Any) -> str:
    """SHA-256 of the action and its arguments as canonical JSON (sorted keys): what a decision binds to.

    >>> arguments_hash("t", {"a": 1, "b": 2}) == arguments_hash("t", {"b": 2, "a": 1})
    True
    """
    text = json.dumps(
        {"action": action, "arguments": arguments}, sort_keys=True, separators=(",", ":"), default=str
    )
    return hashlib.sha256(text.encode()).hexdigest()


def approval_id(run_id: str, position: int) -> str:
    """The id of the request a run makes at a step position: short, stable across replays.

    >>> approval_id("r1", 3)
    'ap-...'
    """
    return "ap-" + hashlib.sha256(f"{run_id}\x00{position}".encode()).hexdigest()[:12]


def _parse(record: LedgerRecord | None) -> ApprovalRecord | None:
    if record is None:
        return None
    try:
        return ApprovalRecord.model_validate_json(record.data)
    except ValidationError:
        return None


# -- the run side ----------------------------------------------------------------------------------------


async def request_approval(
    ctx: RunContext,
    action: str,
    arguments: dict[str, Any],
    *,
    policy: ApprovalPolicy | None = None,
    why: str = "",
) -> ApprovalDecision:
    """Ask a human to decide ``action(arguments)`` and wait for the decision, parked.

    For workflow nodes and any run function: ``decision.approved`` says whether to go on,
    ``decision.reason`` why, and ``decision.arguments`` (when not ``None``) are the arguments a human
    corrected — run the action with those. ``policy`` gives the deadline, its default decision and the
    notification (default: wait for ever, notify per the ``approval_notify`` setting).
    """
    policy = policy or ApprovalPolicy()
    ledger = ledger_for(ctx)
    created = ctx.now().timestamp()
    record = ApprovalRecord(
        id=approval_id(ctx.run_id, ctx.position),
        run_id=ctx.run_id,
        position=ctx.position,
        action=action,
        arguments=arguments,
        args_hash=arguments_hash(action, arguments),
        why=why,
        created_at=created,
        deadline=None if policy.timeout_s is None else created + policy.timeout_s,
        on_timeout=policy.on_timeout,
    )
    record = await ctx.step(
        f"approval.request:{action}", _open, ledger, record, policy.notify, returns=ApprovalRecord
    )
    decided = await _await_decision(ctx, ledger, record)
    return decided.as_decision()


async def _await_decision(ctx: RunContext, ledger: Ledger, record: ApprovalRecord) -> ApprovalRecord:
    now = record.created_at
    while True:
        timeout = None if record.deadline is None else max(record.deadline - now, 0.0)
        try:
            await ctx.wait(record.signal, timeout=timeout)
        except WaitTimeout:
            return await ctx.step("approval.expire", _expire, ledger, record, returns=ApprovalRecord)
        found: ApprovalRecord = await ctx.step(
            "approval.check", _check, ledger, record, returns=ApprovalRecord
        )
        if found.decision is not None:
            return found
        # Woken without a decision in the ledger: a signal sent by hand, or a forged one. Wait again.
        _log.warning(
            "run %s: approval %s woke without a recorded decision; waiting on", ctx.run_id, record.id
        )
        now = ctx.now().timestamp()


async def _open(ledger: Ledger, record: ApprovalRecord, notify: Notify | None) -> ApprovalRecord:
    fresh = LedgerRecord(
        KIND,
        record.id,
        record.run_id,
        "pending",
        record.model_dump_json(),
        record.created_at,
        record.created_at,
    )
    if not ledger.insert(fresh):
        # This step ran before and the process died before its result was journaled: the same request.
        existing = _parse(ledger.get(KIND, record.id))
        if existing is None or (existing.run_id, existing.args_hash) != (record.run_id, record.args_hash):
            raise ApprovalMismatch(
                f"run {record.run_id!r}: the ledger holds another request under id {record.id!r}"
            )
        if existing.decision is not None:
            return existing
    await _notify(record, notify)
    return record


async def _notify(record: ApprovalRecord, notify: Notify | None) -> None:
    """Tell someone a request waits. Never fails the run: a broken hook is logged, the request stays."""
    if notify is None:
        command = get_setting("approval_notify", default="")
        notify = shlex.split(command) if command else None
    if notify is None:
        return
    try:
        if callable(notify):
            out = notify(record)
            if inspect.isawaitable(out):
                await out
            return
        proc = await asyncio.create_subprocess_exec(
            *notify,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
            env={**os.environ, "CORRAL_APPROVAL_ID": record.id, "CORRAL_RUN_ID": record.run_id},
        )
        try:
            _, err = await asyncio.wait_for(proc.communicate(record.model_dump_json().encode()), 10.0)
        except TimeoutError:
            proc.kill()
            await proc.wait()
            _log.warning("approval %s: the notify command %s took over 10 s; killed", record.id, notify)
            return
        if proc.returncode:
            _log.warning(
                "approval %s: the notify command %s exited %s: %s",
                record.id,
                notify,
                proc.returncode,
                err.decode(errors="replace")[:500],
            )
    except Exception:
        _log.exception("approval %s: notifying %r failed", record.id, notify)


def _verified(found: ApprovalRecord | None, expected: ApprovalRecord) -> ApprovalRecord:
    """The ledger's record if it belongs to this request; else a refusal (the action must not run)."""
    if found is not None and found.decision is None:
        return expected
    bound = (expected.run_id, expected.position, expected.action, expected.args_hash)
    if (
        found is not None
        and found.decision is not None
        and (found.run_id, found.position, found.action, found.args_hash) == bound
        and found.decision.args_hash == expected.args_hash
    ):
        return found
    refusal = Decision(
        outcome="reject",
        by="corral",
        at=expected.created_at,
        reason="the decision recorded for this request was not made for this call (another run, step or "
        "arguments): refused",
        args_hash=expected.args_hash,
    )
    return expected.model_copy(update={"decision": refusal})


def _check(ledger: Ledger, record: ApprovalRecord) -> ApprovalRecord:
    return _verified(_parse(ledger.get(KIND, record.id)), record)


def _expire(ledger: Ledger, record: ApprovalRecord) -> ApprovalRecord:
    default = Decision(
        outcome=record.on_timeout,
        by="timeout",
        at=record.deadline if record.deadline is not None else record.created_at,
        reason=f"nobody decided before the deadline; the policy's default is to {record.on_timeout}",
        args_hash=record.args_hash,
        expired=True,
    )
    decided = record.model_copy(update={"decision": default})
    changed = ledger.transition(
        KIND, record.id, expect="pending", to="decided", data=decided.model_dump_json(), now=default.at
    )
    if changed is not None:
        return decided
    # A human decided just before the deadline woke the run: that decision stands (its signal is moot).
    return _check(ledger, record)


# -- the deciding side -----------------------------------------------------------------------------------


class Approvals:
    """Decide approval requests of the runs in ``runtime``'s journal: the Python API that
    ``corral approvals`` (and an HTTP API) are thin layers over.

    It lives in guards, not on ``Runtime``: the durable layer knows signals and the ledger, not what an
    approval is. ``Approvals(runtime)`` costs nothing to build; make one where you need it.
    """

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self.ledger = ledger_for(runtime.journal)

    def list(
        self,
        *,
        status: ApprovalStatus | Sequence[ApprovalStatus] | None = "pending",
        run_id: str | None = None,
        limit: int = 100,
    ) -> list[ApprovalRecord]:
        """Requests, most recently changed first: the pending ones by default, ``status=None`` for all."""
        wanted = None if status is None else {status} if isinstance(status, str) else set(status)
        states = None if wanted is None else ["pending"] if wanted == {"pending"} else None
        found: list[ApprovalRecord] = []
        offset = 0
        while len(found) < limit:
            page = self.ledger.list(KIND, states=states, limit=500, offset=offset)
            for row in page:
                record = _parse(row)
                if record is None or (run_id is not None and record.run_id != run_id):
                    continue
                if wanted is None or record.status in wanted:
                    if record.decision is None and self._orphaned(record):
                        continue
                    found.append(record)
            if len(page) < 500:
                break
            offset += 500
        return found[:limit]

    def _orphaned(self, record: ApprovalRecord) -> bool:
        # A pending request of a run that ended (cancelled) can never be decided: not worth listing.
        run = self.runtime.journal.get_run(record.run_id)
        return run is None or run.status.is_final

    def get(self, approval_id: str) -> ApprovalRecord:
        """The request; ``ApprovalNotFound`` if there is none."""
        record = _parse(self.ledger.get(KIND, approval_id))
        if record is None:
            raise ApprovalNotFound(approval_id)
        return record

    def approve(
        self, approval_id: str, *, by: str, reason: str = "", args_hash: str | None = None
    ) -> ApprovalRecord:
        """Approve the call as requested. ``args_hash`` (from ``show``): refuse if the request is not the
        one the decider looked at."""
        return self._decide(approval_id, "approve", by=by, reason=reason, args_hash=args_hash)

    def reject(
        self, approval_id: str, *, by: str, reason: str, args_hash: str | None = None
    ) -> ApprovalRecord:
        """Refuse the call; ``reason`` goes to the model as the tool's result."""
        if not reason.strip():
            raise UsageError("a rejection needs a reason: the model reads it as the tool's result")
        return self._decide(approval_id, "reject", by=by, reason=reason, args_hash=args_hash)

    def edit(
        self,
        approval_id: str,
        *,
        by: str,
        arguments: dict[str, Any],
        reason: str = "",
        args_hash: str | None = None,
    ) -> ApprovalRecord:
        """Approve the call with corrected ``arguments`` (the tool validates them before it runs)."""
        if not isinstance(arguments, dict):
            raise UsageError(f"edited arguments must be a JSON object, not {type(arguments).__name__}")
        size = len(json.dumps(arguments, default=str))
        if size > MAX_ARGUMENTS_BYTES:
            raise UsageError(f"edited arguments are {size} bytes; at most {MAX_ARGUMENTS_BYTES} are accepted")
        return self._decide(
            approval_id, "edit", by=by, reason=reason, args_hash=args_hash, arguments=arguments
        )

    def _decide(
        self,
        approval_id: str,
        outcome: Literal["approve", "reject", "edit"],
        *,
        by: str,
        reason: str,
        args_hash: str | None,
        arguments: dict[str, Any] | None = None,
    ) -> ApprovalRecord:
        if not by.strip():
            raise UsageError("say who decides (by=...): every decision records who made it")
        record = self.get(approval_id)
        if record.decision is not None:
            raise ApprovalAlreadyDecided(approval_id, record.status, record.decision.by)
        if args_hash is not None and args_hash != record.args_hash:
            raise ApprovalMismatch(
                f"approval {approval_id!r} is for arguments with hash {record.args_hash[:12]}…, not "
                f"{args_hash[:12]}…: look at the request again (`corral approvals show {approval_id}`)"
            )
        run = self.runtime.journal.get_run(record.run_id)
        if run is None or run.status.is_final:
            state = "gone" if run is None else run.status.value
            raise ApprovalError(
                f"approval {approval_id!r}: its run {record.run_id!r} is {state}; there is nothing to decide"
            )
        try:
            decision = Decision(
                outcome=outcome,
                by=by.strip(),
                at=self.runtime.clock.time(),
                reason=reason,
                arguments=arguments,
                args_hash=record.args_hash,
            )
        except ValidationError as exc:
            raise UsageError(f"approval {approval_id!r}: the decision is not valid: {exc}") from exc
        decided = record.model_copy(update={"decision": decision})
        changed = self.ledger.transition(
            KIND, approval_id, expect="pending", to="decided", data=decided.model_dump_json(), now=decision.at
        )
        if changed is None:  # another decider (or the deadline) got there first
            other = self.get(approval_id)
            by_whom = other.decision.by if other.decision is not None else "?"
            raise ApprovalAlreadyDecided(approval_id, other.status, by_whom)
        self._wake(decided)
        return decided

    def _wake(self, record: ApprovalRecord) -> None:
        with contextlib.suppress(RunNotFound):
            self.runtime.send_signal(record.run_id, record.signal, {"approval": record.id})

    def deliver(self, *, recent: int = 200) -> int:
        """Wake runs still parked on a decision that is recorded (a decider that died between recording
        and signalling leaves one). Looks at the ``recent`` latest decisions; returns how many it woke."""
        woken = 0
        for row in self.ledger.list(KIND, states=["decided"], limit=recent):
            record = _parse(row)
            if record is None or record.decision is None or record.decision.expired:
                continue
            run = self.runtime.journal.get_run(record.run_id)
            if run is not None and run.status is RunStatus.WAITING and run.waiting_for == record.signal:
                self._wake(record)
                woken += 1
        return woken
