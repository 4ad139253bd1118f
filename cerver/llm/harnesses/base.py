"""The harness contract: one module per model API, each translating the neutral ``Call`` to
its wire format through the vendor's official SDK, and the vendor's answers and errors back.

Cerver owns retries (cerver/llm/attempts.py), so every SDK client is built with
``max_retries=0``; a harness raises ``UpstreamError`` with what the retry loop needs to know
(retryable or not, the status, the upstream's ``Retry-After``), never a vendor exception.
"""

from __future__ import annotations

import importlib
import json
from abc import ABC, abstractmethod
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from types import SimpleNamespace
from typing import Any, ClassVar

from pydantic import BaseModel

from cerver.llm.aio import shielded
from cerver.llm.types import Call, Completion, TextDelta


class Endpoint(BaseModel):
    """Where and as whom a harness calls. ``repr`` never shows the key."""

    api_key: str
    base_url: str | None = None
    timeout_s: float = 120.0

    def __repr__(self) -> str:
        return f"Endpoint(base_url={self.base_url!r}, api_key=<hidden>)"

    __str__ = __repr__


class UpstreamError(Exception):
    """A failed upstream call. ``kind``: rate_limited | server_error | timeout | connection
    | client_error (a 4xx other than 429: retrying would not help)."""

    RETRYABLE: ClassVar[frozenset[str]] = frozenset(
        {"rate_limited", "server_error", "timeout", "connection"}
    )

    def __init__(
        self, kind: str, message: str, *, status: int | None = None, retry_after_s: float | None
    ) -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message
        self.status = status
        self.retry_after_s = retry_after_s

    @property
    def retryable(self) -> bool:
        return self.kind in self.RETRYABLE


def retry_after_of(headers: object) -> float | None:
    """Seconds from a ``Retry-After`` (or ``retry-after-ms``) header, if the upstream sent one."""
    get = getattr(headers, "get", None)
    if get is None:
        return None
    millis = get("retry-after-ms")
    try:
        if millis is not None:
            return max(0.0, float(millis) / 1000.0)
        seconds = get("retry-after")
        return max(0.0, float(seconds)) if seconds is not None else None
    except ValueError:
        return None  # an HTTP date: rare from model APIs; the backoff applies instead


def translate_sdk_error(exc: Exception, sdk: object) -> UpstreamError:
    """Map an ``openai``/``anthropic`` SDK exception (both SDKs share the class names)."""
    timeout_cls = sdk.APITimeoutError  # type: ignore[attr-defined]
    connection_cls = sdk.APIConnectionError  # type: ignore[attr-defined]
    status_cls = sdk.APIStatusError  # type: ignore[attr-defined]
    if isinstance(exc, timeout_cls):
        return UpstreamError("timeout", "the upstream did not answer in time", retry_after_s=None)
    if isinstance(exc, connection_cls):
        return UpstreamError(
            "connection", f"could not reach the upstream: {exc}", retry_after_s=None
        )
    if isinstance(exc, status_cls):
        status = int(exc.status_code)
        kind = (
            "rate_limited" if status == 429 else "server_error" if status >= 500 else "client_error"
        )
        # An auth failure's body may echo part of the key: it is not passed on.
        said = "it refused the key" if status in (401, 403) else _short(exc)
        return UpstreamError(
            kind,
            f"the upstream answered {status}: {said}",
            status=status,
            retry_after_s=retry_after_of(exc.response.headers),
        )
    raise exc


async def post_json(client: Any, path: str, body: dict[str, Any]) -> Any:
    """POST ``body`` through an ``openai``/``anthropic`` SDK client's own ``post`` (its base
    URL, key, headers, timeout and error classes) and return the JSON answer with attribute
    access, as the SDK's models give it.

    Why not ``client.<resource>.create``: for a JSON answer it walks the request's type
    annotations to transform the body (a no-op for the plain dicts the harnesses build) and
    constructs the response's models, which together cost several milliseconds per call,
    most of a turn's overhead against a fast upstream (docs/performance.md). With
    ``cast_to=object`` the SDK hands back the decoded JSON. Streams still use ``create``."""
    return fields(await client.post(path, body=body, cast_to=object))


class Fields(SimpleNamespace):
    """A JSON object with attribute access; a field the answer left out reads as None, as
    on the SDK's models."""

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        return None


def fields(value: Any) -> Any:
    """Decoded JSON with attribute access for its objects (``Fields``)."""
    if isinstance(value, dict):
        return Fields(**{key: fields(item) for key, item in value.items()})
    if isinstance(value, list):
        return [fields(item) for item in value]
    return value


def plain(value: Any) -> Any:
    """The inverse of ``fields``: plain JSON data again (dicts and lists)."""
    if isinstance(value, Fields):
        return {key: plain(item) for key, item in vars(value).items()}
    if isinstance(value, list):
        return [plain(item) for item in value]
    return value


def parse_arguments(raw: str | None) -> dict[str, Any]:
    """A tool call's JSON arguments as an object; what does not parse is kept, not lost."""
    try:
        value = json.loads(raw or "{}")
    except ValueError:
        return {"_unparsed": raw}
    return value if isinstance(value, dict) else {"_value": value}


def _short(exc: Exception) -> str:
    text = str(exc)
    return text if len(text) <= 300 else text[:300] + "..."


class Harness(ABC):
    """One model API. Instances are per endpoint (base URL + key) and reused."""

    name: ClassVar[str]

    def __init__(self, endpoint: Endpoint) -> None:
        self.endpoint = endpoint

    @abstractmethod
    async def complete(self, call: Call) -> Completion:
        """One non-streaming call."""

    @abstractmethod
    def stream(self, call: Call) -> AsyncIterator[TextDelta | Completion]:
        """Text deltas as they come, then exactly one Completion (text, tool calls, usage).
        Closing the iterator early closes the upstream connection."""

    @abstractmethod
    async def aclose(self) -> None:
        """Release the SDK client's connections."""


class SdkHarness(Harness):
    """What the harnesses on an official SDK share (``openai``, ``anthropic``): the SDK
    imported on first use, one async client per endpoint with the SDK's retries off, the
    SDK's errors translated at the edge, and streams closed however they end. Each
    subclass names its SDK and speaks its own API."""

    sdk_module: ClassVar[str]  # "openai" | "anthropic"
    client_class: ClassVar[str]  # "AsyncOpenAI" | "AsyncAnthropic"
    error_class: ClassVar[str]  # the SDK's root exception: "OpenAIError" | "AnthropicError"

    def __init__(self, endpoint: Endpoint) -> None:
        super().__init__(endpoint)
        self._sdk = importlib.import_module(self.sdk_module)
        self.client = getattr(self._sdk, self.client_class)(
            api_key=endpoint.api_key,
            base_url=endpoint.base_url,
            timeout=endpoint.timeout_s,
            max_retries=0,  # Cerver owns retries
        )

    async def _request(
        self, create: Callable[..., Awaitable[Any]], *args: Any, **params: Any
    ) -> Any:
        """One SDK call (a response, or a stream to read with ``_events``)."""
        try:
            return await create(*args, **params)
        except getattr(self._sdk, self.error_class) as exc:
            raise translate_sdk_error(exc, self._sdk) from exc

    async def _events(self, stream: Any) -> AsyncGenerator[Any, None]:
        """The events of an SDK stream, errors translated; the upstream connection is closed
        when the stream ends, fails, or its reader goes away (use with ``aclosing``)."""
        try:
            async for event in stream:
                yield event
        except getattr(self._sdk, self.error_class) as exc:
            raise translate_sdk_error(exc, self._sdk) from exc
        finally:
            await shielded(stream.close())

    async def aclose(self) -> None:
        await self.client.close()


def common_params(call: Call, *, max_tokens: str) -> dict[str, Any]:
    """The parameters every API takes alike; ``max_tokens`` names its output-limit field."""
    params: dict[str, Any] = {"model": call.model, max_tokens: call.max_output_tokens}
    if call.temperature is not None:
        params["temperature"] = call.temperature
    return params
