"""The adapter registry: explicit registration, and lookups that are safe from the threads
the actors run them in."""

from __future__ import annotations

import subprocess
import sys

import pytest

from cerver.adapters import registry
from cerver.errors import BadRequest

pytestmark = pytest.mark.timeout(60)

FIRST_LOOKUPS_FROM_THREADS = """
import threading
from cerver.adapters import registry

barrier = threading.Barrier(8)
seen = []

def look():
    barrier.wait()
    seen.append(registry.has_adapter("local") and registry.has_adapter("ray"))

threads = [threading.Thread(target=look) for _ in range(8)]
for t in threads:
    t.start()
for t in threads:
    t.join()
print(seen.count(True), len(seen))
"""


def test_first_lookups_from_many_threads_all_see_the_builtin_adapters() -> None:
    # A fresh interpreter, so the built-in adapters are imported by these first lookups.
    done = subprocess.run(
        [sys.executable, "-c", FIRST_LOOKUPS_FROM_THREADS],
        capture_output=True,
        text=True,
        timeout=50,
        check=True,
    )
    assert done.stdout.split() == ["8", "8"], done.stderr


def test_unknown_provider_lists_the_valid_ones() -> None:
    with pytest.raises(BadRequest) as caught:
        registry.get("nope")
    assert "local" in str(caught.value) and "ray" in str(caught.value)
    assert registry.has_adapter("local") and not registry.has_adapter("nope")
