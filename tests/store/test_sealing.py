"""Env values in compute records are sealed at rest (issue 10, finding 8): the stored
record holds names and ciphertext, the adapter gets the values back."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from cerver.actors.provisioning import record_of, stored_record
from cerver.adapters.base import SandboxRecord
from cerver.config import ConfigError, Settings

pytestmark = pytest.mark.timeout(30)


def test_env_values_are_sealed_in_the_stored_record(tmp_path: Path) -> None:
    settings = Settings(home=tmp_path, database_url="sqlite://")
    record = SandboxRecord(
        provider="local",
        sandbox_id="sbx_1",
        data={
            "env": {"API_KEY": "sk-very-secret", "MODE": "x"},
            "spec": {"env": {"TOKEN": "tok-123"}, "network": False},
            "workspace": "/w",
        },
    )
    stored = stored_record(settings, record)
    text = json.dumps(stored)
    for secret in ("sk-very-secret", "tok-123"):
        assert secret not in text
    assert set(stored["data"]["env"]) == {"API_KEY", "MODE"}  # names stay readable
    assert stored["data"]["spec"]["network"] is False and stored["data"]["workspace"] == "/w"
    assert record_of(settings, stored) == record
    # Another server's key cannot open them.
    other = Settings(home=tmp_path, database_url="sqlite://")
    from cryptography.fernet import InvalidToken

    with pytest.raises(InvalidToken):
        record_of(other, stored)
    # Records stored before sealing existed still open (plain values pass through).
    assert record_of(settings, record.model_dump(mode="json")) == record


def test_record_key_from_env_or_a_file_in_home(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CERVER_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("CERVER_RECORD_KEY", raising=False)
    first = Settings.from_env().record_key.get_secret_value()
    key_file = tmp_path / "home" / "record.key"
    assert key_file.read_text() == first and (os.stat(key_file).st_mode & 0o777) == 0o600
    assert Settings.from_env().record_key.get_secret_value() == first  # kept across restarts
    assert first not in repr(Settings.from_env())
    monkeypatch.setenv("CERVER_RECORD_KEY", "short")
    with pytest.raises(ConfigError, match="CERVER_RECORD_KEY"):
        Settings.from_env()
