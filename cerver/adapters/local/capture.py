"""What a run produced: capped, decoded output per stream, and the final result."""

from __future__ import annotations

import codecs
import time
from dataclasses import dataclass, field

from cerver.adapters.base import ExecEvent, ExecResult

READ_CHUNK = 64 * 1024


@dataclass
class StreamCapture:
    """One stream of one run: keeps at most ``limit`` bytes, counts what it drops."""

    name: str
    limit: int
    kept: int = 0
    dropped: int = 0
    parts: list[str] = field(default_factory=list)
    decoder: codecs.IncrementalDecoder = field(
        default_factory=lambda: codecs.getincrementaldecoder("utf-8")(errors="replace")
    )

    def admit(self, data: bytes) -> bytes:
        room = max(self.limit - self.kept, 0)
        if len(data) > room:
            self.dropped += len(data) - room
            data = data[:room]
        self.kept += len(data)
        return data

    def decode(self, data: bytes, *, final: bool = False) -> str:
        text = self.decoder.decode(data, final)
        if text:
            self.parts.append(text)
        return text

    def finish(self) -> str:
        """Flush the decoder and add the truncation marker; return the text to still emit."""
        tail = self.decode(b"", final=True)
        if self.dropped:
            marker = f"\n[cerver: output truncated, {self.dropped} bytes dropped]"
            self.parts.append(marker)
            tail += marker
        return tail

    @property
    def text(self) -> str:
        return "".join(self.parts)


def timeout_note(timeout_s: float) -> str:
    return f"execution timed out after {timeout_s:g}s"


@dataclass
class Outcome:
    """What a run collected; turned into the final ``ExecResult``."""

    stdout: StreamCapture
    stderr: StreamCapture
    started: float = field(default_factory=time.perf_counter)
    exit_code: int = 0
    timed_out: bool = False
    error: str | None = None
    interpreter_restarted: bool = False

    def note_stderr(self, text: str) -> ExecEvent:
        self.stderr.parts.append(text)
        return ExecEvent(type="stderr", data=text)

    def result(self) -> ExecResult:
        return ExecResult(
            stdout=self.stdout.text,
            stderr=self.stderr.text,
            exit_code=self.exit_code,
            duration_ms=(time.perf_counter() - self.started) * 1000,
            timed_out=self.timed_out,
            truncated=bool(self.stdout.dropped or self.stderr.dropped),
            error=self.error,
            interpreter_restarted=self.interpreter_restarted,
        )


def finish_events(outcome: Outcome) -> list[ExecEvent]:
    events = []
    for cap in (outcome.stdout, outcome.stderr):
        tail = cap.finish()
        if tail:
            events.append(ExecEvent(type="stdout" if cap.name == "stdout" else "stderr", data=tail))
    return events
