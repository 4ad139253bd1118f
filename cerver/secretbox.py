"""Sealing values at rest with the server key: registered provider credentials
(``cerver.provider_credentials``) and the env values of stored compute records
(``cerver.store.sealing``). ``cryptography``'s Fernet (AES-128-CBC + HMAC-SHA256,
authenticated; no home-made cipher), through ``MultiFernet`` so older keys still open.

**One key** (docs/security.md, "Values at rest"): ``CERVER_SECRET_KEY`` (a Fernet key: 32
url-safe base64 bytes), else the file ``CERVER_HOME/secret.key``, created with mode 0600 on
first start. ``Settings.from_env`` resolves it once at start and the settings carry it to
every process that opens a sealed value (session hosts on other nodes too).

Until the two were unified there were two keys: ``CERVER_RECORD_KEY`` /
``CERVER_HOME/record.key`` sealed compute-record env values. Both are still read, with a
warning at start: the old variable is the key when ``CERVER_SECRET_KEY`` is unset, and
every key found (variables and files) still *opens* what it sealed; new values are sealed
with the first in this order: ``CERVER_SECRET_KEY``, ``CERVER_RECORD_KEY``, ``secret.key``,
``record.key``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from cerver.config import ConfigError, Settings
from cerver.errors import CerverError

ENV = "CERVER_SECRET_KEY"
KEY_FILE = "secret.key"
# The names the key had before it was one (compute-record env values): still read.
OLD_ENV = "CERVER_RECORD_KEY"
OLD_KEY_FILE = "record.key"
MAKE_ONE = (
    'make one with: python -c "from cryptography.fernet import Fernet; '
    'print(Fernet.generate_key().decode())"'
)


class SealedValueUnreadable(CerverError):
    """A sealed value this server's keys cannot open (the key changed)."""


@dataclass(frozen=True)
class ServerKeys:
    """The key that seals (``primary``), the older ones that still open, and what to tell
    the operator at start about old names in use."""

    primary: str
    older: tuple[str, ...] = ()
    notices: tuple[str, ...] = ()


def _checked(key: str, where: str) -> str:
    from cryptography.fernet import Fernet

    try:
        Fernet(key.encode())
    except ValueError:
        raise ConfigError(
            f"{where} must be a Fernet key (32 url-safe base64-encoded bytes); {MAKE_ONE}"
        ) from None
    return key


def _create_key_file(path: Path) -> str:
    """A new key in ``path`` (0600), or the one a racing process put there first: the key
    is written to a private temporary file and linked into place, so no reader ever sees
    a half-written file."""
    from cryptography.fernet import Fernet

    path.parent.mkdir(parents=True, exist_ok=True)
    temp = path.with_name(f".{path.name}.{os.urandom(8).hex()}.tmp")
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(Fernet.generate_key().decode())
    try:
        os.link(temp, path)
    except FileExistsError:
        pass
    finally:
        temp.unlink()
    return path.read_text().strip()


def resolve_keys(home: Path, environ: Mapping[str, str]) -> ServerKeys:
    """The server's keys from the variables in ``environ`` and the files in ``home``
    (see the module docstring for the order); makes ``secret.key`` if none is found."""
    found: list[str] = []
    notices: list[str] = []
    for name in (ENV, OLD_ENV):
        value = environ.get(name, "").strip()
        if value:
            found.append(_checked(value, name))
    if environ.get(OLD_ENV, "").strip():
        notices.append(
            f"{OLD_ENV} is the old name of {ENV} (one key now seals provider credentials "
            f"and compute-record env values); "
            + (
                f"values it sealed still open, new ones are sealed with {ENV}"
                if environ.get(ENV, "").strip()
                else f"it is used as {ENV}: rename the variable"
            )
        )
    for name in (KEY_FILE, OLD_KEY_FILE):
        path = home / name
        if path.exists():
            found.append(_checked(path.read_text().strip(), f"{path}"))
    if (home / OLD_KEY_FILE).exists():
        notices.append(
            f"{home / OLD_KEY_FILE} is the old key file (now {KEY_FILE}); it is still read so "
            "that values it sealed open: keep it until they are rewritten"
        )
    if not found:
        found.append(_create_key_file(home / KEY_FILE))
    unique = list(dict.fromkeys(found))
    return ServerKeys(primary=unique[0], older=tuple(unique[1:]), notices=tuple(notices))


def server_keys(settings: Settings) -> list[str]:
    """The keys of these settings, the sealing one first. Settings from ``from_env`` carry
    them; settings built in code without a key use the files in their home."""
    if settings.secret_key is not None:
        primary = _checked(settings.secret_key.get_secret_value(), ENV)
        return [primary, *(k.get_secret_value() for k in settings.older_secret_keys)]
    keys = resolve_keys(settings.home, {})
    return [keys.primary, *keys.older]


@lru_cache(maxsize=16)
def _multi(keys: tuple[str, ...]) -> Any:
    from cryptography.fernet import Fernet, MultiFernet

    return MultiFernet([Fernet(k.encode()) for k in keys])


class SecretBox:
    def __init__(self, settings: Settings) -> None:
        self._fernet = _multi(tuple(server_keys(settings)))

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
                "a stored secret cannot be decrypted with this server's key (was "
                "CERVER_SECRET_KEY or CERVER_HOME/secret.key changed?); register the "
                "credentials again, or recreate the compute"
            ) from None
