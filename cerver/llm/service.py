"""What a replica keeps for model turns: the catalog, prices, budget, harness clients; and
the plan of a turn (which model, which fallbacks, which cascade ladder), made before
anything is written so bad input leaves no trace."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass, field

from cerver.adapters.credentials import credentials_of_each
from cerver.config import Settings
from cerver.errors import BadRequest
from cerver.llm import keys, routing
from cerver.llm.budget import Budget
from cerver.llm.catalog import Catalog, ModelEntry
from cerver.llm.harnesses import Harness
from cerver.llm.harnesses.base import Endpoint
from cerver.llm.pool import HarnessPool
from cerver.llm.prices import PriceTable
from cerver.llm.wire import LlmPolicy, RunLlmRequest
from cerver.provider_credentials import declared_models
from cerver.store import SessionRow, Store

COMPATIBLE = "openai-compatible"


@dataclass(frozen=True)
class AccountModels:
    """What one account adds to the deployment: its own endpoints (keys, base URLs) by
    harness, and the catalog it sees (with its declared openai-compatible models)."""

    endpoints: Mapping[str, Endpoint] = field(default_factory=dict)
    catalog: Catalog | None = None


class LlmService:
    def __init__(self, settings: Settings, store: Store) -> None:
        self.settings = settings
        self.store = store
        self.catalog = Catalog(settings)
        self.prices = PriceTable(settings.llm_prices)
        self.budget = Budget(settings, store, self.prices)
        self.pool = HarnessPool()

    async def endpoints_of(self, account_id: str) -> dict[str, Endpoint]:
        """The account's own model endpoints, by harness: keys (and base URLs) it registered
        with ``POST /v2/account/providers``, which override the deployment's. Resolved at
        every turn, so a rotated key takes effect on the next one."""
        found = await credentials_of_each(
            self.settings, self.store, account_id, list(keys.KEY_NAMES)
        )
        return {
            harness: keys.account_endpoint(harness, values, self.settings)
            for harness, values in found.items()
        }

    async def account_models(self, account_id: str) -> AccountModels:
        """The account's endpoints and catalog, read at every turn (a rotation or a new
        model list takes effect on the next one). Its declared models count only while it
        has its own openai-compatible endpoint, which serves them."""
        own = await self.endpoints_of(account_id)
        declared: list[str] = []
        if COMPATIBLE in own:
            declared = await asyncio.to_thread(declared_models, self.store, account_id, COMPATIBLE)
        catalog = Catalog(self.settings, declared) if declared else self.catalog
        return AccountModels(endpoints=own, catalog=catalog)

    def harness_for(self, entry: ModelEntry, own: Mapping[str, Endpoint] | None = None) -> Harness:
        endpoint = (own or {}).get(entry.harness) or keys.endpoint_for(entry.harness, self.settings)
        return self.pool.get(entry.harness, endpoint)

    def callable_models(self, account: AccountModels | None = None) -> list[ModelEntry]:
        """Catalog models whose harness can be called: the account has its own key for it,
        or this deployment has one."""
        own = account.endpoints if account is not None else {}
        catalog = (account.catalog if account is not None else None) or self.catalog
        ready = {h: h in own or keys.available(h, self.settings) for h in keys.KEY_NAMES}
        return [e for e in catalog.entries.values() if ready.get(e.harness)]

    def premium(self) -> ModelEntry | None:
        """The baseline of savings: CERVER_PREMIUM_MODEL, else the priciest callable model."""
        if self.settings.premium_model:
            return self.catalog.get(self.settings.premium_model)
        priced = [e for e in self.callable_models() if self.prices.known(e)]
        return max(priced, key=self.prices.blended, default=None)

    def plan_models(
        self,
        row: SessionRow,
        body: RunLlmRequest,
        *,
        depth: int,
        context_tokens: int,
        account: AccountModels | None = None,
    ) -> tuple[list[ModelEntry], list[ModelEntry], routing.Decision | None]:
        """(the model then its fallbacks, the cascade rungs above it, the routing), from
        the catalog the account sees."""
        catalog = (account.catalog if account is not None else None) or self.catalog
        fallbacks = [catalog.get(name) for name in body.fallbacks]
        if body.model != "auto":
            if body.policy is not None:
                raise BadRequest(
                    '"policy" applies to "model": "auto" only; drop it or ask for auto',
                    details={"field": "policy"},
                )
            first = (
                catalog.get(body.model)
                if body.model
                else catalog.default_for(body.harness or row.harness)
            )
            return [first, *fallbacks], [], None
        policy = body.policy or _DEFAULT_POLICY
        pool = self.callable_models(account)
        if policy.allowed_models is not None:
            allowed = {catalog.get(name).name for name in policy.allowed_models}
            pool = [e for e in pool if e.name in allowed]
        pool = [e for e in pool if self.prices.known(e)]
        turn = routing.features(
            body.input, tools=bool(body.tools), depth=depth, context_tokens=context_tokens
        )
        decision = routing.choose(
            turn,
            pool,
            {e.name: self.prices.blended(e) for e in pool},
            mode=policy.mode,
            context_needed=context_tokens + self.max_output(body),
        )
        if decision is None:
            raise BadRequest(
                "no model fits this turn under the policy: allow more models, or configure "
                "a key for another harness",
                details={"field": "policy.allowed_models", "callable": [e.name for e in pool]},
            )
        ladder = [catalog.get(name) for name in decision.ladder]
        rungs = ladder[1:] if policy.cascade else []
        return [ladder[0], *fallbacks], rungs, decision

    def max_output(self, body: RunLlmRequest) -> int:
        return body.max_output_tokens or self.settings.llm_max_output_tokens


_DEFAULT_POLICY = LlmPolicy()
