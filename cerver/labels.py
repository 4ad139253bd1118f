"""Ray label selectors given by users and operators (node labels for placement)."""

from __future__ import annotations

from typing import Any


def selector_problem(raw: Any) -> str | None:
    """None when ``raw`` is a valid Ray label selector (an object of strings such as
    ``{"zone": "in(a,b)", "gpu": "!none"}``), else what is wrong with it."""
    if not isinstance(raw, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in raw.items()
    ):
        return "must be an object of strings"
    from ray._private.label_utils import validate_label_selector

    problem: str | None = validate_label_selector(raw)
    return problem
