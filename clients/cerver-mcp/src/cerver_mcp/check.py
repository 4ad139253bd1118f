"""`cerver-mcp --check`: each part of the configuration, reached for real, one line each."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping

from cerver_mcp import backends
from cerver_mcp.config import gateway_config
from cerver_mcp.errors import GatewayError
from cerver_mcp.gateway import Gateway


def check(environ: Mapping[str, str]) -> int:
    results = asyncio.run(_check(environ))
    for ok, line in results:
        print(("ok    " if ok else "FAIL  ") + line)
    return 0 if all(ok for ok, _ in results) else 1


async def _check(environ: Mapping[str, str]) -> list[tuple[bool, str]]:
    return [await _backend(environ), await _gateway(environ)]


async def _backend(environ: Mapping[str, str]) -> tuple[bool, str]:
    try:
        backend = backends.active(environ)
        return True, f"secrets backend {await backend.ping(environ)}"
    except ValueError as exc:  # ConfigError, SecretLookupError
        return False, f"secrets backend: {exc}"


async def _gateway(environ: Mapping[str, str]) -> tuple[bool, str]:
    try:
        cfg = gateway_config(environ)
        page = await Gateway(cfg).list_sessions(limit=1)
    except (ValueError, GatewayError) as exc:
        return False, f"gateway: {exc}"
    seen = "sessions readable" if page.get("sessions") else "no sessions yet"
    return True, f"gateway: {cfg.api_url}, token accepted ({seen})"
