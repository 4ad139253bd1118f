"""Resolve provider credential *references* to values, at provisioning time only.

The account stores names (``{"vercel_token": "VERCEL_TOKEN"}``); values live in the secrets
backend. Backend ``env`` (default) reads the host process environment. Values are returned
to the adapter and never logged, stored, or put in a transcript or response.
"""

from __future__ import annotations

import os

from cerver.errors import ComputeUnavailable


def resolve(provider: str, refs: dict[str, str]) -> dict[str, str]:
    backend = os.environ.get("CERVER_SECRETS_BACKEND", "env")
    if backend != "env":
        raise ComputeUnavailable(
            f"secrets backend {backend!r} is not available on this server; use 'env'"
        )
    values: dict[str, str] = {}
    missing = []
    for field, name in refs.items():
        value = os.environ.get(name)
        if value is None:
            missing.append(name)
        else:
            values[field] = value
    if missing:
        raise ComputeUnavailable(
            f"credentials for {provider} reference secrets that are not set: "
            f"{', '.join(missing)}; set them in the server's environment",
            details={"provider": provider, "missing": missing},
        )
    return values
