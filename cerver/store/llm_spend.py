"""LLM spend: a ledger of model calls and the per-account budget that bounds it.

Every upstream model call is bracketed by a reservation and a settlement:

1. ``reserve`` inserts a ``reserved`` row holding the call's worst-case cost, in a
   transaction that first takes the account's budget lock and checks that the month's
   spend plus every open reservation plus this one stays within the budget. On PostgreSQL
   the lock is the account's ``account_limits`` row (``SELECT ... FOR UPDATE``); on SQLite
   ``BEGIN IMMEDIATE`` takes the database's write lock before the sums are read. Either way
   two reservations of one account never both see the room that only one of them fits in.
2. ``settle`` replaces the reservation with a ``spent`` row of the real usage and cost (in
   one transaction); ``release`` drops a reservation whose call never reached upstream.

So concurrent turns never spend more than the budget, provided the worst case is an upper
bound of the real cost (cerver/llm/budget.py says how it is computed).

A session may have a budget of its own (``session_limits``: over the session's life, not
per month). ``reserve`` checks it in the same locked transaction, before the account's: a
session belongs to one account, so the account's lock serialises its sessions too.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel
from sqlalchemy import Connection, Engine, delete, func, insert, select

from cerver.store import schema
from cerver.store.db import insert_or
from cerver.store.ids import new_id, now

L, SP, SL = schema.account_limits, schema.llm_spend, schema.session_limits

# A reservation older than this belongs to a call whose process died before settling: it
# stops holding budget (no call lives this long: see CERVER_LLM_TIMEOUT_S and the retries).
STALE_RESERVATION_S = 3600.0

Write = Callable[[Connection], Any]  # more writes for the same transaction


def month_of(ts: float) -> str:
    return datetime.fromtimestamp(ts, tz=UTC).strftime("%Y-%m")


class SpendRow(BaseModel):
    """One settled model call (what it used, what it cost, what the premium model would
    have cost for the same tokens)."""

    model: str
    harness: str
    turn_id: str | None = None
    input_tokens: int = 0
    output_tokens: int = 0
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0
    reasoning_tokens: int = 0
    cost_usd: float = 0.0
    baseline_usd: float = 0.0
    estimated: bool = False


class BudgetShortfall(Exception):
    """A reservation does not fit in the session's budget or the account's for the month
    (``scope``)."""

    def __init__(
        self,
        *,
        budget_usd: float,
        spent_usd: float,
        reserved_usd: float,
        asked: float,
        scope: str = "account",
    ):
        super().__init__("llm budget exceeded")
        self.scope = scope
        self.budget_usd = budget_usd
        self.spent_usd = spent_usd
        self.reserved_usd = reserved_usd
        self.asked_usd = asked


class MonthSpend(BaseModel):
    month: str
    spent_usd: float
    reserved_usd: float


class LlmSpend:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    # --- limits --------------------------------------------------------------------------
    def set_budget(self, account_id: str, budget_usd: float | None) -> None:
        self._put_budget(L, "account_id", account_id=account_id, llm_budget_usd=budget_usd)

    def budget(self, account_id: str) -> float | None:
        """The account's own budget; None when it has none (the deployment default applies)."""
        with self.engine.connect() as conn:
            return _budget(conn, account_id)

    def set_session_budget(
        self, session_id: str, account_id: str, budget_usd: float | None
    ) -> None:
        """A session's own LLM budget over its life; None removes it."""
        self._put_budget(
            SL,
            "session_id",
            session_id=session_id,
            account_id=account_id,
            llm_budget_usd=budget_usd,
        )

    def _put_budget(self, table: Any, key: str, **values: Any) -> None:
        """Upsert one limits row (keyed by ``key``): its budget and when it changed."""
        with self.engine.begin() as conn:
            stmt = insert_or(conn, table).values(**values, updated_at=now())
            conn.execute(
                stmt.on_conflict_do_update(
                    index_elements=[key],
                    set_={
                        "llm_budget_usd": stmt.excluded.llm_budget_usd,
                        "updated_at": stmt.excluded.updated_at,
                    },
                )
            )

    def forget_session(self, session_id: str) -> None:
        """Drop the limits of a session that was never made (a failed create)."""
        with self.engine.begin() as conn:
            conn.execute(delete(SL).where(SL.c.session_id == session_id))

    def session_budget(self, session_id: str) -> float | None:
        with self.engine.connect() as conn:
            return _session_budget(conn, session_id)

    def session_spend(self, session_id: str) -> tuple[float, float]:
        """(spent, reserved) of a session over its life."""
        with self.engine.connect() as conn:
            return _session_sums(conn, session_id)

    # --- the ledger ----------------------------------------------------------------------
    @contextmanager
    def _locked(self, account_id: str) -> Iterator[Connection]:
        """A transaction holding the account's budget lock (see the module docstring)."""
        with self.engine.connect() as conn:
            if conn.dialect.name == "sqlite":
                with conn.begin():
                    conn.exec_driver_sql("BEGIN IMMEDIATE")
                    yield conn
                return
            with conn.begin():
                stmt = insert_or(conn, L).values(
                    account_id=account_id, llm_budget_usd=None, updated_at=now()
                )
                conn.execute(stmt.on_conflict_do_nothing(index_elements=["account_id"]))
                conn.execute(
                    select(L.c.account_id).where(L.c.account_id == account_id).with_for_update()
                )
                yield conn

    def reserve(
        self,
        account_id: str,
        session_id: str | None,
        *,
        model: str,
        harness: str,
        amount_usd: float,
        default_budget_usd: float | None,
        then: Write | None = None,
    ) -> str:
        """Hold ``amount_usd`` against the month's budget; returns the reservation id.
        Raises BudgetShortfall (and holds nothing) when it does not fit. ``then`` writes
        more in the same transaction (a turn's user entry): both commit, or neither."""
        stamp = time.time()
        month = month_of(stamp)
        with self._locked(account_id) as conn:
            if session_id is not None:
                _check_session(conn, session_id, amount_usd)
            own = _budget(conn, account_id)
            budget = own if own is not None else default_budget_usd
            if budget is not None:
                spent, reserved = _sums(conn, account_id, month)
                if spent + reserved + amount_usd > budget + 1e-12:
                    raise BudgetShortfall(
                        budget_usd=budget, spent_usd=spent, reserved_usd=reserved, asked=amount_usd
                    )
            reservation = new_id("rsv")
            conn.execute(
                insert(SP).values(
                    id=reservation,
                    account_id=account_id,
                    session_id=session_id,
                    kind="reserved",
                    month=month,
                    **SpendRow(model=model, harness=harness, cost_usd=amount_usd).model_dump(),
                    created_at=stamp,
                )
            )
            if then is not None:
                then(conn)
            return reservation

    def settle(
        self,
        reservation: str,
        account_id: str,
        session_id: str | None,
        row: SpendRow,
        then: Write | None = None,
    ) -> Any:
        """Replace the reservation with the call's real spend; ``then`` writes more in the
        same transaction (the turn's next transcript entry) and its result is returned."""
        stamp = time.time()
        with self.engine.begin() as conn:
            conn.execute(delete(SP).where(SP.c.id == reservation))
            conn.execute(
                insert(SP).values(
                    id=new_id("llm"),
                    account_id=account_id,
                    session_id=session_id,
                    kind="spent",
                    month=month_of(stamp),
                    **row.model_dump(),
                    created_at=stamp,
                )
            )
            return then(conn) if then is not None else None

    def release(self, reservation: str) -> None:
        with self.engine.begin() as conn:
            conn.execute(delete(SP).where(SP.c.id == reservation, SP.c.kind == "reserved"))

    def month(self, account_id: str, at: float | None = None) -> MonthSpend:
        month = month_of(at if at is not None else time.time())
        with self.engine.connect() as conn:
            spent, reserved = _sums(conn, account_id, month)
        return MonthSpend(month=month, spent_usd=spent, reserved_usd=reserved)

    def session_calls(self, session_id: str) -> list[SpendRow]:
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(SP)
                .where(SP.c.session_id == session_id, SP.c.kind == "spent")
                .order_by(SP.c.created_at)
            ).mappings()
            return [SpendRow.model_validate(dict(r)) for r in rows]


def _budget(conn: Connection, account_id: str) -> float | None:
    found = conn.execute(select(L.c.llm_budget_usd).where(L.c.account_id == account_id)).first()
    return None if found is None or found[0] is None else float(found[0])


def _session_budget(conn: Connection, session_id: str) -> float | None:
    found = conn.execute(select(SL.c.llm_budget_usd).where(SL.c.session_id == session_id)).first()
    return None if found is None or found[0] is None else float(found[0])


def _check_session(conn: Connection, session_id: str, amount_usd: float) -> None:
    budget = _session_budget(conn, session_id)
    if budget is None:
        return
    spent, reserved = _session_sums(conn, session_id)
    if spent + reserved + amount_usd > budget + 1e-12:
        raise BudgetShortfall(
            budget_usd=budget,
            spent_usd=spent,
            reserved_usd=reserved,
            asked=amount_usd,
            scope="session",
        )


def _sums(conn: Connection, account_id: str, month: str) -> tuple[float, float]:
    return _kind_sums(conn, SP.c.account_id == account_id, SP.c.month == month)


def _session_sums(conn: Connection, session_id: str) -> tuple[float, float]:
    return _kind_sums(conn, SP.c.session_id == session_id)


def _kind_sums(conn: Connection, *where: Any) -> tuple[float, float]:
    """(spent, reserved) of the ledger rows matching ``where`` (stale reservations drop)."""
    rows = conn.execute(
        select(SP.c.kind, func.coalesce(func.sum(SP.c.cost_usd), 0.0))
        .where(
            *where,
            (SP.c.kind == "spent") | (SP.c.created_at > time.time() - STALE_RESERVATION_S),
        )
        .group_by(SP.c.kind)
    ).all()
    sums = {kind: float(total) for kind, total in rows}
    return sums.get("spent", 0.0), sums.get("reserved", 0.0)
