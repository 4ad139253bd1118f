"""cerver.redaction: masking credential values in the streams of a run result."""

from __future__ import annotations

from cerver.redaction import MASK, MIN_LENGTH, mask_streams, mask_text


def test_no_values_leaves_the_result_untouched() -> None:
    result = {"stdout": "hello\n", "stderr": "", "exit_code": 0}
    assert mask_streams(result, []) is result
    assert mask_streams(result, ["short"[: MIN_LENGTH - 1]]) is result


def test_values_masked_in_both_streams_and_counted() -> None:
    token = "vcl_tok_0123456789abcdef"
    inner = "0123456789"
    result = {
        "stdout": f"token={token}\nagain {token}\n",
        "stderr": f"curl: auth {token} failed; part {inner}\n",
        "exit_code": 1,
        "truncated": False,
    }
    masked = mask_streams(result, [inner, token])
    assert masked["stdout"] == f"token={MASK}\nagain {MASK}\n"
    # Longest first: the token is masked whole, not as "vcl_tok_***abcdef".
    assert masked["stderr"] == f"curl: auth {MASK} failed; part {MASK}\n"
    assert masked["masked"] == 4
    assert masked["exit_code"] == 1 and masked["truncated"] is False
    assert token in result["stdout"]  # the input is not changed in place


def test_nothing_found_adds_no_count() -> None:
    result = {"stdout": "clean\n", "stderr": ""}
    assert mask_streams(result, ["e2b_abcdefgh"]) == result


def test_regex_characters_are_literal() -> None:
    assert mask_text("k=a.b*c+d? aXbbccd", ["a.b*c+d?"]) == f"k={MASK} aXbbccd"
