"""What the judge said about each result it saw, kept with the answer (not in the ``--json`` contract).

A question's judgements say whether the judge ran on a result or was skipped (and why), its verdict, and the
result it judged — so an evaluation can tell a correct result the judge failed (a *false fail*) from a
wrong one it caught, and a person can see what a revision replaced.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

#: Rows of a judged result kept with its judgement (the answer's own cap).
MAX_JUDGED_ROWS = 1000


class Judgement(BaseModel):
    """One result and the judge's verdict on it. ``verdict`` ``skipped``: the deterministic checks were
    conclusive (``reason`` says which); the judge was not asked."""

    model_config = ConfigDict(frozen=True)

    verdict: Literal["pass", "fail", "skipped"]
    reason: str = ""
    attempt: int = 0
    text: str = ""
    columns: list[str] = Field(default_factory=list)
    rows: list[list[Any]] = Field(default_factory=list)
    row_count: int = 0
