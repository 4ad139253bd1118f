"""A sandbox supervisor that fails to start says how (issue 16, burst): a burst of 100 lost
one first command to "the supervisor exited at start" with nothing else to go on. The
error now carries the exit status, or the deadline when it never answered; what the
process wrote on stderr goes to the server's log only (bwrap names host paths)."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import pytest

from cerver.adapters.local import host_supervisor
from cerver.adapters.local.host_supervisor import ShellTemplate, Supervisor
from cerver.adapters.local.isolation import ChildSetup, Launch
from cerver.adapters.local.layout import Limits
from cerver.errors import ProviderError

pytestmark = pytest.mark.timeout(60)


def supervisor(tmp_path: Path, code: str) -> Supervisor:
    workspace = str(tmp_path)

    def build(_argv: list[str]) -> Launch:
        setup = ChildSetup(limits=Limits(cpu_s=60, memory_mb=512, fsize_mb=16, nproc=64))
        argv = [sys.executable, "-c", code]
        return Launch(argv, {"PATH": "/usr/bin:/bin"}, workspace, setup, workspace)

    return Supervisor(sys.executable, build, ShellTemplate("/bin/bash", {}, workspace))


async def test_an_exit_at_start_says_its_status_and_logs_its_stderr(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    code = "import sys; sys.stderr.write('bwrap: no room for a namespace\\n'); sys.exit(3)"
    sup = supervisor(tmp_path, code)
    with caplog.at_level(logging.WARNING), pytest.raises(ProviderError) as caught:
        await sup.ensure_started()
    assert "exited at start (exit status 3)" in caught.value.message
    assert caught.value.details == {"exit_status": 3}
    assert "no room for a namespace" not in caught.value.message  # host detail: log only
    assert "bwrap: no room for a namespace" in caplog.text
    assert not sup.alive


async def test_no_answer_in_time_names_the_deadline(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(host_supervisor, "START_TIMEOUT_S", 0.5)
    sup = supervisor(tmp_path, "import time; time.sleep(30)")
    with pytest.raises(ProviderError, match=r"did not start: no answer within 0.5s$"):
        await sup.ensure_started()
    assert not sup.alive
