"""Fixtures for the local adapter tests: real processes, real isolation, per-test homes."""

from __future__ import annotations

import os
import shutil
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from cerver.adapters.base import SandboxRecord, SandboxSpec
from cerver.adapters.local import LocalAdapter
from cerver.config import Settings

IS_ROOT = os.geteuid() == 0
HAS_BWRAP = shutil.which("bwrap") is not None


def make_settings(home: Path, isolation: str, **overrides: object) -> Settings:
    values: dict[str, object] = {
        "home": home,
        "database_url": f"sqlite:///{home / 'cerver.db'}",
        "sandbox_isolation": isolation,
        "output_limit_bytes": 64 * 1024,
        "max_file_bytes": 64 * 1024,
        "sandbox_nproc": 64,
    }
    values.update(overrides)
    return Settings.model_validate(values)


@pytest.fixture(
    params=[
        pytest.param(
            "bwrap",
            marks=pytest.mark.skipif(
                not HAS_BWRAP, reason="bwrap is not installed on this machine"
            ),
        ),
        "rlimits",
    ]
)
def isolation(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def home(tmp_path: Path) -> Path:
    path = tmp_path / "home"
    path.mkdir()
    return path


@pytest.fixture
def settings(home: Path, isolation: str) -> Settings:
    return make_settings(home, isolation)


@pytest.fixture
async def adapter(settings: Settings) -> AsyncIterator[LocalAdapter]:
    instance = LocalAdapter(settings)
    yield instance
    await instance.close()


@pytest.fixture
async def new_sandbox(
    adapter: LocalAdapter,
) -> AsyncIterator[Callable[..., object]]:
    made: list[SandboxRecord] = []

    async def make(**spec: Any) -> SandboxRecord:
        record = await adapter.create_sandbox(
            SandboxSpec.model_validate({"account_id": "acct_test", **spec})
        )
        made.append(record)
        return record

    yield make
    for record in made:
        await adapter.delete_sandbox(record)


@pytest.fixture
async def sandbox(new_sandbox: Callable[..., object]) -> SandboxRecord:
    record = await new_sandbox()  # type: ignore[misc]
    assert isinstance(record, SandboxRecord)
    return record
