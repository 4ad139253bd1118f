"""Credential *references*: names in the secrets backend, resolved to values at use.

Backend ``env`` (the only one here) reads the server process's environment. A reference
must not become a way to read the server's own configuration, so a name resolves only if
the operator allows it (``CERVER_SECRET_REFS``: names and ``PREFIX*`` patterns; unset,
nothing resolves) and it is never a ``CERVER_*`` setting or a database URL. Values are
handed to the adapter as ``ResolvedCredentials`` (whose repr shows field names only) and
never logged, stored, or put in a transcript, error or response.
"""

from __future__ import annotations

import fnmatch
import os
from collections.abc import Mapping

from cerver.config import Settings
from cerver.errors import ComputeUnavailable, Unprocessable

# Names no reference may read, whatever CERVER_SECRET_REFS says.
NEVER = ("CERVER_*", "DATABASE_URL", "*_DATABASE_URL", "PGPASSWORD")


class ResolvedCredentials(dict[str, str]):
    """Field -> value for one provider. Its repr and str never show a value."""

    def __repr__(self) -> str:
        return f"ResolvedCredentials(fields={sorted(self)})"

    __str__ = __repr__


def refused_reason(settings: Settings, name: str) -> str | None:
    """Why ``name`` may not be referenced, or None when it may."""
    if any(fnmatch.fnmatchcase(name, pattern) for pattern in NEVER):
        return f"{name!r} is server configuration and can never be referenced"
    if not settings.secret_refs:
        return (
            "this server allows no secret references (the operator sets CERVER_SECRET_REFS "
            "to the names, or PREFIX* patterns, credentials may name); send the value instead"
        )
    if not any(fnmatch.fnmatchcase(name, pattern) for pattern in settings.secret_refs):
        return f"{name!r} is not among the names this server allows (CERVER_SECRET_REFS)"
    return None


def check_reference(settings: Settings, field: str, name: str) -> None:
    """422 at registration for a name that may not be referenced."""
    reason = refused_reason(settings, name)
    if reason is not None:
        raise Unprocessable(
            f"credentials.{field}: {reason}", details={"field": f"credentials.{field}"}
        )


def resolve_references(
    settings: Settings, provider: str, refs: Mapping[str, str]
) -> dict[str, str]:
    """Values for an account's references (field -> name), checked against the policy
    again at use (the operator may have narrowed it since registration)."""
    refused = [name for name in refs.values() if refused_reason(settings, name)]
    values = resolve(provider, {f: n for f, n in refs.items() if n not in refused})
    leaked = [n for f, n in refs.items() if values.get(f) and values[f] == settings.database_url]
    if refused or leaked:
        raise _missing(provider, [*refused, *leaked])
    return values


def resolve(provider: str, refs: Mapping[str, str]) -> dict[str, str]:
    """Values for names the *operator* chose (e.g. a deployment-wide model key), read from
    the backend with no policy check: never call this with names an account supplied."""
    values: dict[str, str] = {}
    missing = []
    for field, name in refs.items():
        value = os.environ.get(name)
        if value is None:
            missing.append(name)
        else:
            values[field] = value
    if missing:
        raise _missing(provider, missing)
    return values


def _missing(provider: str, names: list[str]) -> ComputeUnavailable:
    return ComputeUnavailable(
        f"credentials for {provider} reference secrets that are not available: "
        f"{', '.join(names)}; set them in the server's environment (and allow them "
        "with CERVER_SECRET_REFS) or register the values",
        details={"provider": provider, "missing": names},
    )
