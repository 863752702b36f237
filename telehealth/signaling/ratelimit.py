"""A token bucket per connection (pure: the caller passes a monotonic `now`)."""

from __future__ import annotations


class TokenBucket:
    __slots__ = ("_last", "_last_warning", "_tokens", "burst", "rate")

    def __init__(self, burst: int, rate: float, now: float) -> None:
        self.burst = burst
        self.rate = rate
        self._tokens = float(burst)
        self._last = now
        self._last_warning = float("-inf")

    def take(self, now: float) -> bool:
        """Spend one token if there is one."""
        self._tokens = min(self.burst, self._tokens + (now - self._last) * self.rate)
        self._last = now
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return True
        return False

    def should_warn(self, now: float) -> bool:
        """At most one `rate_limited` error frame a second."""
        if now - self._last_warning >= 1.0:
            self._last_warning = now
            return True
        return False
