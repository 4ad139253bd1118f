"""The published `cerver` SDK (PyPI 0.1.0) works unmodified against this server.

The SDK's import name is also `cerver`, so it lives in its own virtualenv (`.venv-sdk`,
made here from PyPI if missing) and its README examples run as separate processes with
CERVER_API_URL / CERVER_API_KEY pointing at the test server.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

ROOT = Path(__file__).resolve().parents[2]
SDK_VENV = ROOT / ".venv-sdk"
EXAMPLES = ROOT / "tests" / "sdk_examples"


@pytest.fixture(scope="module")
def sdk_python() -> Path:
    python = SDK_VENV / "bin" / "python"
    if not python.exists():
        subprocess.run([sys.executable, "-m", "venv", str(SDK_VENV)], check=True)
    probe = subprocess.run(
        [str(python), "-c", "import cerver, importlib.metadata as m; print(m.version('cerver'))"],
        capture_output=True,
        text=True,
    )
    if probe.stdout.strip() != "0.1.0":
        subprocess.run(
            [str(python), "-m", "pip", "install", "-q", "cerver==0.1.0"], check=True, timeout=240
        )
    return python


def run_example(python: Path, name: str, server: str, token: str) -> str:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CERVER_")}
    env |= {"CERVER_API_URL": server, "CERVER_API_KEY": token}
    done = subprocess.run(
        [str(python), str(EXAMPLES / name)],
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
        cwd="/",
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_quick_start(sdk_python: Path, server: str, token: str) -> None:
    assert run_example(sdk_python, "quick_start.py", server, token) == "Hello from sandbox!\n"


def test_basic_execution(sdk_python: Path, server: str, token: str) -> None:
    lines = run_example(sdk_python, "basic_execution.py", server, token).splitlines()
    # output "2" (no trailing newline, as the original), exit code, whole milliseconds
    assert lines[0] == "2" and lines[1] == "0" and int(lines[2]) > 0, lines


def test_state_persistence(sdk_python: Path, server: str, token: str) -> None:
    assert run_example(sdk_python, "state_persistence.py", server, token).startswith("30\n")


def test_error_handling(sdk_python: Path, server: str, token: str) -> None:
    out = run_example(sdk_python, "error_handling.py", server, token)
    assert out.startswith("Error: ") and "NameError" in out and "undefined_var" in out


def test_timeout(sdk_python: Path, server: str, token: str) -> None:
    assert run_example(sdk_python, "timeout.py", server, token) == "Code timed out\n"


def test_install(sdk_python: Path, server: str, token: str) -> None:
    out = run_example(sdk_python, "install.py", server, token).splitlines()
    assert out[0] == "True" and out[1] == "1.16.0"


def test_bad_key_is_authentication_error(sdk_python: Path, server: str) -> None:
    code = (
        "from cerver import Sandbox, AuthenticationError\n"
        "try:\n    Sandbox().create()\nexcept AuthenticationError as e:\n    print('auth', e)\n"
    )
    env = {"CERVER_API_URL": server, "CERVER_API_KEY": "ck_wrong", "PATH": os.environ["PATH"]}
    done = subprocess.run(
        [str(sdk_python), "-c", code], env=env, capture_output=True, text=True, timeout=60, cwd="/"
    )
    assert done.stdout.startswith("auth Invalid API key"), done.stderr
