"""Cerver's lines in the HAProxy config Ray Serve writes, and the launcher that adds them.

Ray renders HAProxy's config from a template with no place for directives of our own
(Ray 2.60: ``ray/serve/_private/haproxy_templates.py``), but it lets the operator choose
the HAProxy binary (``RAY_SERVE_HAPROXY_BINARY_PATH``). ``cerver/serve_app/ingress.py``
points that at a small script which runs this file: it edits the config Ray just wrote
(in place, under Ray's own lock file, so the command line Ray checks stays the same) and
then *becomes* the real HAProxy (``exec``: same pid, same arguments).

The lines, in ``frontend http_frontend``:

- ``option forwardfor``: HAProxy appends ``X-Forwarded-For: <the client's address>`` to
  every request it forwards, so the per-client rate limits see the client, not HAProxy
  (``cerver/serve_app/ratelimit.py`` believes that last hop only from the local HAProxy).

If Ray's config no longer has that frontend, the launcher refuses to start HAProxy and says
why (Serve then fails to start its proxy): a front door silently without these lines would
rate-limit every client as one.

HAProxy also dies with the Ray process that started it (``PR_SET_PDEATHSIG``, kept across
the ``exec``). Ray stops it on a clean shutdown, but a proxy actor killed outright (its
node lost, its raylet killed, SIGKILL) left HAProxy running, still bound to the server's
port with ``SO_REUSEPORT``: the next server on that port shared its connections with a
front door whose replicas were gone (found by CI: HAProxy processes outliving the suite).

Stdlib only, run with ``python -I -S``: it runs on every HAProxy start and reload.
"""

from __future__ import annotations

import ctypes
import fcntl
import itertools
import os
import signal
import sys

FRONTEND = "frontend http_frontend"
MARK = "# cerver (cerver/serve_app/haproxy_lines.py):"
LINES = ("option forwardfor",)


class ConfigChanged(RuntimeError):
    """Ray's HAProxy config is not shaped as this module expects."""


def with_cerver_lines(config: str) -> str:
    """``config`` with Cerver's lines at the top of ``frontend http_frontend`` (once)."""
    if MARK in config:
        return config
    lines = config.splitlines(keepends=True)
    at = [i for i, line in enumerate(lines) if line.strip() == FRONTEND]
    if len(at) != 1:
        raise ConfigChanged(
            f"expected one '{FRONTEND}' section in Ray Serve's HAProxy config, found "
            f"{len(at)}; Cerver cannot add 'option forwardfor' (the client address for "
            "rate limits). Set CERVER_SERVE_HAPROXY=0 to use Serve's proxy instead."
        )
    ours = [f"    {MARK}\n"] + [f"    {line}\n" for line in LINES]
    return "".join(lines[: at[0] + 1] + ours + lines[at[0] + 1 :])


def config_path(argv: list[str]) -> str:
    """The ``-f`` argument of an HAProxy command line."""
    for flag, value in itertools.pairwise(argv):
        if flag == "-f":
            return value
    raise ConfigChanged(f"no -f CONFIG in HAProxy's arguments {argv}")


def edit_in_place(path: str) -> None:
    """Add the lines to the file at ``path``, holding the lock Ray takes to write it."""
    with open(path + ".lock", "w") as lock:
        fcntl.flock(lock.fileno(), fcntl.LOCK_EX)
        with open(path) as f:
            config = f.read()
        edited = with_cerver_lines(config)
        if edited != config:
            with open(path, "w") as f:
                f.write(edited)


PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


def die_with_parent() -> None:
    """SIGTERM (HAProxy's hard stop: its ports are freed at once) when the process that
    started us exits; exit now if it already has."""
    parent = os.getppid()
    prctl = getattr(ctypes.CDLL(None, use_errno=True), "prctl", None)
    if prctl is None:  # not Linux: nothing to arm
        return
    if prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0) != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, f"prctl(PR_SET_PDEATHSIG): {os.strerror(errno)}")
    if os.getppid() != parent:  # it died before the signal was armed
        raise SystemExit(0)


def main(argv: list[str]) -> None:
    """``haproxy_lines.py REAL_HAPROXY ARGS...``: edit the config, arm the parent-death
    signal, then exec HAProxy."""
    binary, args = argv[0], argv[1:]
    die_with_parent()
    try:
        edit_in_place(config_path(args))
    except (ConfigChanged, OSError) as e:
        sys.stderr.write(f"cerver: not starting HAProxy: {e}\n")
        raise SystemExit(78) from None  # EX_CONFIG
    os.execv(binary, [binary, *args])


if __name__ == "__main__":
    main(sys.argv[1:])
