"""Dashboard sign-in: server-side browser sessions, the cookie that names one, and CSRF.

- The cookie holds a random session id, never the API token; the store keeps its hash
  (``store/browser_sessions.py``). HttpOnly, SameSite=Strict, Path=/dashboard, and Secure when
  the request came over HTTPS (directly, or as a trusted proxy says in X-Forwarded-Proto).
- Every request that changes something carries the session's CSRF token: the form field
  ``csrf_token``, or the ``X-CSRF-Token`` header (htmx sends it from ``hx-headers``).
  Without it the answer is 403. Sign-in, which has no session yet, instead refuses a
  cross-origin ``Origin``.
"""

from __future__ import annotations

import asyncio
import hmac
import ipaddress
from urllib.parse import urlsplit

from fastapi import Request

from cerver.config import Settings
from cerver.store import Store
from cerver.store.browser_sessions import BrowserSession

COOKIE = "cerver_dashboard"
CSRF_FIELD = "csrf_token"
CSRF_HEADER = "x-csrf-token"


class SignInRequired(Exception):
    """No valid browser session: the page redirects (303) to the sign-in form."""


class CsrfRefused(Exception):
    """A state-changing request without this session's CSRF token (403)."""


def is_https(request: Request, settings: Settings) -> bool:
    """HTTPS to the browser: TLS on this connection, or a trusted proxy's X-Forwarded-Proto.

    Serve's HTTP server already rewrites the scheme from X-Forwarded-Proto for loopback
    peers, so while the header is present it is judged here by our own trust rule
    (``CERVER_TRUSTED_PROXIES``), not by the rewritten scheme."""
    forwarded = request.headers.get("x-forwarded-proto")
    if forwarded is None:
        return request.url.scheme == "https"
    if forwarded.lower() != "https":
        return False
    peer = request.client.host if request.client is not None else ""
    try:
        ip = ipaddress.ip_address(peer)
    except ValueError:
        return False
    return any(ip in ipaddress.ip_network(net) for net in settings.trusted_proxies)


def same_origin(request: Request) -> bool:
    """False only when the browser says the request came from another origin."""
    origin = request.headers.get("origin")
    if not origin or origin == "null":
        return origin is None
    return urlsplit(origin).netloc == request.headers.get("host", "")


async def current(request: Request, store: Store) -> BrowserSession:
    session_id = request.cookies.get(COOKIE)
    if not session_id:
        raise SignInRequired
    found = await asyncio.to_thread(store.browser_sessions.get, session_id)
    if found is None:
        raise SignInRequired
    return found


async def check_csrf(request: Request, session: BrowserSession) -> None:
    sent = request.headers.get(CSRF_HEADER)
    if sent is None:
        form = await request.form()
        value = form.get(CSRF_FIELD)
        sent = value if isinstance(value, str) else None
    if not sent or not hmac.compare_digest(sent, session.csrf_token) or not same_origin(request):
        raise CsrfRefused
