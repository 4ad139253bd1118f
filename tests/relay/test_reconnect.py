"""How the relay tells a gateway restart (poll soon) from another failure (back off)."""

from __future__ import annotations

import asyncio

import pytest
from websockets.asyncio.client import connect

from cerver.relay.agent import gateway_restarting
from tests.conftest import free_port

pytestmark = pytest.mark.timeout(20)


async def _failure_against(status: int | None, body: bytes = b"") -> BaseException:
    """What a WebSocket connect raises against a loopback port that answers the upgrade
    with ``status`` and ``body`` (None: nothing listens there)."""

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        head = f"HTTP/1.1 {status} No\r\nContent-Length: {len(body)}\r\n\r\n"
        writer.write(head.encode() + body)
        await writer.drain()
        writer.close()

    port = free_port()
    server = await asyncio.start_server(answer, "127.0.0.1", port) if status else None
    try:
        async with connect(f"ws://127.0.0.1:{port}/v2/relay/connect", open_timeout=5):
            pass
    except BaseException as exc:  # what the relay's loop catches
        return exc
    finally:
        if server is not None:
            server.close()
            await server.wait_closed()
    raise AssertionError("the upgrade was accepted")


@pytest.mark.parametrize("status", [None, 502, 503, 504])
async def test_a_refused_port_or_a_front_door_without_its_app_is_a_restart(
    status: int | None,
) -> None:
    assert gateway_restarting(await _failure_against(status))


@pytest.mark.parametrize("status", [400, 404, 500])
async def test_other_answers_back_off(status: int) -> None:
    assert not gateway_restarting(await _failure_against(status))


# What HAProxy's default backend (Ray's template) and Serve's proxy answer, word for word,
# for a path no application routes: while the gateway restarts, before its app is deployed.
FRONT_DOOR_404 = (
    b"Path '/v2/relay/connect' not found. Ping http://.../-/routes for available routes."
)


async def test_the_front_doors_404_before_the_app_is_deployed_is_a_restart() -> None:
    """CI: a relay that backed off exponentially on these 404s was not back within 10 s."""
    assert gateway_restarting(await _failure_against(404, FRONT_DOOR_404))


async def test_the_apps_own_404_backs_off() -> None:
    app_404 = b'{"error": {"code": "not_found", "message": "no such route"}}'
    assert not gateway_restarting(await _failure_against(404, app_404))


async def test_a_failure_after_a_restart_does_not_inherit_its_polls_backoff(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Six refused polls, then a 400 (not a restart): the 400 waits at most the restart
    poll's cap, not the minute that doubling through the polls would have reached."""
    import io

    from cerver.relay import agent

    port = free_port()
    waits: list[float] = []
    servers: list[asyncio.Server] = []
    real_sleep = asyncio.sleep

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 400 No\r\nContent-Length: 0\r\n\r\n")
        await writer.drain()
        writer.close()

    async def counted(seconds: float) -> None:  # the loop's waits, recorded, not slept
        waits.append(seconds)
        if len(waits) == 6:  # the gateway is back, answering something else
            servers.append(await asyncio.start_server(answer, "127.0.0.1", port))
        if len(waits) == 7:
            raise asyncio.CancelledError
        await real_sleep(0)

    monkeypatch.setattr(agent.asyncio, "sleep", counted)
    cred = agent.Credential(gateway=f"http://127.0.0.1:{port}", credential="c", compute_id="x")
    out = io.StringIO()
    try:
        with pytest.raises(asyncio.CancelledError):
            await agent.serve_forever(cred, None, None, out=out)  # type: ignore[arg-type]
    finally:
        for server in servers:
            server.close()
            await server.wait_closed()
    assert "Gateway unreachable (HTTP 400)" in out.getvalue().splitlines()[-1]
    assert all(w <= agent.RESTART_POLL_S for w in waits)
