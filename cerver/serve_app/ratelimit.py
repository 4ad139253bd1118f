"""Per-client token buckets (in memory, per replica) for the endpoints that answer without a
token. Over the limit: ``RateLimited`` with the seconds until a token is back.

The client is the TCP peer. ``X-Forwarded-For`` is believed only when the peer is one of the
operator's trusted proxies (``CERVER_TRUSTED_PROXIES``), and then only up to the first
address that is not itself a trusted proxy (read right to left), so a client cannot pick
its own bucket by sending the header.

Behind Serve's HAProxy ingress the peer is HAProxy itself, on this node. Cerver starts it
with ``option forwardfor`` (``cerver/serve_app/haproxy_lines.py``), which appends the
client's address as the *last* ``X-Forwarded-For`` hop; when the replica's environment says
so (``CERVER_HAPROXY_FORWARDS_FOR=1``, set with the HAProxy settings in ``ingress.py``) and
the peer is this node (loopback or the node's address), that one last hop stands for the
peer. Hops a client sent itself come before it and are read only under the operator's
trusted proxies, as above: a client that sends ``X-Forwarded-For`` through HAProxy still
lands in its own bucket, even when it connects from loopback.
"""

from __future__ import annotations

import functools
import ipaddress
import os
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from fastapi import Request

from cerver.errors import RateLimited
from cerver.serve_app.ingress import FORWARDS_FLAG

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


_limiters: dict[tuple[float, int], TokenBucketLimiter] = {}


def gateway_limiter(rate_per_s: float, burst: int) -> TokenBucketLimiter:
    """The replica's limiter for these settings (``CERVER_GATEWAY_RATE_PER_S`` / ``_BURST``)."""
    limiter = _limiters.get((rate_per_s, burst))
    if limiter is None:
        limiter = _limiters[(rate_per_s, burst)] = TokenBucketLimiter(rate_per_s, burst)
    return limiter


Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def _trusted(address: str, proxies: list[Network]) -> bool:
    try:
        ip = ipaddress.ip_address(address.strip())
    except ValueError:
        return False
    return any(ip in net for net in proxies)


def client_address(
    peer: str,
    forwarded_for: str | None,
    proxies: list[Network],
    local_haproxy: list[Network] | None = None,
) -> str:
    """The address a request came from: the peer, or (behind trusted proxies) the nearest
    address in ``X-Forwarded-For`` that is not a trusted proxy. ``local_haproxy``: the
    addresses this node's HAProxy connects from, when it appends the client's address (the
    last hop, which then stands for the peer)."""
    hops = [h.strip() for h in (forwarded_for or "").split(",") if h.strip()]
    if hops and local_haproxy and _trusted(peer, local_haproxy):
        peer, hops = hops[-1], hops[:-1]
        try:
            ipaddress.ip_address(peer)
        except ValueError:
            return "unknown"  # not what HAProxy writes: one bucket for all such requests
    if not hops or not _trusted(peer, proxies):
        return peer
    for hop in reversed(hops):
        try:
            ipaddress.ip_address(hop)
        except ValueError:
            return peer  # a malformed chain: trust none of it
        if not _trusted(hop, proxies):
            return hop
    return hops[0] if hops else peer


_networks: dict[tuple[str, ...], list[Network]] = {}
_LOOPBACK = [ipaddress.ip_network("127.0.0.0/8"), ipaddress.ip_network("::1/128")]


@functools.cache
def local_haproxy() -> list[Network]:
    """Where this node's HAProxy connects from, if it appends ``X-Forwarded-For``: loopback
    and the node's own address (replicas bound to ``0.0.0.0`` are reached on it). Read
    once per process: the replica's environment does not change."""
    if os.environ.get(FORWARDS_FLAG) != "1":
        return []
    nets = list(_LOOPBACK)
    try:
        import ray

        nets.append(ipaddress.ip_network(ray.util.get_node_ip_address()))
    except Exception:  # no Ray in this process (a unit test): loopback only
        pass
    return nets


def client_key(request: Request) -> str:
    peer = request.client.host if request.client is not None else "unknown"
    configured = tuple(request.app.state.ctx.settings.trusted_proxies)
    proxies = _networks.get(configured)
    if proxies is None:
        proxies = _networks[configured] = [ipaddress.ip_network(n) for n in configured]
    local = local_haproxy()
    if not proxies and not local:
        return peer
    # Every X-Forwarded-For line, in order: HAProxy adds its own line after the client's.
    forwarded = ",".join(request.headers.getlist("x-forwarded-for"))
    return client_address(peer, forwarded, proxies, local)


async def rate_limit(request: Request) -> None:
    """FastAPI dependency: one token per request from this client address."""
    settings = request.app.state.ctx.settings
    gateway_limiter(settings.gateway_rate_per_s, settings.gateway_burst).take(client_key(request))
