"""The shared output checks: malformed output becomes problems, never exceptions."""

from __future__ import annotations

import json

from hypothesis import given, settings
from hypothesis import strategies as st

from corral.models import (
    AssistantMessage,
    OutputSchema,
    ToolDefinition,
    check_reply,
    find_problems,
    parse_tool_call,
    schema_error,
)

ADD = ToolDefinition(
    name="add",
    parameters={
        "type": "object",
        "properties": {"a": {"type": "integer"}, "b": {"type": "integer"}},
        "required": ["a", "b"],
        "additionalProperties": False,
    },
)
SCHEMA = OutputSchema(name="n", json_schema={"type": "object", "properties": {"n": {"type": "integer"}}})


def test_parse_tool_call_edge_cases() -> None:
    assert parse_tool_call("c", "add", "").arguments == {}  # no arguments is an empty object
    assert parse_tool_call("c", "add", None).arguments == {}
    assert parse_tool_call("c", "add", '{"a": 1}').arguments == {"a": 1}
    for raw in ("[1, 2]", "null", "3", '"text"', "{'a': 1}", '{"a": 1'):
        call = parse_tool_call("c", "add", raw)
        assert call.arguments is None and call.raw_arguments == raw


def test_schema_violations_name_the_place_and_the_rule() -> None:
    message = AssistantMessage(tool_calls=[parse_tool_call("c1", "add", {"a": 1, "b": 2, "c": 3})])
    (problem,) = find_problems(message, tools=[ADD])
    assert problem.kind == "invalid_arguments" and problem.tool_call_id == "c1"
    assert "'c' was unexpected" in problem.detail
    assert schema_error({"n": "x"}, SCHEMA.json_schema) == "at n: 'x' is not of type 'integer'"
    assert schema_error({"n": 1}, SCHEMA.json_schema) is None


def test_long_raw_text_is_quoted_but_capped() -> None:
    raw = "{" + "x" * 5000
    (problem,) = find_problems(AssistantMessage(tool_calls=[parse_tool_call("c", "add", raw)]), tools=[ADD])
    assert len(problem.detail) < 700 and "5001 characters" in problem.detail


def test_structured_output_is_not_checked_when_the_model_calls_a_tool() -> None:
    message = AssistantMessage(tool_calls=[parse_tool_call("c", "add", {"a": 1, "b": 2})])
    assert check_reply(message, tools=[ADD], output_schema=SCHEMA).ok


def test_finish_reason_defaults_and_duplicates_are_not_repeated() -> None:
    text = AssistantMessage(content="hi")
    assert check_reply(text).finish_reason == "stop"
    first = check_reply(AssistantMessage(content=""))
    again = check_reply(first.message, extra_problems=first.problems)
    assert [p.kind for p in again.problems] == ["empty_reply"]


@settings(deadline=None)  # a shared 2-core machine: timing is not what is tested
@given(
    raw=st.text(max_size=200), content=st.one_of(st.none(), st.text(max_size=200)), name=st.text(max_size=20)
)
def test_any_reply_is_checked_without_raising(raw: str, content: str | None, name: str) -> None:
    message = AssistantMessage(content=content, tool_calls=[parse_tool_call("c", name or "add", raw)])
    response = check_reply(message, tools=[ADD], output_schema=SCHEMA, finish_reason="stop")
    call = response.message.tool_calls[0]
    if call.name == "add" and call.arguments is None:
        assert any(p.kind == "invalid_arguments" for p in response.problems)
    if call.name != "add":
        assert any(p.kind == "unknown_tool" for p in response.problems)


@settings(deadline=None)
@given(
    value=st.recursive(
        st.none() | st.booleans() | st.integers() | st.text(),
        lambda c: st.lists(c) | st.dictionaries(st.text(), c),
        max_leaves=10,
    )
)
def test_any_structured_output_is_checked_without_raising(value: object) -> None:
    response = check_reply(AssistantMessage(content=json.dumps(value)), output_schema=SCHEMA)
    valid = isinstance(value, dict) and (
        not isinstance(value.get("n", 0), bool) and isinstance(value.get("n", 0), int)
    )
    assert response.ok == valid
