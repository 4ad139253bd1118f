"""Masking of secret values this process has handed out.

Every value `secret_fetch` returns is remembered (in memory, for the life of the process)
and replaced by `***` wherever it later appears in a session tool's output: transcript
stdout, code, session names, error messages. Longest values first, so a value that
contains another is masked whole.
"""

from __future__ import annotations

import re
from typing import Any

MASK = "***"


class Redactor:
    def __init__(self) -> None:
        self._values: set[str] = set()
        self._pattern: re.Pattern[str] | None = None

    def add(self, value: str) -> None:
        if value and value not in self._values:
            self._values.add(value)
            ordered = sorted(self._values, key=len, reverse=True)
            self._pattern = re.compile("|".join(re.escape(v) for v in ordered))

    def text(self, text: str) -> str:
        return self._pattern.sub(MASK, text) if self._pattern is not None else text

    def mask(self, data: Any) -> Any:
        """``data`` (JSON-like: dicts, lists, strings, numbers) with every value masked."""
        if self._pattern is None:
            return data
        if isinstance(data, str):
            return self.text(data)
        if isinstance(data, dict):
            return {self.mask(k): self.mask(v) for k, v in data.items()}
        if isinstance(data, list | tuple):
            return [self.mask(v) for v in data]
        return data
