"""The per-key write rate: a token bucket per API key, in this process.

Each key may make ``IOC_WRITE_BURST`` writes at once and ``IOC_WRITE_RATE_PER_SECOND`` on
average; past that a write is a 429 with ``Retry-After`` before any work is done. Reads never
count. Buckets live in the process's memory: every worker and every replica counts on its
own (a key may write N times the rate through N processes), which bounds what one process
takes without a shared store.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass

from ioc.catalog.access import Principal
from ioc.errors import TooManyWrites

# Buckets of keys idle long enough to be full again are dropped once there are this many, so
# the table stays as small as the set of keys writing now.
PRUNE_AT = 1024


@dataclass
class _Bucket:
    tokens: float
    stamp: float


class WriteLimiter:
    """Token buckets by API key id; ``clock`` is injectable for tests."""

    def __init__(
        self, rate: float, burst: int, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.rate, self.burst, self.clock = rate, burst, clock
        self.buckets: dict[int, _Bucket] = {}

    def take(self, key_id: int) -> float:
        """Spend one write of the key: 0 when it may go, else the seconds until it may."""
        if self.rate <= 0:
            return 0.0
        now = self.clock()
        bucket = self.buckets.get(key_id)
        if bucket is None:
            if len(self.buckets) >= PRUNE_AT:
                self._prune(now)
            bucket = self.buckets[key_id] = _Bucket(float(self.burst), now)
        bucket.tokens = min(self.burst, bucket.tokens + (now - bucket.stamp) * self.rate)
        bucket.stamp = now
        if bucket.tokens >= 1:
            bucket.tokens -= 1
            return 0.0
        return (1 - bucket.tokens) / self.rate

    def _prune(self, now: float) -> None:
        full = self.burst / self.rate
        for key_id in [k for k, b in self.buckets.items() if now - b.stamp >= full]:
            del self.buckets[key_id]


def check_write_rate(limiter: WriteLimiter, principal: Principal) -> None:
    """TooManyWrites when the caller's key is past its write rate. Callers without a key are
    not counted: the write itself refuses them (401)."""
    if principal.key_id is None:
        return
    wait = limiter.take(principal.key_id)
    if wait > 0:
        seconds = max(1, math.ceil(wait))
        raise TooManyWrites(
            f"This API key writes faster than the {limiter.rate:g} writes a second (bursts of "
            f"{limiter.burst}) it may make: wait {seconds} s (Retry-After) and send it again.",
            retry_after=seconds,
        )
