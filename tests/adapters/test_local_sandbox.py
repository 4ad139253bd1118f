"""The local adapter against real processes, under both isolation modes."""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import socket
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from cerver.adapters.base import ExecRequest, InstallRequest, SandboxRecord
from cerver.adapters.local import LocalAdapter, LocalSandboxData, runtimes
from cerver.config import Settings
from cerver.errors import BadRequest, NotFound, PathEscape, PayloadTooLarge

from .conftest import IS_ROOT, make_settings

pytestmark = pytest.mark.timeout(30)


def _processes_with(marker: str) -> list[int]:
    """Live (non-zombie or zombie) processes whose command line contains ``marker``."""
    found = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/cmdline", "rb") as fh:
                if marker.encode() in fh.read():
                    found.append(int(entry.name))
        except OSError:
            continue
    return found


INFRA_MARKER = b"cerver-sandbox-infra"  # in the argv of a sandbox's supervisor and interpreter
ARMED_MARKER = b"cerver-armed-shell"  # in the argv of the shell kept ready for the next run


def _is_infra(pid: str) -> bool:
    """The sandbox's own processes: supervisor, interpreter, bwrap, or an idle armed shell
    (a session leader; the processes of a run forked from it are not)."""
    with open(f"/proc/{pid}/cmdline", "rb") as fh:
        cmdline = fh.read()
    if INFRA_MARKER in cmdline:
        return True
    with open(f"/proc/{pid}/stat", "rb") as fh:
        raw = fh.read()
    session = int(raw[raw.rfind(b")") + 2 :].split()[3])
    return ARMED_MARKER in cmdline and session == int(pid)


def _processes_of_uid(uid: int, *, infra: bool = True) -> list[int]:
    """Processes running as ``uid``; without ``infra``, not the sandbox's own supervisor,
    interpreter (or the bwrap around them), only what user code started."""
    found = []
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                if entry.stat().st_uid != uid:
                    continue
                if not infra and _is_infra(entry.name):
                    continue
                found.append(int(entry.name))
            except (FileNotFoundError, ProcessLookupError):
                continue
    return found


async def _eventually_empty(probe: Callable[[], list[int]], timeout_s: float = 3.0) -> list[int]:
    deadline = time.monotonic() + timeout_s
    while (left := probe()) and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    return left


def _sleep_marker() -> str:
    """A unique `sleep` duration so our processes can be found by command line."""
    return f"{100 + secrets.randbelow(10_000)}.{secrets.randbelow(10**6):06d}"


async def run(adapter: LocalAdapter, record: SandboxRecord, code: str, lang: str = "shell", **kw):  # type: ignore[no-untyped-def]
    return await adapter.run(
        record, ExecRequest.model_validate({"code": code, "language": lang, **kw})
    )


# --------------------------------------------------------------------------- languages


async def test_record_describes_the_sandbox(sandbox: SandboxRecord, isolation: str) -> None:
    data = LocalSandboxData.model_validate(sandbox.data)
    assert sandbox.provider == "local"
    assert sandbox.sandbox_id.startswith("sbx_")
    assert sandbox.isolation == isolation == data.isolation
    assert Path(data.workspace).is_dir()
    assert data.dedicated_uid is IS_ROOT
    if IS_ROOT:
        assert data.uid >= 200_000
        assert Path(data.workspace).stat().st_uid == data.uid
        assert Path(data.workspace).stat().st_mode & 0o777 == 0o700
        assert Path(data.workspace).parent.stat().st_mode & 0o777 == 0o711


async def test_python_state_persists(adapter: LocalAdapter, sandbox: SandboxRecord) -> None:
    first = await run(
        adapter, sandbox, "import math\nx = 41\ndef f(v):\n    return v + 1", "python"
    )
    assert first.exit_code == 0, first.stderr
    second = await run(adapter, sandbox, "print(f(x), math.pi > 3)", "python")
    assert second.stdout == "42 True\n"
    assert second.exit_code == 0


async def test_python_sees_installed_packages_without_running_site(
    adapter: LocalAdapter, sandbox: SandboxRecord
) -> None:
    # Started with -S (no .pth code runs in the sandbox), yet the installation's
    # site-packages are importable, as with a plain `python`.
    python = runtimes.python()
    assert python is not None
    expected = list(runtimes.python_site_dirs(python.executable))
    assert expected, "the sandbox python has no site-packages directory to compare with"
    code = "import sys, json; print(json.dumps([sys.flags.no_site, sys.path]))"
    out = await run(adapter, sandbox, code, "python")
    assert out.exit_code == 0, out.stderr
    no_site, path = json.loads(out.stdout)
    assert no_site == 1
    assert all(d in path for d in expected), (expected, path)


def test_site_dirs_of_a_broken_python_are_none_and_said(caplog: pytest.LogCaptureFixture) -> None:
    for broken in ("/bin/false", "/nonexistent/python3"):
        assert runtimes.python_site_dirs(broken) == ()
        assert f"could not ask {broken} for its site-packages" in caplog.text


async def test_stdout_and_stderr_are_separate(
    adapter: LocalAdapter, sandbox: SandboxRecord
) -> None:
    shell = await run(adapter, sandbox, "echo out; echo err >&2")
    assert (shell.stdout, shell.stderr) == ("out\n", "err\n")
    py = await run(
        adapter, sandbox, "import sys\nprint('out')\nprint('err', file=sys.stderr)", "python"
    )
    assert (py.stdout, py.stderr) == ("out\n", "err\n")
    node = await run(adapter, sandbox, "console.log('out'); console.error('err')", "node")
    assert (node.stdout, node.stderr) == ("out\n", "err\n")


async def test_exit_codes(adapter: LocalAdapter, sandbox: SandboxRecord) -> None:
    assert (await run(adapter, sandbox, "exit 3")).exit_code == 3
    assert (await run(adapter, sandbox, "process.exit(4)", "node")).exit_code == 4
    assert (await run(adapter, sandbox, "import sys; sys.exit(5)", "python")).exit_code == 5
    ok = await run(adapter, sandbox, "true")
    assert ok.exit_code == 0 and not ok.timed_out and ok.error is None


async def test_python_exception_gives_traceback(
    adapter: LocalAdapter, sandbox: SandboxRecord
) -> None:
    result = await run(adapter, sandbox, "def boom():\n    1 / 0\nboom()", "python")
    assert result.exit_code == 1
    assert result.error is not None and "ZeroDivisionError" in result.error
    assert "Traceback" in result.stderr and "boom" in result.stderr
    after = await run(adapter, sandbox, "print('still alive')", "python")
    assert after.stdout == "still alive\n" and not after.interpreter_restarted


async def test_large_shell_code_goes_through_a_file(
    adapter: LocalAdapter, sandbox: SandboxRecord
) -> None:
    code = "x=1\n" + "# padding\n" * 20_000 + "echo done $x"
    result = await run(adapter, sandbox, code)
    assert result.stdout == "done 1\n", result.stderr


async def test_concurrent_shell_runs(adapter: LocalAdapter, sandbox: SandboxRecord) -> None:
    started = time.monotonic()
    results = await asyncio.gather(*(run(adapter, sandbox, "sleep 1; echo ok") for _ in range(3)))
    assert [r.stdout for r in results] == ["ok\n"] * 3
    assert time.monotonic() - started < 2.8


# --------------------------------------------------------------------------- timeouts, limits


async def test_timeout_kills_the_whole_tree(adapter: LocalAdapter, sandbox: SandboxRecord) -> None:
    marker = _sleep_marker()
    result = await run(adapter, sandbox, f"sleep {marker} & sleep {marker}", timeout_s=1)
    assert result.timed_out
    assert result.exit_code == 124
    assert "timed out" in result.stderr
    assert result.error is not None and "timed out" in result.error
    assert await _eventually_empty(lambda: _processes_with(marker)) == []


async def test_background_jobs_do_not_outlive_the_run(
    adapter: LocalAdapter, sandbox: SandboxRecord
) -> None:
    marker = _sleep_marker()
    result = await run(adapter, sandbox, f"sleep {marker} & echo started", timeout_s=10)
    assert result.stdout == "started\n" and not result.timed_out
    assert await _eventually_empty(lambda: _processes_with(marker)) == []


async def test_python_timeout_keeps_earlier_state(
    adapter: LocalAdapter, sandbox: SandboxRecord
) -> None:
    await run(adapter, sandbox, "kept = 'yes'", "python")
    result = await run(
        adapter, sandbox, "import time\nwhile True:\n    time.sleep(0.1)", "python", timeout_s=1
    )
    assert result.timed_out and result.exit_code == 124
    assert "timed out" in result.stderr and result.error and "timed out" in result.error
    assert not result.interpreter_restarted
    after = await run(adapter, sandbox, "print(kept)", "python")
    assert after.stdout == "yes\n"


async def test_python_unresponsive_interpreter_is_restarted(
    adapter: LocalAdapter, sandbox: SandboxRecord
) -> None:
    await run(adapter, sandbox, "lost = 1", "python")
    code = "import signal\nsignal.signal(signal.SIGINT, signal.SIG_IGN)\nwhile True:\n    pass"
    result = await run(adapter, sandbox, code, "python", timeout_s=1)
    assert result.timed_out and result.exit_code == 124
    assert result.interpreter_restarted
    assert "state was lost" in result.stderr
    after = await run(adapter, sandbox, "print('lost' in globals())", "python")
    assert after.stdout == "False\n"


@pytest.mark.parametrize("lang,code", [
    ("shell", "yes cerver"),
    ("python", "while True:\n    print('cerver' * 100)"),
])  # fmt: skip
async def test_infinite_output_is_truncated(
    adapter: LocalAdapter, sandbox: SandboxRecord, settings: Settings, lang: str, code: str
) -> None:
    started = time.monotonic()
    result = await run(adapter, sandbox, code, lang, timeout_s=3)
    assert time.monotonic() - started < 8
    assert result.timed_out and result.truncated
    assert "[cerver: output truncated," in result.stdout
    assert len(result.stdout.encode()) < settings.output_limit_bytes + 200


async def test_fork_bomb_is_contained(adapter: LocalAdapter, sandbox: SandboxRecord) -> None:
    data = LocalSandboxData.model_validate(sandbox.data)
    marker = _sleep_marker()
    result = await run(adapter, sandbox, f"sleep {marker} & :(){{ :|:& }};:", timeout_s=3)
    assert result.duration_ms < 6000
    assert await _eventually_empty(lambda: _processes_with(marker)) == []
    if IS_ROOT:
        assert await _eventually_empty(lambda: _processes_of_uid(data.uid, infra=False), 5) == []
    # the sandbox still works afterwards
    assert (await run(adapter, sandbox, "echo fine")).stdout == "fine\n"


async def test_memory_limit(adapter: LocalAdapter, sandbox: SandboxRecord) -> None:
    result = await run(adapter, sandbox, "x = bytearray(4 * 1024 ** 3)", "python")
    assert result.exit_code == 1 and result.error and "MemoryError" in result.error


# --------------------------------------------------------------------------- confinement


async def test_no_network_under_bwrap(
    adapter: LocalAdapter, new_sandbox: Callable[..., object], isolation: str
) -> None:
    if isolation != "bwrap":
        pytest.skip("rlimits mode does not isolate the network (documented in docs/sandbox.md)")
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        port = server.getsockname()[1]
        code = (
            "import socket\ntry:\n"
            f"    socket.create_connection(('127.0.0.1', {port}), timeout=2); print('connected')\n"
            "except OSError as exc:\n    print('refused', exc)"
        )
        closed = await new_sandbox()  # type: ignore[misc]
        assert (await run(adapter, closed, code, "python")).stdout.startswith("refused")
        # network on is its own namespace (pasta), not the host's: see tests/security
        opened = await new_sandbox(network=True)  # type: ignore[misc]
        assert (await run(adapter, opened, code, "python")).stdout.startswith("refused")


async def test_cannot_read_server_data_or_other_sandboxes(
    adapter: LocalAdapter, new_sandbox: Callable[..., object], settings: Settings, isolation: str
) -> None:
    if isolation == "rlimits" and not IS_ROOT:
        pytest.skip("rlimits mode without root runs as the server's own user (documented)")
    db = settings.home / "cerver.db"
    db.write_text("secret-db-content")
    os.chmod(db, 0o644)  # even a world-readable file must not be reachable
    mine = await new_sandbox()  # type: ignore[misc]
    other = await new_sandbox()  # type: ignore[misc]
    await adapter.write_file(other, "private.txt", b"other-secret")
    other_file = Path(LocalSandboxData.model_validate(other.data).workspace) / "private.txt"
    for target in (db, other_file, settings.sandboxes_dir / f"{other.sandbox_id}.state.json"):
        result = await run(adapter, mine, f"cat {target}")
        assert result.exit_code != 0, target
        assert "secret" not in result.stdout
    listing = await run(adapter, mine, "ls -a /root /home 2>&1; ls -a " + str(settings.home))
    assert ".bashrc" not in listing.stdout and "cerver.db" not in listing.stdout


async def test_runs_as_unprivileged_uid(adapter: LocalAdapter, sandbox: SandboxRecord) -> None:
    if not IS_ROOT:
        pytest.skip("only meaningful when the server runs as root")
    data = LocalSandboxData.model_validate(sandbox.data)
    result = await run(adapter, sandbox, "id -u; id -g; id -G")
    assert result.stdout.split() == [str(data.uid), str(data.gid), str(data.gid)]
    py = await run(adapter, sandbox, "import os; print(os.getuid())", "python")
    assert py.stdout == f"{data.uid}\n"


async def test_cannot_signal_the_server(adapter: LocalAdapter, sandbox: SandboxRecord) -> None:
    result = await run(adapter, sandbox, f"kill -0 {os.getpid()}")
    assert result.exit_code != 0


async def test_environment_is_scrubbed(
    adapter: LocalAdapter, new_sandbox: Callable[..., object], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CERVER_SECRET", "hunter2")
    record = await new_sandbox(env={"FROM_SPEC": "spec"})  # type: ignore[misc]
    result = await run(adapter, record, "env", env={"FROM_REQUEST": "req"})
    assert "hunter2" not in result.stdout and "CERVER_" not in result.stdout
    assert "FROM_SPEC=spec" in result.stdout and "FROM_REQUEST=req" in result.stdout
    py = await run(adapter, record, "import os; print(sorted(os.environ))", "python")
    assert "CERVER_SECRET" not in py.stdout and "FROM_SPEC" in py.stdout


# --------------------------------------------------------------------------- files


async def test_files_round_trip_binary(adapter: LocalAdapter, sandbox: SandboxRecord) -> None:
    blob = bytes(range(256)) * 16
    await adapter.write_file(sandbox, "dir/sub/blob.bin", blob)
    assert await adapter.read_file(sandbox, "dir/sub/blob.bin") == blob
    result = await run(adapter, sandbox, "wc -c < dir/sub/blob.bin")
    assert result.stdout.strip() == str(len(blob))
    await run(adapter, sandbox, "printf 'made inside' > inside.txt")
    assert await adapter.read_file(sandbox, "inside.txt") == b"made inside"
    if IS_ROOT:
        data = LocalSandboxData.model_validate(sandbox.data)
        path = Path(data.workspace) / "dir" / "sub" / "blob.bin"
        assert path.stat().st_uid == data.uid
        assert path.parent.stat().st_uid == data.uid


async def test_path_escapes_are_refused(adapter: LocalAdapter, sandbox: SandboxRecord) -> None:
    await run(adapter, sandbox, "ln -s /etc etc_link; ln -s /etc/passwd pw; ln -s ../.. up")
    for path in ("../x", "a/../../x", "/etc/passwd", "etc_link/passwd", "pw", "up/x"):
        with pytest.raises(PathEscape) as info:
            await adapter.read_file(sandbox, path)
        assert path in info.value.message
    with pytest.raises(PathEscape):
        await adapter.write_file(sandbox, "etc_link/evil", b"x")
    with pytest.raises(PathEscape):
        await adapter.write_file(sandbox, "pw", b"x")
    assert b"root" in Path("/etc/passwd").read_bytes()


async def test_missing_and_too_large_files(
    adapter: LocalAdapter, sandbox: SandboxRecord, settings: Settings
) -> None:
    with pytest.raises(NotFound):
        await adapter.read_file(sandbox, "nope.txt")
    with pytest.raises(PayloadTooLarge):
        await adapter.write_file(sandbox, "big.bin", b"x" * (settings.max_file_bytes + 1))
    await run(adapter, sandbox, f"head -c {settings.max_file_bytes + 10} /dev/zero > big.bin")
    with pytest.raises(PayloadTooLarge):
        await adapter.read_file(sandbox, "big.bin")


# --------------------------------------------------------------------------- streaming


async def test_stream_is_incremental(adapter: LocalAdapter, sandbox: SandboxRecord) -> None:
    code = "import time\nprint('one', flush=True)\ntime.sleep(0.5)\nprint('two')"
    seen: dict[str, float] = {}
    events = []
    async for event in adapter.run_stream(sandbox, ExecRequest(code=code, language="python")):
        events.append(event)
        for word in ("one", "two"):
            if word in event.data:
                seen.setdefault(word, time.monotonic())
    assert events[-1].type == "exit" and events[-1].result is not None
    assert events[-1].result.stdout == "one\ntwo\n"
    assert "".join(e.data for e in events if e.type == "stdout") == "one\ntwo\n"
    assert seen["two"] - seen["one"] > 0.3


@pytest.mark.parametrize("lang", ["shell", "python"])
async def test_stream_early_close_kills_the_process(
    adapter: LocalAdapter, sandbox: SandboxRecord, lang: str
) -> None:
    marker = _sleep_marker()
    code = f"echo start; sleep {marker}"
    if lang == "python":
        code = (
            f"import subprocess\nprint('start', flush=True)\nsubprocess.run(['sleep', '{marker}'])"
        )
    request = ExecRequest.model_validate({"code": code, "language": lang, "timeout_s": 20})
    stream = adapter.run_stream(sandbox, request)
    first = await anext(stream)  # type: ignore[arg-type]
    assert first.type == "stdout" and "start" in first.data
    deadline = time.monotonic() + 5
    while not _processes_with(marker) and time.monotonic() < deadline:
        await asyncio.sleep(0.02)
    assert _processes_with(marker)
    await stream.aclose()  # type: ignore[attr-defined]
    assert await _eventually_empty(lambda: _processes_with(marker)) == []
    if lang == "python":
        assert (await run(adapter, sandbox, "print('ok')", "python")).stdout == "ok\n"


# --------------------------------------------------------------------------- packages, lifecycle


@pytest.mark.parametrize("spec", [
    "-e .", "--index-url=http://evil", "https://x.y/pkg.whl", "./local", "/abs/path",
    "six; rm -rf /", "six && id", "six|id", "six $(id)", "six six", "", "git+https://x/y",
])  # fmt: skip
async def test_invalid_package_specs_are_refused(
    adapter: LocalAdapter, sandbox: SandboxRecord, spec: str
) -> None:
    with pytest.raises(BadRequest) as info:
        await adapter.install_package(sandbox, InstallRequest(package=spec))
    assert "package spec" in info.value.message or "package" in info.value.message


@pytest.mark.network
@pytest.mark.timeout(180)
async def test_pip_install_is_importable_in_running_interpreter(
    adapter: LocalAdapter, sandbox: SandboxRecord
) -> None:
    # a tiny pure-python package the server's own Python does not have (six ships with it)
    probe = "try:\n    import tomli_w\nexcept ImportError:\n    print('absent')"
    assert (await run(adapter, sandbox, probe, "python")).stdout == "absent\n"
    installed = await adapter.install_package(
        sandbox, InstallRequest(package="tomli-w==1.0.0", timeout_s=150)
    )
    assert installed.success, installed.output
    after = await run(adapter, sandbox, "import tomli_w; print(tomli_w.dumps({'a': 1}))", "python")
    assert after.stdout == "a = 1\n\n", after.stderr


async def test_failed_install_is_reported_not_raised(
    adapter: LocalAdapter, sandbox: SandboxRecord
) -> None:
    result = await adapter.install_package(
        sandbox,
        InstallRequest(package="cerver-no-such-package-" + secrets.token_hex(4), timeout_s=60),
    )
    assert result.success is False and result.output


async def test_reconnect_after_restart_and_delete(
    adapter: LocalAdapter, sandbox: SandboxRecord, settings: Settings
) -> None:
    await adapter.write_file(sandbox, "keep.txt", b"kept")
    await adapter.set_state(sandbox, {"k": "v"})
    await adapter.close()
    fresh = LocalAdapter(settings)
    record = SandboxRecord.model_validate_json(sandbox.model_dump_json())
    assert await fresh.is_alive(record)
    assert (await run(fresh, record, "cat keep.txt")).stdout == "kept"
    state = await fresh.get_state(record)
    assert state.status == "running" and state.user_state == {"k": "v"}
    await fresh.delete_sandbox(record)
    await fresh.delete_sandbox(record)
    assert not await fresh.is_alive(record)
    assert (await fresh.get_state(record)).status == "lost"
    assert not (settings.sandboxes_dir / f"{record.sandbox_id}.state.json").exists()
    await fresh.close()


async def test_state_is_outside_the_workspace_and_bounded(
    adapter: LocalAdapter, sandbox: SandboxRecord, settings: Settings
) -> None:
    await adapter.set_state(sandbox, {"a": 1})
    tamper = await run(
        adapter, sandbox, f"echo '{{}}' > {settings.sandboxes_dir}/{sandbox.sandbox_id}.state.json"
    )
    assert tamper.exit_code != 0
    assert (await adapter.get_state(sandbox)).user_state == {"a": 1}
    with pytest.raises(BadRequest):
        await adapter.set_state(sandbox, {"big": "x" * 70_000})


async def test_unknown_option_is_refused(home: Path) -> None:
    adapter = LocalAdapter(make_settings(home, "rlimits"))
    from cerver.adapters.base import SandboxSpec

    with pytest.raises(BadRequest):
        await adapter.create_sandbox(SandboxSpec(account_id="a", options={"nope": 1}))
