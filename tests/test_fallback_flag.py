"""One failover flag on create: the top-level ``fallback``; ``compute.fallback`` is its old
name and means the same (docs/sessions.md, "Fallback"). The end-to-end paths are in
tests/integration/test_vercel.py (walking providers) and tests/relay/test_relay_e2e.py
(an offline relay host), each with both names."""

from __future__ import annotations

import pytest

from cerver.models import CreateSession

pytestmark = pytest.mark.timeout(10)


@pytest.mark.parametrize(
    "body,wanted",
    [
        ({"compute": {"provider": "vercel"}}, False),
        ({"compute": {"provider": "vercel"}, "fallback": True}, True),
        ({"compute": {"provider": "vercel", "fallback": True}}, True),  # the old name
        ({"compute": {"compute_id": "cmp_1"}, "fallback": True}, True),
        ({"compute": None, "fallback": True}, True),
        ({"task": "t", "policy": {"mode": "balanced"}}, False),
    ],
)
def test_either_name_asks_for_failover(body: dict, wanted: bool) -> None:  # type: ignore[type-arg]
    assert CreateSession.model_validate(body).wants_fallback is wanted


def test_a_swap_refuses_the_flag_it_used_to_ignore() -> None:
    from pydantic import ValidationError

    from cerver.models import SwapCompute

    with pytest.raises(ValidationError) as info:
        SwapCompute.model_validate({"compute": {"provider": "local", "fallback": True}})
    assert "POST /v2/sessions only" in str(info.value)
    assert SwapCompute.model_validate({"compute": {"provider": "local"}}).compute is not None
