"""The egress allowlist by domain name: ``"network": {"allow": ["pypi.org", "*.npmjs.org"]}``.

What an entry may be, how a requested host name is matched against the list, and the wire
model. Pure; the proxy that enforces the list is ``adapters/local/egress.py``
(docs/security.md, "Egress allowlist").

Entries are DNS names, case-insensitive, a trailing dot ignored:

``pypi.org``
    that name only (not ``www.pypi.org``).
``*.npmjs.org``
    any name below ``npmjs.org``, at any depth (``registry.npmjs.org``, ``a.b.npmjs.org``),
    not ``npmjs.org`` itself (list both when both are wanted).

IP addresses and CIDRs are refused (422): the proxy checks names, and a connection the
sandbox asks for by IP address is always refused. At least two labels (``localhost``,
``*.com`` are refused), each 1..63 of ``a-z 0-9 -`` (no leading or trailing ``-``), the
last not all digits; internationalised names in their ASCII (``xn--``) form. Any port.
"""

from __future__ import annotations

import ipaddress
import re

from pydantic import BaseModel, ConfigDict, Field, field_validator

from cerver.errors import Unprocessable

MAX_ENTRIES = 64
MAX_NAME = 253
_LABEL = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")
EXAMPLES = 'write names like "pypi.org" or "*.npmjs.org"'


def entry_problem(entry: str) -> str | None:
    """Why ``entry`` is not a valid allowlist entry, or None."""
    name = entry.strip().lower().rstrip(".")
    if "/" in name:
        return "is a CIDR; network.allow takes domain names, IP destinations are always refused"
    try:
        ipaddress.ip_address(name.strip("[]"))
    except ValueError:
        pass
    else:
        return (
            "is an IP address; network.allow takes domain names, IP destinations are always refused"
        )
    if name.startswith("*."):
        name = name[2:]
    if "*" in name:
        return "has a '*' that is not the whole first label (only '*.example.com' is allowed)"
    if not name or len(name) > MAX_NAME:
        return f"is not a domain name (empty or longer than {MAX_NAME} characters)"
    labels = name.split(".")
    if len(labels) < 2:
        return "has a single label; give a full name (or, with '*.', at least two labels after it)"
    for label in labels:
        if not _LABEL.match(label):
            return (
                f"has an invalid label {label!r} "
                "(1..63 of a-z, 0-9, '-', not starting or ending with '-')"
            )
    if labels[-1].isdigit():
        return "ends in an all-digit label; that is an address, not a domain name"
    return None


def normalize(entries: list[str]) -> list[str]:
    """The entries lower-cased, trailing dots dropped, duplicates removed (order kept);
    ValueError naming the first bad entry."""
    if len(entries) > MAX_ENTRIES:
        raise ValueError(f"network.allow has {len(entries)} entries; the limit is {MAX_ENTRIES}")
    out: list[str] = []
    for index, entry in enumerate(entries):
        problem = entry_problem(entry)
        if problem is not None:
            raise ValueError(f"network.allow[{index}] {entry!r} {problem}; {EXAMPLES}")
        name = entry.strip().lower().rstrip(".")
        if name not in out:
            out.append(name)
    return out


def matches(host: str, allow: list[str] | tuple[str, ...]) -> bool:
    """Whether the (already lower-cased) ``host`` is one the list allows."""
    host = host.rstrip(".")
    for pattern in allow:
        if pattern.startswith("*."):
            if host.endswith(pattern[1:]) and len(host) > len(pattern) - 1:
                return True
        elif host == pattern:
            return True
    return False


class NetworkOptions(BaseModel):
    """``network`` as an object: the sandbox reaches only the names in ``allow``."""

    model_config = ConfigDict(extra="forbid")

    allow: list[str] = Field(max_length=MAX_ENTRIES)

    @field_validator("allow")
    @classmethod
    def _allow(cls, value: list[str]) -> list[str]:
        return normalize(value)


NetworkChoice = bool | NetworkOptions


def require_enforced(enforced: bool, provider: str) -> None:
    """422 when the provider cannot enforce an allowlist (it would silently not apply)."""
    if not enforced:
        raise Unprocessable(
            "network.allow (an egress allowlist by name) is enforced by the local provider "
            f"only, not {provider!r}; use network: true there, or provider local",
            details={"field": "compute.network.allow", "provider": provider},
        )


def network_spec(network: NetworkChoice) -> tuple[bool, list[str] | None]:
    """(network on, the allowlist or None for the unrestricted network)."""
    if isinstance(network, NetworkOptions):
        return True, list(network.allow)
    return bool(network), None
