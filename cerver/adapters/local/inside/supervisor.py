"""The supervisor, inside the sandbox (cerver-sandbox-infra): one long-lived process per sandbox.

Stdlib only; started once per sandbox as ``python -u -c <this source>`` through the
sandbox's confinement (bwrap and/or mount hiding, uid drop, rlimits), so that cost is paid
once, not per run. It spawns each run as its own session (process group), relays the
run's output, reports its exit and kills its whole group on request or when its main
process exits (background jobs do not outlive a run). It is a child subreaper, so
orphans of runs are reparented to it and reaped here.

Frames, both ways: kind (1 byte), channel (u32), payload length (u32), payload; host to
supervisor on fd 0, supervisor to host on fd 1.

host -> supervisor
    ``A`` arm shells: JSON ``{"bash", "env", "cwd"}``, the sandbox's base environment.
    ``R`` run: JSON ``{"argv", "env", "cwd", "stdin": bool, "ctl": bool, "limit": int}``;
    an argv item ``{ctl_fd}`` is replaced by the fd number of the run's control pipe.
    Or a shell run: ``{"shell": {"code", "env", "cwd"}, "limit"}``, given to an armed
    shell (below); ``env`` is what the run adds to the base environment.
    ``I`` bytes for the run's stdin; ``J`` close its stdin.
    ``K`` kill the run's process group (until it is empty).
    ``D`` done: kill what is left of the run and forget it.
supervisor -> host
    ``H`` hello ``{"pid"}``; ``S`` started ``{"pid"}``; ``F`` failed to start ``{"error"}``;
    ``O`` / ``E`` / ``C`` stdout / stderr / control bytes (at most ``limit`` bytes per
    stream when ``limit`` > 0; the rest is read and counted, not sent);
    ``Z`` a stream closed ``{"stream", "dropped"}``; ``X`` exit ``{"returncode"}``
    (negative: killed by that signal), sent after the run's group was emptied.

Armed shells: so that a shell run starts no process, one ``bash`` is kept started ahead
of time (its own session, the base environment), blocked reading one byte from its
stdin. A shell run writes its environment additions, cwd and code into the shell's
memfd (seekable, so bash reads it buffered) and sends the byte; ``ARM_BOOT`` exports the
additions, changes directory and ``eval``s the code, which then behaves as under
``bash -c`` (``$0`` is ``bash``, no positional parameters, stdin ``/dev/null``). A new
shell is armed after a run's exit is reported or once the supervisor has been idle for
``ARM_IDLE_S``; runs that find none armed (concurrent ones) start one the same way, at
once.
"""

import contextlib
import ctypes
import json
import os
import selectors
import signal
import struct
import subprocess
import sys
import time

HEADER = struct.Struct("!cII")
READ_CHUNK = 64 * 1024
KILL_WAIT_S = 3.0
PR_SET_CHILD_SUBREAPER = 36
ARM_IDLE_S = 0.005
ARM_BOOT = (
    ': cerver-armed-shell; IFS= read -r -n 1 __g || exit 125; exec </dev/null; __m="$1"; shift; '
    'while IFS= read -r -d "" __k <&"$__m" && [ -n "$__k" ]; do '
    'IFS= read -r -d "" __v <&"$__m"; export "$__k=$__v" 2>/dev/null; done; '
    'IFS= read -r -d "" __d <&"$__m"; IFS= read -r -d "" __c <&"$__m"; '
    'eval "exec $__m<&-"; unset __g __m __k __v; cd -- "$__d" || exit 126; unset __d; '
    'eval "unset __c; $__c"'
)
STREAMS = {b"O": "stdout", b"E": "stderr", b"C": "ctl"}

_sel = selectors.DefaultSelector()
_runs: "dict[int, _Run]" = {}  # channel -> run
_leaders: "dict[int, _Run]" = {}  # pid of a run's main process -> run
_shell: dict = {}  # the arming template (``A``)
_armed: "list[_Armed]" = []  # at most one
_need_arm = [False]


class _Armed:
    def __init__(self, proc, out_r, err_r, go_w, memfd):
        self.proc = proc
        self.out_r = out_r
        self.err_r = err_r
        self.go_w = go_w
        self.memfd = memfd
        self.dead = False

    def discard(self):
        with contextlib.suppress(OSError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        for fd in (self.out_r, self.err_r, self.go_w, self.memfd):
            with contextlib.suppress(OSError):
                os.close(fd)


class _Run:
    def __init__(self, chan, proc, limit, fds, stdin_fd):
        self.chan = chan
        self.proc = proc
        self.limit = limit
        self.open = fds  # fd -> stream kind
        self.stdin_fd = stdin_fd
        self.sent = {kind: 0 for kind in STREAMS}
        self.dropped = {kind: 0 for kind in STREAMS}
        self.exited = False
        self.reported = False


def _send(kind, chan, payload=b""):
    data = HEADER.pack(kind, chan, len(payload)) + payload
    while data:
        data = data[os.write(1, data) :]


def _send_json(kind, chan, obj):
    _send(kind, chan, json.dumps(obj).encode())


def _reap():
    """Reap every zombie child; report the runs whose main process exited."""
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        for armed in _armed:
            if armed.proc.pid == pid:
                armed.dead = True
        run = _leaders.pop(pid, None)
        if run is not None:
            run.proc.returncode = os.waitstatus_to_exitcode(status)
            run.exited = True


def _kill_group(pgid):
    deadline = time.monotonic() + KILL_WAIT_S
    while time.monotonic() < deadline:
        try:
            os.killpg(pgid, signal.SIGKILL)
        except ProcessLookupError:
            return
        except PermissionError:
            return
        _reap()
        time.sleep(0.002)


def _close_stdin(run):
    if run.stdin_fd is not None:
        with contextlib.suppress(OSError):
            os.close(run.stdin_fd)
        run.stdin_fd = None


def _forget(run):
    _kill_group(run.proc.pid)
    for fd in list(run.open):
        _sel.unregister(fd)
        os.close(fd)
    run.open.clear()
    _close_stdin(run)
    _runs.pop(run.chan, None)
    _leaders.pop(run.proc.pid, None)


def _maybe_done(run):
    if run.reported and not run.open:
        _runs.pop(run.chan, None)


def _report_exits():
    _reap()
    for run in list(_runs.values()):
        if run.exited and not run.reported:
            run.reported = True
            _kill_group(run.proc.pid)  # what the run left behind in its group
            _close_stdin(run)
            _send_json(b"X", run.chan, {"returncode": run.proc.returncode})
            _maybe_done(run)
            _rearm()  # between runs, so that the next one finds a shell ready


def _start(chan, msg):
    pipes = []
    try:
        out_r, out_w = os.pipe()
        err_r, err_w = os.pipe()
        pipes += [out_r, out_w, err_r, err_w]
        fds = {out_r: b"O", err_r: b"E"}
        child_fds = [out_w, err_w]
        stdin = subprocess.DEVNULL
        stdin_fd = None
        argv = list(msg["argv"])
        pass_fds: tuple[int, ...] = ()
        if msg.get("stdin"):
            in_r, in_w = os.pipe()
            pipes += [in_r, in_w]
            stdin, stdin_fd = in_r, in_w
            child_fds.append(in_r)
        if msg.get("ctl"):
            ctl_r, ctl_w = os.pipe()
            pipes += [ctl_r, ctl_w]
            fds[ctl_r] = b"C"
            child_fds.append(ctl_w)
            pass_fds = (ctl_w,)
            argv = [str(ctl_w) if item == "{ctl_fd}" else item for item in argv]
        proc = subprocess.Popen(
            argv,
            stdin=stdin,
            stdout=out_w,
            stderr=err_w,
            env=msg["env"],
            cwd=msg["cwd"],
            start_new_session=True,
            pass_fds=pass_fds,
        )
    except (OSError, subprocess.SubprocessError, ValueError) as exc:
        for fd in pipes:
            with contextlib.suppress(OSError):
                os.close(fd)
        _send_json(b"F", chan, {"error": f"{type(exc).__name__}: {exc}"})
        return
    for fd in child_fds:
        os.close(fd)
    if stdin_fd is not None:
        os.set_blocking(stdin_fd, True)
    run = _Run(chan, proc, int(msg.get("limit") or 0), fds, stdin_fd)
    _runs[chan] = run
    _leaders[proc.pid] = run
    for fd in fds:
        _sel.register(fd, selectors.EVENT_READ, ("stream", run))
    _send_json(b"S", chan, {"pid": proc.pid})


def _arm():
    """Start a shell that waits for its program; None if that fails (reported by the run)."""
    fds = []
    try:
        out_r, out_w = os.pipe()
        err_r, err_w = os.pipe()
        go_r, go_w = os.pipe()
        fds += [out_r, out_w, err_r, err_w, go_r, go_w]
        memfd = os.memfd_create("cerver-run")
        fds.append(memfd)
        proc = subprocess.Popen(
            [_shell["bash"], "-c", ARM_BOOT, "bash", str(memfd)],
            stdin=go_r,
            stdout=out_w,
            stderr=err_w,
            env=_shell["env"],
            cwd=_shell["cwd"],
            start_new_session=True,
            pass_fds=(memfd,),
        )
    except (OSError, subprocess.SubprocessError, ValueError, KeyError) as exc:
        for fd in fds:
            with contextlib.suppress(OSError):
                os.close(fd)
        return str(exc)
    for fd in (out_w, err_w, go_r):
        os.close(fd)
    return _Armed(proc, out_r, err_r, go_w, memfd)


def _rearm():
    if _need_arm[0] and _shell and not _armed:
        _need_arm[0] = False
        armed = _arm()
        if not isinstance(armed, str):
            _armed.append(armed)


def _start_shell(chan, msg):
    shell = msg["shell"]
    armed = _armed.pop() if _armed else None
    if armed is not None and armed.dead:
        armed.discard()
        armed = None
    if armed is None:
        armed = _arm()
        if isinstance(armed, str):
            _send_json(b"F", chan, {"error": armed})
            return
    _need_arm[0] = True
    parts = []
    for key, value in shell["env"].items():
        parts += [key, value]
    parts += ["", shell["cwd"], shell["code"], ""]
    data = "\0".join(parts).encode()
    try:
        while data:
            data = data[os.write(armed.memfd, data) :]
        os.lseek(armed.memfd, 0, os.SEEK_SET)
        os.write(armed.go_w, b"g")
    except OSError as exc:
        armed.discard()
        _send_json(b"F", chan, {"error": f"the armed shell is gone: {exc}"})
        return
    os.close(armed.memfd)
    os.close(armed.go_w)
    fds = {armed.out_r: b"O", armed.err_r: b"E"}
    run = _Run(chan, armed.proc, int(msg.get("limit") or 0), fds, None)
    _runs[chan] = run
    _leaders[armed.proc.pid] = run
    for fd in fds:
        _sel.register(fd, selectors.EVENT_READ, ("stream", run))
    if armed.dead:  # it died while armed (reaped already): report it now
        _leaders.pop(armed.proc.pid, None)
        armed.proc.returncode = -signal.SIGKILL
        run.exited = True
    _send_json(b"S", chan, {"pid": armed.proc.pid})


def _on_output(fd, run):
    kind = run.open[fd]
    try:
        data = os.read(fd, READ_CHUNK)
    except OSError:
        data = b""
    if not data:
        _sel.unregister(fd)
        os.close(fd)
        del run.open[fd]
        _send_json(b"Z", run.chan, {"stream": STREAMS[kind], "dropped": run.dropped[kind]})
        _maybe_done(run)
        return
    if run.limit > 0:
        room = max(run.limit - run.sent[kind], 0)
        if len(data) > room:
            run.dropped[kind] += len(data) - room
            data = data[:room]
    if data:
        run.sent[kind] += len(data)
        _send(kind, run.chan, data)


def _on_frame(kind, chan, payload):
    run = _runs.get(chan)
    if kind == b"R":
        msg = json.loads(payload)
        if "shell" in msg:
            _start_shell(chan, msg)
        else:
            _start(chan, msg)
    elif kind == b"A":
        _shell.update(json.loads(payload))
        _need_arm[0] = True
    elif run is None:
        return
    elif kind == b"I" and run.stdin_fd is not None:
        try:
            os.write(run.stdin_fd, payload)
        except OSError:
            _close_stdin(run)
    elif kind == b"J":
        _close_stdin(run)
    elif kind == b"K":
        _kill_group(run.proc.pid)
    elif kind == b"D":
        _forget(run)


def _shutdown():
    for run in list(_runs.values()):
        _forget(run)
    for armed in _armed:
        armed.discard()
    os._exit(0)


def main():
    os.set_inheritable(0, False)
    os.set_inheritable(1, False)
    with contextlib.suppress(Exception):
        ctypes.CDLL(None).prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_w, False)
    os.set_blocking(wake_r, False)
    signal.set_wakeup_fd(wake_w, warn_on_full_buffer=False)
    signal.signal(signal.SIGCHLD, lambda signum, frame: None)
    _sel.register(wake_r, selectors.EVENT_READ, ("wake", None))
    _sel.register(0, selectors.EVENT_READ, ("host", None))
    _send_json(b"H", 0, {"pid": os.getpid()})
    inbox = b""
    while True:
        events = _sel.select(ARM_IDLE_S if _need_arm[0] else None)
        if not events:
            _rearm()
        for key, _ in events:
            what, run = key.data
            if what == "wake":
                with contextlib.suppress(BlockingIOError):
                    while os.read(wake_r, 4096):
                        pass
            elif what == "host":
                data = os.read(0, READ_CHUNK)
                if not data:
                    _shutdown()
                inbox += data
                while len(inbox) >= HEADER.size:
                    kind, chan, size = HEADER.unpack_from(inbox)
                    if len(inbox) < HEADER.size + size:
                        break
                    payload = inbox[HEADER.size : HEADER.size + size]
                    inbox = inbox[HEADER.size + size :]
                    _on_frame(kind, chan, payload)
            elif run.chan in _runs and key.fd in run.open:
                _on_output(key.fd, run)
        _report_exits()
        sys.stderr.flush()


if __name__ == "__main__":
    main()
