"""Sandbox uids are claimed in O(1) (a marker per uid), not by a scan of every workspace:
the scan cost ~50 ms per create at 10,000 sandboxes. Claims must still catch every
collision, including with workspaces made before claims existed."""

from __future__ import annotations

import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from cerver.adapters.local import layout

from .conftest import make_settings


def _settings(home: Path):  # type: ignore[no-untyped-def]
    settings = make_settings(home, "rlimits")
    layout.ensure_sandboxes_dir(settings)
    return settings


def test_a_uid_is_claimed_once_and_released_by_its_owner_only(home: Path) -> None:
    settings = _settings(home)
    a, b = layout.new_sandbox_id(), layout.new_sandbox_id()
    uid = layout.uid_for(settings, a)
    assert layout.claim_uid(settings, uid, a)
    assert not layout.claim_uid(settings, uid, b)  # a collision: b must pick another id
    layout.make_workspace(layout.workspace_path(settings, a), 0, 0, chown=False)
    layout.release_uid(settings, b)  # not b's claim (b's uid differs): a's claim stays
    assert not layout.claim_uid(settings, uid, b)
    layout.remove_sandbox_files(settings, a)  # a is gone: its claim goes with it
    assert layout.claim_uid(settings, uid, b)


def test_workspaces_made_before_claims_existed_are_claimed_on_first_use(home: Path) -> None:
    settings = _settings(home)
    old = layout.new_sandbox_id()
    layout.make_workspace(layout.workspace_path(settings, old), 0, 0, chown=False)
    owner = os.stat(layout.workspace_path(settings, old)).st_uid
    assert not layout.claims_dir(settings).exists()
    assert not layout.claim_uid(settings, owner, layout.new_sandbox_id())
    assert layout.claim_uid(settings, owner + 1, layout.new_sandbox_id())


def test_a_claim_whose_workspace_vanished_is_taken_over(home: Path) -> None:
    settings = _settings(home)
    gone, fresh = layout.new_sandbox_id(), layout.new_sandbox_id()
    assert layout.claim_uid(settings, 4242, gone)  # its workspace was never made (or deleted)
    # A fresh claim is kept (its workspace is made just after the claim) ...
    assert not layout.claim_uid(settings, 4242, fresh)
    # ... an old one whose workspace is gone is taken over.
    marker = layout.claims_dir(settings) / "4242"
    past = time.time() - 2 * layout.STALE_CLAIM_S
    os.utime(marker, (past, past))
    assert layout.claim_uid(settings, 4242, fresh)
    assert not layout.claim_uid(settings, 4242, layout.new_sandbox_id())


def _claim_after(settings, sandbox_id: str, start: threading.Barrier) -> bool:  # type: ignore[no-untyped-def]
    start.wait()
    return layout.claim_uid(settings, layout.uid_for(settings, sandbox_id), sandbox_id)


def test_the_first_claims_made_at_once_all_land(tmp_path: Path) -> None:
    """Many creates at once on a fresh node all make the claims directory: each claim must
    land in the one that stays (a directory renamed onto an empty one replaces it)."""
    for round_ in range(300):
        settings = _settings(tmp_path / f"home{round_}")
        ids = [layout.new_sandbox_id() for _ in range(12)]
        start = threading.Barrier(len(ids))

        with ThreadPoolExecutor(len(ids)) as pool:
            claimed = list(pool.map(_claim_after, [settings] * len(ids), ids, [start] * len(ids)))
        assert all(claimed)
        on_disk = {p.read_text() for p in layout.claims_dir(settings).iterdir()}
        assert on_disk == set(ids)
