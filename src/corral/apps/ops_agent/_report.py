"""What a diagnosis is made of: evidence (tool outputs, redacted, each linked to its journal step),
hypotheses ranked by deterministic detectors, and the report."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field

#: The faults the detectors know. ``other`` is never produced by a detector.
Kind = Literal[
    "close_wait_leak",
    "memory_leak",
    "cpu_spin",
    "cpu_bound",
    "deadlock",
    "disk_full",
    "crash_loop",
    "crashed",
    "listen_overflow",
    "fd_leak",
    "thread_leak",
    "file_growth",
    "zombies",
    "memory_pressure",
]


class Evidence(BaseModel):
    """One tool output. ``ref`` is ``RUN_ID#POSITION``: the journal step that holds the output
    (``corral runs show RUN_ID`` lists it)."""

    id: str
    tool: str
    arguments: dict[str, Any] = Field(default_factory=dict)
    ok: bool = True
    data: Any = None
    error: str | None = None
    ref: str = ""


class Hypothesis(BaseModel):
    """A possible root cause: what, which process or file, how sure (0–1), and the evidence for it."""

    id: str
    kind: Kind
    title: str
    score: float
    evidence: list[str] = Field(default_factory=list)
    pid: int | None = None
    path: str | None = None
    facts: dict[str, Any] = Field(default_factory=dict)
    #: What would confirm or refute it: a backtrace of ``pid``, or another watch.
    check: Literal["backtrace", "rewatch"] | None = None
    checked: bool = False


class ActionOutcome(BaseModel):
    """A proposed remediation and what became of it."""

    action: str
    arguments: dict[str, Any]
    approval: Literal["approved", "edited", "rejected", "expired", "not_asked"] = "not_asked"
    decided_by: str | None = None
    reason: str | None = None
    executed: bool = False
    result: str | None = None
    verified: bool | None = None
    verification: str | None = None


class Report(BaseModel):
    """The diagnosis: the root cause (or none found), its confidence and evidence, the other hypotheses,
    the recommendation, and the remediation if one was proposed."""

    symptom: str
    status: Literal["diagnosed", "inconclusive"]
    cause: Hypothesis | None = None
    summary: str = ""
    #: The model's explanation of the cause, when there is a model and its reply passed the check.
    explanation: str | None = None
    confidence: float = 0.0
    alternatives: list[Hypothesis] = Field(default_factory=list)
    evidence: list[Evidence] = Field(default_factory=list)
    recommendation: str = ""
    remediation: ActionOutcome | None = None
    chosen_by: Literal["detectors", "model"] = "detectors"
    run_id: str = ""
    notes: list[str] = Field(default_factory=list)

    def cited(self) -> list[Evidence]:
        """The evidence the cause cites."""
        wanted = set(self.cause.evidence) if self.cause else set()
        return [e for e in self.evidence if e.id in wanted]
