"""The Server-Timing middleware and the HAProxy variables, without Ray."""

from __future__ import annotations

import os
import shutil
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI, Request, Response

from cerver.serve_app.ingress import HAPROXY_FLAG, ingress_env
from cerver.serve_app.timing import ServerTiming, add, span
from cerver.serve_app.timing import parse as parse_server_timing

pytestmark = pytest.mark.timeout(30)


def _app() -> FastAPI:
    app = FastAPI()

    @app.get("/phases")
    async def phases(request: Request) -> dict[str, str]:
        with span(request, "auth"):
            pass
        add(request, "commit", 1.5)
        add(request, "commit", 0.5)  # recorded twice: summed
        return {"ok": "yes"}

    @app.get("/own")
    async def own() -> Response:
        return Response("x", headers={"Server-Timing": "app;dur=7.00"})

    app.add_middleware(ServerTiming)
    return app


async def _get(path: str) -> httpx.Response:
    transport = httpx.ASGITransport(app=_app())
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        return await client.get(path)


async def test_phases_are_reported_with_the_app_total_last() -> None:
    r = await _get("/phases")
    assert r.status_code == 200 and r.json() == {"ok": "yes"}
    header = r.headers["server-timing"]
    assert header.rsplit(", ", 1)[-1].startswith("app;dur=")
    phases = parse_server_timing(header)
    assert set(phases) == {"auth", "commit", "app"}
    assert phases["commit"] == pytest.approx(2.0)
    assert 0 <= phases["auth"] <= phases["app"]


async def test_a_routes_own_header_is_kept() -> None:
    r = await _get("/own")
    assert r.headers.get_list("server-timing") == ["app;dur=7.00"]


async def test_span_outside_the_middleware_is_a_no_op() -> None:
    app = FastAPI()

    @app.get("/")
    async def root(request: Request) -> dict[str, bool]:
        with span(request, "auth"):
            add(request, "x", 1.0)
        return {"ok": True}

    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        r = await client.get("/")
    assert r.status_code == 200 and "server-timing" not in r.headers


def test_haproxy_off_says_so() -> None:
    assert ingress_env(False, Path("/nonexistent")) == {
        HAPROXY_FLAG: "0",
        "CERVER_HAPROXY_FORWARDS_FOR": "0",  # the rate limiter believes no HAProxy hop
    }


@pytest.fixture
def short_home() -> Iterator[Path]:
    home = Path(tempfile.mkdtemp(prefix="h", dir="/tmp"))  # as ~/.cerver is: short
    yield home
    shutil.rmtree(home)


def test_haproxy_files_are_private_and_ports_distinct(short_home: Path) -> None:
    env = ingress_env(True, short_home)
    base = short_home / "haproxy"
    assert env[HAPROXY_FLAG] == "1"
    assert stat.S_IMODE(os.stat(base).st_mode) == 0o700
    for key in ("CONFIG_FILE_LOC", "SOCKET_PATH", "METRICS_SOCKET_PATH", "SERVER_STATE_FILE"):
        assert Path(env[f"RAY_SERVE_HAPROXY_{key}"]).parent == base
    port_keys = (
        "RAY_SERVE_HAPROXY_STATS_PORT",
        "RAY_SERVE_HAPROXY_METRICS_PORT",
        "RAY_SERVE_FALLBACK_PROXY_HTTP_PORT",  # Serve binds it with SO_REUSEPORT: a shared
        "RAY_SERVE_FALLBACK_PROXY_GRPC_PORT",  # one mixed two servers' requests
    )
    ports = {int(env[key]) for key in port_keys}
    assert len(ports) == 4 and all(1024 < p < 65536 for p in ports)
    assert not ports & {8500, 9500}
    # Each server its own ports: a second server does not reuse the first one's.
    again = ingress_env(True, short_home)
    assert {again["RAY_SERVE_HAPROXY_STATS_PORT"], again["RAY_SERVE_HAPROXY_METRICS_PORT"]} != {
        env["RAY_SERVE_HAPROXY_STATS_PORT"],
        env["RAY_SERVE_HAPROXY_METRICS_PORT"],
    }


def test_a_long_home_gets_a_short_private_directory(tmp_path: Path) -> None:
    home = tmp_path / ("h" * 80)
    env = ingress_env(True, home)
    base = Path(env["RAY_SERVE_HAPROXY_SERVER_STATE_BASE"])
    try:
        assert not base.is_relative_to(home)
        assert stat.S_IMODE(os.stat(base).st_mode) == 0o700
        # Ray puts each socket one 56-character directory deeper; HAProxy allows 97 bytes.
        for key in ("SOCKET_PATH", "METRICS_SOCKET_PATH"):
            path = Path(env[f"RAY_SERVE_HAPROXY_{key}"])
            assert len(str(path.parent / ("x" * 56) / path.name)) <= 97
    finally:
        shutil.rmtree(base)
