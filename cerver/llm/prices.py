"""What a call cost: usage x the model's prices. Prices come from ``genai-prices``
(pydantic's maintained price table, with tiers, cache-read and cache-write rates and price
history) rather than a hand-kept table; a deployment can override any model's prices, and
must give prices for its own (openai-compatible) models, else they cost 0 and say so.

Cached input tokens and cache writes are priced at their own rates (not at the input rate);
reasoning tokens are output tokens and are priced at the output rate, which is the rate the
vendors bill them at.
"""

from __future__ import annotations

import warnings
from functools import lru_cache

from pydantic import BaseModel

from cerver.llm.catalog import ModelEntry
from cerver.llm.types import Usage

MTOK = 1_000_000


class Prices(BaseModel):
    """USD per million tokens. ``cache_read``/``cache_write`` default to the input rate."""

    input: float
    output: float
    cache_read: float | None = None
    cache_write: float | None = None

    def cost(self, usage: Usage) -> float:
        read = usage.cache_read_tokens
        write = usage.cache_write_tokens
        plain = max(0, usage.input_tokens - read - write)
        return (
            plain * self.input
            + read * (self.cache_read if self.cache_read is not None else self.input)
            + write * (self.cache_write if self.cache_write is not None else self.input)
            + usage.output_tokens * self.output
        ) / MTOK


class PriceTable:
    def __init__(self, overrides: dict[str, dict[str, float]]) -> None:
        self.overrides = {name: Prices.model_validate(p) for name, p in overrides.items()}

    def known(self, entry: ModelEntry) -> bool:
        return entry.name in self.overrides or entry.price_provider is not None

    def cost(self, entry: ModelEntry, usage: Usage) -> float:
        override = self.overrides.get(entry.name)
        if override is not None:
            return override.cost(usage)
        if entry.price_provider is None:
            return 0.0
        return _genai_cost(entry.name, entry.price_provider, usage)

    def worst_case(self, entry: ModelEntry, input_tokens: int, output_tokens: int) -> float:
        """An upper bound of a call's cost: every input token at the dearer of the input
        and cache-write rates (and at the long-context tier when the call reaches it)."""
        as_plain = self.cost(entry, Usage(input_tokens=input_tokens, output_tokens=output_tokens))
        as_written = self.cost(
            entry,
            Usage(
                input_tokens=input_tokens,
                cache_write_tokens=input_tokens,
                output_tokens=output_tokens,
            ),
        )
        return max(as_plain, as_written)

    def blended(self, entry: ModelEntry) -> float:
        """One number per model for ranking by price: USD per million tokens of a typical
        turn's mix (3 input tokens to 1 output token), at short-context rates."""
        return self.cost(entry, Usage(input_tokens=3000, output_tokens=1000)) * MTOK / 4000


@lru_cache(maxsize=4096)
def _genai_price_of(model: str, provider: str, fields: tuple[tuple[str, int], ...]) -> float:
    from genai_prices import Usage as GenaiUsage
    from genai_prices import calc_price

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        found = calc_price(GenaiUsage(**dict(fields)), model_ref=model, provider_id=provider)
    return float(found.total_price)


def _genai_cost(model: str, provider: str, usage: Usage) -> float:
    fields = (
        ("input_tokens", usage.input_tokens),
        ("output_tokens", usage.output_tokens),
        ("cache_read_tokens", usage.cache_read_tokens),
        ("cache_write_tokens", usage.cache_write_tokens),
    )
    return _genai_price_of(model, provider, fields)
