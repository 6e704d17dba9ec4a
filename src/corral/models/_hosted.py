"""What the hosted adapters share: error translation at the SDK seam, Retry-After, and the price table."""

from __future__ import annotations

import email.utils
import time
from dataclasses import dataclass
from typing import Any

from corral.models.errors import (
    AuthenticationError,
    BadRequestError,
    MalformedResponseError,
    ModelConnectionError,
    ModelError,
    ModelTimeoutError,
    ProviderError,
    ProviderServerError,
    RateLimitedError,
)


def retry_after(headers: Any) -> float | None:
    """Seconds to wait from ``retry-after-ms`` / ``retry-after`` (seconds or an HTTP date), if present."""
    if headers is None:
        return None
    millis = headers.get("retry-after-ms")
    if millis:
        try:
            return max(0.0, float(millis) / 1000)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def _body_excerpt(response: Any) -> str:
    try:
        text = str(response.text)
    except Exception:  # a streamed or closed body: the status says enough
        return ""
    return f": {text[:300]}" if text else ""


def translate_error(exc: Exception, sdk: Any, model: str, provider: str) -> ModelError:
    """Our error for an exception of an official SDK (``openai`` or ``anthropic``, same shape)."""
    where = f"model {model} (provider {provider})"
    if isinstance(exc, sdk.APITimeoutError):
        return ModelTimeoutError(f"{where}: no answer within the request timeout", model=model)
    if isinstance(exc, sdk.APIConnectionError):
        cause = exc.__cause__ or exc
        return ModelConnectionError(
            f"{where}: the connection failed or was dropped ({type(cause).__name__}: {cause})", model=model
        )
    if isinstance(exc, sdk.APIResponseValidationError):
        return MalformedResponseError(
            f"{where}: the response is not in the provider's format: {exc}", model=model
        )
    if isinstance(exc, sdk.APIStatusError):
        status = int(exc.status_code)
        detail = _body_excerpt(exc.response)
        if status == 429:
            after = retry_after(exc.response.headers)
            hint = f"; it asked to retry after {after:.1f} s" if after is not None else ""
            return RateLimitedError(
                f"{where}: rate limited (HTTP 429){hint}{detail}", model=model, retry_after=after
            )
        if status in (401, 403):
            return AuthenticationError(
                f"{where}: the API key was rejected (HTTP {status}); check the key and its rights{detail}",
                model=model,
                status=status,
            )
        if status == 408:
            return ModelTimeoutError(
                f"{where}: the provider timed out (HTTP 408)", model=model, status=status
            )
        if status >= 500:
            return ProviderServerError(
                f"{where}: server error (HTTP {status}){detail}", model=model, status=status
            )
        return BadRequestError(
            f"{where}: the request was refused (HTTP {status}); retrying will not help{detail}",
            model=model,
            status=status,
        )
    if isinstance(exc, ValueError):
        # A body that is not JSON surfaces from the SDK as a JSON decoding error.
        return MalformedResponseError(f"{where}: the response body is not valid JSON: {exc}", model=model)
    return ProviderError(f"{where}: {type(exc).__name__}: {exc}", model=model)


@dataclass(frozen=True)
class Price:
    """US dollars per million tokens."""

    input_per_mtok: float
    output_per_mtok: float

    def cost(self, input_tokens: int, output_tokens: int) -> float:
        return (input_tokens * self.input_per_mtok + output_tokens * self.output_per_mtok) / 1_000_000


#: List prices of common hosted models (USD per million tokens, standard tier, no caching), matched by the
#: longest prefix of the model id. A model missing here costs 0.0: pass ``prices=`` to an adapter to set it.
PRICES: dict[str, Price] = {
    "gpt-4o-mini": Price(0.15, 0.60),
    "gpt-4o": Price(2.50, 10.00),
    "gpt-4.1-nano": Price(0.10, 0.40),
    "gpt-4.1-mini": Price(0.40, 1.60),
    "gpt-4.1": Price(2.00, 8.00),
    "gpt-5-nano": Price(0.05, 0.40),
    "gpt-5-mini": Price(0.25, 2.00),
    "gpt-5": Price(1.25, 10.00),
    "o4-mini": Price(1.10, 4.40),
    "o3": Price(2.00, 8.00),
    "claude-3-5-haiku": Price(0.80, 4.00),
    "claude-haiku-4-5": Price(1.00, 5.00),
    "claude-sonnet-4": Price(3.00, 15.00),
    "claude-3-7-sonnet": Price(3.00, 15.00),
    "claude-opus-4-1": Price(15.00, 75.00),
    "claude-opus-4-5": Price(5.00, 25.00),
    "claude-opus-4": Price(15.00, 75.00),
}


def price_for(model_id: str, prices: dict[str, Price] | None = None) -> Price | None:
    """The price of ``model_id`` by longest matching prefix, or ``None`` when it is unknown."""
    table = prices if prices is not None else PRICES
    matches = [key for key in table if model_id.startswith(key)]
    return table[max(matches, key=len)] if matches else None
