"""The secrets backends, by the name `CERVER_SECRETS_BACKEND` gives them."""

from __future__ import annotations

from collections.abc import Mapping

from cerver_mcp.backends.base import Backend, SecretLookupError
from cerver_mcp.backends.env import EnvBackend
from cerver_mcp.backends.infisical import InfisicalBackend
from cerver_mcp.config import ConfigError, backend_name

BACKENDS: dict[str, Backend] = {b.name: b for b in (EnvBackend(), InfisicalBackend())}

__all__ = ["BACKENDS", "Backend", "SecretLookupError", "active"]


def active(environ: Mapping[str, str]) -> Backend:
    """The configured backend, its configuration checked; `ConfigError` otherwise."""
    name = backend_name(environ)
    backend = BACKENDS.get(name)
    if backend is None:
        raise ConfigError(
            f"CERVER_SECRETS_BACKEND={name!r} is not a known secrets backend; "
            f"use one of: {', '.join(BACKENDS)} (default env)"
        )
    backend.check_config(environ)
    return backend
