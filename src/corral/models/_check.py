"""The output checks every adapter runs, so malformed output looks the same whichever provider produced it.

An adapter turns its provider's reply into an :class:`AssistantMessage` (tool-call arguments parsed with
:func:`parse_tool_call`) and hands it to :func:`check_reply`, which returns the :class:`ModelResponse` with
its ``problems``. Nothing here raises for bad output: problems are data the agent loop feeds back.

>>> from corral.models import ToolDefinition
>>> add = ToolDefinition(name="add", parameters={"type": "object", "properties": {"a": {"type": "integer"}},
...                                             "required": ["a"]})
>>> msg = AssistantMessage(tool_calls=[parse_tool_call("c1", "add", '{"a": 1')])
>>> [p.kind for p in check_reply(msg, tools=[add]).problems]
['invalid_arguments']
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from functools import lru_cache
from typing import Any

import jsonschema  # type: ignore[import-untyped]

from corral.models._messages import (
    AssistantMessage,
    FinishReason,
    ModelResponse,
    OutputProblem,
    OutputSchema,
    ToolCall,
    ToolDefinition,
    Usage,
)

# A problem's detail quotes what the model wrote so it can correct itself; cap it so a runaway reply does
# not blow up the next prompt.
_QUOTE_MAX = 500


def _quote(text: str) -> str:
    return text if len(text) <= _QUOTE_MAX else text[:_QUOTE_MAX] + f"… ({len(text)} characters)"


def parse_tool_call(call_id: str, name: str, raw_arguments: str | dict[str, Any] | None) -> ToolCall:
    """A :class:`ToolCall` from a provider's raw arguments; the raw text is kept when it is not an object."""
    if isinstance(raw_arguments, dict):
        return ToolCall(id=call_id, name=name, arguments=raw_arguments)
    raw = raw_arguments or ""
    # Providers send "" for a call without arguments; that is an empty object, not a malformed one.
    if not raw.strip():
        return ToolCall(id=call_id, name=name, arguments={}, raw_arguments=raw)
    try:
        parsed = json.loads(raw)
    except ValueError:
        return ToolCall(id=call_id, name=name, arguments=None, raw_arguments=raw)
    if not isinstance(parsed, dict):
        return ToolCall(id=call_id, name=name, arguments=None, raw_arguments=raw)
    return ToolCall(id=call_id, name=name, arguments=parsed, raw_arguments=raw)


@lru_cache(maxsize=256)
def _validator(schema_json: str) -> Any:
    schema = json.loads(schema_json)
    cls = jsonschema.validators.validator_for(schema)
    return cls(schema)


def schema_error(instance: Any, schema: dict[str, Any]) -> str | None:
    """The first JSON-Schema validation error of ``instance`` as one readable line, or ``None`` when valid."""
    validator = _validator(json.dumps(schema, sort_keys=True))
    error = jsonschema.exceptions.best_match(validator.iter_errors(instance))
    if error is None:
        return None
    where = "/".join(str(p) for p in error.absolute_path) or "(top level)"
    return f"at {where}: {error.message}"


def find_problems(
    message: AssistantMessage,
    *,
    tools: Sequence[ToolDefinition] = (),
    output_schema: OutputSchema | None = None,
    finish_reason: FinishReason = "stop",
) -> list[OutputProblem]:
    """What is wrong with ``message`` given the tools offered and the output schema asked for."""
    problems: list[OutputProblem] = []
    offered = {tool.name: tool for tool in tools}
    if finish_reason == "length":
        problems.append(
            OutputProblem(
                kind="truncated",
                detail="the reply was cut off by the max_tokens limit; answer shorter or raise max_tokens",
            )
        )
    for call in message.tool_calls:
        tool = offered.get(call.name)
        if tool is None:
            names = ", ".join(sorted(offered)) or "none"
            problems.append(
                OutputProblem(
                    kind="unknown_tool",
                    detail=f"there is no tool named {call.name!r}; the tools offered are: {names}",
                    tool_call_id=call.id,
                )
            )
            continue
        if call.arguments is None:
            problems.append(
                OutputProblem(
                    kind="invalid_arguments",
                    detail=f"the arguments of {call.name!r} are not a JSON object: "
                    f"{_quote(call.raw_arguments or '')}",
                    tool_call_id=call.id,
                )
            )
            continue
        error = schema_error(call.arguments, tool.parameters)
        if error is not None:
            problems.append(
                OutputProblem(
                    kind="invalid_arguments",
                    detail=f"the arguments of {call.name!r} do not match its schema {error}; "
                    f"they were: {_quote(json.dumps(call.arguments))}",
                    tool_call_id=call.id,
                )
            )
    text = message.content or ""
    if not text.strip() and not message.tool_calls:
        problems.append(
            OutputProblem(kind="empty_reply", detail="the reply had neither text nor a tool call")
        )
    elif output_schema is not None and not message.tool_calls:
        try:
            value = json.loads(text)
        except ValueError as exc:
            problems.append(
                OutputProblem(
                    kind="invalid_output",
                    detail=f"the reply must be JSON matching the schema {output_schema.name!r}, "
                    f"but it is not JSON ({exc}): {_quote(text)}",
                )
            )
        else:
            error = schema_error(value, output_schema.json_schema)
            if error is not None:
                problems.append(
                    OutputProblem(
                        kind="invalid_output",
                        detail=f"the reply does not match the schema {output_schema.name!r} {error}",
                    )
                )
    return problems


def check_reply(
    message: AssistantMessage,
    *,
    tools: Sequence[ToolDefinition] = (),
    output_schema: OutputSchema | None = None,
    finish_reason: FinishReason | None = None,
    usage: Usage | None = None,
    model: str = "",
    extra_problems: Sequence[OutputProblem] = (),
) -> ModelResponse:
    """The :class:`ModelResponse` for ``message``, with every problem :func:`find_problems` sees.

    ``finish_reason`` defaults to ``"tool_calls"`` when the message calls tools and ``"stop"`` otherwise.
    """
    if finish_reason is None:
        finish_reason = "tool_calls" if message.tool_calls else "stop"
    problems = list(extra_problems)
    for problem in find_problems(
        message, tools=tools, output_schema=output_schema, finish_reason=finish_reason
    ):
        if problem not in problems:
            problems.append(problem)
    return ModelResponse(
        message=message,
        usage=usage if usage is not None else Usage(requests=1),
        model=model,
        finish_reason=finish_reason,
        problems=problems,
    )
