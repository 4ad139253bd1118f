"""Messages a client sees carry no host paths and no reprs of internal exceptions (issue 10,
finding 8); the server log keeps them."""

from __future__ import annotations

import logging

import httpx
import pytest
from fastapi import FastAPI

from cerver.errors import NotFound, PathEscape, ProviderError
from cerver.scrub import scrub_text
from cerver.serve_app import errors

pytestmark = pytest.mark.timeout(30)


def test_host_paths_and_reprs_are_removed() -> None:
    oserror = OSError(2, "No such file or directory", "/tmp/cerver-x/sandboxes/sbx_1/ws")
    text = f"could not start the sandbox process: {oserror}; also {ValueError('boom')!r}"
    clean = scrub_text(text)
    assert "/tmp/" not in clean and "cerver-x" not in clean and "ValueError('boom')" not in clean
    assert clean == (
        "could not start the sandbox process: [Errno 2] No such file or directory: "
        "'<host path>'; also ValueError"
    )
    traceback = 'File "/usr/lib/python3.11/asyncio/tasks.py", line 3 in /home/op/.cerver/x.db'
    assert scrub_text(traceback) == 'File "<host path>", line 3 in <host path>'


def test_api_paths_sandbox_paths_and_relative_paths_are_kept() -> None:
    kept = (
        "sandbox cmp_1 is attached to session s_1; use /v2/sessions/s_1/run or "
        "POST /sandbox/{id}/run; /workspace/data.csv; ../etc/passwd; ./tmp/x; a/usr/b"
    )
    assert scrub_text(kept) == kept


async def test_http_errors_are_scrubbed_and_the_log_keeps_the_text(
    caplog: pytest.LogCaptureFixture,
) -> None:
    app = FastAPI()
    errors.install(app)
    leak = "/tmp/cerver-test-abc/sandboxes/sbx_9/workspace"

    @app.get("/provider")
    async def provider() -> None:
        raise ProviderError(
            f"bwrap failed: {PermissionError(13, 'denied', leak)!r}", details={"at": leak}
        )

    @app.get("/missing")
    async def missing() -> None:
        raise NotFound(f"file {leak}/x does not exist")

    @app.get("/escape")
    async def escape() -> None:
        raise PathEscape("path '../x' leaves the workspace", details={"path": "../x"})

    client = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t")
    with caplog.at_level(logging.WARNING, logger="cerver.http"):
        r = await client.get("/provider")
    assert r.status_code == 502
    body = r.text
    assert "cerver-test-abc" not in body and "PermissionError(" not in body
    assert r.json()["error"] == {
        "code": "provider_error",
        "message": "bwrap failed: PermissionError",
        "details": {"at": "<host path>"},
    }
    assert leak in caplog.text  # the operator still sees it
    assert "cerver-test-abc" not in (await client.get("/missing")).text
    escape_error = (await client.get("/escape")).json()["error"]
    assert escape_error["message"] == "path '../x' leaves the workspace"
    await client.aclose()
