"""Findings 1 and 2 of issue 10 against the local adapter, with real processes.

1. The sandbox's env reached the host-side exec of ``bwrap`` (and its cwd was the
   workspace): ``LD_PRELOAD=./x.so`` ran code in bwrap's process before any namespace.
2. A tenant could choose ``options.isolation: "rlimits"``, and ``auto`` fell back to it.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest
from pydantic import ValidationError

from cerver.adapters.base import ExecRequest, SandboxSpec
from cerver.adapters.local import LocalAdapter, LocalSandboxData, isolation
from cerver.adapters.local.spawning import kill_process, spawn
from cerver.errors import ProviderError, Unprocessable
from cerver.models import ComputeChoice, RunRequest
from cerver.serve_app.routes_sandbox import CreateSandbox, SandboxRun
from tests.adapters.conftest import HAS_BWRAP, make_settings

pytestmark = pytest.mark.timeout(60)
LOADER_VARS = ["LD_PRELOAD", "LD_LIBRARY_PATH", "LD_AUDIT", "GCONV_PATH", "MALLOC_CHECK_"]


@pytest.mark.parametrize("name", LOADER_VARS)
@pytest.mark.parametrize("model", [ComputeChoice, RunRequest, CreateSandbox, SandboxRun])
def test_every_request_model_with_env_refuses_loader_variables(model: type, name: str) -> None:
    body = {"code": "true", "provider": "local", "env": {"OK": "1", name: "./x.so"}}
    fields = model.model_fields  # type: ignore[attr-defined]
    with pytest.raises(ValidationError) as caught:
        model.model_validate({k: v for k, v in body.items() if k in fields})  # type: ignore[attr-defined]
    assert f"environment variable {name} is refused" in str(caught.value)


async def test_adapter_refuses_loader_variables_too(home: Path) -> None:
    """Behind the routes (other callers build specs and requests themselves)."""
    adapter = LocalAdapter(make_settings(home, "rlimits"))
    try:
        with pytest.raises(Unprocessable, match="GCONV_PATH"):
            await adapter.create_sandbox(SandboxSpec(account_id="a", env={"GCONV_PATH": "."}))
        record = await adapter.create_sandbox(SandboxSpec(account_id="a"))
        with pytest.raises(Unprocessable, match="LD_PRELOAD"):
            await adapter.run(record, ExecRequest(code="true", env={"LD_PRELOAD": "./x.so"}))
        await adapter.delete_sandbox(record)
    finally:
        await adapter.close()


@pytest.mark.skipif(not HAS_BWRAP, reason="bwrap is not installed on this machine")
async def test_bwrap_itself_runs_with_a_fixed_env_and_cwd(home: Path) -> None:
    """The sandbox's env is set inside (--clearenv --setenv), never on bwrap's exec."""
    settings = make_settings(home, "bwrap")
    adapter = LocalAdapter(settings)
    record = await adapter.create_sandbox(SandboxSpec(account_id="a", env={"PROBE_VAR": "x1"}))
    data = LocalSandboxData.model_validate(record.data)
    launch = isolation.build_launch(
        settings, data, ["/bin/sh", "-c", "echo $PROBE_VAR; exec sleep 20"],
        network=False, env={"RUN_VAR": "y2"},
    )  # fmt: skip
    proc = await spawn(launch)
    try:
        assert proc.stdout is not None
        line = await asyncio.wait_for(proc.stdout.readline(), 10)
        assert line == b"x1\n"  # the inside sees the sandbox's env
        with open(f"/proc/{proc.pid}/environ", "rb") as fh:
            bwrap_env = dict(item.split("=", 1) for item in fh.read().decode().split("\0") if item)
        assert bwrap_env == isolation.BWRAP_HOST_ENV
        assert os.readlink(f"/proc/{proc.pid}/cwd") == "/"
    finally:
        await kill_process(proc)
        await adapter.delete_sandbox(record)
        await adapter.close()


async def test_tenant_cannot_choose_the_isolation(home: Path) -> None:
    adapter = LocalAdapter(make_settings(home, "bwrap"))
    try:
        for wanted in ("rlimits", "bwrap", "auto"):
            with pytest.raises(Unprocessable, match="not a tenant option"):
                await adapter.create_sandbox(
                    SandboxSpec(account_id="a", options={"isolation": wanted})
                )
        assert not list((home / "sandboxes").glob("sbx_*"))
    finally:
        await adapter.close()


async def test_without_bwrap_the_node_refuses_unless_the_operator_chose_rlimits(
    home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Fails closed: no silent fall-back to rlimits (the old ``auto``)."""
    empty = tmp_path / "no-bwrap-here"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))
    monkeypatch.setattr(isolation, "_probe", {})  # the probe result is cached per process
    for policy in ("bwrap", "auto"):
        adapter = LocalAdapter(make_settings(home, policy))
        with pytest.raises(ProviderError, match="refuses to run code") as caught:
            await adapter.create_sandbox(SandboxSpec(account_id="a"))
        assert "CERVER_SANDBOX_ISOLATION=rlimits" in caught.value.message
        assert not list((home / "sandboxes").glob("sbx_*"))  # nothing half-made
        await adapter.close()
    notice = isolation.policy_notice(make_settings(home, "bwrap"))
    assert "REFUSES to run code" in notice
    assert "chosen by the operator" in isolation.policy_notice(make_settings(home, "rlimits"))
    adapter = LocalAdapter(make_settings(home, "rlimits"))
    record = await adapter.create_sandbox(SandboxSpec(account_id="a"))
    assert record.isolation == "rlimits"
    await adapter.delete_sandbox(record)
    await adapter.close()


async def test_the_ray_provider_refuses_it_too_before_placing_anything(home: Path) -> None:
    """It used to pass ``options.isolation`` on to the local adapter inside its actor."""
    from cerver.adapters import registry

    adapter = registry.get("ray")(make_settings(home, "bwrap"))
    spec = SandboxSpec(account_id="a", options={"isolation": "rlimits"})
    with pytest.raises(Unprocessable, match="not a tenant option"):
        await adapter.create_sandbox(spec)
