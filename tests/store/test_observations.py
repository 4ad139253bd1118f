"""Observations on both backends: recorded one by one or in bulk, read newest first with
provider / metric / since filters and a limit."""

from __future__ import annotations

import pytest
from sqlalchemy import Engine

from cerver.store.observations import Observation, Observations

pytestmark = pytest.mark.timeout(60)


def test_record_and_recent(engine: Engine) -> None:
    obs = Observations(engine)
    assert obs.record_many([]) == 0
    obs.record("local", "startup_ms", 120.5, ts=10.0)
    obs.record("local", "exec_ms", 3.25, ok=False, source="session", ts=20.0)
    written = obs.record_many(
        Observation(provider="e2b", metric="startup_ms", value=float(v), ts=30.0 + v)
        for v in range(5)
    )
    assert written == 5
    obs.record("local", "startup_ms", 99.0)  # ts defaults to now

    local = obs.recent("local")
    assert [o.metric for o in local] == ["startup_ms", "exec_ms", "startup_ms"]
    assert local[1] == Observation(
        provider="local", metric="exec_ms", value=3.25, ok=False, source="session", ts=20.0
    )
    assert [o.value for o in obs.recent("local", "startup_ms")] == [99.0, 120.5]
    assert [o.value for o in obs.recent("e2b", since=32.0)] == [4.0, 3.0, 2.0]
    assert [o.value for o in obs.recent("e2b", limit=2)] == [4.0, 3.0]
    assert len(obs.recent()) == 8
    assert obs.recent("nobody") == []


def test_ties_on_ts_read_newest_insert_first(engine: Engine) -> None:
    obs = Observations(engine)
    for v in (1.0, 2.0, 3.0):
        obs.record("local", "exec_ms", v, ts=50.0)
    assert [o.value for o in obs.recent("local")] == [3.0, 2.0, 1.0]
