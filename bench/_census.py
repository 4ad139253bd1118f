"""What a running Cerver costs right now, counted from /proc, the sandboxes directory and
the store: processes and resident memory by kind (session hosts, Serve replicas, Ray's own
daemons, sandbox processes), CPU seconds spent by each kind, open file descriptors of the
session hosts, sandbox workspaces and their inodes, store rows. Used by the hibernation
bench (bench_sessions.py) to show what N idle sessions cost and where creating them spends
its time; not a test fixture.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import Any

TICK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")
HOST = "ray::SessionHos"  # /proc comm is cut at 15 characters


@dataclass
class Proc:
    pid: int
    ppid: int
    name: str
    rss: int
    cpu_s: float  # own user+system, plus that of its children it has waited for


def _read(pid: str) -> Proc | None:
    try:
        with open(f"/proc/{pid}/stat") as f:
            raw = f.read()
        with open(f"/proc/{pid}/statm") as f:
            resident = int(f.read().split()[1]) * PAGE
    except (OSError, ValueError, IndexError):
        return None
    name = raw[raw.index("(") + 1 : raw.rindex(")")]
    fields = raw.rsplit(")", 1)[1].split()
    if fields[0] == "Z":
        return None
    ticks = sum(int(fields[i]) for i in (11, 12, 13, 14))  # utime stime cutime cstime
    return Proc(int(pid), int(fields[1]), name, resident, ticks / TICK)


def descendants(root: int | None = None) -> list[Proc]:
    """Every live process under ``root`` (default: this process)."""
    procs = [p for p in (_read(e) for e in os.listdir("/proc") if e.isdigit()) if p]
    children: dict[int, list[Proc]] = {}
    for p in procs:
        children.setdefault(p.ppid, []).append(p)
    out, todo = [], [root or os.getpid()]
    while todo:
        for child in children.get(todo.pop(), []):
            out.append(child)
            todo.append(child.pid)
    return out


def kind_of(proc: Proc, by_pid: dict[int, Proc]) -> str:
    """session_host, sandbox (anything under a session host), serve (replicas, proxy,
    controller), ray (raylet, gcs, other workers), other."""
    if proc.name == HOST:
        return "session_host"
    parent = by_pid.get(proc.ppid)
    while parent is not None:
        if parent.name == HOST:
            return "sandbox"
        parent = by_pid.get(parent.ppid)
    if proc.name.startswith("ray::Serve") or proc.name.startswith("ray::Proxy"):
        return "serve"
    if proc.name.startswith(("ray::", "raylet", "gcs_server", "python")) or "ray" in proc.name:
        return "ray"
    return "other"


def fd_count(pid: int) -> int:
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return 0


def processes() -> dict[str, Any]:
    """Processes, resident MB and CPU seconds by kind; session hosts' open fds."""
    procs = descendants()
    by_pid = {p.pid: p for p in procs}
    kinds: dict[str, dict[str, float]] = {}
    host_fds = 0
    for p in procs:
        kind = kind_of(p, by_pid)
        row = kinds.setdefault(kind, {"processes": 0, "rss_mb": 0.0, "cpu_s": 0.0})
        row["processes"] += 1
        row["rss_mb"] += p.rss / 2**20
        row["cpu_s"] += p.cpu_s
        if kind == "session_host":
            host_fds += fd_count(p.pid)
    me = os.times()
    kinds["bench_driver"] = {
        "processes": 1,
        "rss_mb": _self_rss() / 2**20,
        "cpu_s": me.user + me.system,
    }
    for row in kinds.values():
        row["rss_mb"] = round(row["rss_mb"], 1)
        row["cpu_s"] = round(row["cpu_s"], 2)
    return {
        "processes": len(procs),
        "session_hosts": int(kinds.get("session_host", {}).get("processes", 0)),
        "sandbox_processes": int(kinds.get("sandbox", {}).get("processes", 0)),
        "rss_mb": round(sum(p.rss for p in procs) / 2**20, 1),
        "session_host_fds": host_fds,
        "by_kind": kinds,
    }


def _self_rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * PAGE


def machine_cpu_s() -> float:
    """Busy CPU seconds of the whole machine since boot (every developer's work)."""
    with open("/proc/stat") as f:
        fields = [int(v) for v in f.readline().split()[1:]]
    idle = fields[3] + fields[4]  # idle + iowait
    return (sum(fields[:8]) - idle) / TICK


def workspaces(sandboxes_dir: Path) -> dict[str, int]:
    """Sandbox workspaces on disk, and the directory entries (inodes) under them."""
    count = inodes = 0
    try:
        top = list(os.scandir(sandboxes_dir))
    except FileNotFoundError:
        return {"workspaces": 0, "inodes": 0, "bytes": 0}
    size = 0
    for entry in top:
        if entry.name.startswith(".") or not entry.is_dir(follow_symlinks=False):
            continue  # .uids: the uid claims, not a workspace
        count += 1
        for dirpath, _dirs, filenames in os.walk(entry.path):
            inodes += 1 + len(filenames)
            for name in filenames:
                with contextlib.suppress(OSError):
                    size += os.lstat(os.path.join(dirpath, name)).st_size
    return {"workspaces": count, "inodes": inodes, "bytes": size}


def store_rows(database_url: str) -> dict[str, Any]:
    """Row counts of the tables a session writes, and the SQLite file's size."""
    path = database_url.removeprefix("sqlite:///")
    out: dict[str, Any] = {}
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30) as conn:
        for table in ("sessions", "transcript", "computes", "observations"):
            out[table] = conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
        out["transcript_bytes"] = conn.execute("SELECT sum(size) FROM transcript").fetchone()[0]
    size = sum(
        os.path.getsize(p) for p in (path, path + "-wal", path + "-shm") if os.path.exists(p)
    )
    out["db_mb"] = round(size / 2**20, 1)
    return out


def hibernated_sessions(database_url: str, ids: list[str]) -> dict[str, int]:
    """Of ``ids``: how many ran a command that exited 0, and how many say, as their last
    transcript entry, that they hibernated (the store is the truth a wake reads)."""
    path = database_url.removeprefix("sqlite:///")
    ran = hibernated = 0
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30) as conn:
        for i in range(0, len(ids), 500):
            chunk = ids[i : i + 500]
            marks = ",".join("?" * len(chunk))
            ran += conn.execute(
                "SELECT count(DISTINCT session_id) FROM transcript WHERE type = 'exec' "
                f"AND json_extract(content, '$.result.exit_code') = 0 AND session_id IN ({marks})",
                chunk,
            ).fetchone()[0]
            hibernated += conn.execute(
                "SELECT count(*) FROM transcript t WHERE session_id IN "
                f"({marks}) AND seq = (SELECT max(seq) FROM transcript WHERE session_id = "
                "t.session_id) AND json_extract(content, '$.event') = 'hibernated'",
                chunk,
            ).fetchone()[0]
    return {"ran_ok": ran, "last_entry_hibernated": hibernated}
