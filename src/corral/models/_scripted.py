"""A model that answers from a script: for tests, examples and benchmarks. No network, zero cost.

>>> import asyncio
>>> from corral.models import ScriptedModel, ToolDefinition, UserMessage
>>> model = ScriptedModel([("add", {"a": 1, "b": 2}), "The sum is 3."])
>>> add = ToolDefinition(name="add")
>>> first = asyncio.run(model.request([UserMessage(content="1+2?")], tools=[add]))
>>> first.message.tool_calls[0].name, first.finish_reason
('add', 'tool_calls')
>>> asyncio.run(model.request([UserMessage(content="and?")])).message.content
'The sum is 3.'
>>> model.call_count
2
"""

from __future__ import annotations

import inspect
import json
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeAlias

from corral.models._base import Model
from corral.models._check import check_reply, parse_tool_call
from corral.models._messages import (
    AssistantMessage,
    Message,
    ModelResponse,
    ModelSettings,
    OutputSchema,
    ToolCall,
    ToolDefinition,
    Usage,
)
from corral.models.errors import ScriptExhaustedError

#: One scripted reply. Tool-call shorthand: a :class:`ToolCall`, a ``(name, arguments)`` pair (arguments a
#: dict, or a string that is parsed like a provider's raw arguments, so a test can script malformed JSON),
#: or a list of those for parallel calls.
ToolCallShorthand: TypeAlias = "ToolCall | tuple[str, dict[str, Any] | str]"
ScriptItem: TypeAlias = "ModelResponse | AssistantMessage | str | ToolCallShorthand | list[ToolCallShorthand]"
ScriptFunction: TypeAlias = Callable[
    [Sequence[Message], Sequence[ToolDefinition]], "ScriptItem | Awaitable[ScriptItem]"
]


@dataclass(frozen=True)
class ScriptedCall:
    """What a :class:`ScriptedModel` was asked, kept so tests can assert on it."""

    messages: list[Message]
    tools: list[ToolDefinition]
    output_schema: OutputSchema | None
    settings: ModelSettings | None


def _tokens(text: str) -> int:
    # A deterministic stand-in for a tokenizer (about four characters a token), so budget guards can be
    # tested against scripted runs; never zero for non-empty text.
    return (len(text) + 3) // 4


def _message_text(message: Message) -> str:
    if isinstance(message, AssistantMessage):
        calls = " ".join(f"{c.name}{json.dumps(c.arguments)}" for c in message.tool_calls)
        return f"{message.content or ''} {calls}"
    return message.content


def _to_call(item: ToolCallShorthand, call_id: str) -> ToolCall:
    if isinstance(item, ToolCall):
        return item
    name, arguments = item
    return parse_tool_call(call_id, name, arguments)


def _to_message(item: ScriptItem, call_number: int) -> AssistantMessage | ModelResponse:
    if isinstance(item, ModelResponse | AssistantMessage):
        return item
    if isinstance(item, str):
        return AssistantMessage(content=item)
    if isinstance(item, ToolCall | tuple):
        return AssistantMessage(tool_calls=[_to_call(item, f"call_{call_number}_0")])
    if isinstance(item, list):
        return AssistantMessage(
            tool_calls=[_to_call(c, f"call_{call_number}_{i}") for i, c in enumerate(item)]
        )
    raise TypeError(
        f"ScriptedModel: cannot use {type(item).__name__} as a scripted reply; use a ModelResponse, an "
        "AssistantMessage, a str, a ToolCall, a (name, arguments) pair or a list of those"
    )


@dataclass
class ScriptedModel(Model):
    """Answers from ``script``: a list of replies consumed in order, or a function of the conversation.

    The function gets ``(messages, tools)`` and returns (or, if async, awaits to) one reply in any form the
    list accepts. Replies go through the same output checks as a real adapter's, so a test can script
    malformed output (``("add", '{"a": 1')``, an unknown tool, ``""``) and see the same ``problems``.
    Usage is zero cost with token counts estimated from text length; ``calls`` records every request.
    """

    script: Iterable[ScriptItem] | ScriptFunction
    name: str = "scripted"
    calls: list[ScriptedCall] = field(default_factory=list, init=False)

    def __post_init__(self) -> None:
        # A list is copied so the caller can reuse theirs; a function is kept as is.
        self._function: ScriptFunction | None = self.script if callable(self.script) else None
        self._items: list[ScriptItem] = [] if callable(self.script) else list(self.script)

    @property
    def call_count(self) -> int:
        """How many requests this model has answered (or tried to)."""
        return len(self.calls)

    @property
    def remaining(self) -> int | None:
        """Replies left in a list script; ``None`` for a function script."""
        return None if self._function is not None else len(self._items) - len(self.calls)

    async def request(
        self,
        messages: Sequence[Message],
        *,
        tools: Sequence[ToolDefinition] = (),
        output_schema: OutputSchema | None = None,
        settings: ModelSettings | None = None,
    ) -> ModelResponse:
        """The next scripted reply, checked against ``tools`` and ``output_schema``."""
        number = len(self.calls)
        self.calls.append(ScriptedCall(list(messages), list(tools), output_schema, settings))
        if self._function is not None:
            produced = self._function(messages, tools)
            item: ScriptItem = await produced if inspect.isawaitable(produced) else produced
        else:
            if number >= len(self._items):
                raise ScriptExhaustedError(
                    f"ScriptedModel {self.name!r} was asked for reply #{number + 1} but its script holds "
                    f"{len(self._items)}; add replies to the script or pass a function of the conversation"
                )
            item = self._items[number]
        reply = _to_message(item, number)
        input_tokens = sum(_tokens(_message_text(m)) for m in messages)
        if isinstance(reply, ModelResponse):
            given = reply.usage
            usage = given if given.requests else given + Usage(requests=1)
            if not usage.input_tokens and not usage.output_tokens:
                usage = usage + Usage(
                    input_tokens=input_tokens, output_tokens=_tokens(_message_text(reply.message))
                )
            return check_reply(
                reply.message,
                tools=tools,
                output_schema=output_schema,
                # A hand-built ModelResponse defaults to "stop"; a reply that calls tools stopped for them.
                finish_reason="tool_calls"
                if reply.finish_reason == "stop" and reply.message.tool_calls
                else reply.finish_reason,
                usage=usage,
                model=reply.model or self.name,
                extra_problems=reply.problems,
            )
        usage = Usage(requests=1, input_tokens=input_tokens, output_tokens=_tokens(_message_text(reply)))
        return check_reply(reply, tools=tools, output_schema=output_schema, usage=usage, model=self.name)
