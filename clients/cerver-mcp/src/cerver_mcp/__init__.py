"""cerver-mcp: an MCP server (stdio) with `secret_fetch` and the Cerver session tools."""

__version__ = "0.1.0"
