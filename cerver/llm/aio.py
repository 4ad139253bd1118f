"""``shielded``: finish a piece of cleanup even while the caller is being cancelled (a
client that went away cancels the request's task; the upstream connection must still be
closed and the transcript still written)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import Any

_background: set[asyncio.Future[Any]] = set()


async def shielded(work: Awaitable[Any]) -> None:
    """Run ``work`` to the end; if the caller is cancelled meanwhile, the work goes on in
    the background (referenced until done) and the cancellation propagates."""
    task = asyncio.ensure_future(work)
    _background.add(task)
    task.add_done_callback(_background.discard)
    await asyncio.shield(task)
