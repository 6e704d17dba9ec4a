"""ScriptedModel: replies from a list or a function, checked like a real adapter's."""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from corral import UsageError
from corral.models import (
    AssistantMessage,
    Message,
    ModelResponse,
    OutputSchema,
    ScriptedModel,
    ToolCall,
    ToolDefinition,
    Usage,
    UserMessage,
)
from corral.models.errors import ScriptExhaustedError

ADD = ToolDefinition(
    name="add",
    description="Add two integers.",
    parameters={
        "type": "object",
        "properties": {"a": {"type": "integer"}, "b": {"type": "integer"}},
        "required": ["a", "b"],
    },
)
HELLO = [UserMessage(content="hello")]


async def test_list_script_in_order_and_counts_calls() -> None:
    model = ScriptedModel(
        ["one", AssistantMessage(content="two"), ModelResponse(message=AssistantMessage(content="3"))]
    )
    texts = [(await model.request(HELLO)).message.content for _ in range(3)]
    assert texts == ["one", "two", "3"]
    assert model.call_count == 3
    assert model.remaining == 0
    assert model.calls[0].messages == HELLO


async def test_exhausted_script_raises_a_usage_error_naming_the_count() -> None:
    model = ScriptedModel(["only"], name="tiny")
    await model.request(HELLO)
    with pytest.raises(ScriptExhaustedError, match=r"'tiny'.*reply #2.*holds 1") as info:
        await model.request(HELLO)
    assert isinstance(info.value, UsageError)


async def test_tool_call_shorthands() -> None:
    model = ScriptedModel(
        [
            ("add", {"a": 1, "b": 2}),
            ToolCall(id="mine", name="add", arguments={"a": 3, "b": 4}),
            [("add", {"a": 1, "b": 1}), ("add", '{"a": 2, "b": 2}')],
        ]
    )
    first = await model.request(HELLO, tools=[ADD])
    assert first.ok and first.finish_reason == "tool_calls"
    assert first.message.tool_calls[0].arguments == {"a": 1, "b": 2}
    second = await model.request(HELLO, tools=[ADD])
    assert second.message.tool_calls[0].id == "mine"
    third = await model.request(HELLO, tools=[ADD])
    assert [c.arguments for c in third.message.tool_calls] == [{"a": 1, "b": 1}, {"a": 2, "b": 2}]
    assert len({c.id for c in third.message.tool_calls}) == 2


async def test_malformed_output_becomes_problems_not_exceptions() -> None:
    model = ScriptedModel([("add", '{"a": 1,'), ("mul", {"a": 1}), ("add", {"a": "x", "b": 2}), "", "  "])
    bad_json = await model.request(HELLO, tools=[ADD])
    assert [p.kind for p in bad_json.problems] == ["invalid_arguments"]
    assert '{"a": 1,' in bad_json.problems[0].detail
    assert bad_json.message.tool_calls[0].raw_arguments == '{"a": 1,'
    unknown = await model.request(HELLO, tools=[ADD])
    assert unknown.problems[0].kind == "unknown_tool"
    assert "'mul'" in unknown.problems[0].detail and "add" in unknown.problems[0].detail
    wrong_type = await model.request(HELLO, tools=[ADD])
    assert wrong_type.problems[0].kind == "invalid_arguments"
    assert "at a:" in wrong_type.problems[0].detail
    for _ in range(2):
        empty = await model.request(HELLO, tools=[ADD])
        assert [p.kind for p in empty.problems] == ["empty_reply"]
        assert not empty.ok


async def test_truncated_and_structured_output_checks() -> None:
    schema = OutputSchema(
        name="answer",
        json_schema={"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]},
    )
    model = ScriptedModel(
        [
            ModelResponse(message=AssistantMessage(content='{"n": '), finish_reason="length"),
            '{"n": 4}',
            '{"n": "four"}',
            "four",
        ]
    )
    cut = await model.request(HELLO, output_schema=schema)
    assert {p.kind for p in cut.problems} == {"truncated", "invalid_output"}
    good = await model.request(HELLO, output_schema=schema)
    assert good.ok
    wrong = await model.request(HELLO, output_schema=schema)
    assert wrong.problems[0].kind == "invalid_output" and "'answer'" in wrong.problems[0].detail
    not_json = await model.request(HELLO, output_schema=schema)
    assert "not JSON" in not_json.problems[0].detail


async def test_function_script_sync_and_async() -> None:
    def echo(messages: Sequence[Message], tools: Sequence[ToolDefinition]) -> str:
        last = messages[-1]
        assert isinstance(last, UserMessage)
        return f"{last.content} ({len(tools)} tools)"

    async def aecho(
        messages: Sequence[Message], tools: Sequence[ToolDefinition]
    ) -> tuple[str, dict[str, int]]:
        return ("add", {"a": len(messages), "b": 0})

    sync_model = ScriptedModel(echo)
    assert (
        await sync_model.request([UserMessage(content="hi")], tools=[ADD])
    ).message.content == "hi (1 tools)"
    assert sync_model.remaining is None
    async_model = ScriptedModel(aecho)
    response = await async_model.request(HELLO * 3, tools=[ADD])
    assert response.message.tool_calls[0].arguments == {"a": 3, "b": 0}


async def test_usage_is_zero_cost_with_token_estimates() -> None:
    model = ScriptedModel(
        [
            "a reply of some length",
            ModelResponse(message=AssistantMessage(content="x"), usage=Usage(input_tokens=7)),
        ]
    )
    first = await model.request([UserMessage(content="a question of some length")])
    assert first.usage.requests == 1 and first.usage.cost_usd == 0.0
    assert first.usage.input_tokens > 0 and first.usage.output_tokens > 0
    second = await model.request(HELLO)
    assert second.usage.input_tokens == 7 and second.usage.requests == 1


async def test_bad_script_item_is_a_clear_type_error() -> None:
    model = ScriptedModel([42])  # type: ignore[list-item]
    with pytest.raises(TypeError, match="cannot use int"):
        await model.request(HELLO)
