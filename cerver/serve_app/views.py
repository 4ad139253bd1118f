"""Building the wire views of sessions from store rows (no actor involved: reads never wake
a session)."""

from __future__ import annotations

import base64
import time
from typing import Any

from cerver.errors import BadRequest
from cerver.llm.metrics import with_llm
from cerver.metrics import MetricsState, view
from cerver.models import Routing, SessionMetrics, SessionView
from cerver.store import ComputeRow, SessionRow, TranscriptEntry
from cerver.store.llm_spend import SpendRow


def metrics_of(row: SessionRow, llm_calls: list[SpendRow] | None = None) -> SessionMetrics:
    now = row.closed_at if row.closed_at is not None else time.time()
    metrics = view(MetricsState.load(row.metrics), created_at=row.created_at, now=now)
    return with_llm(metrics, llm_calls) if llm_calls else metrics


def session_view(
    row: SessionRow,
    compute: ComputeRow | None,
    *,
    transcript: list[TranscriptEntry] | None = None,
    transcript_length: int | None = None,
    llm_calls: list[SpendRow] | None = None,
    transcript_more: bool | None = None,
    transcript_bytes: int | None = None,
) -> SessionView:
    record: dict[str, Any] = (compute.record or {}) if compute is not None else {}
    entries = [e.model_dump() for e in transcript] if transcript is not None else None
    return SessionView(
        session_id=row.id,
        session_name=row.name,
        status=row.status,
        provider=row.provider,
        compute_id=row.compute_id,
        sandbox_id=record.get("sandbox_id"),
        isolation=record.get("isolation"),
        harness=row.harness,
        runtime=row.runtime,
        created_at=row.created_at,
        closed_at=row.closed_at,
        metrics=metrics_of(row, llm_calls),
        routing=Routing.model_validate(row.routing) if row.routing else None,
        transcript_length=transcript_length,
        transcript=entries,
        next_since=entries[-1]["seq"] if entries else None,
        transcript_more=transcript_more,
        transcript_bytes=transcript_bytes,
    )


def encode_cursor(row: SessionRow) -> str:
    return base64.urlsafe_b64encode(f"{row.created_at!r}|{row.id}".encode()).decode()


def decode_cursor(cursor: str) -> tuple[float, str]:
    try:
        created, sid = base64.urlsafe_b64decode(cursor.encode()).decode().split("|", 1)
        return float(created), sid
    except Exception:
        raise BadRequest(
            "invalid cursor: pass the next_cursor value of a previous page unchanged"
        ) from None
