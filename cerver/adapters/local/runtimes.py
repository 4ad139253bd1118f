"""The programs a local sandbox runs: where they are and what must be visible to run them.

A runtime is located once per process. Inside bwrap only ``/usr`` (and a few ``/etc``
files) is visible, so a runtime installed elsewhere (a pyenv build under ``/root/.pyenv``)
contributes its installation prefix, which is exposed read-only, and nothing around it.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from cerver.errors import BadRequest

SYSTEM_PREFIX = "/usr"

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Runtime:
    name: str
    executable: str  # absolute, symlinks resolved up to the prefix
    prefix: str  # installation prefix; exposed read-only when outside /usr

    @property
    def bin_dir(self) -> str:
        return str(Path(self.executable).parent)

    @property
    def needs_bind(self) -> bool:
        return not _is_under(self.prefix, SYSTEM_PREFIX)


def _is_under(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip("/") + "/")


@functools.cache
def python() -> Runtime | None:
    """The interpreter of the server's Python installation (not its venv)."""
    prefix = os.path.realpath(sys.base_prefix)
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    for name in (f"python{version}", "python3"):
        candidate = Path(prefix) / "bin" / name
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return Runtime("python", str(candidate), prefix)
    found = shutil.which("python3")
    if found is None:
        return None
    real = os.path.realpath(found)
    return Runtime("python", real, str(Path(real).parent.parent))


@functools.cache
def python_site_dirs(executable: str) -> tuple[str, ...]:
    """The site-packages directories of ``executable`` (asked once per process).

    Sandboxed interpreters start with ``-S`` and get these on ``sys.path`` instead: the
    installation's packages stay importable, while ``site`` and the ``.pth`` files it runs
    (arbitrary code, often most of an interpreter's start-up) are skipped."""
    probe = "import json, site; print(json.dumps(site.getsitepackages()))"
    found: object = None
    try:
        done = subprocess.run(
            [executable, "-I", "-c", probe], capture_output=True, text=True, timeout=30
        )
        problem = done.stderr.strip() or f"exit code {done.returncode}"
        if done.returncode == 0:
            found = json.loads(done.stdout)
    except (OSError, subprocess.TimeoutExpired, ValueError) as exc:
        problem = str(exc)
    if not isinstance(found, list):
        log.warning(
            "could not ask %s for its site-packages (%s): sandboxed Python sees the standard "
            "library and the sandbox's own installs only",
            executable,
            problem,
        )
        return ()
    return tuple(str(d) for d in found if os.path.isdir(d))


@functools.cache
def node() -> Runtime | None:
    found = shutil.which("node")
    if found is None:
        return None
    real = os.path.realpath(found)
    return Runtime("node", real, str(Path(real).parent.parent))


@functools.cache
def npm() -> str | None:
    """npm's launcher; it runs on ``node`` and lives in node's prefix or /usr."""
    found = shutil.which("npm")
    return os.path.realpath(found) if found else None


@functools.cache
def bash() -> str | None:
    for candidate in ("/usr/bin/bash", "/bin/bash"):
        if os.access(candidate, os.X_OK):
            return os.path.realpath(candidate)
    found = shutil.which("bash")
    return os.path.realpath(found) if found else None


def require(runtime: Runtime | None, language: str) -> Runtime:
    if runtime is None:
        raise BadRequest(
            f"the {language} runtime is not installed on this node "
            f"(no {'python3' if language == 'python' else language} executable found)",
            details={"language": language, "missing_runtime": language},
        )
    return runtime


def require_bash() -> str:
    path = bash()
    if path is None:
        raise BadRequest(
            "the shell runtime is not installed on this node (no bash executable found)",
            details={"language": "shell", "missing_runtime": "bash"},
        )
    return path


def exposed_prefixes() -> list[str]:
    """Installation prefixes outside /usr that sandboxes need read-only."""
    prefixes: list[str] = []
    for runtime in (python(), node()):
        if runtime is not None and runtime.needs_bind and runtime.prefix not in prefixes:
            prefixes.append(runtime.prefix)
    return prefixes


def search_path(extra_first: list[str]) -> str:
    dirs = list(extra_first)
    for runtime in (python(), node()):
        if runtime is not None and runtime.bin_dir not in dirs:
            dirs.append(runtime.bin_dir)
    dirs += ["/usr/local/bin", "/usr/bin", "/bin"]
    return ":".join(dict.fromkeys(dirs))
