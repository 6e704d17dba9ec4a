"""OpenAI and OpenAI-compatible servers (vLLM, Ollama, llama.cpp's server, LM Studio…) via the official SDK.

The SDK's own retries are off; :mod:`corral.models._retry` is the one policy. Errors are translated at this
seam (``raise ... from exc``), and the reply goes through the shared output checks.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import Sequence
from typing import Any, Literal

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
    "stop": "stop",
    "tool_calls": "tool_calls",
    "function_call": "tool_calls",
    "length": "length",
    "content_filter": "content_filter",
}

#: How structured output is asked for: OpenAI's ``json_schema`` response format (OpenAI, vLLM, Ollama, LM
#: Studio, llama.cpp's C++ server) or ``json_object`` with a ``schema`` (llama-cpp-python's server).
ResponseFormatStyle = Literal["json_schema", "json_object"]


def openai_messages(messages: Sequence[Message]) -> list[dict[str, Any]]:
    """Our messages in the chat-completions wire format."""
    out: list[dict[str, Any]] = []
    for message in messages:
        if isinstance(message, SystemMessage | UserMessage):
            out.append({"role": message.role, "content": message.content})
        elif isinstance(message, AssistantMessage):
            item: dict[str, Any] = {"role": "assistant", "content": message.content}
            if message.tool_calls:
                item["tool_calls"] = [
                    {
                        "id": call.id,
                        "type": "function",
                        "function": {
                            "name": call.name,
                            "arguments": call.raw_arguments
                            if call.arguments is None
                            else json.dumps(call.arguments),
                        },
                    }
                    for call in message.tool_calls
                ]
            out.append(item)
        elif isinstance(message, ToolResultMessage):
            content = f"Error: {message.content}" if message.is_error else message.content
            out.append({"role": "tool", "tool_call_id": message.tool_call_id, "content": content})
    return out


class OpenAIModel(Model):
    """A chat model behind the OpenAI chat-completions API.

    ``base_url`` points at any compatible server. ``api_key`` defaults to ``$OPENAI_API_KEY`` (or the setting
    ``openai_api_key``) for OpenAI itself; for another server to the setting ``openai_compatible_api_key``
    (``$CORRAL_OPENAI_COMPATIBLE_API_KEY``) or a placeholder, since local servers rarely check it.
    """

    def __init__(
        self,
        model: str,
        *,
        base_url: str | None = None,
        api_key: str | None = None,
        name: str | None = None,
        timeout_s: float = 60.0,
        retry: RetryPolicy | None = None,
        breaker: CircuitBreaker | None = None,
        sleep: Sleep = asyncio.sleep,
        prices: dict[str, Price] | None = None,
        response_format_style: ResponseFormatStyle = "json_schema",
    ) -> None:
        import openai

        self.model = model
        self.base_url = base_url
        self.name = name or (f"openai-compatible:{base_url}#{model}" if base_url else f"openai:{model}")
        self.provider = base_url or "openai"
        if api_key is None and base_url is None:
            api_key = os.environ.get("OPENAI_API_KEY") or get_setting("openai_api_key", default="")
            if not api_key:
                raise MissingCredentialsError(
                    f"model {self.name} needs an API key: set OPENAI_API_KEY (or openai_api_key in corral's "
                    "config file)"
                )
        elif api_key is None:
            # Never send the OpenAI key to another server; compatible servers have their own setting.
            api_key = get_setting("openai_compatible_api_key", default="") or "not-needed"
        self.timeout_s = timeout_s
        self.retry = retry or RetryPolicy()
        self.breaker = breaker or breaker_for(self.provider)
        self.sleep = sleep
        self.prices = prices
        self.response_format_style = response_format_style
        self._sdk = openai
        self._client = openai.AsyncOpenAI(
            api_key=api_key, base_url=base_url, max_retries=0, timeout=timeout_s
        )

    def _params(
        self,
        messages: Sequence[Message],
        tools: Sequence[ToolDefinition],
        output_schema: OutputSchema | None,
        settings: ModelSettings,
    ) -> dict[str, Any]:
        params: dict[str, Any] = {"model": self.model, "messages": openai_messages(messages)}
        if tools:
            params["tools"] = [
                {
                    "type": "function",
                    "function": {"name": t.name, "description": t.description, "parameters": t.parameters},
                }
                for t in tools
            ]
            params["tool_choice"] = "auto"
        if output_schema is not None:
            if self.response_format_style == "json_object":
                params["response_format"] = {"type": "json_object", "schema": output_schema.json_schema}
            else:
                params["response_format"] = {
                    "type": "json_schema",
                    "json_schema": {"name": output_schema.name, "schema": output_schema.json_schema},
                }
        if settings.max_tokens is not None:
            params["max_tokens"] = settings.max_tokens
        if settings.temperature is not None:
            params["temperature"] = settings.temperature
        if settings.seed is not None:
            params["seed"] = settings.seed
        params["timeout"] = settings.timeout_s or self.timeout_s
        return params

    async def _once(self, params: dict[str, Any]) -> Any:
        try:
            completion = await self._client.chat.completions.create(**params)
        except self._sdk.OpenAIError as exc:
            raise translate_error(exc, self._sdk, self.name, self.provider) from exc
        except ValueError as exc:
            raise translate_error(exc, self._sdk, self.name, self.provider) from exc
        if (
            not getattr(completion, "choices", None)
            or getattr(completion.choices[0], "message", None) is None
        ):
            raise MalformedResponseError(
                f"model {self.name} (provider {self.provider}): the response has no choices: "
                f"{completion!r:.300}",
                model=self.name,
            )
        return completion

    async def request(
        self,
        messages: Sequence[Message],
        *,
        tools: Sequence[ToolDefinition] = (),
        output_schema: OutputSchema | None = None,
        settings: ModelSettings | None = None,
    ) -> ModelResponse:
        """One chat completion, retried under the policy; malformed output comes back as problems."""
        params = self._params(messages, tools, output_schema, settings or ModelSettings())
        started = time.perf_counter()
        completion = await call_with_retries(
            lambda: self._once(params),
            model=self.name,
            policy=self.retry,
            breaker=self.breaker,
            sleep=self.sleep,
        )
        latency = time.perf_counter() - started
        choice = completion.choices[0]
        raw = choice.message
        calls = [
            parse_tool_call(call.id, call.function.name, call.function.arguments)
            for call in (raw.tool_calls or [])
            if getattr(call, "function", None) is not None
        ]
        message = AssistantMessage(content=raw.content, tool_calls=calls)
        usage = completion.usage
        input_tokens = int(getattr(usage, "prompt_tokens", 0) or 0)
        output_tokens = int(getattr(usage, "completion_tokens", 0) or 0)
        price = price_for(self.model, self.prices) if self.base_url is None or self.prices else None
        finish = _FINISH.get(str(choice.finish_reason), "other")
        if finish == "stop" and calls:
            finish = "tool_calls"
        return check_reply(
            message,
            tools=tools,
            output_schema=output_schema,
            finish_reason=finish,
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
