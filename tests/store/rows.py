"""Row builders shared by the store tests."""

from __future__ import annotations

from typing import Any

from cerver.store.ids import new_id, now
from cerver.store.sessions import SessionRow


def session_row(account_id: str, **values: Any) -> SessionRow:
    t = now()
    fields: dict[str, Any] = {
        "id": new_id("sess"),
        "account_id": account_id,
        "name": None,
        "status": "ready",
        "provider": "local",
        "compute_id": None,
        "harness": None,
        "runtime": "shell",
        "created_at": t,
        "updated_at": t,
        "closed_at": None,
        "metrics": {},
        "routing": None,
    }
    fields.update(values)
    return SessionRow(**fields)
