"""Dashboard sign-ins. The browser keeps a random id in an HttpOnly cookie; the store keeps
only its sha256, the account it signed in as, a CSRF token and an expiry. Signing out deletes
the row, so the old cookie stops working at once. The API token used to sign in is never
stored here or in the cookie."""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass

from sqlalchemy import Engine, delete, insert, select

from cerver.store import schema
from cerver.store.accounts import Account
from cerver.store.ids import now

B, A = schema.browser_sessions, schema.accounts


@dataclass(frozen=True)
class BrowserSession:
    account: Account
    csrf_token: str
    expires_at: float

    def __repr__(self) -> str:  # the CSRF token is a secret of the browser's
        return f"BrowserSession(account={self.account.name!r}, expires_at={self.expires_at})"


def _hash(session_id: str) -> str:
    return hashlib.sha256(session_id.encode()).hexdigest()


class BrowserSessions:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def start(self, account_id: str, lifetime_s: float) -> tuple[str, str]:
        """A new sign-in: (the cookie's session id, its CSRF token). Expired rows of the
        same account are swept on the way."""
        session_id, csrf = secrets.token_urlsafe(32), secrets.token_urlsafe(32)
        at = now()
        with self.engine.begin() as conn:
            conn.execute(delete(B).where(B.c.account_id == account_id, B.c.expires_at < at))
            conn.execute(
                insert(B).values(
                    id_hash=_hash(session_id),
                    account_id=account_id,
                    csrf_token=csrf,
                    created_at=at,
                    expires_at=at + lifetime_s,
                )
            )
        return session_id, csrf

    def get(self, session_id: str) -> BrowserSession | None:
        with self.engine.connect() as conn:
            row = conn.execute(
                select(A.c.id, A.c.name, B.c.csrf_token, B.c.expires_at)
                .join(A, A.c.id == B.c.account_id)
                .where(B.c.id_hash == _hash(session_id), B.c.expires_at > now())
            ).first()
        if row is None:
            return None
        return BrowserSession(Account(row.id, row.name), row.csrf_token, row.expires_at)

    def end(self, session_id: str) -> None:
        with self.engine.begin() as conn:
            conn.execute(delete(B).where(B.c.id_hash == _hash(session_id)))
