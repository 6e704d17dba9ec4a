"""Time as a seam: leases, timers and ``ctx.now()`` read an injectable clock so tests jump time instead of
sleeping."""

from __future__ import annotations

import time
from typing import Protocol


class Clock(Protocol):
    """Where the durable layer gets the time. One method, so a test clock is a few lines."""

    def time(self) -> float:
        """Wall-clock seconds since the epoch."""
        ...


class SystemClock:
    """The real clock (``time.time``)."""

    def time(self) -> float:
        """Wall-clock seconds since the epoch."""
        return time.time()


class FakeClock:
    """A clock that only moves when told to: timers and leases become due without sleeping.

    >>> clock = FakeClock(1000.0)
    >>> clock.advance(60)
    >>> clock.time()
    1060.0
    """

    def __init__(self, start: float = 1_700_000_000.0) -> None:
        self._now = start

    def time(self) -> float:
        """The fake time."""
        return self._now

    def advance(self, seconds: float) -> None:
        """Move the fake time forward by ``seconds``."""
        self._now += seconds
