"""Adapter handles carry their account's credentials, resolved at use (issue 9): the handle
``Provisioner.adapter(provider, account)`` that every operation on a sandbox goes through is
built with that account's credentials; a rotated secret takes effect at the next call; other
accounts never share it; self-hosted providers take none. A real store (SQLite), the real
secrets backend (``env``); the probe adapter is a test-only provider."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from cerver.actors.provisioning import Provisioner
from cerver.adapters import registry
from cerver.adapters.base import (
    ComputeAdapter,
    ExecRequest,
    ExecResult,
    InstallRequest,
    InstallResult,
    SandboxRecord,
    SandboxSpec,
    SandboxState,
)
from cerver.adapters.credentials import credentials_for
from cerver.config import Settings
from cerver.errors import ComputeUnavailable
from cerver.store import Store

pytestmark = pytest.mark.timeout(60)

PROBE = "credprobe"


class ProbeAdapter(ComputeAdapter):
    """Answers every operation with the token it was built with (what a remote provider
    would be called with)."""

    name = PROBE

    async def create_sandbox(self, spec: SandboxSpec) -> SandboxRecord:
        return SandboxRecord(provider=PROBE, sandbox_id="sbx_probe")

    async def run(self, record: SandboxRecord, request: ExecRequest) -> ExecResult:
        return ExecResult(stdout=self.credentials.get("token", "<none>"))

    def run_stream(self, record: SandboxRecord, request: ExecRequest) -> Any:
        raise NotImplementedError

    async def install_package(
        self, record: SandboxRecord, request: InstallRequest
    ) -> InstallResult:
        return InstallResult(success=True)

    async def write_file(self, record: SandboxRecord, path: str, data: bytes) -> None:
        return None

    async def read_file(self, record: SandboxRecord, path: str) -> bytes:
        return b""

    async def get_state(self, record: SandboxRecord) -> SandboxState:
        return SandboxState(status="running", provider=PROBE, sandbox_id=record.sandbox_id)

    async def set_state(self, record: SandboxRecord, state: dict[str, Any]) -> SandboxState:
        return await self.get_state(record)

    async def delete_sandbox(self, record: SandboxRecord) -> None:
        return None


@pytest.fixture
def probe() -> Iterator[None]:
    registry.register(ProbeAdapter)
    yield
    registry._ADAPTERS.pop(PROBE, None)


@pytest.fixture
def store(tmp_path: Path) -> Store:
    return Store.open(f"sqlite:///{tmp_path / 'cerver.db'}")


def _settings(tmp_path: Path) -> Settings:
    # References resolve only for names the operator allows (CERVER_SECRET_REFS).
    return Settings(
        home=tmp_path,
        database_url=f"sqlite:///{tmp_path / 'cerver.db'}",
        secret_refs=("PROBE_*",),
    )


def test_handles_are_per_account_and_see_rotated_secrets(
    probe: None, store: Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    alice = store.accounts.get_or_create("alice").id
    bob = store.accounts.get_or_create("bob").id
    store.credentials.put(alice, PROBE, {"token": "PROBE_ALICE"})
    store.credentials.put(bob, PROBE, {"token": "PROBE_BOB"})
    monkeypatch.setenv("PROBE_ALICE", "alice-v1")
    monkeypatch.setenv("PROBE_BOB", "bob-v1")
    provisioner = Provisioner(_settings(tmp_path), store)
    record = SandboxRecord(provider=PROBE, sandbox_id="sbx_probe")
    request = ExecRequest(code="x")

    async def token_seen(account_id: str) -> str:
        adapter = await provisioner.adapter(PROBE, account_id)
        return (await adapter.run(record, request)).stdout

    async def scenario() -> None:
        first = await provisioner.adapter(PROBE, alice)
        assert await provisioner.adapter(PROBE, alice) is first  # kept while current
        assert await token_seen(alice) == "alice-v1"
        assert await token_seen(bob) == "bob-v1"
        assert await provisioner.adapter(PROBE, bob) is not first
        monkeypatch.setenv("PROBE_ALICE", "alice-v2")  # rotated in the secrets backend
        assert await token_seen(alice) == "alice-v2"
        assert "alice-v2" not in repr(await provisioner.adapter(PROBE, alice))
        # An account with no credentials gets none (never another account's).
        carol = await asyncio.to_thread(store.accounts.get_or_create, "carol")
        assert await token_seen(carol.id) == "<none>"
        # Self-hosted providers take none and share one instance (its warm pool).
        local = await provisioner.adapter("local", alice)
        assert local.credentials == {} and await provisioner.adapter("local", bob) is local
        await provisioner.close()

    asyncio.run(scenario())


def test_credentials_for_resolves_at_use_and_names_what_is_missing(
    store: Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = _settings(tmp_path)
    alice = store.accounts.get_or_create("alice").id
    assert asyncio.run(credentials_for(settings, store, alice, PROBE)) == {}
    store.credentials.put(alice, PROBE, {"token": "PROBE_SECRET_UNSET"})
    monkeypatch.delenv("PROBE_SECRET_UNSET", raising=False)
    with pytest.raises(ComputeUnavailable) as missing:
        asyncio.run(credentials_for(settings, store, alice, PROBE))
    assert "PROBE_SECRET_UNSET" in str(missing.value)
    monkeypatch.setenv("PROBE_SECRET_UNSET", "s3cret")
    assert asyncio.run(credentials_for(settings, store, alice, PROBE)) == {"token": "s3cret"}
    # Only the reference is stored.
    assert "s3cret" not in str(store.credentials.refs(alice, PROBE))
