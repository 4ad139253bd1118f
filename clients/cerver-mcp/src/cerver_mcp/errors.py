"""The errors tools raise. Both are the SDK's `ToolError`, so the agent reads the message
(any other exception reaches it only as "Error executing tool ...")."""

from __future__ import annotations

from mcp.server.mcpserver.exceptions import ToolError


class SecretError(ToolError, ValueError):
    """`secret_fetch` failed. A `ValueError` too: the docs' contract for Python callers."""


class GatewayError(ToolError):
    """A session tool failed: the gateway's own message, or why it could not be asked."""
