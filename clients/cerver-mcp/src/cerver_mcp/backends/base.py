"""What every secrets backend provides, and the one error they raise."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol


class SecretLookupError(ValueError):
    """The name is missing in the backend, or the backend refused or could not be reached.
    The message says which, and never holds a secret value or a token."""


class Backend(Protocol):
    name: str

    def check_config(self, environ: Mapping[str, str]) -> None:
        """Raise `ConfigError` (naming the variable) if this backend cannot be used."""

    async def fetch(self, name: str, environ: Mapping[str, str]) -> str:
        """The value stored under exactly ``name``; `SecretLookupError` otherwise."""

    async def ping(self, environ: Mapping[str, str]) -> str:
        """Reach the backend without reading a value; say what works (for --check)."""
