"""Fixtures and helpers of the run-llm integration tests (import them by name)."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.fakes.llm_process import FakeServer


@pytest.fixture
def fakes(llm_fakes: dict[str, FakeServer]) -> Iterator[dict[str, FakeServer]]:
    for fake in llm_fakes.values():
        fake.reset()
    yield llm_fakes


@pytest.fixture
def fresh_api(server: str, store) -> Iterator[httpx.Client]:  # type: ignore[no-untyped-def]
    """A client of a new account: budgets and month-to-date spend start at zero."""
    account = store.accounts.get_or_create(f"llm-{uuid.uuid4().hex[:8]}")
    token = store.accounts.issue_token(account.id)
    with httpx.Client(
        base_url=server, headers={"Authorization": f"Bearer {token}"}, timeout=60
    ) as client:
        yield client


def transcript_only(api: httpx.Client, harness: str = "openai") -> str:
    r = api.post(
        "/v2/sessions",
        json={"session_name": "hello-cerver", "compute": None, "harness": harness},
    )
    assert r.status_code == 201, r.text
    return str(r.json()["session_id"])


def sse_events(response: httpx.Response) -> list[tuple[str, dict[str, Any]]]:
    """The (event, data) pairs of a whole SSE answer."""
    events, kind = [], "message"
    for line in response.iter_lines():
        if line.startswith("event: "):
            kind = line[len("event: ") :]
        elif line.startswith("data: "):
            events.append((kind, json.loads(line[len("data: ") :])))
    return events
