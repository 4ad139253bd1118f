"""``relay``: sandboxes on a user's own machine, reached through its relay connection.

A relay host is one compute of the account (a ``computes`` row, provider ``relay``,
status ``online``/``offline``); each session on it gets its own sandbox there, made by the
host's ``local`` adapter. Every operation goes through the ``RelayHub`` actor to whichever
Serve replica holds the host's WebSocket (``cerver/relay/hub.py``).

The sandbox record wraps the host's own local record: ``data = {"host": compute_id,
"inner": <local record>}``. A host that is not connected answers ``compute_offline`` (409,
with a recommendation); a host that drops during a call answers ``compute_lost`` (503).
"""

from __future__ import annotations

import asyncio
import base64
from collections.abc import AsyncIterator
from typing import Any

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
from cerver.errors import BadRequest, CerverError, ComputeOffline

STREAM_WAIT_S = 5.0
# Operations other than runs and installs answer quickly on a healthy host.
QUICK_S = 60.0


async def _hub_answer(ref: Any) -> Any:
    """Await a hub call; our own errors come back as themselves (not wrapped by Ray)."""
    from ray.exceptions import RayTaskError

    try:
        return await ref
    except RayTaskError as exc:
        if isinstance(exc.cause, CerverError):
            raise exc.cause from None
        raise


class RelayAdapter(ComputeAdapter):
    name = "relay"
    # One compute (the host) carries the sandboxes of many sessions.
    hosts_sandboxes = True

    def __init__(self, settings: Any, credentials: dict[str, str] | None = None) -> None:
        super().__init__(settings, credentials)
        self._hub: Any = None

    @property
    def hub(self) -> Any:
        if self._hub is None:
            from cerver.relay.hub import hub_handle

            self._hub = hub_handle(self.settings)
        return self._hub

    async def _call(
        self, record: SandboxRecord, op: str, body: dict[str, Any], timeout_s: float
    ) -> Any:
        host = str(record.data["host"])
        try:
            return await _hub_answer(self.hub.call.remote(host, op, body, timeout_s))
        except ComputeOffline as exc:
            raise await self._with_recommendation(record, exc) from None

    async def _with_recommendation(
        self, record: SandboxRecord, exc: ComputeOffline
    ) -> ComputeOffline:
        """The hub knows connections, not accounts: add what this account can use instead."""
        from cerver.store import Store

        store = Store.open(self.settings.database_url)
        account_id = str(record.data.get("account_id", ""))
        host = str(record.data["host"])
        return await self._offline(store, account_id, record.runtime, exc.message, host)

    # --- choosing the host ----------------------------------------------------------------
    async def _pick_host(self, spec: SandboxSpec) -> str:
        from cerver.store import Store

        store = Store.open(self.settings.database_url)
        wanted = spec.options.get("host_compute_id")
        rows = await asyncio.to_thread(store.computes.for_account, spec.account_id)
        mine = {r.id for r in rows if r.provider == self.name and r.status != "released"}
        online: dict[str, dict[str, Any]] = await _hub_answer(self.hub.online.remote())
        if wanted is not None:
            if wanted not in mine:
                raise BadRequest(f"compute {wanted} is not one of this account's relay hosts")
            if wanted not in online:
                message = f"relay compute {wanted} is offline"
                raise await self._offline(store, spec.account_id, spec.runtime, message, wanted)
            return str(wanted)
        candidates = [cid for cid in mine if cid in online]
        if not candidates:
            message = "none of this account's relay hosts is online"
            raise await self._offline(store, spec.account_id, spec.runtime, message, None)
        # The most headroom (free run slots) wins; ties go to the lower id, deterministically.
        return max(candidates, key=lambda cid: (online[cid]["headroom"], cid))

    async def _offline(
        self, store: Any, account_id: str, runtime: str, message: str, compute_id: str | None
    ) -> ComputeOffline:
        from cerver.adapters.access import compute_unavailable

        base = await compute_unavailable(
            self.settings, store, account_id, message, runtime=runtime,
            exclude=frozenset({self.name}),
        )  # fmt: skip
        details = dict(base.details or {}) | {"compute_id": compute_id}
        return ComputeOffline(base.message, details=details)

    # --- the contract ---------------------------------------------------------------------
    async def create_sandbox(self, spec: SandboxSpec) -> SandboxRecord:
        host = await self._pick_host(spec)
        inner_spec = spec.model_copy(
            update={"options": {k: v for k, v in spec.options.items() if k != "host_compute_id"}}
        )
        data = {"host": host, "account_id": spec.account_id}
        probe = SandboxRecord(provider=self.name, sandbox_id="", runtime=spec.runtime, data=data)
        body = {"spec": inner_spec.model_dump(mode="json")}
        inner = await self._call(probe, "create_sandbox", body, QUICK_S)
        record = SandboxRecord.model_validate(inner)
        return SandboxRecord(
            provider=self.name,
            sandbox_id=record.sandbox_id,
            runtime=record.runtime,
            isolation=record.isolation,
            data=data | {"inner": inner},
        )

    @staticmethod
    def _inner(record: SandboxRecord) -> dict[str, Any]:
        try:
            str(record.data["host"])
            return dict(record.data["inner"])
        except KeyError:
            raise BadRequest("not a relay sandbox record (no host)") from None

    async def run(self, record: SandboxRecord, request: ExecRequest) -> ExecResult:
        inner = self._inner(record)
        body = {"record": inner, "request": request.model_dump(mode="json")}
        return ExecResult.model_validate(await self._call(record, "run", body, request.timeout_s))

    async def run_stream(
        self, record: SandboxRecord, request: ExecRequest
    ) -> AsyncIterator[ExecEvent]:
        from cerver.relay.hub import error_from

        inner = self._inner(record)
        body = {"record": inner, "request": request.model_dump(mode="json")}
        host = str(record.data["host"])
        try:
            stream_id = await _hub_answer(self.hub.open_stream.remote(host, body))
        except ComputeOffline as exc:
            raise await self._with_recommendation(record, exc) from None
        ended = False
        try:
            while not ended:
                frames = await self.hub.stream_next.remote(stream_id, STREAM_WAIT_S)
                for frame in frames:
                    if frame["type"] == "stream_end":
                        ended = True
                        if frame["status"] != 200:
                            raise error_from(frame["status"], frame["body"])
                        break
                    yield ExecEvent.model_validate(frame["event"])
        finally:
            if not ended:
                await self.hub.close_stream.remote(stream_id)

    async def install_package(
        self, record: SandboxRecord, request: InstallRequest
    ) -> InstallResult:
        inner = self._inner(record)
        body = {"record": inner, "request": request.model_dump(mode="json")}
        answer = await self._call(record, "install_package", body, request.timeout_s)
        return InstallResult.model_validate(answer)

    async def write_file(self, record: SandboxRecord, path: str, data: bytes) -> None:
        inner = self._inner(record)
        body = {"record": inner, "path": path, "data_b64": base64.b64encode(data).decode()}
        await self._call(record, "write_file", body, QUICK_S)

    async def read_file(self, record: SandboxRecord, path: str) -> bytes:
        inner = self._inner(record)
        answer = await self._call(record, "read_file", {"record": inner, "path": path}, QUICK_S)
        return base64.b64decode(answer["data_b64"])

    async def get_state(self, record: SandboxRecord) -> SandboxState:
        inner = self._inner(record)
        state = SandboxState.model_validate(
            await self._call(record, "get_state", {"record": inner}, QUICK_S)
        )
        details = state.details | {"host": record.data["host"]}
        return state.model_copy(update={"provider": self.name, "details": details})

    async def set_state(self, record: SandboxRecord, state: dict[str, Any]) -> SandboxState:
        inner = self._inner(record)
        answer = await self._call(record, "set_state", {"record": inner, "state": state}, QUICK_S)
        return SandboxState.model_validate(answer).model_copy(update={"provider": self.name})

    async def delete_sandbox(self, record: SandboxRecord) -> None:
        """Idempotent; a host that is offline keeps the workspace (the relay's own data dir)
        until it is deleted again or the relay's state is removed."""
        inner = self._inner(record)
        try:
            await self._call(record, "delete_sandbox", {"record": inner}, QUICK_S)
        except ComputeOffline:
            return

    async def is_alive(self, record: SandboxRecord) -> bool:
        """Offline is not lost: the sandbox's workspace stays on the host, and the next
        run answers ``compute_offline`` until the relay is back."""
        inner = self._inner(record)
        try:
            answer = await self._call(record, "is_alive", {"record": inner}, QUICK_S)
        except CerverError:
            return True
        return bool(answer.get("alive"))


register(RelayAdapter)
