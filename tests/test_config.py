"""Settings from the environment: good values are read, bad ones fail at start-up with a
message that names the variable and says what to use instead."""

from __future__ import annotations

import pytest

from cerver.config import ConfigError, Settings

pytestmark = pytest.mark.timeout(30)


def test_defaults_and_values_are_read(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CERVER_HOME", "/tmp/cerver-config-test")
    monkeypatch.setenv("CERVER_SESSIONS_PER_HOST", "7")
    monkeypatch.setenv("CERVER_SANDBOX_POOL_MAX", "3")
    monkeypatch.setenv("CERVER_SESSION_POOL_MAX", "0")
    monkeypatch.setenv("CERVER_SESSION_HOST_LABELS", '{"cerver-pool": "cpu", "zone": "in(a,b)"}')
    settings = Settings.from_env()
    assert settings.sessions_per_host == 7
    assert (settings.sandbox_pool_max, settings.session_pool_max) == (3, 0)
    assert settings.session_host_labels == {"cerver-pool": "cpu", "zone": "in(a,b)"}
    assert settings.database_url == "sqlite:////tmp/cerver-config-test/cerver.db"


def test_no_labels_means_no_selector(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CERVER_SESSION_HOST_LABELS", raising=False)
    assert Settings.from_env().session_host_labels == {}


@pytest.mark.parametrize(
    ("name", "value", "says"),
    [
        ("CERVER_SESSIONS_PER_HOST", "many", "must be an integer"),
        ("CERVER_SESSIONS_PER_HOST", "0", "must be >= 1"),
        ("CERVER_SANDBOX_POOL_MAX", "-1", "must be >= 0"),
        ("CERVER_HIBERNATE_AFTER_S", "soon", "must be a number"),
        ("CERVER_LOCAL_PROVIDER", "maybe", "must be true or false"),
        ("CERVER_SANDBOX_ISOLATION", "docker", "must be one of auto, bwrap, rlimits"),
        ("CERVER_SESSION_HOST_LABELS", "cerver-pool=cpu", "must be a JSON object"),
        ("CERVER_SESSION_HOST_LABELS", '{"zone": 1}', "must be an object of strings"),
        ("CERVER_SESSION_HOST_LABELS", '{"zone": "in(a,"}', "in(a,"),
    ],
)
def test_bad_values_name_the_variable(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str, says: str
) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(ConfigError) as caught:
        Settings.from_env()
    assert name in str(caught.value) and says in str(caught.value)
