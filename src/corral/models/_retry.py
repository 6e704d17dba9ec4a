"""One failure policy for every hosted model: retries with backoff, Retry-After, and a circuit breaker.

The SDKs' own retries are switched off (``max_retries=0``) so this is the only policy. A request is tried
up to ``attempts`` times when it fails in a way that can pass (429, 5xx, a timeout, a dropped connection, a
cut-off body); never for a bad request or a rejected key. The wait is exponential with random jitter, or
exactly the provider's ``Retry-After`` when it sent one. Each provider has a :class:`CircuitBreaker`: after
``failure_threshold`` failures in a row it fails fast for ``reset_after_s``, then lets one trial through.

Time is injectable (``sleep``, ``clock``, ``random``) so tests run the whole policy without waiting.
"""

from __future__ import annotations

import asyncio
import random as _random
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TypeVar

import tenacity

from corral.models.errors import CircuitOpenError, ModelError, RateLimitedError

T = TypeVar("T")

Sleep = Callable[[float], Awaitable[None]]
Clock = Callable[[], float]


@dataclass(frozen=True)
class RetryPolicy:
    """How a failed request is retried. ``attempts`` counts the first try; ``attempts=1`` never retries."""

    attempts: int = 4
    initial_s: float = 0.5
    max_s: float = 20.0
    multiplier: float = 2.0
    jitter_s: float = 0.5
    #: A Retry-After longer than this is not waited for: the error is raised at once instead.
    max_retry_after_s: float = 60.0

    def backoff(self, retry_number: int, rand: Callable[[], float] = _random.random) -> float:
        """The wait before retry ``retry_number`` (1-based) when the provider gave no Retry-After."""
        base = min(self.max_s, self.initial_s * self.multiplier ** (retry_number - 1))
        return base + self.jitter_s * rand()

    def should_retry(self, exc: BaseException) -> bool:
        """Whether ``exc`` can pass on a later try under this policy."""
        if not isinstance(exc, ModelError) or not exc.retryable or isinstance(exc, CircuitOpenError):
            return False
        return not (
            isinstance(exc, RateLimitedError)
            and exc.retry_after is not None
            and exc.retry_after > self.max_retry_after_s
        )


@dataclass
class CircuitBreaker:
    """Fails fast after ``failure_threshold`` consecutive failures, for ``reset_after_s``; then half-opens.

    Half-open lets one request through: its success closes the breaker, its failure opens it again.
    """

    name: str
    failure_threshold: int = 5
    reset_after_s: float = 30.0
    clock: Clock = time.monotonic
    failures: int = field(default=0, init=False)
    opened_at: float | None = field(default=None, init=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False)

    @property
    def state(self) -> str:
        """``"closed"``, ``"open"`` or ``"half-open"``."""
        if self.opened_at is None:
            return "closed"
        return "open" if self.clock() - self.opened_at < self.reset_after_s else "half-open"

    def check(self) -> float | None:
        """``None`` when a call may go ahead now, else the seconds it must still fail fast for.

        The caller raises its own layer's error (a model's, a tool's) when it gets a number.
        """
        with self._lock:
            if self.opened_at is None:
                return None
            waited = self.clock() - self.opened_at
            if waited < self.reset_after_s:
                return self.reset_after_s - waited
            # Half-open: this call is the trial; push the window so concurrent ones still fail fast.
            self.opened_at = self.clock()
            return None

    def before(self, model: str) -> None:
        """Raise :class:`CircuitOpenError` if requests to this provider must fail fast now."""
        remaining = self.check()
        if remaining is not None:
            raise CircuitOpenError(
                f"model {model}: the circuit breaker of provider {self.name!r} is open after "
                f"{self.failures} failures in a row; calls fail fast for another "
                f"{remaining:.1f} s (use a FallbackModel to switch providers)",
                model=model,
                reopens_in_s=remaining,
            )

    def success(self) -> None:
        """Record a success: the breaker closes."""
        with self._lock:
            self.failures = 0
            self.opened_at = None

    def failure(self) -> None:
        """Record a failure that counts against the provider (not a bad request)."""
        with self._lock:
            self.failures += 1
            if self.failures >= self.failure_threshold:
                self.opened_at = self.clock()


_BREAKERS: dict[str, CircuitBreaker] = {}
_BREAKERS_LOCK = threading.Lock()


def breaker_for(provider: str) -> CircuitBreaker:
    """The process-wide breaker of ``provider`` (e.g. ``"openai"`` or a base URL), created on first use."""
    with _BREAKERS_LOCK:
        breaker = _BREAKERS.get(provider)
        if breaker is None:
            breaker = _BREAKERS[provider] = CircuitBreaker(provider)
        return breaker


async def call_with_retries(
    fn: Callable[[], Awaitable[T]],
    *,
    model: str,
    policy: RetryPolicy,
    breaker: CircuitBreaker | None = None,
    sleep: Sleep = asyncio.sleep,
    rand: Callable[[], float] = _random.random,
) -> T:
    """Await ``fn()`` under ``policy`` and ``breaker``; the last error is raised when every try fails."""

    def wait(state: tenacity.RetryCallState) -> float:
        exc = state.outcome.exception() if state.outcome is not None else None
        if isinstance(exc, RateLimitedError) and exc.retry_after is not None:
            return exc.retry_after
        return policy.backoff(state.attempt_number, rand)

    retrying = tenacity.AsyncRetrying(
        stop=tenacity.stop_after_attempt(max(1, policy.attempts)),
        wait=wait,
        retry=tenacity.retry_if_exception(policy.should_retry),
        sleep=sleep,
        reraise=True,
    )
    async for attempt in retrying:
        with attempt:
            if breaker is not None:
                breaker.before(model)
            try:
                result = await fn()
            except ModelError as exc:
                # Only failures of the provider count; a bad request is the caller's and says nothing
                # about the provider's health.
                if breaker is not None and exc.retryable:
                    breaker.failure()
                raise
            if breaker is not None:
                breaker.success()
            return result
    raise AssertionError("unreachable: tenacity re-raises the last error")  # pragma: no cover
