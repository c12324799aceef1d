"""Per-key request limits: a token bucket per API key, in this process.

Each node keeps its own buckets, so N nodes behind a balancer allow up to N times the rate;
a shared limit across nodes needs a shared store (e.g. Redis) and is not done here.
"""

from __future__ import annotations

import math
import threading
import time


class TokenBuckets:
    """`rate` tokens a second up to `burst` per key; `rate` 0 means no limit."""

    def __init__(self, rate: float, burst: int) -> None:
        self.rate = rate
        self.burst = burst
        self._clock = time.monotonic
        self._lock = threading.Lock()
        self._buckets: dict[str, tuple[float, float]] = {}  # key -> (tokens, at)

    def take(self, key: str) -> int | None:
        """Spend one token; None when allowed, else the seconds to wait (for `Retry-After`)."""
        if self.rate <= 0:
            return None
        now = self._clock()
        with self._lock:
            tokens, at = self._buckets.get(key, (float(self.burst), now))
            tokens = min(float(self.burst), tokens + (now - at) * self.rate)
            if tokens >= 1.0:
                self._buckets[key] = (tokens - 1.0, now)
                return None
            self._buckets[key] = (tokens, now)
            return max(1, math.ceil((1.0 - tokens) / self.rate))
