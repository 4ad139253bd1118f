"""cluster.yaml is a valid Ray cluster-launcher config, and serve_config.yaml deploys the
app with `serve deploy` on a Ray started by `ray start --head` (its own, in a subprocess).

That Ray is stopped by killing the process group of its `ray start --block`, which is ours;
never with `ray stop`, which kills every Ray process on the machine (other test runs too).
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import jsonschema
import pytest
import yaml

from cerver.serve_app.ingress import ingress_env
from tests.conftest import free_port, make_home

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


@pytest.mark.timeout(30)
def test_cluster_yaml_is_a_valid_ray_cluster_config() -> None:
    import ray.autoscaler
    from ray.autoscaler._private.util import prepare_config, validate_config

    config = yaml.safe_load((ROOT / "cluster.yaml").read_text())
    schema = json.loads((Path(ray.autoscaler.__file__).parent / "ray-schema.json").read_text())
    jsonschema.validate(config, schema)  # as written
    validate_config(prepare_config(config))  # as `ray up` sees it, defaults filled in
    assert config["head_node_type"] in config["available_node_types"]
    assert any("cerver serve" in cmd for cmd in config["head_start_ray_commands"])


def _ray_processes(marker: str) -> list[int]:
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            continue
        if marker.encode() in cmdline:
            found.append(int(pid))
    return found


@pytest.fixture
def ray_head(tmp_path: Path) -> Iterator[tuple[str, dict[str, str], str]]:
    """`ray start --head --block` in its own process group; yields (dashboard, env, temp)."""
    home = make_home()
    temp = Path("/tmp") / f"cerver-ray-{os.getpid()}-{free_port()}"  # short: socket paths
    dash_port = free_port()
    env = (
        os.environ
        | {
            "CERVER_HOME": str(home),
            "CERVER_DATABASE_URL": f"sqlite:///{home / 'cerver.db'}",
            "CERVER_RAY_NAMESPACE": "cerver-deploy-test",
            "RAY_ADDRESS": "",
            # Ray 2.60's dashboard (serve deploy's API) wants a token: ours, for this Ray only.
            "RAY_AUTH_MODE": "token",
            "RAY_AUTH_TOKEN": secrets.token_hex(32),
        }
        | ingress_env(True, home)
    )  # its HAProxy's sockets and ports, not this process's
    head = subprocess.Popen(
        [str(BIN / "ray"), "start", "--head", "--block", "--num-cpus=2", f"--port={free_port()}",
         f"--temp-dir={temp}", "--include-dashboard=true", "--dashboard-host=127.0.0.1",
         f"--dashboard-port={dash_port}", "--disable-usage-stats"],
        env=env, cwd=tmp_path, start_new_session=True,
        stdout=(tmp_path / "ray.log").open("wb"), stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        yield f"http://127.0.0.1:{dash_port}", env, str(temp)
    finally:
        os.killpg(head.pid, signal.SIGTERM)  # `ray start --block` stops what it started
        try:
            head.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(head.pid, signal.SIGKILL)
            head.wait(timeout=10)
        deadline = time.monotonic() + 30
        while _ray_processes(str(temp)) and time.monotonic() < deadline:
            time.sleep(0.5)
        left = _ray_processes(str(temp))
        for pid in left:  # ours (their command line names our temp dir), by id
            os.kill(pid, signal.SIGKILL)
        assert not left, f"processes outlived `ray start --block`: {left}"


@pytest.mark.timeout(240)
def test_serve_deploy_on_ray_start_head(
    ray_head: tuple[str, dict[str, str], str], tmp_path: Path
) -> None:
    dashboard, env, _temp = ray_head
    port = free_port()
    config = yaml.safe_load((ROOT / "serve_config.yaml").read_text())
    config["http_options"] = {"host": "127.0.0.1", "port": port}
    (tmp_path / "serve_config.yaml").write_text(yaml.safe_dump(config))
    deadline = time.monotonic() + 60
    while True:  # the dashboard (serve deploy's API) comes up a few seconds after Ray
        done = subprocess.run(
            [str(BIN / "serve"), "deploy", "serve_config.yaml", "-a", dashboard],
            env=env, cwd=tmp_path, capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        if done.returncode == 0 or time.monotonic() > deadline:
            break
        time.sleep(2)
    assert done.returncode == 0, done.stdout + done.stderr
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 150
    while True:
        try:
            health = httpx.get(f"{base}/healthz", timeout=5)
            if health.status_code == 200:
                break
        except httpx.TransportError:
            pass
        assert time.monotonic() < deadline, "the deployed app never answered /healthz"
        time.sleep(1)
    assert health.json()["status"] == "ok"
    token = subprocess.run(
        [str(BIN / "cerver"), "token", "create", "--account", "deployer"],
        env=env, capture_output=True, text=True, timeout=60, check=True,
    ).stdout.strip()  # fmt: skip
    with httpx.Client(
        base_url=base, headers={"Authorization": f"Bearer {token}"}, timeout=90
    ) as api:
        r = api.post("/v2/sessions", json={"compute": {"provider": "local"}})
        assert r.status_code == 201, r.text
        sid = r.json()["session_id"]
        r = api.post(f"/v2/sessions/{sid}/run", json={"code": "print(6 * 7)", "language": "python"})
        assert r.status_code == 200, r.text
        assert r.json()["stdout"] == "42\n"
        assert api.delete(f"/v2/sessions/{sid}").status_code in (200, 204)
