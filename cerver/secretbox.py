"""Sealing credential values at rest with the server key (``cryptography``'s Fernet:
AES-128-CBC + HMAC-SHA256, authenticated; no home-made cipher).

The key is ``CERVER_SECRET_KEY`` (a Fernet key: 32 url-safe base64 bytes) or, when that is
unset, ``CERVER_HOME/secret.key``, created on first use with mode 0600. Every process that
opens a sealed value (session hosts on other nodes too) needs the same key: on a cluster,
set ``CERVER_SECRET_KEY``.
"""

from __future__ import annotations

import os
from pathlib import Path

from cerver.config import ConfigError, Settings
from cerver.errors import CerverError

KEY_FILE = "secret.key"


class SealedValueUnreadable(CerverError):
    """A sealed value this server's key cannot open (the key changed)."""


def _fernet(key: bytes):  # type: ignore[no-untyped-def]
    from cryptography.fernet import Fernet

    return Fernet(key)


def _key_file(home: Path) -> bytes:
    from cryptography.fernet import Fernet

    path = home / KEY_FILE
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return path.read_bytes().strip()
    key = Fernet.generate_key()
    with os.fdopen(fd, "wb") as out:
        out.write(key)
    return key


def server_key(settings: Settings) -> bytes:
    if settings.secret_key is not None:
        key = settings.secret_key.get_secret_value().encode()
        try:
            _fernet(key)
        except ValueError:
            raise ConfigError(
                "CERVER_SECRET_KEY must be a Fernet key (32 url-safe base64-encoded bytes); "
                'make one with: python -c "from cryptography.fernet import Fernet; '
                'print(Fernet.generate_key().decode())"'
            ) from None
        return key
    settings.home.mkdir(parents=True, exist_ok=True)
    return _key_file(settings.home)


class SecretBox:
    def __init__(self, settings: Settings) -> None:
        self._fernet = _fernet(server_key(settings))

    def __repr__(self) -> str:
        return "SecretBox(<server key>)"

    def seal(self, value: str) -> str:
        return str(self._fernet.encrypt(value.encode()).decode("ascii"))

    def open(self, token: str) -> str:
        from cryptography.fernet import InvalidToken

        try:
            return str(self._fernet.decrypt(token.encode("ascii")).decode())
        except (InvalidToken, ValueError):
            raise SealedValueUnreadable(
                "a stored credential cannot be decrypted with this server's key (was "
                "CERVER_SECRET_KEY or CERVER_HOME/secret.key changed?); register it again"
            ) from None
