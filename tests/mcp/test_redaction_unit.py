"""The pure parts of cerver-mcp: masking and the Markdown export."""

from __future__ import annotations

from cerver_mcp.redaction import MASK, Redactor
from cerver_mcp.transcript import markdown


def test_nothing_fetched_nothing_masked() -> None:
    data = {"a": ["sk-1", {"b": "sk-1"}], "n": 3}
    assert Redactor().mask(data) == data


def test_values_masked_everywhere_longest_first() -> None:
    r = Redactor()
    r.add("abc")
    r.add("xxabcxx")
    r.add("")  # an empty value would mask nothing useful: ignored
    data = {
        "stdout": "key=xxabcxx and abc",
        "list": ["abc", 7, None, True],
        "abc": {"nested": ("zabcz",)},
    }
    assert r.mask(data) == {
        "stdout": f"key={MASK} and {MASK}",
        "list": [MASK, 7, None, True],
        MASK: {"nested": [f"z{MASK}z"]},
    }


def test_regex_characters_in_values_are_literal() -> None:
    r = Redactor()
    r.add("a.b*c")
    assert r.text("a.b*c aXbbc") == f"{MASK} aXbbc"


def test_markdown_shows_exec_entries_as_code_and_output() -> None:
    summary = {
        "session_id": "sess_1",
        "session_name": "demo",
        "status": "closed",
        "provider": "local",
        "created_at": 0.0,
    }
    entries = [
        {"seq": 1, "ts": 0.0, "type": "system", "content": {"event": "created"}},
        {
            "seq": 2,
            "ts": 1.0,
            "type": "exec",
            "content": {
                "language": "bash",
                "code": "echo '```'",
                "result": {"stdout": "```\n", "stderr": "", "exit_code": 0},
            },
        },
    ]
    md = markdown(summary, entries)
    assert md.startswith("# Cerver session sess_1 (demo)\n\nstatus closed · provider local")
    assert "## 1 · system · 1970-01-01T00:00:00+00:00" in md
    assert '"event": "created"' in md
    # A fence longer than the backticks inside keeps the block whole.
    assert "````bash\necho '```'\n````" in md
    assert "stdout:\n````text\n```\n````" in md and "exit code 0" in md
    assert "stderr:" not in md
