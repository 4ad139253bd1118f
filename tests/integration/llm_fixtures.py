"""Fixtures and helpers of the run-llm integration tests (import them by name)."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
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


def concurrent_turns(
    client: httpx.Client, sessions: list[str], count: int, body: dict[str, Any]
) -> list[httpx.Response]:
    """``count`` run-llm calls at once, spread over ``sessions``; the answers, in order."""

    def turn(i: int) -> httpx.Response:
        return client.post(f"/v2/sessions/{sessions[i % len(sessions)]}/run-llm", json=body)

    with ThreadPoolExecutor(max_workers=count) as pool:
        return list(pool.map(turn, range(count)))


def assert_within_budget(
    answers: list[httpx.Response], fake: FakeServer, *, room: int, limits: dict[str, Any]
) -> None:
    """Concurrent turns against a budget with ``room`` worst cases: at most that many calls
    were in flight at once, every refusal is a 402 that never reached the upstream, and the
    spend is the sum of the answers' costs, within the budget, with nothing left reserved."""
    codes = [a.status_code for a in answers]
    ok, refused = codes.count(200), codes.count(402)
    assert ok + refused == len(answers), codes
    assert ok >= room and refused >= 1
    assert fake.max_in_flight() <= room  # never more reserved than the budget holds
    assert len(fake.received()) == ok  # a 402 never reached the upstream
    assert limits["llm_spent_usd"] <= limits["llm_budget_usd"]
    assert limits["llm_reserved_usd"] == 0.0
    assert limits["llm_spent_usd"] == pytest.approx(
        sum(a.json()["cost_usd"] for a in answers if a.status_code == 200)
    )
