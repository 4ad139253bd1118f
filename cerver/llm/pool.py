"""Harness instances per replica, one per (harness, base URL, key), so SDK clients and their
connection pools are reused across turns. Keyed by a hash of the key, never the key."""

from __future__ import annotations

import hashlib

from cerver.llm.harnesses import Harness, harness_class
from cerver.llm.harnesses.base import Endpoint

MAX_CLIENTS = 64


class HarnessPool:
    def __init__(self) -> None:
        self._harnesses: dict[tuple[str, str, str, float], Harness] = {}

    def get(self, harness: str, endpoint: Endpoint) -> Harness:
        digest = hashlib.sha256(endpoint.api_key.encode()).hexdigest()
        key = (harness, endpoint.base_url or "", digest, endpoint.timeout_s)
        found = self._harnesses.get(key)
        if found is None:
            if len(self._harnesses) >= MAX_CLIENTS:
                self._harnesses.pop(next(iter(self._harnesses)))
            found = self._harnesses[key] = harness_class(harness)(endpoint)
        return found
