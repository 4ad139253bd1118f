"""Where a local sandbox lives on disk, and the plain data its record carries.

    <sandboxes_dir>/                 0711 root: traversable, not listable
        <sandbox_id>/                0700, owned by the sandbox uid: the workspace
            .cerver/site-packages/   pip --target of ``install_package`` (on PYTHONPATH)
            .cerver/tmp/             TMPDIR in rlimits mode
        <sandbox_id>.state.json      user key/value state, 0600, outside the workspace
    <sandboxes_dir>.uids/<uid>       as root: which workspace holds that uid (claim_uid)

Everything needed to reconnect after the host process restarts is in ``LocalSandboxData``
(``SandboxRecord.data``); nothing else is kept in memory that a restart would lose, except
the running Python interpreters, which are restarted on demand.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import secrets
import shutil
import time
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field

from cerver.config import Settings
from cerver.errors import BadRequest

Isolation = Literal["bwrap", "rlimits"]

UID_SPAN = 1_000_000
MAX_STATE_BYTES = 64 * 1024
WORKSPACE_IN_BWRAP = "/workspace"
INTERNAL_DIR = ".cerver"


class Limits(BaseModel):
    cpu_s: int
    memory_mb: int
    fsize_mb: int
    nproc: int
    nofile: int = 1024
    # the whole sandbox (its cgroup, adapters/local/cgroups.py); 0 in records made before
    total_memory_mb: int = 0
    pids_max: int = 0
    cpus: float = 0.0


class LocalSandboxData(BaseModel):
    """What ``SandboxRecord.data`` holds for the ``local`` provider."""

    workspace: str  # host path of the workspace directory
    uid: int  # the uid/gid sandboxed processes run as
    gid: int
    dedicated_uid: bool  # True: a per-sandbox unprivileged uid; False: the server's own user
    isolation: Isolation
    network: bool = False
    egress_allow: list[str] | None = None  # with network: only these names (egress.py)
    env: dict[str, str] = Field(default_factory=dict)
    limits: Limits

    @property
    def workspace_path(self) -> Path:
        return Path(self.workspace)

    @property
    def workspace_inside(self) -> str:
        """The workspace path as sandboxed code sees it."""
        return WORKSPACE_IN_BWRAP if self.isolation == "bwrap" else self.workspace

    def site_packages_inside(self) -> str:
        return f"{self.workspace_inside}/{INTERNAL_DIR}/site-packages"


def new_sandbox_id() -> str:
    return f"sbx_{secrets.token_hex(12)}"


def uid_for(settings: Settings, sandbox_id: str) -> int:
    """A stable unprivileged uid for one sandbox (also used as its gid)."""
    digest = hashlib.sha256(sandbox_id.encode()).hexdigest()
    return settings.sandbox_uid_base + int(digest, 16) % UID_SPAN


STALE_CLAIM_S = 60.0  # a claim this old whose workspace is gone was left by a lost one


def claim_uid(settings: Settings, uid: int, sandbox_id: str) -> bool:
    """Claim ``uid`` for a new workspace; False when another workspace holds it (a hash
    collision: pick another id). O(1), an ``O_EXCL`` marker file per uid: the scan of
    every workspace this replaces cost ~50 ms per create at 10,000 sandboxes
    (docs/performance.md, "10,000 hibernated sessions")."""
    marker = _uid_claims(settings) / str(uid)
    for _ in range(2):
        try:
            fd = os.open(marker, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        except FileExistsError:
            if not _stale(settings, marker):
                return False
            with contextlib.suppress(FileNotFoundError):
                marker.unlink()  # then O_EXCL again: one claimer wins
            continue
        with os.fdopen(fd, "w") as fh:
            fh.write(sandbox_id)
        return True
    return False


def _stale(settings: Settings, marker: Path) -> bool:
    """A claim whose workspace is gone (deleted behind our back) and that is not new (a
    fresh claim's workspace is made just after it)."""
    try:
        owner = marker.read_text()
        age = time.time() - marker.stat().st_mtime
    except FileNotFoundError:
        return True
    return age > STALE_CLAIM_S and not workspace_path(settings, owner).is_dir()


def claims_dir(settings: Settings) -> Path:
    """``<sandboxes_dir>.uids/<uid>``: which workspace holds each uid (beside the sandboxes
    directory, which holds workspaces only)."""
    return settings.sandboxes_dir.with_name(f"{settings.sandboxes_dir.name}.uids")


def _uid_claims(settings: Settings) -> Path:
    """The claims directory. Made on first use from the workspaces already there (made
    before claims existed), filled aside and renamed into place, so no claim is ever
    checked against a half-filled directory; under a lock, because a directory renamed
    onto an empty one replaces it, and a claim being made in the replaced one would fail."""
    root = settings.sandboxes_dir
    claims = claims_dir(settings)
    if claims.is_dir():
        return claims
    lock = os.open(claims.with_name(f".{claims.name}.lock"), os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(lock, fcntl.LOCK_EX)  # other threads and processes making it too
        if claims.is_dir():
            return claims
        aside = claims.with_name(f".{claims.name}.{secrets.token_hex(4)}")
        aside.mkdir(mode=0o700)
        for entry in os.scandir(root):
            if entry.name.startswith(".") or not entry.is_dir(follow_symlinks=False):
                continue
            with contextlib.suppress(FileNotFoundError):
                owner = entry.stat(follow_symlinks=False).st_uid
                (aside / str(owner)).write_text(entry.name)
        os.rename(aside, claims)
    finally:
        os.close(lock)  # (closing releases the lock)
    return claims


def release_uid(settings: Settings, sandbox_id: str) -> None:
    """Drop the workspace's claim on its uid, if the claim is this workspace's."""
    marker = claims_dir(settings) / str(uid_for(settings, sandbox_id))
    with contextlib.suppress(FileNotFoundError):
        if marker.read_text() == sandbox_id:
            marker.unlink()


def state_path(settings: Settings, sandbox_id: str) -> Path:
    return settings.sandboxes_dir / f"{sandbox_id}.state.json"


def workspace_path(settings: Settings, sandbox_id: str) -> Path:
    return settings.sandboxes_dir / sandbox_id


def ensure_sandboxes_dir(settings: Settings) -> Path:
    root = settings.sandboxes_dir
    root.mkdir(parents=True, exist_ok=True)
    os.chmod(root, 0o711)
    return root


def make_workspace(path: Path, uid: int, gid: int, *, chown: bool) -> None:
    """Create the workspace (0700) and its internal directories, owned by the sandbox."""
    path.mkdir(mode=0o700)
    dirs = [path, path / INTERNAL_DIR, path / INTERNAL_DIR / "site-packages"]
    dirs.append(path / INTERNAL_DIR / "tmp")
    for d in dirs[1:]:
        d.mkdir(mode=0o700)
    for d in dirs:
        os.chmod(d, 0o700)
        if chown:
            os.chown(d, uid, gid)


def remove_sandbox_files(settings: Settings, sandbox_id: str) -> None:
    """Remove the workspace and the sidecar files; missing pieces are fine."""

    def _retry_writable(func: Any, path: str, _exc: Any) -> None:
        # Sandboxed code may have made a directory read-only; we own it (or are root).
        os.chmod(os.path.dirname(path), 0o700)
        func(path)

    ws = workspace_path(settings, sandbox_id)
    if ws.is_dir() and not ws.is_symlink():
        os.chmod(ws, 0o700)
        shutil.rmtree(ws, onerror=_retry_writable)
    elif ws.is_symlink():
        ws.unlink()
    state_path(settings, sandbox_id).unlink(missing_ok=True)
    release_uid(settings, sandbox_id)


def read_state(settings: Settings, sandbox_id: str) -> dict[str, Any]:
    try:
        raw = state_path(settings, sandbox_id).read_text()
    except FileNotFoundError:
        return {}
    value = json.loads(raw)
    return value if isinstance(value, dict) else {}


def write_state(settings: Settings, sandbox_id: str, state: dict[str, Any]) -> None:
    """Replace the user state (JSON object, at most 64 KB), atomically, mode 0600."""
    try:
        raw = json.dumps(state, separators=(",", ":"), sort_keys=True)
    except (TypeError, ValueError) as exc:
        raise BadRequest(f"state must be a JSON object: {exc}", details={"field": "state"}) from exc
    if len(raw.encode()) > MAX_STATE_BYTES:
        raise BadRequest(
            f"state is {len(raw.encode())} bytes as JSON; the limit is {MAX_STATE_BYTES}",
            details={"field": "state", "limit": MAX_STATE_BYTES},
        )
    path = state_path(settings, sandbox_id)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(raw)
    os.replace(tmp, path)
