"""The session API of a Cerver gateway, read with the account's API token."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import quote

import httpx

from cerver_mcp.config import GatewayConfig
from cerver_mcp.errors import GatewayError

PAGE = 200  # the most transcript entries one export request asks for
TIMEOUT_S = 30.0

RequestHook = Callable[[httpx.Request], Awaitable[None]]


class Gateway:
    def __init__(self, cfg: GatewayConfig, *, request_hooks: list[RequestHook] | None = None):
        if not cfg.token:
            raise GatewayError(
                "CERVER_API_TOKEN is not set: the session tools need an API token of the "
                "account (ck_...) in cerver-mcp's environment"
            )
        self.cfg = cfg
        self._hooks = list(request_hooks or [])

    async def list_sessions(
        self, limit: int, name: str | None = None, cursor: str | None = None
    ) -> dict[str, Any]:
        params: dict[str, Any] = {"limit": limit}
        if name is not None:
            params["name"] = name
        if cursor is not None:
            params["cursor"] = cursor
        async with self._client() as client:
            return await _get(client, "/v2/sessions", params)

    async def session(self, session_id: str, **params: int) -> dict[str, Any]:
        """`GET /v2/sessions/:id` with ``tail``/``since``: the summary and those entries."""
        async with self._client() as client:
            return await _get(client, _session_path(session_id), params)

    async def export(self, session_id: str) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        """The summary and the whole transcript, in pages of at most `PAGE` entries through
        ``?since=``: never one unbounded request."""
        entries: list[dict[str, Any]] = []
        since = 0
        async with self._client() as client:
            while True:
                view = await _get(client, _session_path(session_id), {"since": since, "tail": PAGE})
                page = view.get("transcript") or []
                entries.extend(page)
                if len(page) < PAGE or page[-1]["seq"] <= since:
                    break
                since = page[-1]["seq"]
        summary = {k: v for k, v in view.items() if k not in ("transcript", "next_since")}
        summary["transcript_length"] = len(entries)
        return summary, entries

    def _client(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(
            base_url=self.cfg.api_url,
            headers={"Authorization": f"Bearer {self.cfg.token}", "Accept": "application/json"},
            timeout=TIMEOUT_S,
            event_hooks={"request": self._hooks},
        )


def _session_path(session_id: str) -> str:
    return f"/v2/sessions/{quote(session_id, safe='')}"


async def _get(client: httpx.AsyncClient, path: str, params: dict[str, Any]) -> dict[str, Any]:
    try:
        response = await client.get(path, params=params)
    except httpx.HTTPError as exc:
        raise GatewayError(
            f"cannot reach the Cerver gateway at {client.base_url} ({type(exc).__name__}); "
            "check CERVER_API_URL and that the gateway is running"
        ) from None
    if response.status_code != 200:
        raise _error(response)
    body = response.json()
    if not isinstance(body, dict):
        raise GatewayError(f"the Cerver gateway answered {path} with something not an object")
    return body


def _error(response: httpx.Response) -> GatewayError:
    """The gateway's `{"error": {"code", "message"}}`, carried to the agent as it is."""
    try:
        error = response.json()["error"]
        code, message = str(error["code"]), str(error["message"])
    except (ValueError, KeyError, TypeError):
        code, message = "http_error", response.text[:300] or response.reason_phrase
    return GatewayError(f"Cerver gateway: {message} ({code}, HTTP {response.status_code})")
