"""The attribute view of a decoded JSON answer (``post_json``): what the harnesses' parsing
code reads instead of the SDK's models."""

from __future__ import annotations

import copy

import pytest

from cerver.llm.harnesses.base import fields, plain

pytestmark = pytest.mark.timeout(10)


def test_fields_read_like_the_sdk_models_and_convert_back() -> None:
    raw = {
        "output": [{"type": "message", "content": [{"type": "output_text", "text": "hi"}]}],
        "usage": {"input_tokens": 3, "input_tokens_details": {"cached_tokens": 1}},
        "metadata": {},
        "tool input": {"nested": [{"a-b": 1}, 2, None]},
    }
    view = fields(raw)
    assert view.output[0].content[0].text == "hi"
    assert view.usage.input_tokens_details.cached_tokens == 1
    assert view.incomplete_details is None  # left out of the answer: None, as on the models
    assert view.usage.output_tokens_details is None
    with pytest.raises(AttributeError):
        view.__deepcopy_hook__  # noqa: B018 (dunder lookups stay real AttributeErrors)
    assert copy.deepcopy(view) == view
    assert plain(view) == raw
