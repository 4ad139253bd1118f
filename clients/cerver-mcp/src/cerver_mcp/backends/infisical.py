"""The `infisical` backend: Infisical's REST API, one request per fetch (no cache).

`GET {INFISICAL_API_URL}/api/v3/secrets/raw/{name}?workspaceId=&environment=&secretPath=`
with `Authorization: Bearer {INFISICAL_TOKEN}` (a service token, `st.…`, or a machine
identity's access token). httpx rather than `infisicalsdk`: one GET needs no SDK, and the
SDK's cache would have to be turned off anyway (the docs promise no cache).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from urllib.parse import quote

import httpx

from cerver_mcp.backends.base import SecretLookupError
from cerver_mcp.config import InfisicalConfig, infisical_config

TIMEOUT_S = 15.0


class InfisicalBackend:
    name = "infisical"

    def check_config(self, environ: Mapping[str, str]) -> None:
        infisical_config(environ)

    async def fetch(self, name: str, environ: Mapping[str, str]) -> str:
        cfg = infisical_config(environ)
        where = _where(cfg)
        try:
            body = await _get(cfg, f"/api/v3/secrets/raw/{quote(name, safe='')}", {})
        except _NotFound as exc:
            raise SecretLookupError(
                f"secret {name!r} not found in Infisical ({where}); Infisical said: {exc}"
            ) from None
        secret = body.get("secret") if isinstance(body, dict) else None
        if not isinstance(secret, dict) or not isinstance(secret.get("secretValue"), str):
            raise SecretLookupError(f"Infisical answered without a secret value for {name!r}")
        # Matching is exact: a key that differs (case, say) is not the name asked for.
        if secret.get("secretKey", name) != name:
            raise SecretLookupError(f"secret {name!r} not found in Infisical ({where})")
        return str(secret["secretValue"])

    async def ping(self, environ: Mapping[str, str]) -> str:
        cfg = infisical_config(environ)
        # The list endpoint with values hidden: proves the token, project and environment.
        try:
            body = await _get(cfg, "/api/v3/secrets/raw", {"viewSecretValue": "false"})
        except _NotFound as exc:
            raise SecretLookupError(f"Infisical answered 404 ({_where(cfg)}): {exc}") from None
        count = len(body.get("secrets") or []) if isinstance(body, dict) else 0
        return f"infisical: ok ({cfg.api_url}, {_where(cfg)}, {count} secrets readable)"


class _NotFound(Exception):
    """A 404; its text is Infisical's message."""


def _where(cfg: InfisicalConfig) -> str:
    return f"project {cfg.project_id}, environment {cfg.environment}, path {cfg.secret_path}"


async def _get(cfg: InfisicalConfig, path: str, extra: dict[str, str]) -> Any:
    """The JSON body of a 200; `_NotFound` for a 404; `SecretLookupError` for anything else."""
    params = {
        "workspaceId": cfg.project_id,
        "environment": cfg.environment,
        "secretPath": cfg.secret_path,
        **extra,
    }
    headers = {"Authorization": f"Bearer {cfg.token}", "Accept": "application/json"}
    try:
        async with httpx.AsyncClient(timeout=TIMEOUT_S) as client:
            response = await client.get(cfg.api_url + path, params=params, headers=headers)
    except httpx.HTTPError as exc:
        raise SecretLookupError(
            f"cannot reach Infisical at {cfg.api_url} ({type(exc).__name__}); "
            "check INFISICAL_API_URL"
        ) from None
    if response.status_code == 404:
        raise _NotFound(_message(response))
    if response.status_code != 200:
        raise SecretLookupError(
            f"Infisical answered {response.status_code}: {_message(response)} "
            "(check INFISICAL_TOKEN, INFISICAL_PROJECT_ID and INFISICAL_ENVIRONMENT)"
        )
    try:
        return response.json()
    except ValueError:
        raise SecretLookupError("Infisical answered 200 with a body that is not JSON") from None


def _message(response: httpx.Response) -> str:
    """Infisical's own error message (`{"statusCode", "message", "error"}`), shortened."""
    try:
        body = response.json()
    except ValueError:
        return response.text[:200] or response.reason_phrase
    message = body.get("message") if isinstance(body, dict) else None
    return str(message)[:500] if message else response.reason_phrase
