"""Settings, read from the environment at each use (nothing is cached) and checked at startup.

Plain Python and httpx-free on purpose: `cerver-mcp` checks its configuration before it
imports the MCP SDK, so a missing variable fails in well under a second.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from urllib.parse import urlsplit

DEFAULT_API_URL = "http://127.0.0.1:8000"
DEFAULT_INFISICAL_URL = "https://app.infisical.com"
DEFAULT_INFISICAL_ENVIRONMENT = "prod"
DEFAULT_INFISICAL_PATH = "/"


class ConfigError(ValueError):
    """A setting is missing or wrong; the message names the variable and what to set."""


@dataclass(frozen=True)
class GatewayConfig:
    api_url: str
    # Never in a repr, a log or an error.
    token: str | None = field(repr=False)


@dataclass(frozen=True)
class InfisicalConfig:
    api_url: str
    project_id: str
    environment: str
    secret_path: str
    token: str = field(repr=False)


def _setting(environ: Mapping[str, str], name: str) -> str:
    return environ.get(name, "").strip()


def http_url(environ: Mapping[str, str], name: str, default: str) -> str:
    """An http(s) base URL: the host (and port), without a trailing `/api`: the clients
    add the API paths themselves."""
    value = _setting(environ, name) or default
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ConfigError(f"{name}={value!r} is not an http(s) URL; set it like {default!r}")
    if parts.path.rstrip("/").endswith("/api"):
        raise ConfigError(f"{name}={value!r} ends with /api; set the host only, like {default!r}")
    return value.rstrip("/")


def backend_name(environ: Mapping[str, str]) -> str:
    """`CERVER_SECRETS_BACKEND`, default `env` (validated by the backend registry)."""
    return _setting(environ, "CERVER_SECRETS_BACKEND") or "env"


def gateway_config(environ: Mapping[str, str]) -> GatewayConfig:
    return GatewayConfig(
        api_url=http_url(environ, "CERVER_API_URL", DEFAULT_API_URL),
        token=_setting(environ, "CERVER_API_TOKEN") or None,
    )


def infisical_config(environ: Mapping[str, str]) -> InfisicalConfig:
    missing = [v for v in ("INFISICAL_TOKEN", "INFISICAL_PROJECT_ID") if not _setting(environ, v)]
    if missing:
        raise ConfigError(
            f"{' and '.join(missing)} {'is' if len(missing) == 1 else 'are'} required when "
            "CERVER_SECRETS_BACKEND=infisical: set INFISICAL_TOKEN to a service token and "
            "INFISICAL_PROJECT_ID to the project's id"
        )
    path = _setting(environ, "INFISICAL_SECRET_PATH") or DEFAULT_INFISICAL_PATH
    if not path.startswith("/"):
        raise ConfigError(f"INFISICAL_SECRET_PATH={path!r} must start with '/' (default '/')")
    return InfisicalConfig(
        api_url=http_url(environ, "INFISICAL_API_URL", DEFAULT_INFISICAL_URL),
        project_id=_setting(environ, "INFISICAL_PROJECT_ID"),
        environment=_setting(environ, "INFISICAL_ENVIRONMENT") or DEFAULT_INFISICAL_ENVIRONMENT,
        secret_path=path,
        token=_setting(environ, "INFISICAL_TOKEN"),
    )
