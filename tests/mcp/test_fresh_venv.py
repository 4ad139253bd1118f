"""`pip install ./clients/cerver-mcp` into a fresh venv, nothing else: the docs' verify
snippet runs verbatim, the package pulls in neither Ray nor the server, and the installed
`cerver-mcp` serves over stdio. Then the way the docs run it: `uvx --from ... cerver-mcp`.
The venvs are made once per test session (PyPI needed)."""

from __future__ import annotations

import os
import subprocess
import sys
import venv
from pathlib import Path

import pytest
from mcp import ClientSession
from mcp.client.stdio import StdioServerParameters, stdio_client

from tests.mcp.conftest import mcp_client, payload

pytestmark = [pytest.mark.network, pytest.mark.slow, pytest.mark.timeout(600)]

CLIENT = Path(__file__).resolve().parents[2] / "clients" / "cerver-mcp"

# The docs' snippet, character for character (inside `python -c "..."`).
VERIFY = """
import asyncio, os
os.environ['OPENAI_API_KEY'] = 'sk-test'
from cerver_mcp.server import secret_fetch
print(asyncio.run(secret_fetch('OPENAI_API_KEY')))
"""


def clean_env() -> dict[str, str]:
    """The caller's environment without anything that would leak in a package or a key."""
    drop = ("PYTHON", "VIRTUAL_ENV", "CERVER_", "INFISICAL_", "OPENAI_")
    return {k: v for k, v in os.environ.items() if not k.startswith(drop)}


def venv_with(where: Path, package: str) -> Path:
    venv.EnvBuilder(with_pip=True).create(where)
    subprocess.run(
        [str(where / "bin" / "python"), "-m", "pip", "install", "-q", package],
        env=clean_env(),
        check=True,
        timeout=540,
    )
    return where


@pytest.fixture(scope="session")
def fresh_venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return venv_with(tmp_path_factory.mktemp("cerver-mcp-venv") / "venv", str(CLIENT))


@pytest.fixture(scope="session")
def uvx(tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    """`uvx --from ./clients/cerver-mcp` (uv in a venv of its own), rebuilding the package
    from the checkout rather than reusing a build uv cached earlier."""
    where = venv_with(tmp_path_factory.mktemp("uv-venv") / "venv", "uv")
    return [str(where / "bin" / "uvx"), "--refresh-package", "cerver-mcp", "--from", str(CLIENT)]


def test_verify_snippet_runs_verbatim(fresh_venv: Path) -> None:
    out = subprocess.run(
        [str(fresh_venv / "bin" / "python"), "-c", VERIFY],
        env=clean_env(),
        cwd=fresh_venv,  # not the checkout: only what was installed is importable
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout == "{'name': 'OPENAI_API_KEY', 'value': 'sk-test', 'source': 'env'}\n"


def test_only_the_client_is_installed(fresh_venv: Path) -> None:
    probe = (
        "import importlib.util as u, importlib.metadata as m\n"
        "print(u.find_spec('ray') is None, u.find_spec('cerver') is None)\n"
        "import re\n"
        "print(sorted(re.split('[ <>=!~;]', r)[0] for r in m.requires('cerver-mcp')))\n"
    )
    out = subprocess.run(
        [str(fresh_venv / "bin" / "python"), "-c", probe],
        env=clean_env(),
        cwd=fresh_venv,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout.splitlines()
    assert out[0] == "True True"
    assert out[1] == "['httpx', 'mcp']"
    assert sys.prefix != str(fresh_venv)


async def test_installed_console_script_serves_over_stdio(fresh_venv: Path, tmp_path: Path) -> None:
    command = str(fresh_venv / "bin" / "cerver-mcp")
    async with mcp_client({"BUFFER_API_KEY": "buf-123"}, tmp_path / "err.log", command) as client:
        got = payload(await client.call_tool("secret_fetch", {"name": "BUFFER_API_KEY"}))
    assert got == {"name": "BUFFER_API_KEY", "value": "buf-123", "source": "env"}


def test_verify_snippet_through_uvx(uvx: list[str], tmp_path: Path) -> None:
    # The docs' command, with the checkout in place of the published name.
    out = subprocess.run(
        [*uvx, "python", "-c", VERIFY],
        env=clean_env(),
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout == "{'name': 'OPENAI_API_KEY', 'value': 'sk-test', 'source': 'env'}\n"


async def test_mcp_config_with_uvx_serves(uvx: list[str], tmp_path: Path) -> None:
    """An agent's MCP config: `"command": "uvx", "args": ["--from", ..., "cerver-mcp"]`."""
    # The SDK passes a spawned server only a few safe variables; uv also needs the
    # machine's TLS settings to reach PyPI (a proxy's CA, where there is one).
    tls = {k: v for k, v in os.environ.items() if k in ("SSL_CERT_FILE", "SSL_CERT_DIR")}
    params = StdioServerParameters(
        command=uvx[0], args=[*uvx[1:], "cerver-mcp"], env={"BUFFER_API_KEY": "buf-uvx", **tls}
    )
    with (tmp_path / "err.log").open("w") as err:
        async with (
            stdio_client(params, errlog=err) as (read, write),
            ClientSession(read, write) as client,
        ):
            await client.initialize()
            names = {t.name for t in (await client.list_tools()).tools}
            got = payload(await client.call_tool("secret_fetch", {"name": "BUFFER_API_KEY"}))
    assert "cerver_session_export" in names
    assert got == {"name": "BUFFER_API_KEY", "value": "buf-uvx", "source": "env"}
