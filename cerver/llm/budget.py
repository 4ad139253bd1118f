"""Budgets: per account and calendar month (UTC). Before every upstream call the worst
case of that call is reserved (input tokens bounded from above by the request's bytes,
output at ``max_output_tokens``, each at the dearest rate that could apply); after it, the
reservation is settled with the real usage and cost. The store does both atomically
(cerver/store/llm_spend.py), so concurrent turns never spend more than the budget.

The account's own budget (``PUT /v2/account/limits``) wins over the deployment default
(``CERVER_LLM_BUDGET_USD``; unset means no budget). A session may also have its own, over
its life (``llm_budget_usd`` at create, ``PUT /v2/sessions/:id/limits``); a call must fit
in both."""

from __future__ import annotations

import asyncio
from typing import Any

from cerver.config import Settings
from cerver.errors import BudgetExceeded
from cerver.llm.catalog import ModelEntry
from cerver.llm.conversation import upper_bound_tokens
from cerver.llm.prices import PriceTable
from cerver.llm.types import Call
from cerver.store import Store
from cerver.store.llm_spend import BudgetShortfall, SpendRow, Write


class Budget:
    def __init__(self, settings: Settings, store: Store, prices: PriceTable) -> None:
        self.settings = settings
        self.store = store
        self.prices = prices

    def worst_case(self, entry: ModelEntry, call: Call) -> float:
        tools = [t.model_dump() for t in call.tools]
        tokens_in = upper_bound_tokens(call.messages, call.system, tools)
        return self.prices.worst_case(entry, tokens_in, call.max_output_tokens)

    async def reserve(
        self,
        account_id: str,
        session_id: str,
        entry: ModelEntry,
        call: Call,
        then: Write | None = None,
    ) -> str:
        """Reserve the call's worst case; ``then`` writes in the same transaction."""
        amount = self.worst_case(entry, call)
        try:
            return await asyncio.to_thread(
                self.store.llm_spend.reserve,
                account_id,
                session_id,
                model=entry.name,
                harness=entry.harness,
                amount_usd=amount,
                default_budget_usd=self.settings.llm_budget_usd,
                then=then,
            )
        except BudgetShortfall as short:
            left = max(0.0, short.budget_usd - short.spent_usd - short.reserved_usd)
            whose, where = (
                (f"session {session_id}", f"PUT /v2/sessions/{session_id}/limits")
                if short.scope == "session"
                else ("the account", "PUT /v2/account/limits")
            )
            period = "" if short.scope == "session" else " this month"
            raise BudgetExceeded(
                f"this turn could cost up to ${short.asked_usd:.6f} on {entry.name}, and "
                f"{whose} has ${left:.6f} left of its ${short.budget_usd:g} LLM budget"
                f"{period}; raise it with "
                f'{where} {{"llm_budget_usd": ...}}, or lower max_output_tokens',
                details={
                    "scope": short.scope,
                    "budget_usd": short.budget_usd,
                    "spent_usd": round(short.spent_usd, 8),
                    "reserved_usd": round(short.reserved_usd, 8),
                    "worst_case_usd": round(short.asked_usd, 8),
                    "model": entry.name,
                },
            ) from None

    async def settle(
        self,
        reservation: str,
        account_id: str,
        session_id: str,
        row: SpendRow,
        then: Write | None = None,
    ) -> Any:
        """Settle with the real spend; ``then`` writes in the same transaction (its result
        is returned)."""
        return await asyncio.to_thread(
            self.store.llm_spend.settle, reservation, account_id, session_id, row, then
        )

    async def release(self, reservation: str | None) -> None:
        if reservation is not None:
            await asyncio.to_thread(self.store.llm_spend.release, reservation)
