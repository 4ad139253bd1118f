"""Which processes burn the machine's CPUs while a benchmark runs: a sampler of ``/proc``.

``CpuSampler`` (a background thread) reads every process's CPU time every ``interval_s``
and charges each interval's growth to a class: the processes of this bench's server (its
descendants: Serve's proxy and replicas, session hosts, Ray's own daemons, the sandboxes)
by what they are, this process itself, and everything else on the machine (other users).
A process that ends between two samples is charged through its parent, whose "children's
time" (``cutime``/``cstime``) grows when it reaps it; what was already charged while the
child lived is taken off again. What no process accounts for (a child reaped by a process
outside the tree, or that ended without being seen by a reaper we watch) is reported as
``unattributed``: the machine's busy time (``/proc/stat``) minus everything charged.
Not a test fixture; shared by the bench scripts.
"""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass
from typing import Any

TICK = os.sysconf("SC_CLK_TCK")

# A process's class from its name (``comm``, at most 15 characters), first match wins.
NAMED: tuple[tuple[str, str], ...] = (
    ("ray::SessionHos", "session hosts (ray::SessionHost)"),
    ("ray::ServeRepli", "Serve replicas (the app)"),
    ("ray::ProxyActor", "Serve proxy"),
    ("ray::ServeContr", "Serve controller"),
    ("ray::SessionDir", "session directory"),
    ("ray::AccountLim", "account limits"),
    ("raylet", "raylet"),
    ("gcs_server", "gcs_server"),
    ("haproxy", "HAProxy"),
)
SANDBOX = "sandboxes (bwrap, supervisor, runs)"
OTHER_RAY = "other processes of this server (Ray agents, idle workers, ...)"
SELF = "bench client (this process)"
OUTSIDE = "not this server (other users of the machine)"


@dataclass
class _Proc:
    ppid: int
    name: str
    own: int  # utime + stime, ticks
    reaped: int  # cutime + cstime, ticks


def _read_all() -> dict[int, _Proc]:
    found: dict[int, _Proc] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as f:
                raw = f.read().decode("utf-8", "replace")
        except OSError:
            continue
        name = raw[raw.index("(") + 1 : raw.rindex(")")]
        fields = raw.rsplit(")", 1)[1].split()
        # fields[0] is field 3 (state): utime/stime/cutime/cstime are fields 14-17
        found[int(entry)] = _Proc(
            int(fields[1]), name, int(fields[11]) + int(fields[12]),
            int(fields[13]) + int(fields[14]),
        )  # fmt: skip
    return found


def _machine_busy() -> int:
    with open("/proc/stat") as f:
        parts = [int(v) for v in f.readline().split()[1:]]
    idle = parts[3] + (parts[4] if len(parts) > 4 else 0)
    return sum(parts[:8]) - idle


class CpuSampler:
    """``with CpuSampler() as cpu: ...`` then ``cpu.report()``."""

    def __init__(self, interval_s: float = 0.25, root: int | None = None) -> None:
        self.interval_s = interval_s
        self.root = root or os.getpid()
        self.charged: dict[str, float] = {}
        self.by_name: dict[tuple[str, str], float] = {}  # (class, process name) -> CPU s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True, name="cpu-sampler")
        self._wall = 0.0
        self._busy = 0
        self.samples = 0

    def __enter__(self) -> CpuSampler:
        self._prev = _read_all()
        self._busy0 = _machine_busy()
        self._t0 = time.perf_counter()
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self._sample()
        self._wall = time.perf_counter() - self._t0
        self._busy = _machine_busy() - self._busy0

    def _loop(self) -> None:
        while not self._stop.wait(self.interval_s):
            self._sample()

    def _classify(self, pid: int, procs: dict[int, _Proc]) -> str:
        if pid == self.root:
            return SELF
        chain, seen = [], 0
        cur = pid
        while cur in procs and cur > 1 and seen < 64:
            chain.append(procs[cur].name)
            if procs[cur].ppid == self.root:
                break
            cur, seen = procs[cur].ppid, seen + 1
        else:
            return OUTSIDE
        if any(name == "bwrap" for name in chain):
            return SANDBOX
        for prefix, label in NAMED:
            if chain[0].startswith(prefix):
                return label
        # a sandbox's first process before it became bwrap, or rlimits mode: under a host
        if any(name.startswith("ray::SessionHos") for name in chain[1:]):
            return SANDBOX
        return OTHER_RAY

    def _sample(self) -> None:
        now = _read_all()
        prev = self._prev
        vanished_by_parent: dict[int, int] = {}
        for pid, old in prev.items():
            if pid not in now:
                vanished_by_parent[old.ppid] = (
                    vanished_by_parent.get(old.ppid, 0) + old.own + old.reaped
                )
        known = {**prev, **now}  # classify vanished processes by what they were
        for pid, cur in now.items():
            before = prev.get(pid)
            if before is None:  # new since the last sample: everything it has used
                delta = cur.own + cur.reaped
            else:
                reaped = cur.reaped - before.reaped - vanished_by_parent.get(pid, 0)
                delta = cur.own - before.own + max(reaped, 0)
            if delta > 0:
                label = self._classify(pid, known)
                self.charged[label] = self.charged.get(label, 0.0) + delta / TICK
                key = (label, cur.name)
                self.by_name[key] = self.by_name.get(key, 0.0) + delta / TICK
        self._prev = now
        self.samples += 1

    def report(self) -> dict[str, Any]:
        """CPU seconds per class over the sampled wall time, biggest first, with each
        class's share of the machine's busy time and average cores in use."""
        wall = self._wall or (time.perf_counter() - self._t0)
        busy_s = self._busy / TICK
        rows = dict(sorted(self.charged.items(), key=lambda kv: -kv[1]))
        unattributed = max(busy_s - sum(rows.values()), 0.0)
        out: dict[str, Any] = {
            "wall_s": round(wall, 3),
            "machine_busy_cpu_s": round(busy_s, 2),
            "machine_cores": os.cpu_count(),
            "machine_busy_cores_avg": round(busy_s / wall, 2) if wall else None,
            "samples": self.samples,
            "interval_s": self.interval_s,
            "by_class_cpu_s": {k: round(v, 2) for k, v in rows.items()},
            "unattributed_cpu_s": round(unattributed, 2),
        }
        top = sorted(self.by_name.items(), key=lambda kv: -kv[1])[:15]
        out["top_names_cpu_s"] = [
            {"class": label, "name": name, "cpu_s": round(v, 2)} for (label, name), v in top
        ]
        out["by_class_cores_avg"] = {k: round(v / wall, 2) for k, v in rows.items()} if wall else {}
        return out
