"""The model catalog: which models Cerver knows, which harness serves each, and what the
router needs to choose between them (quality tier, context window). Prices are not kept
here: they come from ``genai-prices`` (cerver/llm/prices.py).

The catalog keeps the names the docs use (``gpt-5``, ``claude-sonnet-4-5``, ...) even where
the vendor has deprecated them, and passes the name upstream as given. A model the catalog
knows picks its own harness whatever the session's ``harness`` says. Models served by an
``openai-compatible`` endpoint are declared by the deployment
(``CERVER_OPENAI_COMPATIBLE_MODELS``) or by an account for its own endpoint
(``POST /v2/account/providers {"provider": "openai-compatible", ..., "models": [...]}``):
an account's catalog is the deployment's plus its own models, which no other account sees.
A declared name never replaces a built-in entry (registration refuses those names).

Quality tiers (for ``"model": "auto"``): 1 light (classification, short answers), 2 capable
(everyday coding and writing), 3 frontier (hard reasoning, long multi-step work).
"""

from __future__ import annotations

from pydantic import BaseModel

from cerver.config import Settings
from cerver.errors import BadRequest


class ModelEntry(BaseModel):
    name: str
    harness: str
    tier: int
    context_window: int
    # The vendor id genai-prices knows the model under (None: priced by overrides only).
    price_provider: str | None


def _entry(name: str, harness: str, tier: int, context_window: int) -> ModelEntry:
    return ModelEntry(
        name=name,
        harness=harness,
        tier=tier,
        context_window=context_window,
        price_provider=harness,
    )


CATALOG: dict[str, ModelEntry] = {
    e.name: e
    for e in (
        _entry("gpt-5", "openai", 3, 400_000),
        _entry("gpt-5-mini", "openai", 2, 400_000),
        _entry("gpt-5-nano", "openai", 1, 400_000),
        _entry("gpt-4.1", "openai", 2, 1_047_576),
        _entry("gpt-4.1-mini", "openai", 1, 1_047_576),
        _entry("gpt-4o", "openai", 2, 128_000),
        _entry("gpt-4o-mini", "openai", 1, 128_000),
        _entry("o3", "openai", 3, 200_000),
        _entry("o4-mini", "openai", 2, 200_000),
        _entry("claude-opus-4-1", "anthropic", 3, 200_000),
        _entry("claude-sonnet-4-5", "anthropic", 3, 200_000),
        _entry("claude-sonnet-4", "anthropic", 2, 200_000),
        _entry("claude-haiku-4-5", "anthropic", 1, 200_000),
    )
}

# A declared openai-compatible model: the router treats it as light and local-sized.
COMPATIBLE_TIER = 1
COMPATIBLE_CONTEXT = 32_768


class Catalog:
    """The catalog as one account sees it: the built-in entries, the deployment's declared
    openai-compatible models, and the account's own (``extra_compatible``, listed first so
    they are the openai-compatible default)."""

    def __init__(self, settings: Settings, extra_compatible: list[str] | None = None) -> None:
        self.settings = settings
        self.entries = dict(CATALOG)
        # The operator may route a built-in name to the endpoint on purpose; an account
        # cannot (registration refuses catalog names).
        self.compatible = list(
            dict.fromkeys([*(extra_compatible or []), *settings.openai_compatible_models])
        )
        for name in self.compatible:
            self.entries[name] = ModelEntry(
                name=name,
                harness="openai-compatible",
                tier=COMPATIBLE_TIER,
                context_window=COMPATIBLE_CONTEXT,
                price_provider=None,
            )

    def get(self, name: str) -> ModelEntry:
        found = self.entries.get(name)
        if found is None:
            raise BadRequest(
                f"unknown model {name!r}; known models: {', '.join(sorted(self.entries))} "
                "(or 'auto'); declare the models of your own endpoint with POST "
                '/v2/account/providers {"provider": "openai-compatible", "credentials": '
                '{"base_url": ...}, "models": [...]}',
                details={"field": "model", "known": sorted(self.entries)},
            )
        return found

    def default_for(self, harness: str | None) -> ModelEntry:
        """The model a turn without ``model`` uses: the session harness's default."""
        chosen = harness if harness and harness != "none" else "openai"
        name = self.settings.llm_default_models.get(chosen)
        if name is None and chosen == "openai-compatible" and self.compatible:
            name = self.compatible[0]
        if name is None:
            raise BadRequest(
                f'no default model for harness {chosen!r}; pass "model" '
                "(or set CERVER_LLM_DEFAULT_MODELS)",
                details={"field": "model"},
            )
        return self.get(name)
