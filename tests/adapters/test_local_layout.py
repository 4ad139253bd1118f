"""The local adapter's layout: the programs that run inside a sandbox are inert on import."""

from __future__ import annotations

import subprocess
import sys

import pytest

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
