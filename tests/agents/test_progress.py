"""The terminal renderer of agent events (``corral.apps.cli._progress``): live, JSON lines, quiet."""

from __future__ import annotations

import io

from rich.console import Console

from corral.agents import Agent, RunFinished, event_adapter
from corral.apps.cli._progress import Progress
from corral.durable import MemoryJournal, Runtime
from corral.guards import Guards
from corral.models import ScriptedModel
from corral.tools import tool


@tool
def lookup(city: str) -> str:
    """Look a city up."""
    if city == "Atlantis":
        raise LookupError("no such city")
    return f"{city} " + "is lovely " * 100


def run(progress: Progress, script: list[object], **guards: int) -> None:
    agent = Agent(ScriptedModel(script), tools=[lookup], guards=Guards(**guards), on_event=progress)  # type: ignore[arg-type]
    agent.run_sync("go", runtime=Runtime(MemoryJournal()), run_id="p1")


def live(width: int = 200) -> tuple[Progress, io.StringIO]:
    out = io.StringIO()
    return Progress(console=Console(file=out, width=width, color_system=None), max_chars=60), out


def test_live_mode_shows_calls_results_errors_and_the_end() -> None:
    progress, out = live()
    run(progress, [("lookup", {"city": "Oslo"}), ("lookup", {"city": "Atlantis"}), ("nope", {}), "Done."])
    text = out.getvalue()
    assert "▶ run p1 · model scripted · tools: lookup" in text
    assert 'turn 1 · calls lookup(city="Oslo")' in text
    # A long result is cut to max_chars.
    assert "lookup → Oslo is lovely" in text and "…" in text and "is lovely " * 10 not in text
    assert "✗ lookup raised: Tool 'lookup' failed with LookupError: no such city" in text
    assert "↺ unknown_tool: There is no tool named 'nope'" in text
    assert "✔ completed · 4 turns · 2 tool calls" in text


def test_live_mode_explains_a_guard_stop() -> None:
    progress, out = live()
    run(progress, [("lookup", {"city": "Oslo"})] * 5, max_identical_calls=2)
    text = out.getvalue()
    assert "■ stopped: loop_detected — 'lookup' was called 2 times in a row" in text
    assert "✘ stopped" in text


def test_json_mode_writes_one_parseable_event_per_line() -> None:
    out = io.StringIO()
    run(Progress("json", file=out), [("lookup", {"city": "Oslo"}), "Done."])
    events = [event_adapter.validate_json(line) for line in out.getvalue().splitlines()]
    assert [e.type for e in events] == [
        "run_started",
        "model_responded",
        "tool_called",
        "tool_returned",
        "model_responded",
        "run_finished",
    ]
    assert isinstance(events[-1], RunFinished) and events[-1].output == "Done."


def test_quiet_mode_prints_nothing() -> None:
    out = io.StringIO()
    console = Console(file=out)
    run(Progress("quiet", console=console, file=out), [("lookup", {"city": "Oslo"}), "Done."])
    assert out.getvalue() == ""


def test_modes_from_command_flags() -> None:
    assert Progress.from_flags().mode == "live"
    assert Progress.from_flags(quiet=True).mode == "quiet"
    assert Progress.from_flags(json=True, quiet=True).mode == "json"
