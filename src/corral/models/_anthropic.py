"""Anthropic's Messages API via the official ``anthropic`` SDK.

System messages become the ``system`` parameter; tool results become ``tool_result`` blocks of a user turn
(consecutive ones merged, as the API wants alternating roles); structured output uses
``output_config.format``. The SDK's retries are off: :mod:`corral.models._retry` is the one policy.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Sequence
from typing import Any

from corral._config import get_setting
from corral.models._base import Model
from corral.models._check import check_reply, parse_tool_call
from corral.models._hosted import Price, price_for, translate_error
from corral.models._messages import (
    AssistantMessage,
    FinishReason,
    Message,
    ModelResponse,
    ModelSettings,
    OutputSchema,
    SystemMessage,
    ToolDefinition,
    ToolResultMessage,
    Usage,
    UserMessage,
)
from corral.models._retry import CircuitBreaker, RetryPolicy, Sleep, breaker_for, call_with_retries
from corral.models.errors import MalformedResponseError, MissingCredentialsError

_FINISH: dict[str, FinishReason] = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "tool_use": "tool_calls",
    "max_tokens": "length",
    "refusal": "content_filter",
}

_DEFAULT_MAX_TOKENS = 4096


def anthropic_messages(messages: Sequence[Message]) -> tuple[str, list[dict[str, Any]]]:
    """Our messages as ``(system, messages)`` for the Messages API."""
    system: list[str] = []
    out: list[dict[str, Any]] = []

    def add(role: str, blocks: list[dict[str, Any]]) -> None:
        if out and out[-1]["role"] == role:
            out[-1]["content"].extend(blocks)
        else:
            out.append({"role": role, "content": blocks})

    for message in messages:
        if isinstance(message, SystemMessage):
            system.append(message.content)
        elif isinstance(message, UserMessage):
            add("user", [{"type": "text", "text": message.content}])
        elif isinstance(message, AssistantMessage):
            blocks: list[dict[str, Any]] = []
            if message.content:
                blocks.append({"type": "text", "text": message.content})
            blocks.extend(
                {"type": "tool_use", "id": call.id, "name": call.name, "input": call.arguments or {}}
                for call in message.tool_calls
            )
            add("assistant", blocks)
        elif isinstance(message, ToolResultMessage):
            add(
                "user",
                [
                    {
                        "type": "tool_result",
                        "tool_use_id": message.tool_call_id,
                        "content": message.content,
                        "is_error": message.is_error,
                    }
                ],
            )
    return "\n\n".join(system), out


class AnthropicModel(Model):
    """A Claude model. The key defaults to ``$ANTHROPIC_API_KEY`` (or the setting ``anthropic_api_key``)."""

    def __init__(
        self,
        model: str,
        *,
        api_key: str | None = None,
        base_url: str | None = None,
        name: str | None = None,
        timeout_s: float = 120.0,
        retry: RetryPolicy | None = None,
        breaker: CircuitBreaker | None = None,
        sleep: Sleep = asyncio.sleep,
        prices: dict[str, Price] | None = None,
    ) -> None:
        import anthropic

        self.model = model
        self.name = name or f"anthropic:{model}"
        self.provider = base_url or "anthropic"
        if api_key is None:
            api_key = os.environ.get("ANTHROPIC_API_KEY") or get_setting("anthropic_api_key", default="")
        if not api_key:
            raise MissingCredentialsError(
                f"model {self.name} needs an API key: set ANTHROPIC_API_KEY "
                "(or anthropic_api_key in corral's config file)"
            )
        self.timeout_s = timeout_s
        self.retry = retry or RetryPolicy()
        self.breaker = breaker or breaker_for(self.provider)
        self.sleep = sleep
        self.prices = prices
        self._sdk = anthropic
        self._client = anthropic.AsyncAnthropic(
            api_key=api_key, base_url=base_url, max_retries=0, timeout=timeout_s
        )

    def _params(
        self,
        messages: Sequence[Message],
        tools: Sequence[ToolDefinition],
        output_schema: OutputSchema | None,
        settings: ModelSettings,
    ) -> dict[str, Any]:
        system, wire = anthropic_messages(messages)
        params: dict[str, Any] = {
            "model": self.model,
            "messages": wire,
            "max_tokens": settings.max_tokens or _DEFAULT_MAX_TOKENS,
            "timeout": settings.timeout_s or self.timeout_s,
        }
        if system:
            params["system"] = system
        if tools:
            params["tools"] = [
                {"name": t.name, "description": t.description, "input_schema": t.parameters} for t in tools
            ]
        if output_schema is not None:
            params["output_config"] = {"format": {"type": "json_schema", "schema": output_schema.json_schema}}
        if settings.temperature is not None:
            params["temperature"] = settings.temperature
        return params

    async def _once(self, params: dict[str, Any]) -> Any:
        try:
            reply = await self._client.messages.create(**params)
        except (self._sdk.AnthropicError, ValueError) as exc:
            raise translate_error(exc, self._sdk, self.name, self.provider) from exc
        if getattr(reply, "content", None) is None:
            raise MalformedResponseError(
                f"model {self.name} (provider {self.provider}): the response has no content: {reply!r:.300}",
                model=self.name,
            )
        return reply

    async def request(
        self,
        messages: Sequence[Message],
        *,
        tools: Sequence[ToolDefinition] = (),
        output_schema: OutputSchema | None = None,
        settings: ModelSettings | None = None,
    ) -> ModelResponse:
        """One Messages call, retried under the policy; malformed output comes back as problems."""
        params = self._params(messages, tools, output_schema, settings or ModelSettings())
        started = time.perf_counter()
        reply = await call_with_retries(
            lambda: self._once(params),
            model=self.name,
            policy=self.retry,
            breaker=self.breaker,
            sleep=self.sleep,
        )
        latency = time.perf_counter() - started
        texts: list[str] = []
        calls = []
        for block in reply.content:
            kind = getattr(block, "type", None)
            if kind == "text":
                texts.append(block.text)
            elif kind == "tool_use":
                calls.append(parse_tool_call(block.id, block.name, block.input))
        message = AssistantMessage(content="".join(texts) or None, tool_calls=calls)
        input_tokens = int(getattr(reply.usage, "input_tokens", 0) or 0)
        output_tokens = int(getattr(reply.usage, "output_tokens", 0) or 0)
        price = price_for(self.model, self.prices)
        return check_reply(
            message,
            tools=tools,
            output_schema=output_schema,
            finish_reason=_FINISH.get(str(reply.stop_reason), "other"),
            usage=Usage(
                requests=1,
                input_tokens=input_tokens,
                output_tokens=output_tokens,
                latency_s=latency,
                cost_usd=price.cost(input_tokens, output_tokens) if price else 0.0,
            ),
            model=self.name,
        )

    async def aclose(self) -> None:
        """Close the SDK's HTTP connection pool."""
        await self._client.close()
