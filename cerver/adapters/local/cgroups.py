"""One cgroup per local sandbox: total memory, tasks and CPU, and a kill of everything in it.

rlimits (``isolation.ChildSetup``) bound each *process*; a cgroup bounds the *sandbox*: its
supervisor, every run and install under it, whatever they fork. Two backends, probed once
per process (``backend_for``):

``v2`` (the unified hierarchy, what current distributions mount at ``/sys/fs/cgroup``)
    ``memory.max`` (and ``memory.swap.max`` 0), ``pids.max``, ``cpu.max``; ``cgroup.kill``
    kills everything in the cgroup at once.
``v1`` (one hierarchy per controller)
    ``memory.limit_in_bytes`` (and ``memory.memsw.limit_in_bytes``, so no swap on top),
    ``pids.max``, ``cpu.cfs_quota_us`` / ``cfs_period_us``; the ``freezer`` stops the
    cgroup so a kill cannot be outrun by forks.

Where: ``<parent>/cerver-<key>/<sandbox_id>``, ``key`` a hash of the node's sandboxes
directory (two servers with different homes never touch each other's cgroups). ``parent``
is ``CERVER_CGROUPS_PARENT`` when set, else the hierarchy's root on v2 (a cgroup with
processes in it cannot hand controllers to children: the operator delegates a subtree
that has none, docs/security.md) and this process's own cgroup on v1 (nested, so the
server's own limits still apply).

The sandbox's first process joins its cgroup in the child between fork and exec (it
writes ``0``, itself, into each ``cgroup.procs``: ``ChildSetup``), before it runs anything
of its own; everything it starts inherits the cgroup. Adding the pid after spawn instead
would race with bwrap, which forks its namespace's init and the supervisor at once.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import logging
import os
import signal
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from cerver.adapters.local.layout import Limits
from cerver.config import Settings
from cerver.errors import ProviderError

log = logging.getLogger(__name__)

CONTROLLERS = ("memory", "pids", "cpu")  # what a sandbox is limited by
CPU_PERIOD_US = 100_000
KILL_WAIT_S = 3.0
SANDBOX_PREFIX = "sbx_"  # the only children ``sweep`` may remove
PARENT_PREFIX = "cerver-"
STALE_S = 60.0  # an empty sandbox cgroup of another server this old is a leftover


@dataclass(frozen=True)
class CgroupLimits:
    memory_bytes: int
    pids: int
    cpu_quota_us: int  # per CPU_PERIOD_US: 100_000 is one CPU


def _write(path: Path, value: str) -> None:
    fd = os.open(path, os.O_WRONLY)
    try:
        os.write(fd, value.encode())
    finally:
        os.close(fd)


def _pids(procs: Path) -> list[int]:
    try:
        return [int(line) for line in procs.read_text().split()]
    except FileNotFoundError:
        return []


def _kill_pids(pids: list[int]) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)


def _rmdir(path: Path) -> bool:
    """True when ``path`` is gone; a cgroup that still has tasks or children stays."""
    try:
        path.rmdir()
    except FileNotFoundError:
        return True
    except OSError as exc:
        if exc.errno in (errno.EBUSY, errno.ENOTEMPTY):
            return False
        raise
    return True


# --------------------------------------------------------------------------- a sandbox's


class Cgroup:
    """One sandbox's cgroup (one directory on v2, one per controller on v1)."""

    def __init__(self, backend: Backend, dirs: tuple[Path, ...]) -> None:
        self._backend = backend
        self.dirs = dirs

    @property
    def procs_files(self) -> tuple[str, ...]:
        """What the sandbox's first process writes ``0`` into, before exec."""
        return tuple(str(d / "cgroup.procs") for d in self.dirs)

    def pids(self) -> list[int]:
        """Every process in the cgroup, as this (the host's) pid namespace numbers them."""
        return _pids(self.dirs[0] / "cgroup.procs")

    def kill(self) -> bool:
        """SIGKILL everything in the cgroup, until it is empty (bounded); True when it is."""
        deadline = time.monotonic() + KILL_WAIT_S
        while True:
            self._backend.kill(self)
            if not self.pids():
                return True
            if time.monotonic() > deadline:
                log.warning("cgroup %s still has processes after a kill", self.dirs[0])
                return False
            time.sleep(0.002)

    def remove(self) -> bool:
        """Kill what is left, then delete the cgroup; True when it is gone."""
        if self.pids():
            self.kill()
        gone = True
        for d in self.dirs:
            for _ in range(500):  # tasks just killed leave the cgroup a moment later
                if _rmdir(d):
                    break
                time.sleep(0.002)
            else:
                gone = False
        return gone

    def read(self, name: str) -> str:
        """A cgroup file (``pids.max``, ``memory.events``, ...), from whichever dir has it."""
        for d in self.dirs:
            if (d / name).exists():
                return (d / name).read_text()
        raise FileNotFoundError(name)


# --------------------------------------------------------------------------- backends


class Backend:
    """Where sandbox cgroups are made, which controllers they get, how they are killed."""

    name = ""

    def __init__(self, enforced: tuple[str, ...]) -> None:
        self.enforced = enforced  # of CONTROLLERS, those this backend limits

    def parents(self) -> tuple[Path, ...]:
        raise NotImplementedError

    def prepare(self) -> None:
        """Make the parents (and on v2 hand them the controllers); raise OSError if not."""
        raise NotImplementedError

    def set_limits(self, dirs: tuple[Path, ...], limits: CgroupLimits) -> None:
        raise NotImplementedError

    def kill(self, cgroup: Cgroup) -> None:
        raise NotImplementedError

    def create(self, name: str, limits: CgroupLimits) -> Cgroup:
        dirs = tuple(parent / name for parent in self.parents())
        for attempt in range(2):
            try:
                for d in dirs:
                    d.mkdir(exist_ok=True)
                break
            except FileNotFoundError:  # a parent removed by another process's cleanup
                if attempt:
                    raise
                self.prepare()
        cgroup = Cgroup(self, dirs)
        try:
            self.set_limits(dirs, limits)
        except OSError:
            cgroup.remove()
            raise
        return cgroup

    def existing(self, name: str) -> Cgroup | None:
        dirs = tuple(parent / name for parent in self.parents())
        return Cgroup(self, dirs) if dirs[0].is_dir() else None

    def children(self) -> list[str]:
        try:
            return sorted(e.name for e in os.scandir(self.parents()[0]) if e.is_dir())
        except FileNotFoundError:
            return []

    def remove_parents(self) -> None:
        """Delete the parents if nothing is left in them (another server may still use them)."""
        for parent in self.parents():
            _rmdir(parent)

    def describe(self) -> str:
        enforced = ", ".join(self.enforced) or "none of memory, pids, cpu"
        return f"cgroup {self.name} at {self.parents()[0]} (limits: {enforced})"


class V2(Backend):
    name = "v2"

    def __init__(self, root: Path, parent: str, key: str, enforced: tuple[str, ...]) -> None:
        super().__init__(enforced)
        self.root = root  # the cgroup2 mount point
        self.parent = root / parent.strip("/") / key if parent.strip("/") else root / key

    def parents(self) -> tuple[Path, ...]:
        return (self.parent,)

    def prepare(self) -> None:
        # Each level from the mount down to the parent hands the controllers on; only the
        # root, and cgroups without processes, may (cgroup v2's "no internal processes").
        want = " ".join(f"+{c}" for c in self.enforced)
        level = self.root
        for part in self.parent.relative_to(self.root).parts:
            if want:
                _write(level / "cgroup.subtree_control", want)
            level = level / part
            level.mkdir(exist_ok=True)
        if want:
            _write(level / "cgroup.subtree_control", want)

    def set_limits(self, dirs: tuple[Path, ...], limits: CgroupLimits) -> None:
        (d,) = dirs
        if "memory" in self.enforced:
            _write(d / "memory.max", str(limits.memory_bytes))
            if (d / "memory.swap.max").exists():
                _write(d / "memory.swap.max", "0")
        if "pids" in self.enforced:
            _write(d / "pids.max", str(limits.pids))
        if "cpu" in self.enforced:
            _write(d / "cpu.max", f"{limits.cpu_quota_us} {CPU_PERIOD_US}")

    def kill(self, cgroup: Cgroup) -> None:
        (d,) = cgroup.dirs
        if (d / "cgroup.kill").exists():  # Linux 5.14+
            with contextlib.suppress(FileNotFoundError):
                _write(d / "cgroup.kill", "1")
        else:
            _kill_pids(cgroup.pids())


class V1(Backend):
    name = "v1"

    def __init__(self, dirs: dict[str, Path], key: str) -> None:
        # dirs: controller -> the directory sandbox cgroups of this server are made in
        super().__init__(tuple(c for c in CONTROLLERS if c in dirs))
        self.controllers = {c: d / key for c, d in dirs.items()}

    def parents(self) -> tuple[Path, ...]:
        return tuple(self.controllers.values())

    def prepare(self) -> None:
        for d in self.parents():
            d.mkdir(exist_ok=True)

    def _dir(self, dirs: tuple[Path, ...], controller: str) -> Path | None:
        names = list(self.controllers)
        return dirs[names.index(controller)] if controller in names else None

    def set_limits(self, dirs: tuple[Path, ...], limits: CgroupLimits) -> None:
        mem = self._dir(dirs, "memory")
        if mem is not None:
            _write(mem / "memory.limit_in_bytes", str(limits.memory_bytes))
            if (mem / "memory.memsw.limit_in_bytes").exists():  # memory + swap: no swap on top
                _write(mem / "memory.memsw.limit_in_bytes", str(limits.memory_bytes))
        pids = self._dir(dirs, "pids")
        if pids is not None:
            _write(pids / "pids.max", str(limits.pids))
        cpu = self._dir(dirs, "cpu")
        if cpu is not None:
            _write(cpu / "cpu.cfs_period_us", str(CPU_PERIOD_US))
            _write(cpu / "cpu.cfs_quota_us", str(limits.cpu_quota_us))

    def kill(self, cgroup: Cgroup) -> None:
        freezer = self._dir(cgroup.dirs, "freezer")
        if freezer is None:
            _kill_pids(cgroup.pids())
            return
        # Frozen, nothing in the cgroup can fork while we read its list and kill it.
        state = freezer / "freezer.state"
        try:
            _write(state, "FROZEN")
            deadline = time.monotonic() + 1.0
            while state.read_text().strip() != "FROZEN" and time.monotonic() < deadline:
                time.sleep(0.005)
            _kill_pids(_pids(freezer / "cgroup.procs"))
        except FileNotFoundError:
            return
        finally:
            with contextlib.suppress(FileNotFoundError):
                _write(state, "THAWED")


# --------------------------------------------------------------------------- probing


def _mounts() -> list[tuple[str, str, set[str]]]:
    """(mount point, fs type, options) of every cgroup mount of this process."""
    found = []
    with open("/proc/self/mounts") as fh:
        for line in fh:
            fields = line.split()
            if len(fields) >= 4 and fields[2] in ("cgroup", "cgroup2"):
                found.append((fields[1], fields[2], set(fields[3].split(","))))
    return found


def _own_paths() -> dict[str, str]:
    """controller (or "" for v2) -> this process's cgroup path in that hierarchy."""
    paths: dict[str, str] = {}
    with open("/proc/self/cgroup") as fh:
        for line in fh:
            _hid, controllers, path = line.rstrip("\n").split(":", 2)
            for name in controllers.split(",") if controllers else [""]:
                paths[name] = path
    return paths


def key_for(settings: Settings) -> str:
    digest = hashlib.sha256(os.path.realpath(settings.sandboxes_dir).encode()).hexdigest()
    return f"cerver-{digest[:12]}"


def v2_backend(settings: Settings, key: str) -> V2 | None:
    mount = next((m for m, fs, _ in _mounts() if fs == "cgroup2"), None)
    if mount is None:
        return None
    root = Path(mount)
    parent = settings.cgroups_parent.strip("/")
    # What the parent can hand on: its own controllers (the root's, until it exists).
    listing = root / parent / "cgroup.controllers"
    if not listing.exists():
        listing = root / "cgroup.controllers"
    available = set(listing.read_text().split())
    return V2(root, parent, key, tuple(c for c in CONTROLLERS if c in available))


def v1_backend(settings: Settings, key: str) -> V1 | None:
    own = _own_paths()
    dirs: dict[str, Path] = {}
    for mount, fs, options in _mounts():
        if fs != "cgroup":
            continue
        for controller in (*CONTROLLERS, "freezer"):
            if controller in options and controller not in dirs:
                base = settings.cgroups_parent.strip("/") or own.get(controller, "/").strip("/")
                dirs[controller] = Path(mount) / base if base else Path(mount)
    return V1(dirs, key) if dirs else None


def _works(backend: Backend) -> str | None:
    """None when a cgroup can be made, limited and removed under ``backend``, else why."""
    try:
        backend.prepare()
        limits = CgroupLimits(64 * 1024 * 1024, 16, CPU_PERIOD_US)
        probe = backend.create(f"probe-{os.getpid()}", limits)
        probe.remove()
    except OSError as exc:
        return f"{backend.name}: {exc.strerror or exc} ({exc.filename or ''})"
    return None


_chosen: dict[str, tuple[Backend | None, str]] = {}


def probe(settings: Settings) -> tuple[Backend | None, str]:
    """The backend this node uses for ``settings`` (None: no cgroups) and a line saying what
    is enforced; probed once per process and key."""
    key = key_for(settings)
    cached = _chosen.get(key)
    if cached is not None:
        return cached
    if settings.cgroups == "off":
        result: tuple[Backend | None, str] = (None, "sandbox cgroups: off (CERVER_CGROUPS=off)")
        _chosen[key] = result
        return result
    candidates = [b for b in (v2_backend(settings, key), v1_backend(settings, key)) if b]
    # The backend with the most of memory, pids and cpu; v2 first on a tie.
    candidates.sort(key=lambda b: -len(b.enforced))
    problems = []
    chosen: Backend | None = None
    for backend in candidates:
        if not backend.enforced:
            problems.append(f"{backend.name}: no controller of memory, pids, cpu is delegated")
            continue
        problem = _works(backend)
        if problem is None:
            chosen = backend
            break
        problems.append(problem)
    if chosen is not None:
        missing = [c for c in CONTROLLERS if c not in chosen.enforced]
        note = f"sandbox cgroups: {chosen.describe()}"
        if missing:
            note += f"; NOT limited per sandbox: {', '.join(missing)}"
    else:
        why = "; ".join(problems) or "no cgroup hierarchy is mounted"
        note = f"sandbox cgroups: none usable here ({why}); only rlimits bound each process"
    result = (chosen, note)
    if not (settings.cgroups == "required" and (chosen is None or len(chosen.enforced) < 3)):
        _chosen[key] = result  # "required" and unmet: probe again next time
    return result


def require(settings: Settings) -> Backend | None:
    """The backend, or ProviderError under ``CERVER_CGROUPS=required`` when it does not
    limit all of memory, pids and cpu (fail closed)."""
    backend, note = probe(settings)
    if settings.cgroups == "required" and (backend is None or len(backend.enforced) < 3):
        raise ProviderError(
            "this node refuses to run code: CERVER_CGROUPS=required and per-sandbox cgroups "
            f"with memory, pids and cpu cannot be had here ({note}); the operator must "
            "delegate them (docs/security.md) or set CERVER_CGROUPS=auto",
            details={"cgroups": "required"},
        )
    return backend


def limits_of(limits: Limits) -> CgroupLimits:
    return CgroupLimits(
        memory_bytes=limits.total_memory_mb * 1024 * 1024,
        pids=limits.pids_max,
        cpu_quota_us=max(1000, int(limits.cpus * CPU_PERIOD_US)),
    )


def sweep(backend: Backend, settings: Settings, stale_s: float = STALE_S) -> int:
    """Remove cgroups left by servers killed before they could release them; return how
    many. Ours (this sandboxes directory): those whose workspace is gone, with whatever
    still runs in them. Other servers' on this node (their ``cerver-*`` siblings): only
    empty ones made over ``STALE_S`` ago (a live server makes a missing cgroup again), and
    their parents once empty."""
    removed = 0
    for name in backend.children():
        if not name.startswith(SANDBOX_PREFIX) or (settings.sandboxes_dir / name).is_dir():
            continue
        cgroup = backend.existing(name)
        if cgroup is not None and cgroup.remove():
            removed += 1
    ours = {p.name for p in backend.parents()}
    now = time.time()
    for base in {p.parent for p in backend.parents()}:
        for parent in _subdirs(base, PARENT_PREFIX):
            if parent.name in ours:
                continue
            # Another server's parent can go while we walk it (it shut down, or its own
            # sweep emptied it): what is gone needs no sweeping.
            for child in _subdirs(parent, SANDBOX_PREFIX):
                try:
                    if now - child.stat().st_mtime < stale_s or _pids(child / "cgroup.procs"):
                        continue
                    removed += _rmdir(child)
                except OSError:
                    continue
            with contextlib.suppress(OSError):
                _rmdir(parent)
    return removed


def _subdirs(path: Path, prefix: str) -> list[Path]:
    """``path``'s directories named ``prefix*``; none when ``path`` is gone."""
    try:
        with os.scandir(path) as entries:
            return [Path(e.path) for e in entries if e.name.startswith(prefix) and e.is_dir()]
    except (FileNotFoundError, NotADirectoryError):
        return []


# --------------------------------------------------------------------------- per adapter


class SandboxCgroups:
    """The cgroups of the sandboxes one adapter instance started processes for."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._backend: Backend | None = None
        self._probed = False
        self._probing = threading.Lock()  # concurrent first starts probe and sweep once
        self._live: dict[str, Cgroup] = {}

    def backend(self) -> Backend | None:
        """The node's backend (None: no cgroups); ProviderError when they are required and
        cannot be had. The first call also removes cgroups left by a killed server."""
        if not self._probed:
            with self._probing:
                if not self._probed:
                    backend = require(self._settings)
                    if backend is not None:
                        sweep(backend, self._settings)
                    self._backend, self._probed = backend, True
        return self._backend

    @property
    def in_use(self) -> bool:
        """Whether this adapter makes cgroups (probed, and a backend was found)."""
        return self._backend is not None

    def procs_files(self, sandbox_id: str, limits: Limits) -> tuple[str, ...]:
        """The sandbox's cgroup (made, and its limits set, if need be): what its next
        process joins before exec. Empty without cgroups."""
        backend = self.backend()
        if backend is None:
            return ()
        cgroup = self._live.get(sandbox_id)
        if cgroup is None or not all(d.is_dir() for d in cgroup.dirs):
            try:
                cgroup = backend.create(sandbox_id, limits_of(limits))
            except OSError as exc:
                raise ProviderError(
                    f"could not make the sandbox's cgroup ({backend.name}): {exc.strerror or exc}"
                ) from exc
            self._live[sandbox_id] = cgroup
        return cgroup.procs_files

    def get(self, sandbox_id: str) -> Cgroup | None:
        return self._live.get(sandbox_id)

    def kill(self, sandbox_id: str) -> None:
        """Kill every process of the sandbox (blocking, bounded: run it in a thread)."""
        cgroup = self._live.get(sandbox_id)
        if cgroup is not None:
            cgroup.kill()

    def release(self, sandbox_id: str) -> None:
        """Kill what is left and delete the cgroup (blocking, bounded)."""
        cgroup = self._live.pop(sandbox_id, None)
        if cgroup is None and self._backend is not None:
            cgroup = self._backend.existing(sandbox_id)  # made by an earlier process
        if cgroup is not None and not cgroup.remove():
            log.warning("the cgroup of sandbox %s could not be removed", sandbox_id)

    def close(self) -> None:
        for sandbox_id in list(self._live):
            self.release(sandbox_id)
        if self._backend is not None:
            self._backend.remove_parents()
