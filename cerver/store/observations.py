"""Observations: measured provider figures (canary runs, real sessions) that feed the
catalog's effective profiles (``cerver.adapters.catalog.effective_profiles``)."""

from __future__ import annotations

from collections.abc import Iterable

from pydantic import BaseModel
from sqlalchemy import Engine, insert, select

from cerver.store import schema
from cerver.store.ids import now

OBS = schema.observations

DEFAULT_RECENT_LIMIT = 10_000


class Observation(BaseModel):
    provider: str
    metric: str  # startup_ms | exec_ms | install_ms | ...
    value: float
    ok: bool = True
    source: str = "canary"  # canary | session
    ts: float


class Observations:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def record(
        self,
        provider: str,
        metric: str,
        value: float,
        ok: bool = True,
        source: str = "canary",
        *,
        ts: float | None = None,
    ) -> None:
        self.record_many(
            [
                Observation(
                    provider=provider,
                    metric=metric,
                    value=value,
                    ok=ok,
                    source=source,
                    ts=now() if ts is None else ts,
                )
            ]
        )

    def record_many(self, observations: Iterable[Observation]) -> int:
        rows = [o.model_dump() for o in observations]
        if not rows:
            return 0
        with self.engine.begin() as conn:
            conn.execute(insert(OBS), rows)
        return len(rows)

    def recent(
        self,
        provider: str | None = None,
        metric: str | None = None,
        *,
        since: float | None = None,
        limit: int = DEFAULT_RECENT_LIMIT,
    ) -> list[Observation]:
        """Newest first, optionally for one provider / metric and no older than ``since``."""
        query = select(OBS.c.provider, OBS.c.metric, OBS.c.value, OBS.c.ok, OBS.c.source, OBS.c.ts)
        if provider is not None:
            query = query.where(OBS.c.provider == provider)
        if metric is not None:
            query = query.where(OBS.c.metric == metric)
        if since is not None:
            query = query.where(OBS.c.ts >= since)
        query = query.order_by(OBS.c.ts.desc(), OBS.c.id.desc()).limit(limit)
        with self.engine.connect() as conn:
            return [Observation(**r) for r in conn.execute(query).mappings()]
