"""Fixtures for the security tests: the local adapter's (real processes, real isolation)."""

from tests.adapters.conftest import (  # noqa: F401
    adapter,
    home,
    isolation,
    new_sandbox,
    sandbox,
    settings,
)
