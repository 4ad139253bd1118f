"""The persistent Python interpreter that runs inside a sandbox (cerver-sandbox-infra).

Stdlib only.

Started as ``python -S -u -c <this source> <ctl_out_fd> [site-packages dirs...]``.
Commands arrive as JSON lines on stdin, which the driver moves to a private descriptor (user
code and its subprocesses get /dev/null); results leave as JSON lines on ``ctl_out_fd``.
User output goes to the real fds 1 and 2, followed by a per-run token on each so the host
knows a run's output is complete. One globals dict survives between runs.
``{"op": "interrupt"}`` raises KeyboardInterrupt in the running cell only (never between cells).
"""

import contextlib
import importlib
import json
import linecache
import os
import queue
import signal
import sys
import threading
import traceback

CTL = {"in": -1, "out": -1}  # the private command and result descriptors (``_take_fds``)
_commands: "queue.Queue[dict | None]" = queue.Queue()
_armed = [False]
_interrupted = [False]
_namespace = {"__name__": "__main__", "__builtins__": __builtins__}


def _take_fds():
    """Take the control fds; user code and its subprocesses get /dev/null as stdin."""
    CTL["out"] = int(sys.argv[1])
    # Started with -S: the installation's site-packages come as arguments (no .pth files run).
    sys.path.extend(d for d in sys.argv[2:] if d not in sys.path)
    del sys.argv[1:]
    CTL["in"] = os.dup(0)
    os.set_inheritable(CTL["in"], False)
    os.set_inheritable(CTL["out"], False)
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.close(devnull)
    sys.stdin = open(os.devnull)  # noqa: SIM115


def _on_sigint(signum, frame):
    if _armed[0]:
        raise KeyboardInterrupt


def _read_commands():
    with os.fdopen(CTL["in"], "rb") as stream:
        for line in stream:
            msg = json.loads(line)
            if msg.get("op") == "interrupt":
                if _armed[0]:
                    _interrupted[0] = True
                    os.kill(os.getpid(), signal.SIGINT)
            else:
                _commands.put(msg)
    _commands.put(None)


def _send(obj):
    data = (json.dumps(obj) + "\n").encode()
    while data:
        data = data[os.write(CTL["out"], data) :]


def _run_cell(msg, counter):
    filename = f"<cell {counter}>"
    source = msg["code"]
    linecache.cache[filename] = (len(source), None, source.splitlines(True), filename)
    try:
        code = compile(source, filename, "exec")
        _armed[0] = True
        exec(code, _namespace)
    except SystemExit as exc:
        _armed[0] = False
        if exc.code is None or isinstance(exc.code, int):
            return exc.code or 0, None
        sys.stderr.write(f"{exc.code}\n")
        return 1, None
    except BaseException as exc:
        _armed[0] = False
        tb = exc.__traceback__
        text = "".join(traceback.format_exception(type(exc), exc, tb.tb_next if tb else None))
        sys.stderr.write(text)
        return (130 if isinstance(exc, KeyboardInterrupt) else 1), text
    finally:
        _armed[0] = False
    return 0, None


def _kill_descendants():
    """After an interrupted cell: nothing it started may outlive it."""
    children: dict[int, list[int]] = {}
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                with open(f"/proc/{name}/stat", "rb") as fh:
                    raw = fh.read()
            except OSError:
                continue
            ppid = int(raw[raw.rfind(b")") + 2 :].split()[1])
            children.setdefault(ppid, []).append(int(name))
    todo, found = [os.getpid()], []
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    for pid in found:
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGKILL)
    for pid in found:
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, 0)


def _flush():
    for stream in (sys.stdout, sys.stderr):
        # user code may have closed or replaced it
        with contextlib.suppress(Exception):
            stream.flush()


def _mark(fd, token):
    try:
        os.write(fd, token)
        return True
    except OSError:
        return False


def main():
    _take_fds()
    signal.signal(signal.SIGINT, _on_sigint)
    threading.Thread(target=_read_commands, daemon=True).start()
    _send({"ready": True, "pid": os.getpid()})
    counter = 0
    while True:
        try:
            msg = _commands.get()
        except KeyboardInterrupt:
            continue
        if msg is None:
            _flush()
            os._exit(0)
        counter += 1
        try:
            for entry in msg.get("path", []):
                if entry not in sys.path:
                    sys.path.append(entry)
            importlib.invalidate_caches()
            os.environ.update(msg.get("env") or {})
            if msg.get("cwd"):
                os.chdir(msg["cwd"])
            exit_code, error = _run_cell(msg, counter)
        except KeyboardInterrupt:
            exit_code, error = 130, "KeyboardInterrupt"
        if _interrupted[0]:
            _interrupted[0] = False
            _kill_descendants()
        _flush()
        token = msg["token"].encode()
        marked = [_mark(1, token), _mark(2, token)]
        _send({"token": msg["token"], "exit_code": exit_code, "error": error, "marked": marked})


if __name__ == "__main__":
    main()
