"""Typed tools: schema from hints, validation written for the model, bulkhead, timeout, injection."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Annotated

import pytest
from pydantic import BaseModel, Field

import corral.tools
from corral.tools import (
    Tool,
    ToolArgumentsError,
    ToolBusyError,
    ToolContext,
    ToolDefinitionError,
    ToolRaisedError,
    ToolTimeoutError,
    as_tool,
    format_result,
    tool,
)


def test_public_names_are_sorted_and_exported() -> None:
    assert corral.tools.__all__ == sorted(corral.tools.__all__)
    for name in corral.tools.__all__:
        assert hasattr(corral.tools, name)


class Point(BaseModel):
    x: float
    y: float


@tool
def distance(a: Point, b: Point, scale: float = 1.0) -> float:
    """Distance between two points.

    Args:
        a: the first point
        b: the second point,
            on a continuation line
        scale: multiply the result by this

    Returns:
        the distance
    """
    return float(((a.x - b.x) ** 2 + (a.y - b.y) ** 2) ** 0.5 * scale)


def test_definition_comes_from_name_docstring_and_hints() -> None:
    definition = distance.definition
    assert definition.name == "distance"
    assert definition.description == "Distance between two points."
    params = definition.parameters
    assert params["type"] == "object"
    assert params["required"] == ["a", "b"]
    assert params["properties"]["scale"] == {
        "default": 1.0,
        "description": "multiply the result by this",
        "type": "number",
    }
    assert params["properties"]["b"]["description"] == "the second point, on a continuation line"
    assert params["additionalProperties"] is False
    # Nested models are referenced, and no pydantic "title" noise reaches the model.
    assert "$defs" in params and "Point" in params["$defs"]
    assert "title" not in params and "title" not in params["properties"]["scale"]


def test_options_and_overrides() -> None:
    @tool(name="lookup-city", description="Find a city.", timeout=2, max_concurrency=3, side_effects=True)
    def find(name: Annotated[str, Field(min_length=2, description="city name")]) -> str:
        return name

    assert find.name == "lookup-city" and find.description == "Find a city."
    assert (find.timeout, find.max_concurrency, find.side_effects, find.needs_approval) == (2, 3, True, False)
    assert find.definition.parameters["properties"]["name"]["minLength"] == 2
    assert find("Oslo") == "Oslo"  # still callable as the function


async def test_arguments_are_validated_and_coerced_before_the_call() -> None:
    result = await distance.call({"a": {"x": 0, "y": 0}, "b": {"x": "3", "y": 4}})
    assert result == 5.0


async def test_validation_error_lists_each_problem_and_the_schema() -> None:
    with pytest.raises(ToolArgumentsError) as info:
        await distance.call({"a": {"x": 0}, "b": {"x": "far", "y": 1}, "color": "red"})
    message = str(info.value)
    assert "Invalid arguments for tool 'distance'" in message
    assert "- a.y: required but missing" in message
    assert "- b.x: Input should be a valid number" in message and '"far"' in message
    assert "- color: not an argument of this tool" in message
    assert '"required": ["a", "b"]' in message  # the schema to follow
    assert info.value.tool == "distance"


async def test_arguments_that_are_not_an_object_are_refused() -> None:
    with pytest.raises(ToolArgumentsError, match="must be a JSON object"):
        await distance.call(None)


async def test_sync_and_async_functions_both_work() -> None:
    @tool
    async def double(n: int) -> int:
        await asyncio.sleep(0)
        return n * 2

    @tool
    def thread_name() -> str:
        return threading.current_thread().name

    assert await double.call({"n": 21}) == 42
    # Sync tools run off the event loop, in a thread of their own.
    assert await thread_name.call({}) == "corral-tool"


async def test_an_exception_becomes_a_tool_error_with_its_cause() -> None:
    @tool
    def divide(a: float, b: float) -> float:
        return a / b

    with pytest.raises(ToolRaisedError) as info:
        await divide.call({"a": 1, "b": 0})
    assert "ZeroDivisionError: float division by zero" in str(info.value)
    assert isinstance(info.value.__cause__, ZeroDivisionError)


async def test_a_hung_sync_tool_times_out_without_hanging_the_caller() -> None:
    release = threading.Event()

    @tool(timeout=0.2)
    def hang() -> str:
        release.wait(30)
        return "late"

    started = time.perf_counter()
    with pytest.raises(ToolTimeoutError) as info:
        await hang.call({})
    assert time.perf_counter() - started < 2
    assert info.value.timeout_s == 0.2 and "did not finish within 0.2 s" in str(info.value)
    release.set()


async def test_a_hung_async_tool_times_out_with_the_default_timeout() -> None:
    @tool
    async def hang() -> None:
        await asyncio.sleep(30)

    with pytest.raises(ToolTimeoutError):
        await hang.call({}, default_timeout=0.1)


async def test_the_tools_own_timeout_error_is_not_mistaken_for_ours() -> None:
    @tool(timeout=5)
    async def remote() -> None:
        raise TimeoutError("upstream took too long")

    with pytest.raises(ToolRaisedError, match="upstream took too long"):
        await remote.call({})


async def test_bulkhead_bounds_concurrency_and_rejects_beyond_the_queue() -> None:
    running = 0
    peak = 0
    gate = asyncio.Event()

    @tool(max_concurrency=2, max_queue=1)
    async def work(i: int) -> int:
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        await gate.wait()
        running -= 1
        return i

    tasks = [asyncio.create_task(work.call({"i": i})) for i in range(4)]
    for _ in range(5):
        await asyncio.sleep(0)
    gate.set()
    results = await asyncio.gather(*tasks, return_exceptions=True)
    busy = [r for r in results if isinstance(r, ToolBusyError)]
    assert len(busy) == 1 and "is busy" in str(busy[0])
    assert sorted(r for r in results if isinstance(r, int)) == [0, 1, 2]
    assert peak == 2


def test_bulkhead_works_across_event_loops() -> None:
    @tool(max_concurrency=1)
    async def one() -> int:
        return 1

    # asyncio primitives bind to a loop; a module-level tool must serve a new loop each time.
    assert asyncio.run(one.call({})) == 1
    assert asyncio.run(one.call({})) == 1


async def test_context_and_idempotency_key_are_injected_not_asked_for() -> None:
    seen: list[object] = []

    @tool(side_effects=True)
    def pay(amount: int, ctx: ToolContext, idempotency_key: str) -> str:
        seen.extend([ctx.run_id, ctx.tool_call_id, idempotency_key])
        return "paid"

    assert set(pay.definition.parameters["properties"]) == {"amount"}
    context = ToolContext(run_id="r1", tool_call_id="c7", tool_name="pay", idempotency_key="r1/1/c7")
    assert await pay.call({"amount": 5}, context) == "paid"
    assert seen == ["r1", "c7", "r1/1/c7"]


@pytest.mark.parametrize(
    ("source", "match"),
    [
        ("def f(x): return x", "has no type hint"),
        ("def f(*xs: int) -> int: return 0", "named arguments only"),
        ("def f(x: int, /) -> int: return x", "named arguments only"),
    ],
)
def test_functions_that_cannot_be_tools_are_refused(source: str, match: str) -> None:
    namespace: dict[str, object] = {}
    exec(source, namespace)
    with pytest.raises(ToolDefinitionError, match=match):
        as_tool(namespace["f"])  # type: ignore[arg-type]


def test_bad_names_and_limits_are_refused() -> None:
    def f() -> None: ...

    with pytest.raises(ToolDefinitionError, match="cannot be a tool name"):
        Tool(f, name="has space")
    with pytest.raises(ToolDefinitionError, match="timeout"):
        Tool(f, timeout=0)
    with pytest.raises(ToolDefinitionError, match="max_concurrency"):
        Tool(f, max_concurrency=0)


def test_format_result() -> None:
    assert format_result("text") == "text"
    assert format_result(Point(x=1, y=2)) == '{"x":1.0,"y":2.0}'
    assert format_result({"rows": [1, 2]}) == '{"rows":[1,2]}'
    assert format_result(None) == "null"
    assert format_result({"when": object}).startswith('{"when":"<class')


async def test_a_hung_sync_tool_does_not_block_the_next_calls() -> None:
    release = threading.Event()

    @tool(timeout=0.1)
    def hang() -> None:
        release.wait(30)

    @tool
    def slow_square(n: int) -> int:
        time.sleep(0.05)
        return n * n

    for _ in range(3):  # three worker threads stay stuck in hang()
        with pytest.raises(ToolTimeoutError):
            await hang.call({})
    started = time.perf_counter()
    squares = await asyncio.gather(*(slow_square.call({"n": n}) for n in range(8)))
    assert squares == [n * n for n in range(8)]
    assert time.perf_counter() - started < 0.4  # ran side by side in fresh workers, not behind the hung ones
    release.set()
