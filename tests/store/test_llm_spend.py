"""The LLM spend ledger on both backends: reservations that never overspend under
concurrency, settlement, the month's sums, and the account's own budget."""

from __future__ import annotations

import threading

import pytest
from sqlalchemy import Engine

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


def test_fifty_concurrent_reservations_against_room_for_ten(engine: Engine) -> None:
    account = Accounts(engine).get_or_create("alice").id
    ledger = LlmSpend(engine)
    ledger.set_budget(account, 1.0)
    won: list[str] = []
    refused: list[BudgetShortfall] = []
    start = threading.Barrier(50)

    def one() -> None:
        start.wait()
        try:
            won.append(_reserve(ledger, account, 0.1, None))
        except BudgetShortfall as exc:
            refused.append(exc)

    threads = [threading.Thread(target=one) for _ in range(50)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
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
