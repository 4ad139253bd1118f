"""Harnesses: one module per model API, registered by name."""

from __future__ import annotations

from cerver.llm.harnesses.base import Endpoint, Harness, UpstreamError

HARNESS_MODULES = {
    "openai": ("cerver.llm.harnesses.openai_responses", "OpenAIResponses"),
    "anthropic": ("cerver.llm.harnesses.anthropic_messages", "AnthropicMessages"),
    "openai-compatible": ("cerver.llm.harnesses.openai_chat", "OpenAIChat"),
}


def harness_class(name: str) -> type[Harness]:
    """The class for a harness name; imported on first use (the SDKs load lazily)."""
    import importlib

    try:
        module, cls = HARNESS_MODULES[name]
    except KeyError:
        raise ValueError(f"unknown harness {name!r}; valid: {', '.join(HARNESS_MODULES)}") from None
    found: type[Harness] = getattr(importlib.import_module(module), cls)
    return found


__all__ = ["HARNESS_MODULES", "Endpoint", "Harness", "UpstreamError", "harness_class"]
