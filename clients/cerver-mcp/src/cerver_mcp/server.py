"""The MCP server: `secret_fetch` and the three session tools, over stdio.

Each tool is also a plain async function, so `from cerver_mcp.server import secret_fetch`
works without a client (the docs' verify snippet). Settings are read at each call.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, Literal, TypedDict

from mcp.server.mcpserver import MCPServer
from mcp.types import ToolAnnotations

from cerver_mcp import __version__, backends
from cerver_mcp.config import gateway_config
from cerver_mcp.errors import GatewayError, SecretError
from cerver_mcp.gateway import PAGE, Gateway
from cerver_mcp.redaction import Redactor
from cerver_mcp.transcript import markdown

DEFAULT_TAIL = 50
# Every tool only reads: the vault or the gateway.
READ_ONLY = ToolAnnotations(read_only_hint=True, destructive_hint=False, idempotent_hint=True)


class SecretValue(TypedDict):
    name: str
    value: str
    source: str  # the backend that answered: "env" or "infisical"


app = MCPServer(
    name="cerver",
    version=__version__,
    instructions=(
        "secret_fetch(name) returns a secret from the configured vault. The cerver_session_* "
        "tools read the sessions and transcripts of the Cerver account that owns the API "
        "token; values secret_fetch returned are shown there as ***."
    ),
)

# httpx logs every URL at INFO, and a URL can hold what an agent passed (a session id that
# is really a key): the server's log (stderr) gets warnings only from it.
logging.getLogger("httpx").setLevel(logging.WARNING)

# Values this process handed out through secret_fetch: masked in every session tool output.
redactor = Redactor()


@app.tool(
    description=(
        "Fetch the secret stored under exactly `name` from the configured backend "
        "(CERVER_SECRETS_BACKEND: env or infisical). Returns {name, value, source}."
    ),
    annotations=READ_ONLY,
)
async def secret_fetch(name: str) -> SecretValue:
    environ = os.environ
    try:
        if not name:
            raise ValueError(
                "name must not be empty: pass the exact name the secret is stored under"
            )
        backend = backends.active(environ)
        value = await backend.fetch(name, environ)
    except ValueError as exc:  # ConfigError, SecretLookupError
        raise SecretError(str(exc)) from None
    redactor.add(value)
    return SecretValue(name=name, value=value, source=backend.name)


@app.tool(
    description=(
        "List the account's sessions, newest first: {sessions, next_cursor}. Pass "
        "next_cursor back as `cursor` for the next page; `name` filters by session name."
    ),
    annotations=READ_ONLY,
)
async def cerver_session_list(
    limit: int = 20, name: str | None = None, cursor: str | None = None
) -> dict[str, Any]:
    with _masked_errors():
        return redactor.mask(await _gateway().list_sessions(limit, name=name, cursor=cursor))


@app.tool(
    description=(
        "A session's summary and recent transcript: the last `tail` entries (default 50), "
        "or, with `since`, up to `tail` entries (default 200) after that seq, oldest first; "
        "continue with the answer's next_since."
    ),
    annotations=READ_ONLY,
)
async def cerver_session_peek(
    session_id: str, tail: int | None = None, since: int | None = None
) -> dict[str, Any]:
    params = (
        {"tail": DEFAULT_TAIL if tail is None else tail}
        if since is None
        else {"since": since, "tail": PAGE if tail is None else tail}
    )
    with _masked_errors():
        return redactor.mask(await _gateway().session(session_id, **params))


@app.tool(
    description=(
        "The whole transcript of a session with its summary, read page by page. "
        'format="json" (default): {session, transcript}; format="markdown": a document.'
    ),
    annotations=READ_ONLY,
    structured_output=False,
)
async def cerver_session_export(
    session_id: str, format: Literal["json", "markdown"] = "json"
) -> dict[str, Any] | str:
    with _masked_errors():
        summary, entries = await _gateway().export(session_id)
    summary, entries = redactor.mask(summary), redactor.mask(entries)
    if format == "markdown":
        return markdown(summary, entries)
    return {"session": summary, "transcript": entries}


def _gateway() -> Gateway:
    try:
        return Gateway(gateway_config(os.environ))
    except ValueError as exc:  # ConfigError
        raise GatewayError(str(exc)) from None


@contextmanager
def _masked_errors() -> Iterator[None]:
    """A gateway message may quote what it was sent; mask it like any output."""
    try:
        yield
    except GatewayError as exc:
        raise GatewayError(redactor.text(str(exc))) from None
