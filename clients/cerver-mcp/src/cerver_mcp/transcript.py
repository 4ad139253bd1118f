"""A session and its transcript as Markdown, for `cerver_session_export(format="markdown")`.
The same entries as the JSON export; `exec` entries are shown as code and output."""

from __future__ import annotations

import json
import re
from datetime import datetime, timezone
from typing import Any


def markdown(summary: dict[str, Any], entries: list[dict[str, Any]]) -> str:
    name = summary.get("session_name")
    out = [f"# Cerver session {summary.get('session_id')}" + (f" ({name})" if name else "")]
    facts = [
        f"status {summary.get('status')}",
        f"provider {summary.get('provider') or 'none'}",
        f"{len(entries)} transcript entries",
    ]
    if summary.get("created_at"):
        facts.append(f"created {_iso(summary['created_at'])}")
    out += ["", " · ".join(facts)]
    for entry in entries:
        out += ["", f"## {entry['seq']} · {entry['type']} · {_iso(entry['ts'])}", ""]
        out += _body(entry)
    return "\n".join(out) + "\n"


def _body(entry: dict[str, Any]) -> list[str]:
    content = entry.get("content") or {}
    if entry.get("type") != "exec" or "code" not in content:
        return _fenced(json.dumps(content, indent=2, ensure_ascii=False), "json")
    lines = _fenced(str(content["code"]), str(content.get("language") or ""))
    result = content.get("result") or {}
    for stream in ("stdout", "stderr"):
        if result.get(stream):
            lines += ["", f"{stream}:", *_fenced(str(result[stream]), "text")]
    if "exit_code" in result:
        lines += ["", f"exit code {result['exit_code']}"]
    if content.get("error"):
        lines += ["", "error:", *_fenced(json.dumps(content["error"], ensure_ascii=False), "json")]
    return lines


def _fenced(text: str, info: str) -> list[str]:
    """A code block whose fence is longer than any run of backticks inside it."""
    longest = max((len(run) for run in re.findall(r"`+", text)), default=0)
    fence = "`" * max(3, longest + 1)
    return [fence + info, text.rstrip("\n"), fence]


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, tz=timezone.utc).isoformat(timespec="seconds")
