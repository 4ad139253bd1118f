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


def test_forwarded_for_only_from_trusted_proxies() -> None:
    import ipaddress

    from cerver.serve_app.ratelimit import client_address

    proxies = [ipaddress.ip_network("10.0.0.0/24"), ipaddress.ip_network("::1/128")]
    # A client talking to us directly cannot choose its bucket with the header.
    assert client_address("203.0.113.9", "198.51.100.1", proxies) == "203.0.113.9"
    assert client_address("203.0.113.9", None, proxies) == "203.0.113.9"
    # Behind our proxy: the nearest address that is not one of our proxies.
    assert client_address("10.0.0.2", "198.51.100.1", proxies) == "198.51.100.1"
    assert client_address("10.0.0.2", "6.6.6.6, 198.51.100.1, 10.0.0.7", proxies) == (
        "198.51.100.1"
    )
    assert client_address("::1", "2001:db8::5", proxies) == "2001:db8::5"
    # A malformed chain is not believed.
    assert client_address("10.0.0.2", "198.51.100.1, not-an-ip", proxies) == "10.0.0.2"
    # Nothing trusted configured: always the peer.
    assert client_address("10.0.0.2", "198.51.100.1", []) == "10.0.0.2"


def test_client_key_reads_the_trusted_proxies_setting(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from types import SimpleNamespace

    from starlette.requests import Request

    from cerver.config import Settings
    from cerver.serve_app.ratelimit import client_key

    def key(peer: str, forwarded: str, trusted: list[str]) -> str:
        settings = Settings(home=tmp_path, database_url="sqlite://", trusted_proxies=trusted)
        app = SimpleNamespace(state=SimpleNamespace(ctx=SimpleNamespace(settings=settings)))
        scope = {
            "type": "http",
            "app": app,
            "client": (peer, 40000),
            "headers": [(b"x-forwarded-for", forwarded.encode())],
        }
        return client_key(Request(scope))

    assert key("10.0.0.2", "198.51.100.1", []) == "10.0.0.2"
    assert key("10.0.0.2", "198.51.100.1", ["10.0.0.0/8"]) == "198.51.100.1"
    assert key("192.0.2.1", "198.51.100.1", ["10.0.0.0/8"]) == "192.0.2.1"
