"""Retries, Retry-After, the circuit breaker, timeouts and malformed bodies, against a real loopback server.

Sleeps and the breaker's clock are injected, so backoff is asserted exactly and nothing waits for it.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Protocol

import pytest

from corral.models import (
    AnthropicModel,
    CircuitBreaker,
    FallbackModel,
    OpenAIModel,
    Price,
    RetryPolicy,
    ScriptedModel,
    ToolDefinition,
    UserMessage,
)
from corral.models.errors import (
    AllModelsFailedError,
    AuthenticationError,
    BadRequestError,
    CircuitOpenError,
    MalformedResponseError,
    ModelConnectionError,
    ModelTimeoutError,
    ProviderServerError,
    RateLimitedError,
)

from .conftest import FakeTime, Fault, FaultServer, openai_body

HELLO = [UserMessage(content="hello")]
NO_JITTER = RetryPolicy(attempts=4, initial_s=0.5, multiplier=2.0, jitter_s=0.0)
ADD = ToolDefinition(
    name="add",
    parameters={
        "type": "object",
        "properties": {"a": {"type": "integer"}, "b": {"type": "integer"}},
        "required": ["a", "b"],
    },
)


class Maker(Protocol):
    def __call__(
        self,
        *,
        policy: RetryPolicy = ...,
        threshold: int = ...,
        timeout_s: float = ...,
        prices: dict[str, Price] | None = ...,
    ) -> OpenAIModel: ...


@pytest.fixture
async def make(fault_server: FaultServer, fake_time: FakeTime) -> AsyncIterator[Maker]:
    """Builds OpenAI adapters pointed at the fault server, with injected time; closes them afterwards."""
    made: list[OpenAIModel] = []

    def build(
        *,
        policy: RetryPolicy = NO_JITTER,
        threshold: int = 100,
        timeout_s: float = 5.0,
        prices: dict[str, Price] | None = None,
    ) -> OpenAIModel:
        breaker = CircuitBreaker(
            "test", failure_threshold=threshold, reset_after_s=30.0, clock=fake_time.clock
        )
        model = OpenAIModel(
            "fake",
            base_url=fault_server.url,
            api_key="k",
            retry=policy,
            breaker=breaker,
            sleep=fake_time.sleep,
            timeout_s=timeout_s,
            prices=prices,
        )
        made.append(model)
        return model

    yield build
    for model in made:
        await model.aclose()


async def test_success_reports_usage_and_cost(
    make: Maker, fault_server: FaultServer, fake_time: FakeTime
) -> None:
    model = make(prices={"fake": Price(1.0, 2.0)})
    response = await model.request(HELLO)
    assert response.ok and response.message.content == "hello"
    assert (response.usage.input_tokens, response.usage.output_tokens) == (11, 3)
    assert response.usage.cost_usd == pytest.approx((11 * 1.0 + 3 * 2.0) / 1e6)
    assert response.usage.latency_s > 0
    assert fault_server.requests[0]["messages"] == [{"role": "user", "content": "hello"}]
    await model.aclose()


async def test_429_honours_retry_after(make: Maker, fault_server: FaultServer, fake_time: FakeTime) -> None:
    fault_server.queue(Fault("status", status=429, headers={"retry-after": "7"}))
    response = await make().request(HELLO)
    assert response.ok
    assert fake_time.sleeps == [7.0]
    assert fault_server.count == 2


async def test_too_long_retry_after_is_not_waited_for(
    make: Maker, fault_server: FaultServer, fake_time: FakeTime
) -> None:
    fault_server.queue(Fault("status", status=429, headers={"retry-after": "3600"}))
    with pytest.raises(RateLimitedError, match="3600") as info:
        await make().request(HELLO)
    assert info.value.retry_after == 3600.0
    assert fault_server.count == 1 and fake_time.sleeps == []


async def test_5xx_retried_with_exponential_backoff(
    make: Maker, fault_server: FaultServer, fake_time: FakeTime
) -> None:
    fault_server.queue(Fault("status", status=500), Fault("status", status=503))
    response = await make().request(HELLO)
    assert response.ok
    assert fake_time.sleeps == [0.5, 1.0]
    assert fault_server.count == 3


async def test_5xx_gives_up_after_the_attempts(
    make: Maker, fault_server: FaultServer, fake_time: FakeTime
) -> None:
    fault_server.queue(*[Fault("status", status=502)] * 4)
    with pytest.raises(ProviderServerError, match=r"fake.*HTTP 502") as info:
        await make().request(HELLO)
    assert info.value.status == 502
    assert fault_server.count == 4
    assert fake_time.sleeps == [0.5, 1.0, 2.0]


@pytest.mark.parametrize(
    ("status", "error"),
    [(400, BadRequestError), (404, BadRequestError), (401, AuthenticationError), (403, AuthenticationError)],
)
async def test_client_errors_are_never_retried(
    make: Maker, fault_server: FaultServer, fake_time: FakeTime, status: int, error: type[Exception]
) -> None:
    fault_server.queue(Fault("status", status=status, body={"error": {"message": "nope"}}))
    with pytest.raises(error, match=f"HTTP {status}"):
        await make().request(HELLO)
    assert fault_server.count == 1 and fake_time.sleeps == []


async def test_slow_response_times_out_then_retries(
    make: Maker, fault_server: FaultServer, fake_time: FakeTime
) -> None:
    fault_server.queue(Fault("slow", body=openai_body("late"), delay_s=2.0))
    model = make(timeout_s=0.3)
    response = await model.request(HELLO)
    assert response.message.content == "hello"  # the second try, answered at once
    assert fault_server.count == 2 and len(fake_time.sleeps) == 1


async def test_timeouts_exhaust_into_a_typed_error(
    make: Maker, fault_server: FaultServer, fake_time: FakeTime
) -> None:
    fault_server.queue(*[Fault("slow", body=openai_body(), delay_s=2.0)] * 2)
    model = make(timeout_s=0.2, policy=RetryPolicy(attempts=2, jitter_s=0.0))
    with pytest.raises(ModelTimeoutError, match="timeout"):
        await model.request(HELLO)
    assert fault_server.count == 2


async def test_dropped_connection_is_retried(
    make: Maker, fault_server: FaultServer, fake_time: FakeTime
) -> None:
    fault_server.queue(Fault("drop"))
    assert (await make().request(HELLO)).ok
    assert fault_server.count == 2
    fault_server.queue(*[Fault("drop")] * 4)
    with pytest.raises(ModelConnectionError, match="connection"):
        await make().request(HELLO)


async def test_malformed_body_is_retried_then_typed(
    make: Maker, fault_server: FaultServer, fake_time: FakeTime
) -> None:
    fault_server.queue(Fault("malformed"))
    assert (await make().request(HELLO)).ok
    fault_server.queue(*[Fault("malformed")] * 4)
    with pytest.raises(MalformedResponseError):
        await make().request(HELLO)
    fault_server.queue(*[Fault("ok", body={"unexpected": True})] * 4)
    with pytest.raises(MalformedResponseError, match="no choices"):
        await make().request(HELLO)


async def test_circuit_breaker_opens_fails_fast_and_half_opens(
    make: Maker, fault_server: FaultServer, fake_time: FakeTime
) -> None:
    model = make(threshold=3, policy=RetryPolicy(attempts=2, jitter_s=0.0))
    fault_server.queue(*[Fault("status", status=500)] * 3)
    with pytest.raises(ProviderServerError):
        await model.request(HELLO)  # failures 1 and 2
    with pytest.raises(CircuitOpenError, match=r"circuit breaker of provider 'test' is open"):
        await model.request(HELLO)  # failure 3 opens it; the retry fails fast
    assert fault_server.count == 3
    with pytest.raises(CircuitOpenError) as info:
        await model.request(HELLO)
    assert fault_server.count == 3  # failed fast: the server saw nothing
    assert 0 < info.value.reopens_in_s <= 30.0
    assert model.breaker.state == "open"
    fake_time.now += 31
    assert model.breaker.state == "half-open"
    assert (await model.request(HELLO)).ok  # the trial passes and closes the breaker
    assert model.breaker.state == "closed" and fault_server.count == 4


async def test_client_errors_do_not_trip_the_breaker(
    make: Maker, fault_server: FaultServer, fake_time: FakeTime
) -> None:
    model = make(threshold=2)
    fault_server.queue(*[Fault("status", status=400)] * 3)
    for _ in range(3):
        with pytest.raises(BadRequestError):
            await model.request(HELLO)
    assert model.breaker.state == "closed"


async def test_fallback_chain_moves_on_and_collects_errors(
    make: Maker, fault_server: FaultServer, fake_time: FakeTime
) -> None:
    failing = make(policy=RetryPolicy(attempts=1))
    fault_server.queue(Fault("status", status=500))
    chain = FallbackModel([failing, ScriptedModel(["from the fallback"])])
    response = await chain.request(HELLO)
    assert response.message.content == "from the fallback" and response.model == "scripted"
    fault_server.queue(Fault("status", status=500), Fault("status", status=500))
    with pytest.raises(AllModelsFailedError) as info:
        await FallbackModel([failing, make(policy=RetryPolicy(attempts=1))]).request(HELLO)
    assert [type(e) for e in info.value.errors] == [ProviderServerError, ProviderServerError]


async def test_malformed_output_over_http_becomes_problems(
    make: Maker, fault_server: FaultServer, fake_time: FakeTime
) -> None:
    bad_call = {"id": "c1", "type": "function", "function": {"name": "add", "arguments": '{"a": 1,'}}
    ghost = {"id": "c2", "type": "function", "function": {"name": "mul", "arguments": "{}"}}
    fault_server.queue(
        Fault("ok", body=openai_body(None, tool_calls=[bad_call, ghost], finish_reason="tool_calls")),
        Fault("ok", body=openai_body("The answer is", finish_reason="length")),
        Fault("ok", body=openai_body("")),
    )
    model = make()
    calls = await model.request(HELLO, tools=[ADD])
    assert [p.kind for p in calls.problems] == ["invalid_arguments", "unknown_tool"]
    assert calls.message.tool_calls[0].raw_arguments == '{"a": 1,'
    assert fault_server.requests[0]["tools"][0]["function"]["name"] == "add"
    cut = await model.request(HELLO)
    assert cut.finish_reason == "length" and [p.kind for p in cut.problems] == ["truncated"]
    empty = await model.request(HELLO)
    assert [p.kind for p in empty.problems] == ["empty_reply"]


def anthropic_body(blocks: list[dict[str, object]], stop_reason: str = "end_turn") -> dict[str, object]:
    return {
        "id": "msg_1",
        "type": "message",
        "role": "assistant",
        "model": "claude-test",
        "content": blocks,
        "stop_reason": stop_reason,
        "stop_sequence": None,
        "usage": {"input_tokens": 20, "output_tokens": 5},
    }


async def test_anthropic_adapter_retries_and_maps_tool_use(
    fault_server: FaultServer, fake_time: FakeTime
) -> None:
    fault_server.queue(
        Fault("status", status=429, headers={"retry-after": "2"}, body={"type": "error"}),
        Fault(
            "ok",
            body=anthropic_body(
                [{"type": "tool_use", "id": "tu1", "name": "add", "input": {"a": 1, "b": 2}}], "tool_use"
            ),
        ),
    )
    model = AnthropicModel(
        "claude-haiku-4-5",
        api_key="k",
        base_url=fault_server.url.removesuffix("/v1"),
        retry=NO_JITTER,
        breaker=CircuitBreaker("anthropic-test", clock=fake_time.clock),
        sleep=fake_time.sleep,
    )
    response = await model.request([UserMessage(content="add 1 and 2")], tools=[ADD])
    assert response.ok and response.finish_reason == "tool_calls"
    assert response.message.tool_calls[0].arguments == {"a": 1, "b": 2}
    assert fake_time.sleeps == [2.0]
    assert response.usage.cost_usd == pytest.approx((20 * 1.0 + 5 * 5.0) / 1e6)
    sent = fault_server.requests[-1]
    assert sent["tools"][0]["input_schema"] == ADD.parameters
    assert json.dumps(sent["messages"]) == json.dumps(
        [{"role": "user", "content": [{"type": "text", "text": "add 1 and 2"}]}]
    )
    await model.aclose()


def test_backoff_is_exponential_capped_and_jittered() -> None:
    policy = RetryPolicy(initial_s=1.0, multiplier=2.0, max_s=5.0, jitter_s=0.5)
    assert [policy.backoff(n, lambda: 0.0) for n in range(1, 6)] == [1.0, 2.0, 4.0, 5.0, 5.0]
    assert policy.backoff(1, lambda: 1.0) == 1.5
