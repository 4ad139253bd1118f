"""Package specs we accept for ``install_package``, and the install command for each manager.

Strict on purpose: a spec is a package *name* with optional extras and version
constraints, nothing a package manager would read as an option, a URL, a path or a
second argument.
"""

from __future__ import annotations

import re

from cerver.errors import BadRequest

_PIP_NAME = r"[A-Za-z0-9](?:[A-Za-z0-9._-]*[A-Za-z0-9])?"
_PIP_VERSION = r"(?:===|==|!=|~=|>=|<=|>|<)[A-Za-z0-9.*+!_-]+"
PIP_SPEC = re.compile(
    rf"^{_PIP_NAME}(?:\[{_PIP_NAME}(?:,{_PIP_NAME})*\])?(?:{_PIP_VERSION}(?:,{_PIP_VERSION})*)?$"
)
_NPM_NAME = r"[a-z0-9][a-z0-9._-]*"
NPM_SPEC = re.compile(rf"^(?:@{_NPM_NAME}/)?{_NPM_NAME}(?:@[A-Za-z0-9.^~*+_-]+)?$")
MAX_SPEC_LEN = 200

ALLOWED = {
    "pip": "a package name with optional [extras] and version constraints, "
    "e.g. 'requests', 'requests[socks]>=2.31,<3'",
    "npm": "a package name, optionally @scoped, with an optional @version or tag, "
    "e.g. 'lodash', '@types/node@20'",
}


def validate(manager: str, spec: str) -> str:
    pattern = PIP_SPEC if manager == "pip" else NPM_SPEC
    if manager not in ALLOWED:
        raise BadRequest(f"unknown package manager {manager!r}; use pip or npm")
    if len(spec) > MAX_SPEC_LEN or not pattern.fullmatch(spec):
        raise BadRequest(
            f"invalid {manager} package spec {spec!r}: expected {ALLOWED[manager]} "
            "(no options, URLs, paths, whitespace or shell characters)",
            details={"field": "package", "package": spec, "manager": manager},
        )
    return spec


def install_argv(
    manager: str, spec: str, *, python: str, npm: str, workspace: str, site: str,
    allow_sdists: bool,
) -> list[str]:  # fmt: skip
    """No package code runs at install time: npm lifecycle scripts are off, and pip takes
    wheels only (building a source distribution runs its setup.py) unless the operator
    allows sdists (``CERVER_SANDBOX_ALLOW_SDISTS``)."""
    if manager == "pip":
        wheels = [] if allow_sdists else ["--only-binary", ":all:"]
        return [
            python, "-m", "pip", "install", "--no-cache-dir", "--disable-pip-version-check",
            "--no-input", "--upgrade", *wheels, "--target", site, spec,
        ]  # fmt: skip
    return [
        npm, "install", "--ignore-scripts", "--no-audit", "--no-fund", "--prefix", workspace,
        spec,
    ]  # fmt: skip
