"""Schemathesis over /openapi.json against the real server (issue 10, "Prove it"):
authenticated, every operation but `install` (it would reach the package registries), no
canary stress tests (they would run on live compute), small stress samples (the machine is
shared). Zero 5xx answers, and every answer matches the schema: its status is declared,
its content type is declared, its body validates.

Bounded and deterministic: ``MAX_EXAMPLES`` per operation, ``derandomize`` (the same cases
every run, so it cannot flake), no example database."""

from __future__ import annotations

from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)
from schemathesis.core.failures import FailureGroup

pytestmark = [pytest.mark.integration, pytest.mark.timeout(170)]

MAX_EXAMPLES = 8
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]


@pytest.fixture(scope="module")
def fuzz_token(store) -> str:  # type: ignore[no-untyped-def]
    # Its own account: what the fuzzer makes counts against its caps only.
    account = store.accounts.get_or_create("fuzz")
    return str(store.accounts.issue_token(account.id))


def _tame(case: Any) -> None:
    """Keep generated input off live compute and the shared CPUs: a stress test is always
    a small simulation."""
    if case.path == "/gateway/stress-tests" and isinstance(case.body, dict):
        case.body["mode"] = "simulate"
        if isinstance(case.body.get("sample_size"), int):
            case.body["sample_size"] = max(1, min(case.body["sample_size"], 50))


def _fuzz(operation: Any, server: str, headers: dict[str, str]) -> str | None:
    """Run the operation's examples; the first failure, shrunk by Hypothesis, or None."""

    @given(case=operation.as_strategy())
    @settings(
        max_examples=MAX_EXAMPLES,
        derandomize=True,
        database=None,
        deadline=None,
        suppress_health_check=list(HealthCheck),
        phases=[Phase.explicit, Phase.generate],  # no shrinking: one run, all failures
    )
    def examples(case: Any) -> None:
        _tame(case)
        case.call_and_validate(base_url=server, headers=headers, checks=CHECKS, timeout=60)

    try:
        examples()
    except (Exception, FailureGroup) as exc:  # a check failed: report it, go on
        return f"{operation.label}: {exc}"[:3000]
    return None


def test_api_matches_its_schema(server: str, fuzz_token: str) -> None:
    schema = schemathesis.openapi.from_url(f"{server}/openapi.json")
    operations = [
        result.ok()
        for result in schema.get_all_operations()
        if not result.ok().path.endswith("/install")  # keep off the package registries
    ]
    assert len(operations) > 15
    headers = {"Authorization": f"Bearer {fuzz_token}"}
    failures = [f for op in operations if (f := _fuzz(op, server, headers)) is not None]
    assert not failures, "\n\n".join(failures)
