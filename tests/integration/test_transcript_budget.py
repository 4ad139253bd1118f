"""Transcript budget and byte paging over real HTTP (issue 10, finding 7), on the `capped`
app: 64 KiB per session, pages of at most 48 KiB and 15 entries."""

from __future__ import annotations

import httpx
import pytest

from cerver.config import Settings
from tests.integration.conftest import capped_client

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]


def test_budget_trims_oldest_output_and_reads_page_by_bytes(
    server: str, capped_settings: Settings
) -> None:
    budget = capped_settings.transcript_budget_bytes
    with capped_client(server, capped_settings, "transcripts") as api:
        made = api.post("/v2/sessions", json={"compute": {"provider": "local"}})
        assert made.status_code == 201, made.text
        sid = made.json()["session_id"]
        for i in range(8):  # 8 x 16 KiB of output: twice the budget
            r = api.post(
                f"/v2/sessions/{sid}/run",
                json={"code": f"print('{i}' * 16384)", "language": "python"},
            )
            assert r.status_code == 200 and len(r.json()["stdout"]) == 16385, r.text

        view = api.get(f"/v2/sessions/{sid}", params={"full": 1}).json()
        assert view["transcript_bytes"] <= budget
        # full=1 is one page, capped by bytes: the client is told to ask for more.
        assert view["transcript_more"] is True
        page_bytes = sum(len(httpx.Response(200, json=e).content) for e in view["transcript"])
        assert page_bytes <= capped_settings.transcript_page_max_bytes + 20_000

        entries, since, more = [], 0, True
        while more:
            page = api.get(
                f"/v2/sessions/{sid}", params={"since": since, "max_bytes": 20_000}
            ).json()
            entries += page["transcript"]
            since, more = page["next_since"], page["transcript_more"]
        assert [e["seq"] for e in entries] == list(range(1, len(entries) + 1))  # no gap
        assert len(entries) == view["transcript_length"]
        execs = [e["content"] for e in entries if e["type"] == "exec"]
        assert len(execs) == 8
        trimmed = [e for e in execs if "trimmed" in e]
        assert trimmed and execs[0] == trimmed[0]  # the oldest first
        assert trimmed[0]["result"]["stdout"] == "" and trimmed[0]["code"] == "print('0' * 16384)"
        assert trimmed[0]["trimmed"]["removed_bytes"]["stdout"] == 16385
        assert execs[-1]["result"]["stdout"] == "7" * 16384 + "\n"  # the newest is whole
        # The default tail view is bounded the same way.
        tail = api.get(f"/v2/sessions/{sid}", params={"tail": 100000}).json()
        assert tail["transcript"][-1]["seq"] == len(entries)
        assert len(tail["transcript"]) <= capped_settings.transcript_full_max_entries
        api.delete(f"/v2/sessions/{sid}")
