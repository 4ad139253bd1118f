"""What a client may see of an error: never a host path, never the repr of an internal
exception. ``CerverError.to_body`` (every error a client, a transcript or a stress result
sees) passes its message and details through ``scrub``; the server log keeps the full
text (the HTTP layer logs server-side failures before answering).

Host paths are absolute paths under the directories a host has (``/home``, ``/tmp``,
``/usr``, ...); paths as a sandbox sees them under bwrap (``/workspace/...``) and API paths
(``/v2/sessions/...``) are kept. A repr such as ``ValueError('x')`` becomes ``ValueError``.
"""

from __future__ import annotations

import re
from typing import Any

HOST_PATH = "<host path>"

_HOST_DIRS = (
    "home|root|tmp|usr|opt|var|etc|proc|sys|srv|mnt|run|work|nix|lib|lib32|lib64|bin|sbin|dev"
    "|boot|private|Users|Volumes|snap"
)
_HOST_PATH = re.compile(rf"(?<![\w.}}/~-])/(?:{_HOST_DIRS})/[^\s'\",;)\]}}>]+")
_REPR = re.compile(
    r"\b([A-Z]\w*(?:Error|Exception|Exit|Interrupt|Warning|Died|Lost))\((?:[^()]|\([^()]*\))*\)"
)


def scrub_text(text: str) -> str:
    return _HOST_PATH.sub(HOST_PATH, _REPR.sub(r"\1", text))


def scrub(value: Any) -> Any:
    """``value`` with every string in it scrubbed (dicts and lists walked)."""
    if isinstance(value, str):
        return scrub_text(value)
    if isinstance(value, dict):
        return {k: scrub(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [scrub(v) for v in value]
    return value
