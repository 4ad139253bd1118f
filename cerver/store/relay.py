"""Relay logins (RFC 8628 device authorization) and the relay credentials they mint.

A login goes ``pending`` -> ``approved`` (an account approved its user code; the host's
compute row now exists) -> ``issued`` (the polling relay received its credential, once).
The device code and the credential are stored only as sha256 hashes. A credential serves
as exactly one compute (a ``computes`` row with provider ``relay``) and nothing else.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Engine, insert, select, update

from cerver.errors import BadRequest
from cerver.store import schema
from cerver.store.accounts import hash_token
from cerver.store.computes import ComputeRow, Computes
from cerver.store.ids import new_id, now

L, K = schema.relay_logins, schema.relay_credentials

# RFC 8628 section 6.1: no vowels (no words), no look-alikes; 20^8 codes.
USER_CODE_ALPHABET = "BCDFGHJKLMNPQRSTVWXZ"
CREDENTIAL_PREFIX = "crl_"
# RFC 8628 section 3.5: each slow_down adds 5 seconds to the polling interval.
SLOW_DOWN_STEP_S = 5.0


class GrantError(BadRequest):
    """A device-token poll that cannot (yet) be answered with a credential; ``code`` is the
    RFC 8628 error: authorization_pending, slow_down, expired_token, access_denied, or
    invalid_grant (no such device code)."""

    def __init__(self, code: str, message: str, *, details: Any = None) -> None:
        super().__init__(message, details=details)
        self.code = code


@dataclass(frozen=True)
class Login:
    device_code: str
    user_code: str
    expires_in_s: float
    interval_s: float


@dataclass(frozen=True)
class Issued:
    credential: str
    compute_id: str
    account_id: str


@dataclass(frozen=True)
class RelayIdentity:
    compute_id: str
    account_id: str


def new_user_code() -> str:
    chars = "".join(secrets.choice(USER_CODE_ALPHABET) for _ in range(8))
    return f"{chars[:4]}-{chars[4:]}"


def normalize_user_code(raw: str) -> str:
    """What a person types, as stored: case and separators do not matter."""
    chars = "".join(c for c in raw.upper() if c.isalnum())
    return f"{chars[:4]}-{chars[4:]}" if len(chars) == 8 else raw.strip().upper()


class Relays:
    def __init__(self, engine: Engine, computes: Computes) -> None:
        self.engine = engine
        self.computes = computes

    # --- device authorization ---------------------------------------------------------------
    def start_login(self, host: dict[str, Any], *, interval_s: float, ttl_s: float) -> Login:
        device_code = secrets.token_urlsafe(32)
        stamp = now()
        for _ in range(5):  # a user-code collision is astronomically rare; retry anyway
            user_code = new_user_code()
            with self.engine.begin() as conn:
                taken = conn.execute(select(L.c.device_hash).where(L.c.user_code == user_code))
                if taken.first() is not None:
                    continue
                conn.execute(
                    insert(L).values(
                        device_hash=hash_token(device_code),
                        user_code=user_code,
                        status="pending",
                        account_id=None,
                        host=host,
                        interval_s=interval_s,
                        created_at=stamp,
                        expires_at=stamp + ttl_s,
                        last_poll_at=None,
                        compute_id=None,
                    )
                )
            return Login(device_code, user_code, ttl_s, interval_s)
        raise RuntimeError("could not allocate a unique user code")

    @staticmethod
    def _pending(conn: Any, user_code: str) -> Any:
        """The pending login with this user code. Wrong, expired or already used codes are
        a 400 that says what to do."""
        code = normalize_user_code(user_code)
        row = conn.execute(select(L).where(L.c.user_code == code)).mappings().first()
        if row is None:
            raise BadRequest(
                f"no pending relay login has the code {user_code!r}; check the code the "
                "relay printed ('User code: XXXX-XXXX')",
                details={"field": "code"},
            )
        if row["status"] != "pending":
            raise BadRequest(
                f"the code {code} was already used; start 'cerver relay' again for a new one",
                details={"field": "code"},
            )
        if row["expires_at"] <= now():
            raise BadRequest(
                f"the code {code} expired; restart 'cerver relay' for a new code",
                details={"field": "code"},
            )
        return row

    def deny(self, user_code: str) -> None:
        """Refuse a pending login: the relay's next poll answers ``access_denied``."""
        with self.engine.begin() as conn:
            row = self._pending(conn, user_code)
            conn.execute(
                update(L)
                .where(L.c.device_hash == row["device_hash"], L.c.status == "pending")
                .values(status="denied")
            )

    def approve(self, user_code: str, account_id: str) -> str:
        """Approve a pending login for ``account_id``; makes the host's compute row and
        answers its id. Wrong, expired or already used codes are a 400 that says what to do."""
        code = normalize_user_code(user_code)
        with self.engine.begin() as conn:
            row = self._pending(conn, user_code)
            compute_id = new_id("cmp")
            done = conn.execute(
                update(L)
                .where(L.c.device_hash == row["device_hash"], L.c.status == "pending")
                .values(status="approved", account_id=account_id, compute_id=compute_id)
            )
            if done.rowcount != 1:
                raise BadRequest(f"the code {code} was already used", details={"field": "code"})
        self.computes.insert(
            ComputeRow(
                id=compute_id,
                account_id=account_id,
                provider="relay",
                status="offline",
                record={"host": dict(row["host"]), "last_seen": None},
                session_id=None,
                created_at=now(),
                released_at=None,
                provision_time_ms=None,
            )
        )
        return compute_id

    def poll(self, device_code: str) -> Issued:
        """One token-endpoint poll (RFC 8628 section 3.4/3.5)."""
        with self.engine.begin() as conn:
            outcome = self._poll(conn, hash_token(device_code), now())
        # Raised after the commit: a refused poll still records when it came (and a slower
        # interval after slow_down).
        if isinstance(outcome, GrantError):
            raise outcome
        return outcome

    def _poll(self, conn: Any, device_hash: str, stamp: float) -> Issued | GrantError:
        row = conn.execute(select(L).where(L.c.device_hash == device_hash)).mappings().first()
        if row is None:
            return GrantError("invalid_grant", "unknown device code; start a new login")
        if row["status"] == "issued":
            return GrantError(
                "invalid_grant", "this device code was already exchanged; start a new login"
            )
        if row["status"] == "denied":
            return GrantError("access_denied", "the login was denied")
        if row["status"] == "pending" and row["expires_at"] <= stamp:
            return GrantError(
                "expired_token", "the user code expired before it was approved; start again"
            )
        last = row["last_poll_at"]
        mine = L.c.device_hash == device_hash
        if row["status"] == "pending" and last is not None and stamp - last < row["interval_s"]:
            interval = row["interval_s"] + SLOW_DOWN_STEP_S
            conn.execute(update(L).where(mine).values(interval_s=interval, last_poll_at=stamp))
            return GrantError(
                "slow_down",
                f"polling faster than every {row['interval_s']:g} s; now poll every {interval:g} s",
                details={"interval": interval},
            )
        conn.execute(update(L).where(mine).values(last_poll_at=stamp))
        if row["status"] == "pending":
            return GrantError("authorization_pending", "waiting for the account to approve")
        credential = CREDENTIAL_PREFIX + secrets.token_urlsafe(32)
        done = conn.execute(update(L).where(mine, L.c.status == "approved").values(status="issued"))
        if done.rowcount != 1:
            return GrantError("invalid_grant", "this device code was already exchanged")
        conn.execute(
            insert(K).values(
                token_hash=hash_token(credential),
                compute_id=row["compute_id"],
                account_id=row["account_id"],
                created_at=stamp,
                revoked_at=None,
            )
        )
        return Issued(credential, row["compute_id"], row["account_id"])

    # --- credentials ------------------------------------------------------------------------
    def authenticate(self, credential: str) -> RelayIdentity | None:
        with self.engine.connect() as conn:
            row = conn.execute(
                select(K.c.compute_id, K.c.account_id).where(
                    K.c.token_hash == hash_token(credential), K.c.revoked_at.is_(None)
                )
            ).first()
        return RelayIdentity(row.compute_id, row.account_id) if row is not None else None

    def revoke(self, credential: str) -> str | None:
        """Revoke a credential and release its compute; answers the compute id (or None)."""
        found = self.authenticate(credential)
        if found is None:
            return None
        with self.engine.begin() as conn:
            conn.execute(
                update(K).where(K.c.token_hash == hash_token(credential)).values(revoked_at=now())
            )
        self.computes.release(found.compute_id)
        return found.compute_id

    def revoke_compute(self, compute_id: str, account_id: str) -> bool:
        """The account side of revocation: every credential of that host, and its compute."""
        row = self.computes.get(compute_id, account_id)
        if row is None or row.provider != "relay" or row.status == "released":
            return False
        with self.engine.begin() as conn:
            conn.execute(
                update(K)
                .where(K.c.compute_id == compute_id, K.c.revoked_at.is_(None))
                .values(revoked_at=now())
            )
        self.computes.release(compute_id)
        return True

    # --- the host's compute row -------------------------------------------------------------
    def seen(self, compute_id: str, status: str, host: dict[str, Any] | None = None) -> None:
        row = self.computes.get(compute_id)
        if row is None or row.status == "released":
            return
        record = dict(row.record or {})
        record["last_seen"] = now()
        if host is not None:
            record["host"] = host
        self.computes.update(compute_id, status=status, record=record)

    def mark_all_offline(self) -> None:
        """At start-up of the relay hub: no relay is connected to a hub that just started."""
        C = schema.computes
        with self.engine.begin() as conn:
            conn.execute(
                update(C)
                .where(C.c.provider == "relay", C.c.status == "online")
                .values(status="offline")
            )
