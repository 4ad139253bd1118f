from __future__ import annotations

import pytest

from cerver.errors import RateLimited
from cerver.serve_app.ratelimit import TokenBucketLimiter

pytestmark = pytest.mark.timeout(30)


def test_token_bucket_allows_burst_then_refills() -> None:
    now = [0.0]
    limiter = TokenBucketLimiter(rate_per_s=2.0, burst=3, clock=lambda: now[0])
    for _ in range(3):
        limiter.take("a")
    with pytest.raises(RateLimited) as info:
        limiter.take("a")
    assert info.value.retry_after_s == pytest.approx(0.5)
    assert info.value.status == 429
    limiter.take("b")  # other clients have their own bucket
    now[0] = 0.5
    limiter.take("a")  # one token back after 1/rate seconds


def test_forgets_least_recent_clients() -> None:
    limiter = TokenBucketLimiter(rate_per_s=1.0, burst=1, clock=lambda: 0.0, max_clients=2)
    limiter.take("a")
    limiter.take("b")
    limiter.take("c")  # evicts "a"
    limiter.take("a")  # a fresh bucket again
    with pytest.raises(RateLimited):
        limiter.take("c")
