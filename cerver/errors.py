"""Every error Cerver raises on purpose, and the one HTTP status each maps to.

    CerverError                      500  internal
    ├── BadRequest                   400  bad_request
    │   └── PathEscape               400  path_escape
    ├── Unauthorized                 401  unauthorized
    ├── BudgetExceeded               402  budget_exceeded       (an LLM turn would overspend)
    ├── NotFound                     404  not_found
    ├── Conflict                     409  conflict
    │   ├── ComputeUnavailable       409  compute_unavailable   (carries a recommendation)
    │   │   └── ComputeOffline       409  compute_offline       (a relay host is not connected)
    │   └── SessionClosed            409  session_closed
    ├── PayloadTooLarge              413  payload_too_large
    ├── Unprocessable                422  unprocessable
    │   └── NoProviderFits           422  no_provider_fits
    ├── RateLimited                  429  rate_limited          (carries retry_after_s)
    │   └── LimitReached             429  limit_reached         (an account cap; names it)
    ├── ProviderError                502  provider_error        (a provider failed us)
    │   ├── SandboxLost              502  sandbox_lost
    │   ├── ProviderAuthFailed       502  provider_auth_failed  (the provider refused our key)
    │   └── UpstreamFailed           502  upstream_failed       (every model attempt failed)
    └── ComputeLost                  503  compute_lost          (a relay dropped mid-run)

Structured data travels in keyword-only fields (``details``); nothing parses messages back.
Adapters translate vendor errors at their edge with ``raise ... from exc``.
"""

from __future__ import annotations

from typing import Any


class CerverError(Exception):
    status: int = 500
    code: str = "internal"

    def __init__(self, message: str, *, details: Any = None) -> None:
        super().__init__(message)
        self.message = message
        self.details = details

    def to_body(self) -> dict[str, Any]:
        """The one error shape, as a client may see it: no host paths, no reprs of internal
        exceptions (``cerver.scrub``); ``message`` and ``details`` keep the full text."""
        from cerver.scrub import scrub, scrub_text

        body: dict[str, Any] = {"code": self.code, "message": scrub_text(self.message)}
        if self.details is not None:
            body["details"] = scrub(self.details)
        return {"error": body}

    def __reduce__(self) -> tuple[Any, ...]:
        # Errors cross Ray process boundaries; keep the keyword-only details.
        return (_rebuild, (type(self), self.message, self.details, self.__dict__))


def _rebuild(cls: type[CerverError], message: str, details: Any, state: dict[str, Any]) -> Any:
    err = cls.__new__(cls)
    CerverError.__init__(err, message, details=details)
    err.__dict__.update(state)
    return err


class BadRequest(CerverError):
    status, code = 400, "bad_request"


class PathEscape(BadRequest):
    code = "path_escape"


class Unauthorized(CerverError):
    status, code = 401, "unauthorized"


class BudgetExceeded(CerverError):
    status, code = 402, "budget_exceeded"


class NotFound(CerverError):
    status, code = 404, "not_found"


class Conflict(CerverError):
    status, code = 409, "conflict"


class ComputeUnavailable(Conflict):
    code = "compute_unavailable"


class ComputeOffline(ComputeUnavailable):
    code = "compute_offline"


class SessionClosed(Conflict):
    code = "session_closed"


class PayloadTooLarge(CerverError):
    status, code = 413, "payload_too_large"


class Unprocessable(CerverError):
    status, code = 422, "unprocessable"


class NoProviderFits(Unprocessable):
    code = "no_provider_fits"


class RateLimited(CerverError):
    status, code = 429, "rate_limited"

    def __init__(self, message: str, *, retry_after_s: float, details: Any = None) -> None:
        super().__init__(message, details=details)
        self.retry_after_s = retry_after_s


class LimitReached(RateLimited):
    """An account is at one of its caps (live computes, open sessions, concurrent runs).
    ``details`` names the limit, its value and the setting that raises it."""

    code = "limit_reached"


class ProviderError(CerverError):
    status, code = 502, "provider_error"


class SandboxLost(ProviderError):
    code = "sandbox_lost"


class ProviderAuthFailed(ProviderError):
    code = "provider_auth_failed"


class UpstreamFailed(ProviderError):
    code = "upstream_failed"


class ComputeLost(CerverError):
    """The relay host dropped while a call was in flight: its outcome is unknown."""

    status, code = 503, "compute_lost"
