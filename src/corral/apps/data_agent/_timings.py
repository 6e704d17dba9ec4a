"""Where the time of one question goes, read back from the journal (``corral ask --timings``).

Every model call and query of a question is a journaled step with its start and end, and a model call's
recorded usage says how many prompt tokens it read, how many its cache already held, and (for a local model)
how long it spent reading the prompt and writing the reply. So the breakdown needs no instrumentation of
its own, and a run asked an hour ago (or in another process) can be broken down the same way. What happens
before the run (loading the model, starting the sandbox pool) is measured by :func:`warm_up`.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence

from pydantic import BaseModel, ConfigDict, ValidationError

from corral.durable import Journal, StepRecord, StepStatus
from corral.models import Model, Usage


class StepTime(BaseModel):
    """One leaf step of a question: a model call, a query, the schema scan, a chart."""

    model_config = ConfigDict(frozen=True)

    name: str
    seconds: float
    #: Model calls only: what the call read and wrote, and what its cache already held.
    input_tokens: int = 0
    cached_tokens: int = 0
    output_tokens: int = 0
    prompt_s: float = 0.0
    generation_s: float = 0.0


class Warmup(BaseModel):
    """What a process paid before its first question could start (0 when it was already warm)."""

    model_config = ConfigDict(frozen=True)

    model_load_s: float = 0.0
    pool_start_s: float = 0.0


class Timings(BaseModel):
    """A question's time, step by step, with the warm-up that preceded it."""

    model_config = ConfigDict(frozen=True)

    run_id: str
    warmup: Warmup = Warmup()
    steps: list[StepTime] = []
    #: From the first step's start to the last step's end (the run's own time, without the warm-up).
    run_s: float = 0.0

    def total(self, prefix: str) -> float:
        """Seconds of the steps whose name starts with ``prefix`` (``model:``, ``query``)."""
        return sum(s.seconds for s in self.steps if s.name.startswith(prefix))


def _usage(step: StepRecord) -> Usage | None:
    # The recorded value of a model step is a ModelResponse; only its usage is read, and strictly.
    if step.value is None:
        return None
    try:
        data = json.loads(step.value)
        return Usage.model_validate(data.get("usage", {})) if isinstance(data, dict) else None
    except (ValueError, ValidationError):
        return None


def _leaf(step: StepRecord) -> bool:
    # Node and workflow steps record transitions, after their inner steps: they would count time twice.
    return step.status in (StepStatus.OK, StepStatus.ERROR) and not step.name.startswith(
        ("node:", "workflow:")
    )


def run_timings(journal: Journal, run_id: str, warmup: Warmup | None = None) -> Timings:
    """The breakdown of run ``run_id`` from its journaled steps."""
    steps = journal.load_steps(run_id)
    out: list[StepTime] = []
    for step in steps:
        if not _leaf(step) or step.duration is None:
            continue
        usage = (_usage(step) if step.name.startswith("model:") else None) or Usage()
        out.append(
            StepTime(
                name=step.name,
                seconds=step.duration,
                input_tokens=usage.input_tokens,
                cached_tokens=usage.cached_tokens,
                output_tokens=usage.output_tokens,
                prompt_s=usage.prompt_s,
                generation_s=usage.generation_s,
            )
        )
    ended = [s.ended_at for s in steps if s.ended_at is not None]
    run_s = max(ended) - min(s.started_at for s in steps) if ended else 0.0
    return Timings(run_id=run_id, warmup=warmup or Warmup(), steps=out, run_s=run_s)


def warm_up(model: Model | None, *, sandbox: bool = True) -> Warmup:
    """Load ``model`` (a local one: its weights) and start the sandbox pool now, timing each; a second call
    in the same process finds both warm and takes no time."""
    load_s = pool_s = 0.0
    load = getattr(model, "load", None)
    if callable(load):
        started = time.perf_counter()
        load()
        load_s = time.perf_counter() - started
    if sandbox:
        from corral.sandbox import default_pool

        started = time.perf_counter()
        default_pool().start()
        pool_s = time.perf_counter() - started
    return Warmup(model_load_s=load_s, pool_start_s=pool_s)


def render(timings: Timings) -> list[str]:
    """The breakdown as lines a person reads."""
    w = timings.warmup
    lines = [f"warm-up: model load {w.model_load_s:.2f} s, sandbox pool start {w.pool_start_s:.2f} s"]
    for s in timings.steps:
        line = f"{s.name:<32} {s.seconds:6.2f} s"
        if s.name.startswith("model:"):
            line += (
                f"  prompt {s.input_tokens} tok ({s.cached_tokens} cached) {s.prompt_s:.2f} s,"
                f" reply {s.output_tokens} tok {s.generation_s:.2f} s"
            )
        lines.append(line)
    lines.append(
        f"run {timings.run_s:.2f} s: model calls {timings.total('model:'):.2f} s, "
        f"queries {timings.total('query'):.2f} s, other steps "
        f"{sum(s.seconds for s in timings.steps) - timings.total('model:') - timings.total('query'):.2f} s"
    )
    return lines


def summarise(all_timings: Sequence[Timings]) -> dict[str, float]:
    """Seconds summed over several questions, by kind (for a bench)."""
    steps = [s for t in all_timings for s in t.steps]
    return {
        "prompt_s": sum(s.prompt_s for s in steps),
        "generation_s": sum(s.generation_s for s in steps),
        "model_s": sum(s.seconds for s in steps if s.name.startswith("model:")),
        "query_s": sum(s.seconds for s in steps if s.name.startswith("query")),
        "run_s": sum(t.run_s for t in all_timings),
    }
