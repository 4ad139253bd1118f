"""Per-client token buckets (in memory, per replica) for the endpoints that answer without a
token. Over the limit: ``RateLimited`` with the seconds until a token is back."""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from fastapi import Request

from cerver.errors import RateLimited

DEFAULT_RATE_PER_S = 60.0
DEFAULT_BURST = 120
MAX_CLIENTS = 10_000  # least recently seen clients are forgotten beyond this


@dataclass
class _Bucket:
    tokens: float
    updated: float


class TokenBucketLimiter:
    def __init__(
        self,
        rate_per_s: float = DEFAULT_RATE_PER_S,
        burst: int = DEFAULT_BURST,
        *,
        clock: Callable[[], float] = time.monotonic,
        max_clients: int = MAX_CLIENTS,
    ) -> None:
        if rate_per_s <= 0 or burst < 1:
            raise ValueError("rate_per_s must be > 0 and burst >= 1")
        self.rate = rate_per_s
        self.burst = float(burst)
        self.clock = clock
        self.max_clients = max_clients
        self._buckets: OrderedDict[str, _Bucket] = OrderedDict()

    def take(self, key: str, cost: float = 1.0) -> None:
        """Spend ``cost`` tokens of ``key``'s bucket or raise ``RateLimited``."""
        now = self.clock()
        bucket = self._buckets.pop(key, None) or _Bucket(self.burst, now)
        bucket.tokens = min(self.burst, bucket.tokens + (now - bucket.updated) * self.rate)
        bucket.updated = now
        self._buckets[key] = bucket
        while len(self._buckets) > self.max_clients:
            self._buckets.popitem(last=False)
        if bucket.tokens < cost:
            retry = (cost - bucket.tokens) / self.rate
            raise RateLimited(
                f"rate limit: {self.rate:g} requests/s (burst {self.burst:g}) per client; "
                f"retry in {retry:.2f} s",
                retry_after_s=retry,
                details={"retry_after_s": round(retry, 3)},
            )
        bucket.tokens -= cost


gateway_limiter = TokenBucketLimiter()


def client_key(request: Request) -> str:
    return request.client.host if request.client is not None else "unknown"


async def rate_limit(request: Request) -> None:
    """FastAPI dependency: one token per request from this client address."""
    gateway_limiter.take(client_key(request))
