"""`cerver-mcp`: check the configuration, then serve MCP over stdio (or `--check`)."""

from __future__ import annotations

import argparse
import os
import sys

from cerver_mcp import __version__


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="cerver-mcp",
        description="MCP server (stdio) with secret_fetch and the Cerver session tools.",
    )
    parser.add_argument(
        "--check",
        action="store_true",
        help="resolve the configuration, reach the gateway and the secrets backend, "
        "print what works; exit non-zero if anything does not",
    )
    parser.add_argument("--version", action="version", version=f"cerver-mcp {__version__}")
    args = parser.parse_args(argv)
    if args.check:
        from cerver_mcp.check import check

        sys.exit(check(os.environ))
    # Before the MCP SDK is imported: a missing setting fails at once, naming the variable.
    from cerver_mcp import backends
    from cerver_mcp.config import ConfigError, gateway_config

    try:
        backends.active(os.environ)
        gateway_config(os.environ)
    except ConfigError as exc:
        print(f"cerver-mcp: {exc}", file=sys.stderr)
        sys.exit(2)
    from cerver_mcp.server import app

    app.run("stdio")
