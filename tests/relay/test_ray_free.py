"""The relay host runs without Ray: the agent and the local sandbox it drives import no Ray,
and the `cerver-relay` distribution installs and runs in an environment that has none."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import venv
from pathlib import Path

import pytest

from tests.conftest import make_home

ROOT = Path(__file__).resolve().parents[2]

# Runs the host side for real with `import ray` made impossible.
NO_RAY_SCRIPT = textwrap.dedent(
    """
    import asyncio, sys
    sys.modules["ray"] = None  # any `import ray` now raises ImportError
    from pathlib import Path
    from cerver.relay.agent import Executor, HostOptions
    from cerver.adapters.base import SandboxSpec

    async def main():
        ex = Executor(Path(sys.argv[1]), HostOptions(max_concurrent_runs=1, allow_network=False))
        spec = SandboxSpec(account_id="a").model_dump()
        record = await ex.handle("create_sandbox", {"spec": spec})
        out = await ex.handle("run", {"record": record, "request": {"code": "echo ok"}})
        try:
            await ex.handle("create_sandbox", {"spec": {"account_id": "a", "network": True}})
            refused = "no"
        except Exception as exc:
            refused = type(exc).__name__
        await ex.handle("delete_sandbox", {"record": record})
        await ex.close()
        rays = [m for m, v in sys.modules.items() if m.startswith("ray") and v]
        print(out["stdout"].strip(), refused, rays)

    asyncio.run(main())
    """
)


@pytest.mark.timeout(60)
def test_the_host_side_imports_no_ray_and_refuses_network_when_told() -> None:
    home = make_home()
    env = {"PATH": "/usr/bin:/bin", "CERVER_SANDBOX_UID_BASE": "310000"}
    done = subprocess.run(
        [sys.executable, "-c", NO_RAY_SCRIPT, str(home)],
        capture_output=True, text=True, timeout=50, env=env, cwd=ROOT,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["ok", "BadRequest", "[]"]


@pytest.mark.network
@pytest.mark.timeout(240)
def test_the_cerver_relay_distribution_installs_and_runs_without_ray(tmp_path: Path) -> None:
    wheels = tmp_path / "wheels"
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(wheels),
         str(ROOT / "clients" / "cerver-relay")],
        check=True, timeout=180,
    )  # fmt: skip
    env_dir = tmp_path / "venv"
    venv.create(env_dir, with_pip=True)
    py = env_dir / "bin" / "python"
    wheel = next(wheels.glob("cerver_relay-*.whl"))
    subprocess.run([py, "-m", "pip", "install", "-q", str(wheel)], check=True, timeout=180)
    has_ray = subprocess.run([py, "-c", "import ray"], capture_output=True, timeout=30)
    assert has_ray.returncode != 0  # the environment really has no Ray
    helped = subprocess.run(
        [env_dir / "bin" / "cerver-relay", "--help"], capture_output=True, text=True, timeout=30
    )
    assert helped.returncode == 0 and "--gateway" in helped.stdout
    home = make_home()
    env = {"PATH": "/usr/bin:/bin", "CERVER_SANDBOX_UID_BASE": "320000"}
    ran = subprocess.run(
        [py, "-c", NO_RAY_SCRIPT, str(home)], capture_output=True, text=True, timeout=50,
        env=env, cwd=tmp_path,
    )  # fmt: skip
    assert ran.returncode == 0, ran.stderr
    assert ran.stdout.split() == ["ok", "BadRequest", "[]"]
