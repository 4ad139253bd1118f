"""Run a command (the test suite) and fail if it leaves a process behind.

``python -m tests.reaped CMD ARGS...`` makes this process a child subreaper, so whatever the
command starts and orphans (a Ray daemon, an HAProxy, a sandbox, a PostgreSQL server, a
`cerver serve` of a test) is re-parented here rather than to init. When the command exits,
what is still below this process after a grace period is listed, killed and reaped, and the
exit status is 1 (or the command's own, if that failed). Only the command's own processes
are looked at: a server the developer runs beside the suite is never counted.

Why a wrapper and not a pytest hook: the suite's last fixtures (``ray.shutdown``, the
PostgreSQL cluster's stop) run after every hook, and processes they orphan would not be
pytest's children any more.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time

from cerver.process_tree import adopt_orphans, kill_descendants, living_descendants, reap_children

# Ray's daemons and an HAProxy told to stop may take a few seconds to go.
GRACE_S = float(os.environ.get("CERVER_TEST_LEFTOVER_GRACE_S", "30"))


def _describe(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            command = f.read().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        command = "?"
    return f"  pid {pid}: {command[:200]}"


def _reap_orphans_but(keep: int) -> None:
    """Reap the exited children of this process except ``keep`` (whose status Popen reads)."""
    for task in os.listdir("/proc/self/task"):
        try:
            with open(f"/proc/self/task/{task}/children") as f:
                children = [int(pid) for pid in f.read().split()]
        except OSError:
            continue
        for pid in children:
            if pid != keep:
                with contextlib.suppress(ChildProcessError):
                    os.waitpid(pid, os.WNOHANG)


def main(argv: list[str]) -> int:
    if not argv:
        sys.stderr.write("usage: python -m tests.reaped CMD [ARGS...]\n")
        return 2
    if not adopt_orphans():
        sys.stderr.write("tests.reaped: no child subreaper here; not checking for leftovers\n")
        return subprocess.call(argv)
    command = subprocess.Popen(argv)
    while command.poll() is None:  # orphans that exit meanwhile are reaped, as init would
        _reap_orphans_but(command.pid)
        time.sleep(1.0)
    status = command.returncode
    me = os.getpid()
    deadline = time.monotonic() + GRACE_S
    left = living_descendants(me)
    while left and time.monotonic() < deadline:
        time.sleep(0.5)
        reap_children()
        left = living_descendants(me)
    if not left:
        return status
    sys.stderr.write(
        f"tests.reaped: {len(left)} process(es) outlived the command by {GRACE_S:.0f} s "
        "(a fixture that does not stop what it started); killed now:\n"
    )
    sys.stderr.write("\n".join(_describe(pid) for pid in sorted(left)) + "\n")
    kill_descendants(timeout_s=10)
    return status or 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
