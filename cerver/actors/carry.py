"""Carrying a session's workspace files to its new compute on a swap.

Works across any two providers whose sandboxes have a shell with ``tar`` and ``base64``
(local, ray, vercel, ...): the old sandbox packs its workspace (without Cerver's own
dot-directories and state file) as base64 text, the new one receives the archive as a
file and unpacks it. A workspace whose archive is larger than ``limit`` bytes is not
carried, and the answer says so; the swap itself never fails because of the carry.
"""

from __future__ import annotations

import base64
import binascii
from typing import Any

from cerver.adapters.base import ComputeAdapter, ExecRequest, SandboxRecord
from cerver.errors import CerverError

ARCHIVE = ".cerver-carry.tar.gz"
EXCLUDE = ("./.cerver", "./.cerver-state.json", f"./{ARCHIVE}")
PACK = " ".join(f"--exclude={path}" for path in EXCLUDE).join(("tar czf - ", " . | base64 -w0"))
COUNT = f"tar tzf {ARCHIVE} | grep -vc '/$'"
# Files keep their modes, not their owners (uids differ between sandboxes and providers).
UNPACK = f"tar xzf {ARCHIVE} --no-same-owner; rc=$?; rm -f {ARCHIVE}; exit $rc"
TIMEOUT_S = 120.0


async def carry_workspace(
    old: ComputeAdapter,
    old_record: SandboxRecord,
    new: ComputeAdapter,
    new_record: SandboxRecord,
    *,
    limit: int,
) -> dict[str, Any]:
    """Copy the workspace; returns what was carried (``files``, ``bytes``) or why not."""
    try:
        packed = await old.run(old_record, ExecRequest(code=PACK, timeout_s=TIMEOUT_S))
        if packed.exit_code != 0 or packed.truncated:
            reason = "the workspace is larger than this server's output limit"
            if not packed.truncated:
                reason = f"packing the workspace failed: {packed.stderr.strip()[-300:]}"
            return {"carried": False, "reason": reason}
        archive = base64.b64decode(packed.stdout.strip(), validate=True)
        if len(archive) > limit:
            return {"carried": False, "reason": f"the workspace archive is over {limit} bytes"}
        await new.write_file(new_record, ARCHIVE, archive)
        counted = await new.run(new_record, ExecRequest(code=COUNT, timeout_s=TIMEOUT_S))
        unpacked = await new.run(new_record, ExecRequest(code=UNPACK, timeout_s=TIMEOUT_S))
    except (CerverError, binascii.Error) as exc:
        return {"carried": False, "reason": f"copying the workspace failed: {exc}"}
    if unpacked.exit_code != 0:
        return {"carried": False, "reason": f"unpacking failed: {unpacked.stderr.strip()[-300:]}"}
    files = int(counted.stdout.strip() or 0) if counted.exit_code in (0, 1) else None
    return {"carried": True, "files": files, "bytes": len(archive)}
