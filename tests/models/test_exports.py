"""The public names of corral.models, pinned: adding or removing one is a visible decision."""

from __future__ import annotations

import corral.models
import corral.models.errors
from corral import CorralError, UsageError

EXPECTED = {
    "DEFAULT_LOCAL", "KNOWN_WEIGHTS", "PRICES", "AnthropicModel", "AssistantMessage", "CircuitBreaker",
    "FallbackModel", "FinishReason", "JournaledModel", "KnownWeights", "LocalModel", "Message", "Model",
    "ModelResponse", "ModelSettings", "OpenAIModel", "OutputProblem", "OutputSchema", "Price", "ProblemKind",
    "RetryPolicy", "ScriptedCall", "ScriptedModel", "SystemMessage", "ToolCall", "ToolDefinition",
    "ToolResultMessage", "Usage", "UserMessage", "breaker_for", "check_reply", "durable_request",
    "find_problems", "install_weights", "parse_tool_call", "part_files", "pip_command", "price_for",
    "resolve_model", "schema_error", "sha256_file", "weights_path",
}  # fmt: skip


def test_all_is_pinned_and_importable() -> None:
    assert set(corral.models.__all__) == EXPECTED
    assert len(corral.models.__all__) == len(EXPECTED)
    for name in corral.models.__all__:
        assert getattr(corral.models, name) is not None


def test_errors_derive_from_the_corral_roots() -> None:
    errors = corral.models.errors
    for name in dir(errors):
        value = getattr(errors, name)
        if isinstance(value, type) and issubclass(value, Exception) and value.__module__ == errors.__name__:
            assert issubclass(value, CorralError), name
            assert value.__doc__, f"{name} needs a docstring"
            assert name in (errors.__doc__ or ""), f"{name} is missing from the tree in the module docstring"
    assert issubclass(errors.ScriptExhaustedError, UsageError)
    assert not issubclass(errors.ProviderServerError, UsageError)
    assert errors.RateLimitedError.retryable and not errors.BadRequestError.retryable
