"""A throwaway PostgreSQL cluster for the tests: initdb in a temp dir, one postmaster on a free
loopback port, stopped (and its directory removed) at the end.

PostgreSQL refuses to run as root, and CI runs as root: then the cluster belongs to the
``postgres`` user (``nobody`` where there is none) and its commands run through ``runuser``.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shlex
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from sqlalchemy import create_engine, make_url, text

from cerver.store import db
from cerver.store.db import driver_url
from tests.serve_process import alive

START_TIMEOUT_S = 60


def find_bindir() -> Path | None:
    """The newest ``/usr/lib/postgresql/<version>/bin`` with ``initdb``, else one on PATH."""

    def version(initdb: str) -> int:
        name = Path(initdb).parent.parent.name
        return int(name) if name.isdigit() else 0

    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=version)
    if found:
        return Path(found[-1]).parent
    on_path = shutil.which("initdb")
    if on_path and shutil.which("pg_ctl"):
        return Path(on_path).resolve().parent
    return None


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Cluster:
    bindir: Path
    root: Path
    port: int
    user: str | None  # run commands as this user (we are root), or as ourselves

    @property
    def data(self) -> Path:
        return self.root / "data"

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def _cmd(self, *args: str) -> list[str]:
        if self.user is None:
            return list(args)
        if shutil.which("runuser"):
            return ["runuser", "-u", self.user, "--", *args]
        return ["su", "-s", "/bin/sh", self.user, "-c", shlex.join(args)]

    def run(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            self._cmd(*args),
            cwd=self.root,
            capture_output=True,
            text=True,
            timeout=START_TIMEOUT_S + 30,
            check=False,
        )

    def postmaster_pid(self) -> int | None:
        try:
            return int((self.data / "postmaster.pid").read_text().split("\n", 1)[0])
        except (OSError, ValueError):
            return None

    def log(self) -> str:
        try:
            return (self.root / "postgres.log").read_text()[-4000:]
        except OSError:
            return ""


def _owner_for_root() -> str | None:
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "nobody"):
        with contextlib.suppress(KeyError):
            pwd.getpwnam(name)
            return name
    raise RuntimeError("running as root and neither a 'postgres' nor a 'nobody' user exists")


def start(bindir: Path) -> Cluster:
    root = Path(tempfile.mkdtemp(prefix="cerver-pg-", dir="/tmp"))
    user = _owner_for_root()
    if user is not None:
        entry = pwd.getpwnam(user)
        os.chown(root, entry.pw_uid, entry.pw_gid)
    cluster = Cluster(bindir, root, 0, user)
    try:
        done = cluster.run(
            str(bindir / "initdb"),
            "-D",
            str(cluster.data),
            "-U",
            "postgres",
            "--auth=trust",
            "--encoding=UTF8",
            "--locale=C",
            "--no-sync",
        )
        if done.returncode != 0:
            raise RuntimeError(f"initdb failed:\n{done.stdout}\n{done.stderr}")
        for _attempt in range(3):  # the free port can be taken before postgres binds it
            cluster.port = _free_port()
            options = " ".join(
                [
                    f"-p {cluster.port}",
                    "-c listen_addresses=127.0.0.1",
                    f"-c unix_socket_directories={root}",
                    "-c max_connections=200",
                    "-c fsync=off",
                    "-c synchronous_commit=off",
                    "-c full_page_writes=off",
                ]
            )
            done = cluster.run(
                str(bindir / "pg_ctl"),
                "-D",
                str(cluster.data),
                "-l",
                str(root / "postgres.log"),
                "-o",
                options,
                "-w",
                "-t",
                str(START_TIMEOUT_S),
                "start",
            )
            if done.returncode == 0:
                return cluster
        raise RuntimeError(f"pg_ctl start failed:\n{done.stdout}\n{done.stderr}\n{cluster.log()}")
    except BaseException:
        stop(cluster)
        raise


def stop(cluster: Cluster) -> None:
    """Stop the postmaster (fast, then by signal if it lingers) and remove the directory."""
    pid = cluster.postmaster_pid()
    if pid is not None:
        pg_ctl = str(cluster.bindir / "pg_ctl")
        cluster.run(pg_ctl, "-D", str(cluster.data), "-m", "fast", "-w", "stop")
        deadline = time.monotonic() + 20
        while alive(pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        if alive(pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
    shutil.rmtree(cluster.root, ignore_errors=True)


@contextlib.contextmanager
def running(bindir: Path) -> Iterator[str]:
    cluster = start(bindir)
    try:
        yield cluster.url
    finally:
        stop(cluster)


def create_database(server_url: str) -> str:
    """A new empty database on the server of ``server_url``; returns its URL."""
    name = f"cerver_test_{uuid.uuid4().hex[:12]}"
    admin = create_engine(driver_url(server_url), isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
    finally:
        admin.dispose()
    return make_url(server_url).set(database=name).render_as_string(hide_password=False)


def drop_database(server_url: str, database_url: str) -> None:
    name = make_url(database_url).database
    admin = create_engine(driver_url(server_url), isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    finally:
        admin.dispose()


def _in_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


@contextlib.contextmanager
def server_for_tests() -> Iterator[str]:
    """A URL of a PostgreSQL server the tests may create databases on.

    ``CERVER_TEST_POSTGRES_URL`` when set (a role that may CREATE DATABASE), otherwise a
    throwaway cluster started from the installed binaries. Without either the calling test is
    skipped, except under CI (``CI=true``), where a missing PostgreSQL is a failure: CI
    installs it (``.ci/run``) so that the PostgreSQL tests always run there.
    """
    given = os.environ.get("CERVER_TEST_POSTGRES_URL")
    if given:
        yield given
        return
    bindir = find_bindir()
    if bindir is None:
        reason = (
            "PostgreSQL not available: set CERVER_TEST_POSTGRES_URL or install the "
            "'postgresql' package (no /usr/lib/postgresql/*/bin/initdb found)"
        )
        if _in_ci():
            pytest.fail(f"{reason}; CI must run the PostgreSQL tests", pytrace=False)
        pytest.skip(reason)
    with running(bindir) as url:
        yield url


@contextlib.contextmanager
def fresh_database(server_url: str) -> Iterator[str]:
    """A new empty database on ``server_url`` for the ``with`` block, dropped after it."""
    url = create_database(server_url)
    try:
        yield url
    finally:
        db.dispose(url)
        drop_database(server_url, url)
