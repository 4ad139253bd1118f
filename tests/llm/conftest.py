"""Fixtures for the harness tests that need no Ray: the fake model servers are session
fixtures of tests/conftest.py (the shared Serve app is pointed at them); here each test
starts from an empty script and log."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.fakes.llm_process import FakeServer


@pytest.fixture
def openai_fake(llm_fakes: dict[str, FakeServer]) -> Iterator[FakeServer]:
    llm_fakes["openai"].reset()
    yield llm_fakes["openai"]


@pytest.fixture
def anthropic_fake(llm_fakes: dict[str, FakeServer]) -> Iterator[FakeServer]:
    llm_fakes["anthropic"].reset()
    yield llm_fakes["anthropic"]
