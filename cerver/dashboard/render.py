"""The Jinja2 environment of the dashboard and the filters its templates use."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from pathlib import Path

from fastapi.templating import Jinja2Templates

HERE = Path(__file__).parent
templates = Jinja2Templates(directory=str(HERE / "templates"))


def age(ts: float | None) -> str:
    if ts is None:
        return "-"
    seconds = max(0.0, time.time() - ts)
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{int(seconds // size)}{unit}"
    return f"{int(seconds)}s"


def when(ts: float | None) -> str:
    if ts is None:
        return "never"
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def usd(value: float | None) -> str:
    return "-" if value is None else f"${value:,.4f}"


def ms(value: float | None) -> str:
    return "-" if value is None else f"{value:,.1f} ms"


templates.env.filters.update(age=age, when=when, usd=usd, ms=ms)
