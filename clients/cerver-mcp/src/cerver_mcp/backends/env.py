"""The `env` backend: the MCP server process's own environment (best for local use)."""

from __future__ import annotations

from collections.abc import Mapping

from cerver_mcp.backends.base import SecretLookupError


class EnvBackend:
    name = "env"

    def check_config(self, environ: Mapping[str, str]) -> None:
        return None

    async def fetch(self, name: str, environ: Mapping[str, str]) -> str:
        if name not in environ:
            raise SecretLookupError(
                f"secret {name!r} is not set in the environment of cerver-mcp "
                "(CERVER_SECRETS_BACKEND=env); names match exactly, case included"
            )
        return environ[name]

    async def ping(self, environ: Mapping[str, str]) -> str:
        return f"env: ok (reads this process's environment, {len(environ)} variables)"
