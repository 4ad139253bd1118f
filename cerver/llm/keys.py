"""Model keys and endpoints. Keys are resolved *by name* through the secrets backend
(cerver/secrets.py: ``env`` by default), deployment-wide: ``OPENAI_API_KEY`` for the
`openai` harness, ``ANTHROPIC_API_KEY`` for `anthropic`, ``OPENAI_COMPATIBLE_API_KEY``
(optional: vLLM and Ollama take any key) for `openai-compatible`. An account overrides them
with its own (``POST /v2/account/providers``, provider ``openai``, ``anthropic`` or
``openai-compatible``: ``api_key``, optional ``base_url``), resolved at every turn. Base
URLs come from the settings (``OPENAI_BASE_URL``, ``ANTHROPIC_BASE_URL``,
``CERVER_OPENAI_COMPATIBLE_BASE_URL``) or, when unset there, from the SDK's own reading of
its standard variable.

Values are handed to the harness and nowhere else: not logged, stored, or returned."""

from __future__ import annotations

from collections.abc import Mapping

from cerver import secrets
from cerver.config import Settings
from cerver.errors import CerverError, Conflict
from cerver.llm.harnesses.base import Endpoint

KEY_NAMES = {
    "openai": "OPENAI_API_KEY",
    "anthropic": "ANTHROPIC_API_KEY",
    "openai-compatible": "OPENAI_COMPATIBLE_API_KEY",
}
# An openai-compatible server that checks no key still needs the SDK to send one.
NO_KEY = "no-key"


class ModelUnavailable(Conflict):
    code = "model_unavailable"


def endpoint_for(harness: str, settings: Settings) -> Endpoint:
    base_url = settings.llm_base_urls.get(harness)
    name = KEY_NAMES[harness]
    if harness == "openai-compatible":
        if not base_url:
            raise ModelUnavailable(
                "no openai-compatible endpoint is configured; set "
                "CERVER_OPENAI_COMPATIBLE_BASE_URL (and CERVER_OPENAI_COMPATIBLE_MODELS)",
                details={"harness": harness},
            )
        key = _resolve(harness, name, required=False) or NO_KEY
    else:
        key = _resolve(harness, name, required=True) or ""
    return Endpoint(api_key=key, base_url=base_url or None, timeout_s=settings.llm_timeout_s)


def account_endpoint(harness: str, credentials: Mapping[str, str], settings: Settings) -> Endpoint:
    """An account's own endpoint for a harness, from what it registered (``api_key``, and
    ``base_url`` where given; else the deployment's base URL)."""
    base_url = credentials.get("base_url") or settings.llm_base_urls.get(harness)
    if harness == "openai-compatible" and not base_url:
        raise ModelUnavailable(
            "the account's openai-compatible credentials name no base_url, and this server "
            "has none (CERVER_OPENAI_COMPATIBLE_BASE_URL)",
            details={"harness": harness},
        )
    return Endpoint(
        api_key=credentials.get("api_key") or NO_KEY,
        base_url=base_url or None,
        timeout_s=settings.llm_timeout_s,
    )


def available(harness: str, settings: Settings) -> bool:
    """Whether this deployment can call the harness (a key, or an endpoint, is there)."""
    try:
        endpoint_for(harness, settings)
    except CerverError:
        return False
    return True


def _resolve(harness: str, name: str, *, required: bool) -> str | None:
    try:
        return secrets.resolve(harness, {"api_key": name})["api_key"]
    except CerverError as exc:
        if not required:
            return None
        raise ModelUnavailable(
            f"no key for the {harness} harness: store {name} in the secrets backend "
            "(CERVER_SECRETS_BACKEND) of this server",
            details={"harness": harness, "secret": name},
        ) from exc
