"""Environment values in stored compute records are sealed, never plaintext.

A sandbox's env (``POST /sandbox {"env": ...}``, a session's ``compute.env``) often carries
secrets, and adapters keep it in the ``SandboxRecord`` they need to reconnect (the `local`
adapter applies it to every run). Before a record is stored, every string value of every
``env`` object inside it is sealed with Fernet (AES-128-CBC with an HMAC, from the
``cryptography`` package rather than hand-written crypto) under the server's one at-rest
key (``cerver.secretbox``: ``CERVER_SECRET_KEY``, else ``$CERVER_HOME/secret.key``; the old
``CERVER_RECORD_KEY`` / ``record.key`` still open what they sealed); the names stay
readable. Records are opened again only where an adapter needs them (the host actors),
never for views.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from cerver.secretbox import SecretBox

PREFIX = "sealed:v1:"


def _walk(value: Any, change: Any) -> Any:
    if isinstance(value, dict):
        return {
            k: (
                {name: change(v) if isinstance(v, str) else v for name, v in item.items()}
                if k == "env" and isinstance(item, dict)
                else _walk(item, change)
            )
            for k, item in value.items()
        }
    if isinstance(value, list):
        return [_walk(item, change) for item in value]
    return value


def seal_record(record: dict[str, Any], box: SecretBox) -> dict[str, Any]:
    """A copy of ``record`` with every env value sealed."""

    def seal(text: str) -> str:
        if text.startswith(PREFIX):
            return text
        return PREFIX + box.seal(text)

    return dict(_walk(record, seal))


def open_record(record: dict[str, Any], box: SecretBox) -> dict[str, Any]:
    """A copy of ``record`` with its env values opened (plain values pass through)."""

    def open_(text: str) -> str:
        if not text.startswith(PREFIX):
            return text
        return box.open(text[len(PREFIX) :])

    return dict(_walk(record, open_))
