"""The local adapter's layout: the programs that run inside a sandbox are inert on import."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from cerver.adapters.base import SandboxRecord
from cerver.adapters.local import LocalAdapter
from cerver.errors import SandboxLost

INSIDE = ("supervisor", "python_driver")


@pytest.mark.parametrize("name", INSIDE)
def test_importing_an_inside_program_runs_nothing(name: str) -> None:
    """Before the guard, importing ran ``main()``: the supervisor wrote a hello frame to
    fd 1 and served fd 0; the driver took fd 1 as its control channel and failed."""
    done = subprocess.run(
        [sys.executable, "-c", f"import cerver.adapters.local.inside.{name} as m; print(m.main)"],
        input=b"",
        capture_output=True,
        timeout=30,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(b"<function main"), done.stdout


def test_inside_sources_are_what_the_host_starts() -> None:
    from cerver.adapters.local import inside
    from cerver.adapters.local.host_interpreter import DRIVER_SOURCE
    from cerver.adapters.local.host_supervisor import SUPERVISOR_SOURCE

    assert inside.source("supervisor") == SUPERVISOR_SOURCE
    assert inside.source("python_driver") == DRIVER_SOURCE
    for source in (SUPERVISOR_SOURCE, DRIVER_SOURCE):
        assert source.rstrip().endswith('if __name__ == "__main__":\n    main()')


@pytest.mark.parametrize("isolation", ["rlimits"])
async def test_a_record_must_name_a_workspace_of_this_node(
    adapter: LocalAdapter, sandbox: SandboxRecord, tmp_path: Path
) -> None:
    """The record's workspace is checked on every use: its own path (the fast path), the
    same place spelled otherwise, and a path elsewhere (refused)."""
    ws = adapter._data(sandbox).workspace
    assert os.path.realpath(ws) == os.path.realpath(sandbox.data["workspace"])
    parent, name = os.path.split(ws)
    spelled = sandbox.model_copy(
        update={"data": {**sandbox.data, "workspace": f"{parent}/./{name}"}}
    )
    assert adapter._data(spelled).workspace == f"{parent}/./{name}"
    (tmp_path / "elsewhere").mkdir()
    forged = sandbox.model_copy(
        update={"data": {**sandbox.data, "workspace": str(tmp_path / "elsewhere")}}
    )
    with pytest.raises(SandboxLost, match="does not live in this node's sandboxes directory"):
        adapter._data(forged)
