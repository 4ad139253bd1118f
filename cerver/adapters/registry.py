"""The one place that maps provider names (and aliases) to adapter classes.

Registration is explicit (``register``), lookup answers an unknown name with the list of
valid ones. No provider if/elif chains anywhere else.
"""

from __future__ import annotations

import threading

from cerver.adapters.base import ComputeAdapter
from cerver.errors import BadRequest

_ADAPTERS: dict[str, type[ComputeAdapter]] = {}
_ALIASES: dict[str, str] = {}


def register(cls: type[ComputeAdapter], *aliases: str) -> type[ComputeAdapter]:
    _ADAPTERS[cls.name] = cls
    for alias in aliases:
        _ALIASES[alias] = cls.name
    return cls


def canonical(name: str) -> str:
    return _ALIASES.get(name, name)


def names() -> list[str]:
    _load_builtin()
    return sorted(_ADAPTERS)


def has_adapter(name: str) -> bool:
    _load_builtin()
    return canonical(name) in _ADAPTERS


def get(name: str) -> type[ComputeAdapter]:
    _load_builtin()
    key = canonical(name)
    try:
        return _ADAPTERS[key]
    except KeyError:
        raise BadRequest(
            f"unknown provider {name!r}; valid providers: {', '.join(sorted(_ADAPTERS))}",
            details={"provider": name, "valid": sorted(_ADAPTERS)},
        ) from None


_loaded = False
_loading = threading.Lock()


def _load_builtin() -> None:
    """Import the built-in adapter modules once; each registers itself on import.

    Lookups run in worker threads (``asyncio.to_thread``): a second thread must wait for
    the first one's import to finish, not see a registry that is still empty."""
    global _loaded
    if _loaded:
        return
    with _loading:
        if not _loaded:
            # Bring-your-own-cloud adapters (e2b, vercel, daytona) import their SDKs on first use.
            from cerver.adapters import (  # noqa: F401
                daytona,
                e2b,
                local,
                p69,
                raycluster,
                relay,
                vercel,
            )

            _loaded = True
