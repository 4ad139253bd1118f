"""``p69``: a compute reached over HTTP, speaking the lower-level ``/sandbox`` API that this
server itself serves (``cerver/serve_app/routes_sandbox.py``). So one Cerver can use another
Cerver, or any p69-compatible local server, as a backend.

Where: ``P69_BASE_URL`` (deployment setting, every account) or the account's own
``base_url`` credential; the key is ``P69_API_KEY`` or the account's ``api_key``, sent as
``Authorization: Bearer``. The remote's errors keep their status class here (a 400 stays a
400); a remote that cannot be reached is a ``provider_error``.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import httpx

from cerver.adapters.base import (
    ComputeAdapter,
    ExecEvent,
    ExecRequest,
    ExecResult,
    InstallRequest,
    InstallResult,
    SandboxRecord,
    SandboxSpec,
    SandboxState,
)
from cerver.adapters.registry import register
from cerver.errors import (
    BadRequest,
    CerverError,
    Conflict,
    NotFound,
    PayloadTooLarge,
    ProviderAuthFailed,
    ProviderError,
    RateLimited,
    Unprocessable,
)

# Remote status -> our error class (anything else, and 5xx, is the provider failing us).
_ERRORS: dict[int, type[CerverError]] = {
    400: BadRequest,
    401: ProviderAuthFailed,
    403: ProviderAuthFailed,
    404: NotFound,
    409: Conflict,
    413: PayloadTooLarge,
    422: Unprocessable,
}
# Beyond the run's own timeout: the remote's queueing and the HTTP round trip.
MARGIN_S = 30.0


class P69Adapter(ComputeAdapter):
    name = "p69"

    @classmethod
    def deployment_configured(cls, settings: Any) -> bool:
        return bool(getattr(settings, "p69_base_url", ""))

    def __init__(self, settings: Any, credentials: dict[str, str] | None = None) -> None:
        super().__init__(settings, credentials)
        self.base_url = (self.credentials.get("base_url") or settings.p69_base_url).rstrip("/")
        self._key = self.credentials.get("api_key") or settings.p69_api_key
        self._client: httpx.AsyncClient | None = None

    def __repr__(self) -> str:  # the key never shows
        return f"P69Adapter(base_url={self.base_url!r})"

    @property
    def client(self) -> httpx.AsyncClient:
        if not self.base_url:
            raise BadRequest("p69 is not configured: set P69_BASE_URL (or the account's base_url)")
        if self._client is None:
            headers = {"Authorization": f"Bearer {self._key}"} if self._key else {}
            self._client = httpx.AsyncClient(base_url=self.base_url, headers=headers, timeout=60)
        return self._client

    async def _request(
        self, method: str, path: str, *, timeout_s: float = 60.0, **kwargs: Any
    ) -> httpx.Response:
        try:
            response = await self.client.request(method, path, timeout=timeout_s, **kwargs)
        except httpx.HTTPError as exc:
            raise ProviderError(f"p69 at {self.base_url} did not answer: {exc}") from exc
        if response.status_code >= 400:
            raise _error_of(response)
        return response

    # --- the contract ---------------------------------------------------------------------
    async def create_sandbox(self, spec: SandboxSpec) -> SandboxRecord:
        body = {"runtime": spec.runtime, "env": spec.env, "network": spec.network}
        made = (await self._request("POST", "/sandbox", json=body)).json()
        return SandboxRecord(
            provider=self.name,
            sandbox_id=made["sandbox_id"],
            runtime=made.get("runtime") or spec.runtime,
            isolation=f"p69:{made.get('isolation') or 'remote'}",
            data={"base_url": self.base_url, "remote_provider": made.get("provider")},
        )

    def _run_body(self, request: ExecRequest, stream: bool) -> dict[str, Any]:
        return {
            "code": request.code,
            "language": request.language,
            "timeout": request.timeout_s,
            "env": request.env,
            "cwd": request.cwd,
            "stream": stream,
        }

    async def run(self, record: SandboxRecord, request: ExecRequest) -> ExecResult:
        answer = await self._request(
            "POST",
            f"/sandbox/{record.sandbox_id}/run",
            json=self._run_body(request, False),
            timeout_s=request.timeout_s + MARGIN_S,
        )
        return _result(answer.json())

    async def run_stream(
        self, record: SandboxRecord, request: ExecRequest
    ) -> AsyncIterator[ExecEvent]:
        path = f"/sandbox/{record.sandbox_id}/run"
        body = self._run_body(request, True)
        timeout = httpx.Timeout(60.0, read=request.timeout_s + MARGIN_S)
        try:
            async with self.client.stream("POST", path, json=body, timeout=timeout) as response:
                if response.status_code >= 400:
                    await response.aread()
                    raise _error_of(response)
                async for kind, data in _sse(response):
                    if kind == "error":
                        raise _error_of_body(502, data)
                    if kind == "exit":
                        yield ExecEvent(type="exit", result=_result(data["result"]))
                        return
                    yield ExecEvent.model_validate({"type": kind, "data": data.get("data", "")})
        except httpx.HTTPError as exc:
            raise ProviderError(f"p69 stream from {self.base_url} broke: {exc}") from exc

    async def install_package(
        self, record: SandboxRecord, request: InstallRequest
    ) -> InstallResult:
        answer = await self._request(
            "POST",
            f"/sandbox/{record.sandbox_id}/install",
            json={"package": request.package, "manager": request.manager},
            timeout_s=request.timeout_s + MARGIN_S,
        )
        return InstallResult.model_validate(answer.json())

    async def write_file(self, record: SandboxRecord, path: str, data: bytes) -> None:
        await self._request(
            "PUT", f"/sandbox/{record.sandbox_id}/files", params={"path": path}, content=data
        )

    async def read_file(self, record: SandboxRecord, path: str) -> bytes:
        answer = await self._request(
            "GET", f"/sandbox/{record.sandbox_id}/files", params={"path": path}
        )
        return answer.content

    def _state(self, record: SandboxRecord, raw: dict[str, Any]) -> SandboxState:
        state = SandboxState.model_validate(raw)
        details = state.details | {"remote_provider": state.provider}
        return state.model_copy(
            update={"provider": self.name, "sandbox_id": record.sandbox_id, "details": details}
        )

    async def get_state(self, record: SandboxRecord) -> SandboxState:
        answer = await self._request("GET", f"/sandbox/{record.sandbox_id}/state")
        return self._state(record, answer.json())

    async def set_state(self, record: SandboxRecord, state: dict[str, Any]) -> SandboxState:
        answer = await self._request(
            "PUT", f"/sandbox/{record.sandbox_id}/state", json={"state": state}
        )
        return self._state(record, answer.json())

    async def delete_sandbox(self, record: SandboxRecord) -> None:
        try:
            await self._request("DELETE", f"/sandbox/{record.sandbox_id}")
        except NotFound:
            return

    async def is_alive(self, record: SandboxRecord) -> bool:
        try:
            answer = await self._request("GET", f"/sandbox/{record.sandbox_id}")
        except NotFound:
            return False
        return bool(answer.json().get("status") not in ("released", "failed", "lost"))

    async def close(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None


def _result(raw: dict[str, Any]) -> ExecResult:
    """The remote's run answer: the contract's fields, with the SDK's ``error`` (a string,
    stderr included) replaced by the contract's own (``traceback``, when present)."""
    fields = {k: v for k, v in raw.items() if k in ExecResult.model_fields}
    fields["error"] = raw.get("traceback", raw.get("error"))
    return ExecResult.model_validate(fields)


async def _sse(response: httpx.Response) -> AsyncIterator[tuple[str, dict[str, Any]]]:
    kind = "message"
    async for line in response.aiter_lines():
        if line.startswith("event: "):
            kind = line[len("event: ") :]
        elif line.startswith("data: "):
            yield kind, json.loads(line[len("data: ") :])
            kind = "message"


def _error_of(response: httpx.Response) -> CerverError:
    try:
        body = response.json()
    except ValueError:
        body = {"error": {"message": response.text[:300]}}
    return _error_of_body(response.status_code, body, response.headers.get("retry-after"))


def _error_of_body(
    status: int, body: dict[str, Any], retry_after: str | None = None
) -> CerverError:
    err = body.get("error") if isinstance(body, dict) else None
    err = err if isinstance(err, dict) else {}
    message = f"p69: {err.get('message', 'the remote failed')}"
    details = {"remote_status": status, "remote_code": err.get("code")}
    if status == 429:
        return RateLimited(message, retry_after_s=float(retry_after or 1), details=details)
    return _ERRORS.get(status, ProviderError)(message, details=details)


register(P69Adapter)
