"""Our messages in each provider's wire format, and the local model's grammar envelope (no model needed)."""

from __future__ import annotations

import json

from corral.models import (
    AssistantMessage,
    OutputSchema,
    SystemMessage,
    ToolCall,
    ToolDefinition,
    ToolResultMessage,
    UserMessage,
    schema_error,
)
from corral.models._anthropic import anthropic_messages
from corral.models._local import chat_messages, envelope_schema, parse_reply
from corral.models._openai import openai_messages

CALL = ToolCall(id="c1", name="add", arguments={"a": 1, "b": 2})
CONVERSATION = [
    SystemMessage(content="Be brief."),
    UserMessage(content="1+2 and 3+4?"),
    AssistantMessage(
        content="Adding.", tool_calls=[CALL, ToolCall(id="c2", name="add", arguments={"a": 3, "b": 4})]
    ),
    ToolResultMessage(tool_call_id="c1", name="add", content="3"),
    ToolResultMessage(tool_call_id="c2", name="add", content="boom", is_error=True),
]
ADD = ToolDefinition(
    name="add", description="Add.", parameters={"type": "object", "properties": {"a": {"type": "integer"}}}
)


def test_openai_wire_format() -> None:
    wire = openai_messages(CONVERSATION)
    assert [m["role"] for m in wire] == ["system", "user", "assistant", "tool", "tool"]
    assert wire[2]["tool_calls"][0]["function"] == {"name": "add", "arguments": '{"a": 1, "b": 2}'}
    assert wire[4] == {"role": "tool", "tool_call_id": "c2", "content": "Error: boom"}


def test_anthropic_wire_format_merges_tool_results_into_one_user_turn() -> None:
    system, wire = anthropic_messages(CONVERSATION)
    assert system == "Be brief."
    assert [m["role"] for m in wire] == ["user", "assistant", "user"]
    assert [b["type"] for b in wire[1]["content"]] == ["text", "tool_use", "tool_use"]
    results = wire[2]["content"]
    assert [(b["tool_use_id"], b["is_error"]) for b in results] == [("c1", False), ("c2", True)]


def test_local_chat_puts_instructions_in_the_system_prompt_and_results_in_user_turns() -> None:
    chat = chat_messages(CONVERSATION, [ADD], None)
    assert chat[0]["role"] == "system" and chat[0]["content"].startswith("Be brief.\n\nYou have these tools:")
    assert '"tool": "add"' in chat[2]["content"]
    assert chat[3] == {"role": "user", "content": "Result of tool add:\n3"}
    assert chat[4]["content"].startswith("Error from tool add:")
    bare = chat_messages([UserMessage(content="hi")], [], OutputSchema(json_schema={"type": "object"}))
    assert bare[0]["role"] == "system" and "JSON Schema" in bare[0]["content"]


def test_envelope_inlines_refs_and_keeps_tool_before_arguments() -> None:
    parameters = {
        "type": "object",
        "properties": {"where": {"$ref": "#/$defs/Filter"}},
        "$defs": {"Filter": {"type": "object", "properties": {"column": {"type": "string"}}}},
    }
    schema = envelope_schema([ToolDefinition(name="query", parameters=parameters)], None)
    tool_form, answer_form = schema["oneOf"]
    assert list(tool_form["properties"]) == ["tool", "arguments"]
    assert tool_form["properties"]["arguments"]["properties"]["where"]["properties"]["column"] == {
        "type": "string"
    }
    assert "$ref" not in json.dumps(schema) and "$defs" not in json.dumps(schema)
    call = {"tool": "query", "arguments": {"where": {"column": "id"}}}
    assert schema_error(call, schema) is None
    assert schema_error({"answer": "done"}, schema) is None
    assert answer_form["properties"]["answer"] == {"type": "string"}


def test_parse_reply_unwraps_the_envelope() -> None:
    tools = [ADD]
    called = parse_reply('{"tool": "add", "arguments": {"a": 1}}', tools, None, turn=2)
    assert called.tool_calls[0].arguments == {"a": 1} and called.tool_calls[0].id == "call_2_0"
    assert parse_reply('{"answer": "3"}', tools, None, 0).content == "3"
    structured = parse_reply('{"answer": {"n": 3}}', tools, OutputSchema(json_schema={}), 0)
    assert structured.content == '{"n": 3}'
    assert parse_reply('{"tool": "add", "argu', tools, None, 0).content == '{"tool": "add", "argu'
    assert parse_reply("plain text", [], None, 0).content == "plain text"
