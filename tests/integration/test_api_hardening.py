"""API-side findings of issue 10 over real HTTP on the shared server: an adopted compute
stays the session's, env values are not kept in plaintext, errors carry no host paths or
reprs of internal exceptions."""

from __future__ import annotations

import httpx
import pytest
import ray

from cerver.config import Settings

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]


def test_sandbox_host_never_releases_a_compute_a_session_adopted(
    api: httpx.Client, server_settings: Settings
) -> None:
    from cerver.actors.sandbox import SandboxActor

    sandbox = api.post("/sandbox").json()["sandbox_id"]
    made = api.post("/v2/sessions", json={"compute": {"compute_id": sandbox}})
    assert made.status_code == 201, made.text
    session = made.json()["session_id"]
    # /sandbox calls on it are refused, and start no /sandbox host for it again.
    r = api.post(f"/sandbox/{sandbox}/run", json={"code": "print(1)"})
    assert r.status_code == 409 and r.json()["error"]["details"]["session_id"] == session
    with pytest.raises(ValueError):
        ray.get_actor(sandbox, namespace=server_settings.ray_namespace)
    # Even a /sandbox host that exists for it (started before the adoption, now idle past
    # its limit) must not release it: its reaper calls delete().
    host = SandboxActor.options(  # type: ignore[attr-defined]
        name=sandbox, namespace=server_settings.ray_namespace, lifetime="detached"
    ).remote(server_settings, sandbox)
    try:
        ray.get(host.delete.remote(), timeout=60)
    finally:
        ray.kill(host)
    assert api.get(f"/sandbox/{sandbox}").json()["status"] == "ready"
    out = api.post(f"/v2/sessions/{session}/run", json={"code": "print('still-here')"})
    assert out.status_code == 200 and out.json()["stdout"] == "still-here\n", out.text
    api.delete(f"/v2/sessions/{session}")


def test_env_values_are_not_stored_in_plaintext(api: httpx.Client, store) -> None:  # type: ignore[no-untyped-def]
    secret = "sk-do-not-store-7f3a"
    made = api.post("/sandbox", json={"runtime": "shell", "env": {"MY_SECRET": secret}})
    assert made.status_code == 200, made.text
    sandbox = made.json()["sandbox_id"]
    row = store.computes.get(sandbox)
    assert secret not in str(row.record) and "MY_SECRET" in str(row.record)
    # The sandbox still gets its env, on every run (the record is read back each call).
    out = api.post(f"/sandbox/{sandbox}/run", json={"code": "echo $MY_SECRET", "language": "shell"})
    assert out.status_code == 200 and out.json()["output"] == secret, out.text
    api.delete(f"/sandbox/{sandbox}")


def test_bad_nested_long_form_field_is_a_422_not_a_500(api: httpx.Client) -> None:
    # Found by the schema fuzzing (tests/integration/test_api_fuzz.py): it answered 500.
    r = api.post("/v2/sessions", json={"policy": {"colour": "blue"}, "requirements": {}})
    assert r.status_code == 422, r.text
    error = r.json()["error"]
    assert error["code"] == "validation_error" and "policy.colour" in error["message"]
    assert error["details"][0]["field"] == "policy.colour"
