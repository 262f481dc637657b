"""Requests-per-minute and tokens-per-minute limits as asyncio token buckets.

Each bucket refills continuously at its per-minute rate and holds at most one second's worth
(at least one request), so traffic is smooth rather than a burst at the top of each minute. A
request bigger than a bucket may go when the bucket is full and drives it negative, so the
average rate still holds. Token costs are estimated before sending and settled with the
usage the server reports.
"""

from __future__ import annotations

import asyncio
import time


class _Bucket:
    def __init__(self, per_minute: float | None):
        if per_minute is not None and per_minute <= 0:
            raise ValueError(f"a per-minute limit must be positive, got {per_minute}")
        self.rate = None if per_minute is None else per_minute / 60.0
        self.capacity = None if per_minute is None else max(1.0, self.rate)
        self.level = self.capacity
        self.stamp = time.monotonic()

    def refill(self, now: float) -> None:
        if self.rate is not None:
            self.level = min(self.capacity, self.level + (now - self.stamp) * self.rate)
        self.stamp = now

    def wait_for(self, cost: float) -> float:
        if self.rate is None:
            return 0.0
        need = min(cost, self.capacity)
        return 0.0 if self.level >= need else (need - self.level) / self.rate

    def take(self, cost: float) -> None:
        if self.rate is not None:
            self.level -= cost


class RateLimiter:
    """Waits so that starts stay within `requests_per_minute` and tokens within `tokens_per_minute`."""

    def __init__(self, requests_per_minute: float | None = None, tokens_per_minute: float | None = None):
        """None for a limit means unlimited."""
        self._requests = _Bucket(requests_per_minute)
        self._tokens = _Bucket(tokens_per_minute)
        self._lock = asyncio.Lock()

    async def acquire(self, tokens: float) -> None:
        """Wait (first come, first served) until one request of ~`tokens` tokens may start."""
        async with self._lock:
            while True:
                now = time.monotonic()
                self._requests.refill(now)
                self._tokens.refill(now)
                wait = max(self._requests.wait_for(1.0), self._tokens.wait_for(tokens))
                if wait <= 0:
                    break
                await asyncio.sleep(wait)
            self._requests.take(1.0)
            self._tokens.take(tokens)

    def refund(self, tokens: float) -> None:
        """Give back what `acquire(tokens)` took, for a request that was not sent after all."""
        for bucket, cost in ((self._requests, 1.0), (self._tokens, tokens)):
            if bucket.rate is not None:
                bucket.level = min(bucket.capacity, bucket.level + cost)

    def settle(self, estimated: float, actual: float) -> None:
        """Correct the token bucket once the real usage of a request is known."""
        self._tokens.take(actual - estimated)
        if self._tokens.capacity is not None:
            self._tokens.level = min(self._tokens.level, self._tokens.capacity)
