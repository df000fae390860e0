"""A circuit breaker: stop calling a dependency that keeps failing, and probe it again later.

Closed: calls go through; `failure_threshold` consecutive failures open it. Open: calls are
refused (the caller answers with its fallback at once instead of waiting out a timeout) until
`reset_after_s` has passed; then one probe call is let through (half-open). The probe's success
closes the breaker, so the dependency's recovery is picked up without a restart; its failure
opens it again for another `reset_after_s`.

Used from one asyncio event loop, so it holds no lock.
"""

from __future__ import annotations

import time
from typing import Callable

CLOSED, OPEN, HALF_OPEN = "closed", "open", "half_open"
STATE_CODES = {CLOSED: 0, HALF_OPEN: 1, OPEN: 2}


class CircuitBreaker:
    """Whether to call a dependency now, from its recent successes and failures."""

    def __init__(self, name: str, failure_threshold: int = 3, reset_after_s: float = 1.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if failure_threshold < 1:
            raise ValueError("failure_threshold must be >= 1")
        self.name = name
        self.failure_threshold = failure_threshold
        self.reset_after_s = reset_after_s
        self._clock = clock
        self.state = CLOSED
        self.failures = 0
        self.opened_at = 0.0
        self.trips = 0

    def allow(self) -> bool:
        """Whether a call may go ahead now (in half-open state: only the one probe)."""
        if self.state == CLOSED:
            return True
        now = self._clock()
        # in half-open, a probe that never reported back (cancelled) is replaced after a while
        if now - self.opened_at >= self.reset_after_s:
            self.state = HALF_OPEN
            self.opened_at = now
            return True
        return False

    def success(self) -> None:
        self.state = CLOSED
        self.failures = 0

    def failure(self) -> None:
        self.failures += 1
        if self.state == HALF_OPEN or self.failures >= self.failure_threshold:
            if self.state != OPEN:
                self.trips += 1
            self.state = OPEN
            self.opened_at = self._clock()

    def to_json(self) -> dict:
        return {"state": self.state, "consecutive_failures": self.failures, "trips": self.trips}
