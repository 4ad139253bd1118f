"""Values at rest are sealed under one server key (issue 10, finding 8; issue 11's
cleanup): compute-record env values and provider credentials share ``CERVER_SECRET_KEY``
/ ``CERVER_HOME/secret.key``; the old ``CERVER_RECORD_KEY`` / ``record.key`` are still
read, with a warning at start, and still open what they sealed."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import pytest
from cryptography.fernet import Fernet
from pydantic import SecretStr

from cerver.actors.provisioning import record_of, stored_record
from cerver.adapters.base import SandboxRecord
from cerver.config import ConfigError, Settings
from cerver.secretbox import SealedValueUnreadable, SecretBox
from cerver.store.sealing import PREFIX

pytestmark = pytest.mark.timeout(30)

RECORD = SandboxRecord(
    provider="local",
    sandbox_id="sbx_1",
    data={
        "env": {"API_KEY": "sk-very-secret", "MODE": "x"},
        "spec": {"env": {"TOKEN": "tok-123"}, "network": False},
        "workspace": "/w",
    },
)


def _old_build_record(key: str) -> dict:  # type: ignore[type-arg]
    """A record as the build before the keys were one stored it: sealed with the record key."""
    fernet = Fernet(key.encode())
    stored = RECORD.model_dump(mode="json")
    stored["data"]["env"] = {
        k: PREFIX + fernet.encrypt(v.encode()).decode() for k, v in stored["data"]["env"].items()
    }
    return stored


@pytest.fixture
def env_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    home = tmp_path / "home"
    monkeypatch.setenv("CERVER_HOME", str(home))
    monkeypatch.delenv("CERVER_SECRET_KEY", raising=False)
    monkeypatch.delenv("CERVER_RECORD_KEY", raising=False)
    return home


def test_env_values_are_sealed_in_the_stored_record(tmp_path: Path) -> None:
    settings = Settings(home=tmp_path, database_url="sqlite://")
    stored = stored_record(settings, RECORD)
    text = json.dumps(stored)
    for secret in ("sk-very-secret", "tok-123"):
        assert secret not in text
    assert set(stored["data"]["env"]) == {"API_KEY", "MODE"}  # names stay readable
    assert stored["data"]["spec"]["network"] is False and stored["data"]["workspace"] == "/w"
    assert record_of(settings, stored) == RECORD
    # Another server's key cannot open them.
    other = settings.model_copy(update={"secret_key": SecretStr(Fernet.generate_key().decode())})
    with pytest.raises(SealedValueUnreadable):
        record_of(other, stored)
    # Records stored before sealing existed still open (plain values pass through).
    assert record_of(settings, RECORD.model_dump(mode="json")) == RECORD


def test_one_key_from_env_or_a_file_in_home(
    env_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = Settings.from_env()
    key = first.secret_key.get_secret_value()  # type: ignore[union-attr]
    key_file = env_home / "secret.key"
    assert key_file.read_text() == key and (os.stat(key_file).st_mode & 0o777) == 0o600
    assert not (env_home / "record.key").exists()  # one key, one file
    again = Settings.from_env()
    assert again.secret_key.get_secret_value() == key  # type: ignore[union-attr]
    assert key not in repr(again)
    # Records and credentials are sealed under the same key.
    box = SecretBox(first)
    sealed = stored_record(first, RECORD)["data"]["env"]["API_KEY"]
    assert Fernet(key.encode()).decrypt(sealed[len(PREFIX) :].encode()) == b"sk-very-secret"
    assert Fernet(key.encode()).decrypt(box.seal("v").encode()) == b"v"
    monkeypatch.setenv("CERVER_SECRET_KEY", "short")
    with pytest.raises(ConfigError, match="CERVER_SECRET_KEY"):
        Settings.from_env()
    monkeypatch.setenv("CERVER_SECRET_KEY", key)
    monkeypatch.setenv("CERVER_RECORD_KEY", "short")
    with pytest.raises(ConfigError, match="CERVER_RECORD_KEY"):
        Settings.from_env()


def test_the_old_variable_is_the_key_when_the_new_one_is_unset(
    env_home: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    old = Fernet.generate_key().decode()
    monkeypatch.setenv("CERVER_RECORD_KEY", old)
    caplog.set_level(logging.WARNING, logger="cerver.config")
    settings = Settings.from_env()
    assert settings.secret_key.get_secret_value() == old  # type: ignore[union-attr]
    assert "CERVER_RECORD_KEY is the old name of CERVER_SECRET_KEY" in caplog.text
    assert "rename the variable" in caplog.text and old not in caplog.text
    assert record_of(settings, _old_build_record(old)) == RECORD
    # Provider credentials are sealed with it too (they used to need CERVER_SECRET_KEY).
    assert Fernet(old.encode()).decrypt(SecretBox(settings).seal("v").encode()) == b"v"
    assert not (env_home / "secret.key").exists()


def test_old_keys_still_open_what_they_sealed(
    env_home: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A home from before the unification: record.key sealed the records, secret.key the
    credentials. Both open; new values are sealed with the one key."""
    record_key, credential_key = Fernet.generate_key(), Fernet.generate_key()
    env_home.mkdir()
    (env_home / "record.key").write_bytes(record_key)
    (env_home / "secret.key").write_bytes(credential_key)
    old_credential = Fernet(credential_key).encrypt(b"tok").decode()
    caplog.set_level(logging.WARNING, logger="cerver.config")
    settings = Settings.from_env()
    assert settings.secret_key.get_secret_value() == credential_key.decode()  # type: ignore[union-attr]
    assert "record.key is the old key file" in caplog.text
    assert record_of(settings, _old_build_record(record_key.decode())) == RECORD
    assert SecretBox(settings).open(old_credential) == "tok"
    fresh = stored_record(settings, RECORD)["data"]["env"]["MODE"][len(PREFIX) :]
    assert Fernet(credential_key).decrypt(fresh.encode()) == b"x"
    # Both variables set and different: CERVER_SECRET_KEY seals, the old one still opens.
    new, old = Fernet.generate_key().decode(), record_key.decode()
    monkeypatch.setenv("CERVER_SECRET_KEY", new)
    monkeypatch.setenv("CERVER_RECORD_KEY", old)
    both = Settings.from_env()
    assert both.secret_key.get_secret_value() == new  # type: ignore[union-attr]
    assert record_of(both, _old_build_record(old)) == RECORD
    assert "values it sealed still open" in caplog.text
    assert Fernet(new.encode()).decrypt(SecretBox(both).seal("v").encode()) == b"v"


def test_racing_starts_agree_on_one_key(tmp_path: Path) -> None:
    """Processes (or threads) that start together with no key yet all get the same one."""
    from concurrent.futures import ThreadPoolExecutor

    from cerver.secretbox import resolve_keys

    home = tmp_path / "fresh"
    with ThreadPoolExecutor(max_workers=16) as pool:
        keys = list(pool.map(lambda _: resolve_keys(home, {}).primary, range(16)))
    assert len(set(keys)) == 1 and (home / "secret.key").read_text() == keys[0]
    assert sorted(p.name for p in home.iterdir()) == ["secret.key"]  # no temporary left
