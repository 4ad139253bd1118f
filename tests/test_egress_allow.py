"""network.allow entries: what is accepted, what is refused (and how the 422 says it)."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from cerver.adapters.egress_allow import NetworkOptions, matches, network_spec, normalize
from cerver.models import ComputeChoice


def test_names_are_normalized() -> None:
    assert normalize(["PyPI.org.", "*.NPMJS.org", "pypi.org"]) == ["pypi.org", "*.npmjs.org"]


@pytest.mark.parametrize(
    ("entry", "says"),
    [
        ("10.0.0.1", "is an IP address"),
        ("::1", "is an IP address"),
        ("10.0.0.0/8", "is a CIDR"),
        ("localhost", "single label"),
        ("*.com", "single label"),
        ("a.*.example.com", "'*' that is not the whole first label"),
        ("*example.com", "'*' that is not the whole first label"),
        ("exa_mple.com", "invalid label 'exa_mple'"),
        ("-x.example.com", "invalid label '-x'"),
        ("a..example.com", "invalid label ''"),
        ("example.123", "all-digit label"),
        ("", "not a domain name"),
        ("a" * 64 + ".com", "invalid label"),
    ],
)
def test_bad_entries_are_refused_naming_the_entry(entry: str, says: str) -> None:
    with pytest.raises(ValueError) as caught:
        normalize(["pypi.org", entry])
    message = str(caught.value)
    assert f"network.allow[1] {entry!r}" in message and says in message


def test_too_many_entries() -> None:
    with pytest.raises(ValidationError):
        NetworkOptions(allow=[f"h{i}.example.com" for i in range(65)])


def test_matching() -> None:
    allow = normalize(["pypi.org", "*.npmjs.org"])
    assert matches("pypi.org", allow)
    assert not matches("www.pypi.org", allow)
    assert matches("registry.npmjs.org", allow) and matches("a.b.npmjs.org", allow)
    assert not matches("npmjs.org", allow)
    assert not matches("evilnpmjs.org", allow)
    assert not matches("npmjs.org.evil.com", allow)


def test_the_wire_model_takes_true_or_an_allowlist() -> None:
    assert network_spec(ComputeChoice(provider="local", network=True).network) == (True, None)
    assert network_spec(ComputeChoice(provider="local").network) == (False, None)
    choice = ComputeChoice.model_validate({"provider": "local", "network": {"allow": ["X.org"]}})
    assert network_spec(choice.network) == (True, ["x.org"])
    with pytest.raises(ValidationError, match=r"network\.allow\[0\] '1\.2\.3\.4' is an IP"):
        ComputeChoice.model_validate({"provider": "local", "network": {"allow": ["1.2.3.4"]}})
    with pytest.raises(ValidationError):  # a typo in the object is not silently ignored
        ComputeChoice.model_validate({"provider": "local", "network": {"alow": ["x.org"]}})
