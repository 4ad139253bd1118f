"""Masking of an account's secret values in what a run printed, before the transcript keeps it.

Pure: the caller passes the values it holds at that moment (a provider adapter's resolved
credentials, learned when they were resolved for use); nothing here stores or logs them.
Longest values first, so a value that contains another is masked whole. Values shorter
than `MIN_LENGTH` are not masked: a credential is never that short, and masking every "1"
or "ok" would destroy the output without hiding anything.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

MASK = "***"
MIN_LENGTH = 6
STREAMS = ("stdout", "stderr")


def pattern_of(values: Iterable[str]) -> re.Pattern[str] | None:
    kept = sorted({v for v in values if len(v) >= MIN_LENGTH}, key=len, reverse=True)
    return re.compile("|".join(map(re.escape, kept))) if kept else None


def mask_text(text: str, values: Iterable[str]) -> str:
    pattern = pattern_of(values)
    return pattern.sub(MASK, text) if pattern is not None else text


def mask_streams(result: dict[str, Any], values: Iterable[str]) -> dict[str, Any]:
    """A run result (``{"stdout", "stderr", ...}``) with the values masked in its streams,
    and ``"masked": N`` (the occurrences replaced) when there were any."""
    pattern = pattern_of(values)
    if pattern is None:
        return result
    masked, count = dict(result), 0
    for stream in STREAMS:
        if isinstance(result.get(stream), str):
            masked[stream], n = pattern.subn(MASK, result[stream])
            count += n
    if count:
        masked["masked"] = count
    return masked
