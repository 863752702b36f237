"""Failed-attempt throttling (pure: the caller passes `now`), e.g. clinician logins.

A key (an email address, or an IP address) that failed `limit` times within
`window_s` is refused until its oldest failure leaves the window. `Throttle` counts
in one process; `LoginThrottle` counts across instances through Redis when there is
one (keys are hashed: no email address is stored there).
"""

from __future__ import annotations

import hashlib
import logging
import secrets
import time
from collections import deque
from typing import Any

log = logging.getLogger(__name__)


class Throttle:
    def __init__(self, *, limit: int, window_s: float, max_keys: int = 100_000) -> None:
        self.limit = limit
        self.window_s = window_s
        self.max_keys = max_keys
        self._failures: dict[str, deque[float]] = {}

    def _recent(self, key: str, now: float) -> deque[float]:
        failures = self._failures.get(key)
        if failures is None:
            return deque()
        while failures and failures[0] <= now - self.window_s:
            failures.popleft()
        if not failures:
            del self._failures[key]
        return failures

    def retry_after(self, key: str, now: float) -> float:
        """Seconds until `key` may try again (0: it may now)."""
        failures = self._recent(key, now)
        if len(failures) < self.limit:
            return 0.0
        return failures[0] + self.window_s - now

    def failed(self, key: str, now: float) -> None:
        if key not in self._failures and len(self._failures) >= self.max_keys:
            self._failures.pop(next(iter(self._failures)))  # forget the oldest key
        self._recent(key, now)
        self._failures.setdefault(key, deque()).append(now)

    def succeeded(self, key: str) -> None:
        self._failures.pop(key, None)


class LoginThrottle:
    """`Throttle` for clinician log-ins, counted across instances when Redis is given.

    In Redis each key's failures are a sorted set of wall-clock times (one per failure)
    that expires with the window. When Redis cannot be reached the counts fall back to
    this process's own `Throttle`: log-ins keep working, still throttled per instance.
    """

    def __init__(self, *, limit: int, window_s: float, redis: Any = None,
                 prefix: str = "th:") -> None:
        self.local = Throttle(limit=limit, window_s=window_s)
        self.limit = limit
        self.window_s = window_s
        self.redis = redis
        self.prefix = prefix

    def _key(self, key: str) -> str:
        return f"{self.prefix}login:{hashlib.sha256(key.encode()).hexdigest()}"

    async def retry_after(self, key: str) -> float:
        now = time.time()
        local = self.local.retry_after(key, time.monotonic())
        if self.redis is None:
            return local
        try:
            name = self._key(key)
            await self.redis.zremrangebyscore(name, "-inf", now - self.window_s)
            if await self.redis.zcard(name) < self.limit:
                return local
            oldest = await self.redis.zrange(name, 0, 0, withscores=True)
            return max(local, float(oldest[0][1]) + self.window_s - now) if oldest else local
        except Exception:  # Redis down: this instance's own count still holds
            log.warning("login throttle: Redis unreachable, counting in this process")
            return local

    async def failed(self, key: str) -> None:
        self.local.failed(key, time.monotonic())
        if self.redis is None:
            return
        try:
            name = self._key(key)
            await self.redis.zadd(name, {secrets.token_hex(8): time.time()})
            await self.redis.expire(name, int(self.window_s) + 1)
        except Exception:
            log.warning("login throttle: Redis unreachable, counting in this process")

    async def succeeded(self, key: str) -> None:
        self.local.succeeded(key)
        if self.redis is None:
            return
        try:
            await self.redis.delete(self._key(key))
        except Exception:
            log.warning("login throttle: Redis unreachable, counting in this process")

    async def close(self) -> None:
        if self.redis is not None:
            await self.redis.aclose()
