"""The LLM spend ledger on both backends: reservations that never overspend under
concurrency, settlement, the month's sums, and the account's own budget."""

from __future__ import annotations

import threading
from collections.abc import Callable

import pytest
from sqlalchemy import Connection, Engine

from cerver.store.accounts import Accounts
from cerver.store.llm_spend import BudgetShortfall, LlmSpend, SpendRow

pytestmark = pytest.mark.timeout(120)


def _reserve(ledger: LlmSpend, account: str, amount: float, default: float | None) -> str:
    return ledger.reserve(
        account,
        None,
        model="gpt-5",
        harness="openai",
        amount_usd=amount,
        default_budget_usd=default,
    )


def _race(count: int, reserve: Callable[[], str]) -> tuple[list[str], list[BudgetShortfall]]:
    """``count`` threads reserving at the same instant: (reservations, refusals)."""
    won: list[str] = []
    refused: list[BudgetShortfall] = []
    start = threading.Barrier(count)

    def one() -> None:
        start.wait()
        try:
            won.append(reserve())
        except BudgetShortfall as exc:
            refused.append(exc)

    threads = [threading.Thread(target=one) for _ in range(count)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return won, refused


def test_fifty_concurrent_reservations_against_room_for_ten(engine: Engine) -> None:
    account = Accounts(engine).get_or_create("alice").id
    ledger = LlmSpend(engine)
    ledger.set_budget(account, 1.0)
    won, refused = _race(50, lambda: _reserve(ledger, account, 0.1, None))
    assert (len(won), len(refused)) == (10, 40)
    month = ledger.month(account)
    assert month.reserved_usd == pytest.approx(1.0) and month.spent_usd == 0.0
    # Settling at the real (lower) cost frees the difference for the next call.
    for reservation in won:
        ledger.settle(
            reservation, account, None, SpendRow(model="gpt-5", harness="openai", cost_usd=0.05)
        )
    month = ledger.month(account)
    assert (month.spent_usd, month.reserved_usd) == (pytest.approx(0.5), 0.0)
    _reserve(ledger, account, 0.5, None)
    with pytest.raises(BudgetShortfall) as caught:
        _reserve(ledger, account, 0.01, None)
    assert caught.value.budget_usd == 1.0


def test_budget_sources_and_release(engine: Engine) -> None:
    account = Accounts(engine).get_or_create("bob").id
    ledger = LlmSpend(engine)
    assert ledger.budget(account) is None
    _reserve(ledger, account, 100.0, None)  # no budget anywhere: anything fits
    with pytest.raises(BudgetShortfall):
        _reserve(ledger, account, 1.0, 50.0)  # the deployment default applies
    ledger.set_budget(account, 1000.0)  # the account's own wins
    held = _reserve(ledger, account, 1.0, 50.0)
    ledger.release(held)
    assert ledger.month(account).reserved_usd == pytest.approx(100.0)
    ledger.set_budget(account, None)
    assert ledger.budget(account) is None


def test_a_turns_entries_commit_with_its_reservation_and_settlement(engine: Engine) -> None:
    """run-llm writes the user entry with the reservation and the assistant entry with the
    settlement (one transaction each): both land, or neither does."""
    from functools import partial

    from cerver.store.sessions import Sessions
    from tests.store.rows import session_row

    account = Accounts(engine).get_or_create("carol").id
    ledger, sessions = LlmSpend(engine), Sessions(engine)
    row = session_row(account)
    sessions.create(row, [])
    ledger.set_budget(account, 1.0)

    def user(conn: Connection) -> int:
        return sessions.append_in(conn, row.id, "user", {"text": "hi"})

    # Over budget: no reservation and no user entry.
    with pytest.raises(BudgetShortfall):
        ledger.reserve(account, row.id, model="m", harness="openai", amount_usd=2.0,
                       default_budget_usd=None, then=user)  # fmt: skip
    assert sessions.transcript(row.id) == [] and ledger.month(account).reserved_usd == 0.0
    # The entry fails (no such session): the reservation is rolled back with it.
    with pytest.raises(RuntimeError, match="no such session"):
        ledger.reserve(account, row.id, model="m", harness="openai", amount_usd=0.5,
                       default_budget_usd=None,
                       then=partial(sessions.append_in, session_id="sess_gone",
                                    type_="user", content={}))  # fmt: skip
    assert ledger.month(account).reserved_usd == 0.0
    reservation = ledger.reserve(account, row.id, model="m", harness="openai", amount_usd=0.5,
                                 default_budget_usd=None, then=user)  # fmt: skip
    assert [e.type for e in sessions.transcript(row.id)] == ["user"]
    spent = SpendRow(model="m", harness="openai", cost_usd=0.01)

    # A settlement whose entry fails leaves the reservation held (the worst case), not lost.
    def broken(conn: Connection) -> int:
        raise RuntimeError("the entry could not be written")

    with pytest.raises(RuntimeError):
        ledger.settle(reservation, account, row.id, spent, then=broken)
    assert ledger.month(account).reserved_usd == pytest.approx(0.5)
    seq = ledger.settle(
        reservation,
        account,
        row.id,
        spent,
        then=lambda conn: sessions.append_in(conn, row.id, "assistant", {"text": "yo"}),
    )
    assert seq == 2 and [e.type for e in sessions.transcript(row.id)] == ["user", "assistant"]
    month = ledger.month(account)
    assert (month.spent_usd, month.reserved_usd) == (pytest.approx(0.01), 0.0)


def test_a_session_budget_holds_under_concurrency_and_apart_from_the_account(
    engine: Engine,
) -> None:
    account = Accounts(engine).get_or_create("dave").id
    ledger = LlmSpend(engine)
    ledger.set_session_budget("sess_a", account, 0.5)
    won, refused = _race(
        20,
        lambda: ledger.reserve(
            account,
            "sess_a",
            model="gpt-5",
            harness="openai",
            amount_usd=0.1,
            default_budget_usd=None,
        ),
    )
    assert (len(won), len(refused)) == (5, 15)
    assert {r.scope for r in refused} == {"session"}
    assert ledger.session_spend("sess_a") == (0.0, pytest.approx(0.5))
    # Another session of the account is not bound by it; the account's budget still is.
    ledger.reserve(
        account, "sess_b", model="gpt-5", harness="openai", amount_usd=5.0, default_budget_usd=None
    )
    ledger.set_budget(account, 5.6)
    with pytest.raises(BudgetShortfall) as caught:
        ledger.reserve(
            account,
            "sess_b",
            model="gpt-5",
            harness="openai",
            amount_usd=0.2,
            default_budget_usd=None,
        )
    assert caught.value.scope == "account"
    ledger.set_session_budget("sess_a", account, None)
    assert ledger.session_budget("sess_a") is None
    ledger.forget_session("sess_a")
    assert ledger.session_budget("sess_a") is None
