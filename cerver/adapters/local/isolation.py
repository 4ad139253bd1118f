"""How a sandboxed process is confined: bwrap argv, mount hiding, uid drop, rlimits.

Two layers, chosen per sandbox (``record.isolation``):

``bwrap``
    bubblewrap with ``--unshare-all`` (no network unless asked), a read-only ``/usr``,
    a handful of ``/etc`` files, private ``/proc``, ``/dev``, ``/tmp``, and the workspace
    read-write at ``/workspace``. Nothing else of the host filesystem exists inside.
``rlimits``
    no namespaces of bwrap's; the process sees the host filesystem with its own
    uid's permissions.

Under both, when the server runs as root, the child first enters a private mount
namespace where ``settings.home``, ``/root``, ``/home`` and ``/tmp`` are covered by empty
tmpfs mounts and only this sandbox's workspace and the runtimes' prefixes are bound back
(so the server's database, other workspaces and root's home are not reachable even by
path), then drops to the sandbox's own unprivileged uid/gid. Always: rlimits, a parent
death signal, a new session (process group) and a scrubbed environment.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import errno
import ipaddress
import json
import os
import resource
import shutil
import signal
import subprocess
import sys
from dataclasses import dataclass, field, replace
from pathlib import Path

from cerver.adapters.local import egress_inside, files, runtimes
from cerver.adapters.local.layout import INTERNAL_DIR, WORKSPACE_IN_BWRAP, Limits, LocalSandboxData
from cerver.config import Settings
from cerver.errors import ProviderError, Unprocessable

_libc = ctypes.CDLL(None, use_errno=True)

CLONE_NEWNS = 0x00020000
MS_RDONLY = 0x1
MS_NOSUID = 0x2
MS_NODEV = 0x4
MS_REMOUNT = 0x20
MS_BIND = 0x1000
MS_REC = 0x4000
MS_PRIVATE = 0x40000
PR_SET_PDEATHSIG = 1
PR_SET_CHILD_SUBREAPER = 36

ETC_FILES = (
    "passwd", "group", "hosts", "resolv.conf", "nsswitch.conf", "host.conf", "gai.conf",
    "localtime", "protocols", "services", "mime.types", "ssl", "ca-certificates",
    "ca-certificates.conf", "alternatives", "ld.so.cache", "ld.so.conf", "ld.so.conf.d",
    "bash.bashrc", "profile", "inputrc", "python3", f"python3.{sys.version_info.minor}",
)  # fmt: skip
NEVER_HIDE = ("/", "/usr", "/etc", "/proc", "/dev", "/sys", "/bin", "/lib", "/lib64")
ROOT_MERGED_DIRS = ("bin", "sbin", "lib", "lib64", "lib32", "libx32")
SANDBOX_HOSTNAME = "cerver-sandbox"
STEP_CGROUP = "cgroup join"  # the first step of ChildSetup


# --------------------------------------------------------------------------- network
# A network-enabled sandbox (and every install) gets its own network namespace, with
# user-mode networking by pasta (Debian ``passt``): it reaches the internet through
# pasta's sockets, never the host's loopback (its 127.0.0.1 is its own), and the routes
# below, set inside before bwrap starts (bwrap's new user namespace cannot change them),
# blackhole the private, link-local and cluster ranges and every address of this node.
PASTA_IFNAME = "cerver0"
# DNS: the sandbox's resolver is this address (TEST-NET-3, never routed), which pasta
# forwards to the host's own resolver; so DNS works even where that one is on loopback
# or in a private range the routes blackhole.
DNS_FORWARD = "203.0.113.53"
RESOLV_CONF = f"{INTERNAL_DIR}/resolv.conf"
BLOCKED_NETS = (
    "0.0.0.0/8", "10.0.0.0/8", "100.64.0.0/10", "169.254.0.0/16", "172.16.0.0/12",
    "192.0.0.0/24", "192.168.0.0/16", "198.18.0.0/15", "224.0.0.0/4", "240.0.0.0/4",
)  # fmt: skip
ROUTE_SCRIPT = (
    "set -e; gw=$(ip -4 route show default | cut -d' ' -f3); "
    '[ -n "$gw" ] || { echo "cerver: no default route for the sandbox network" >&2; exit 125; }; '
    "ip route flush table main; "
    f'ip route add default via "$gw" dev {PASTA_IFNAME} onlink; '
    'ip route add blackhole "$gw/32"; '
    'while [ "$1" != "--" ]; do ip route add blackhole "$1"; shift; done; shift; '
    'exec "$@"'
)


def node_networks() -> list[str]:
    """Every IPv4 network this node has an address in (its subnets, so its peers too)."""
    try:
        done = subprocess.run(
            ["ip", "-4", "-j", "addr", "show"], capture_output=True, timeout=10, check=True
        )
        entries = json.loads(done.stdout)
    except (OSError, subprocess.SubprocessError, ValueError):
        return []
    nets = set()
    for entry in entries:
        for info in entry.get("addr_info", []):
            net = ipaddress.ip_network(f"{info['local']}/{info['prefixlen']}", strict=False)
            if not net.is_loopback:
                nets.add(str(net))
    return sorted(nets)


def network_prefix_argv() -> list[str]:
    """pasta, then the route set-up, then (appended by the caller) bwrap."""
    pasta = shutil.which("pasta")
    if pasta is None:
        raise ProviderError(
            "network-enabled sandboxes need pasta (Debian package passt), which is not "
            "installed on this node; ask without network, or the operator installs passt",
            details={"network": True},
        )
    blocked = [*BLOCKED_NETS, *node_networks()]
    return [
        pasta, "--quiet", "--foreground", "--log-file", "/dev/null", "--config-net",
        "--ipv4-only", "--no-map-gw", "--ns-ifname", PASTA_IFNAME,
        "--dns-forward", DNS_FORWARD,
        "-t", "none", "-u", "none", "-T", "none", "-U", "none",
        "--", "/bin/sh", "-c", ROUTE_SCRIPT, "sh", *blocked, "--",
    ]  # fmt: skip


def refuse_tenant_isolation(options: dict[str, object], settings: Settings) -> None:
    """Isolation is the server's policy: a request that names one is refused (422)."""
    if "isolation" in options:
        raise Unprocessable(
            "options.isolation is not a tenant option: isolation is the server's policy "
            f"(CERVER_SANDBOX_ISOLATION, here {settings.sandbox_isolation!r}); "
            "remove it from the request",
            details={"field": "options.isolation"},
        )


def limits_from(
    settings: Settings, memory_mb: int | None = None, cpus: float | None = None
) -> Limits:
    """The operator's caps, lowered (never raised) by what the tenant asked for."""
    memory = settings.sandbox_memory_mb
    total = settings.sandbox_total_memory_mb
    if memory_mb is not None:
        memory = max(64, min(memory_mb, settings.sandbox_memory_mb))
        total = max(64, min(memory_mb, settings.sandbox_total_memory_mb))
    cpu = settings.sandbox_cpus
    if cpus is not None and cpus > 0:
        cpu = max(0.01, min(cpus, settings.sandbox_cpus))
    return Limits(
        cpu_s=settings.sandbox_cpu_s,
        memory_mb=memory,
        fsize_mb=settings.sandbox_fsize_mb,
        nproc=settings.sandbox_nproc,
        total_memory_mb=total,
        pids_max=settings.sandbox_pids_max,
        cpus=cpu,
    )


def running_as_root() -> bool:
    return os.geteuid() == 0


# --------------------------------------------------------------------------- child setup


@dataclass(frozen=True)
class MountPlan:
    """Run in the child as root: cover ``hide`` with tmpfs, bind ``expose`` back."""

    hide: tuple[str, ...]
    expose: tuple[tuple[str, bool], ...]  # (path, writable), re-bound at the same path
    tmpfs_bytes: int


def _check(rc: int, what: str) -> None:
    if rc != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


def _mount(
    source: str | None, target: str, fstype: str | None, flags: int, data: str | None
) -> None:
    _check(
        _libc.mount(
            source.encode() if source else None,
            target.encode(),
            fstype.encode() if fstype else None,
            ctypes.c_ulong(flags),
            data.encode() if data else None,
        ),
        f"mount {target}",
    )


def _apply_mount_plan(plan: MountPlan) -> None:
    _check(_libc.unshare(CLONE_NEWNS), "unshare(CLONE_NEWNS)")
    _mount(None, "/", None, MS_REC | MS_PRIVATE, None)
    fds = [os.open(path, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC) for path, _ in plan.expose]
    for path in plan.hide:
        mode = "1777" if path == "/tmp" else "0755"
        _mount("tmpfs", path, "tmpfs", MS_NOSUID | MS_NODEV, f"mode={mode},size={plan.tmpfs_bytes}")
    for (path, writable), fd in zip(plan.expose, fds, strict=True):
        os.makedirs(path, mode=0o755, exist_ok=True)
        _mount(f"/proc/self/fd/{fd}", path, None, MS_BIND | MS_REC, None)
        if not writable:
            _mount(None, path, None, MS_BIND | MS_REMOUNT | MS_RDONLY | MS_NOSUID, None)
        os.close(fd)


@dataclass(frozen=True)
class ChildSetup:
    """Everything done between fork and exec. Called in the child: no asyncio, no locks."""

    limits: Limits
    uid: int | None = None  # None: keep the server's user
    gid: int | None = None
    mount_plan: MountPlan | None = None
    chdir: str | None = None
    nproc: int = 0  # the RLIMIT_NPROC value to set (computed in the parent)
    cgroup_procs: tuple[str, ...] = ()  # the sandbox's cgroup: joined first, as root
    # Where a failed step is told (``SetupReport``): subprocess only says "Exception
    # occurred in preexec_fn"; -1: nowhere.
    report_fd: int = -1

    def __call__(self) -> None:
        step = STEP_CGROUP
        try:
            for procs in self.cgroup_procs:  # before anything else runs (cgroups.py)
                fd = os.open(procs, os.O_WRONLY)
                try:
                    os.write(fd, b"0")
                finally:
                    os.close(fd)
            os.umask(0o022)  # the server may run with 077; tmpfs paths must stay traversable
            if self.mount_plan is not None:
                step = "mount plan"
                _apply_mount_plan(self.mount_plan)
            if self.uid is not None and self.gid is not None:
                step = "uid/gid drop"
                os.setgroups([])
                os.setgid(self.gid)
                os.setuid(self.uid)
            if self.chdir is not None:
                step = "chdir into the workspace"
                os.chdir(self.chdir)
            # After the uid change: changing credentials clears the parent-death signal.
            step = "prctl"
            _libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
            step = "setrlimit"
            self._set_rlimits()
        except BaseException as exc:
            if self.report_fd >= 0:  # no logging, no locks: one write, then the same error
                code = exc.errno if isinstance(exc, OSError) and exc.errno else 0
                with contextlib.suppress(OSError):
                    os.write(self.report_fd, f"{step}\0{code}\0{type(exc).__name__}".encode())
            raise

    def _set_rlimits(self) -> None:
        mb = 1024 * 1024
        lim = self.limits
        for res, value in (
            (resource.RLIMIT_CPU, lim.cpu_s),
            (resource.RLIMIT_AS, lim.memory_mb * mb),
            (resource.RLIMIT_FSIZE, lim.fsize_mb * mb),
            (resource.RLIMIT_NPROC, self.nproc or lim.nproc),
            (resource.RLIMIT_NOFILE, lim.nofile),
            (resource.RLIMIT_CORE, 0),
        ):
            _soft, hard = resource.getrlimit(res)
            if hard != resource.RLIM_INFINITY:
                value = min(value, hard)
            resource.setrlimit(res, (value, value))


class SetupReport:
    """Which step of a ``ChildSetup`` failed, and its errno: a pipe (close-on-exec, so a
    successful exec closes the child's end) the child writes one line into before it
    fails. The parent reads it after the spawn raised; one per spawn, always closed."""

    def __init__(self) -> None:
        self._read, self.write_fd = os.pipe2(os.O_CLOEXEC | os.O_NONBLOCK)

    def setup(self, setup: ChildSetup) -> ChildSetup:
        return replace(setup, report_fd=self.write_fd)

    def failure(self) -> SetupFailure | None:
        """What the child wrote (it has exited when the spawn raised), if anything."""
        try:
            raw = os.read(self._read, 512)
        except BlockingIOError:
            return None
        parts = raw.decode(errors="replace").split("\0")
        if len(parts) != 3 or not parts[1].isdigit():
            return None
        return SetupFailure(parts[0], int(parts[1]), parts[2])

    def close(self) -> None:
        for fd in (self._read, self.write_fd):
            with contextlib.suppress(OSError):
                os.close(fd)


@dataclass(frozen=True)
class SetupFailure:
    step: str  # STEP_CGROUP, "mount plan", "uid/gid drop", ...
    code: int  # the errno; 0: not an OSError
    kind: str  # the exception's class name

    @property
    def cgroup_gone(self) -> bool:
        """The sandbox's cgroup was removed before the child could join it (ENOENT: before
        it opened ``cgroup.procs``; ENODEV: after)."""
        return self.step == STEP_CGROUP and self.code in (errno.ENOENT, errno.ENODEV)

    def __str__(self) -> str:
        if not self.code:
            return f"{self.step} failed ({self.kind})"
        name = errno.errorcode.get(self.code, str(self.code))
        return f"{self.step} failed: {name} ({os.strerror(self.code)})"


def _count_processes_of(uid: int) -> int:
    count = 0
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                if entry.stat().st_uid == uid:
                    count += 1
            except FileNotFoundError:
                continue
    return count


# --------------------------------------------------------------------------- launch


# What ``bwrap`` itself is executed with: fixed, never the sandbox's. Whatever the loader
# or libc would read (LD_PRELOAD, GCONV_PATH, ...) would act in bwrap's process, outside
# any namespace; the sandbox's environment is handed to the inside with --setenv.
BWRAP_HOST_ENV = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8"}
BWRAP_HOST_CWD = "/"


@dataclass(frozen=True)
class Launch:
    argv: list[str]
    env: dict[str, str]  # of the exec'd program (bwrap: BWRAP_HOST_ENV)
    cwd: str  # of the exec'd program (bwrap: BWRAP_HOST_CWD)
    setup: ChildSetup
    workspace: str  # host path; a launch into a workspace that is gone fails as SandboxLost
    pass_fds: tuple[int, ...] = field(default=())
    pidns: bool = False  # bwrap: its pid-1 init may outlive the process we spawn


def _mount_plan(settings: Settings, data: LocalSandboxData) -> MountPlan:
    candidates = [str(settings.home), str(settings.sandboxes_dir), "/root", "/home", "/tmp"]
    real = sorted({os.path.realpath(p) for p in candidates if os.path.isdir(p)}, key=len)
    hide: list[str] = []
    for path in real:
        if path in NEVER_HIDE or any(path.startswith(h.rstrip("/") + "/") for h in hide):
            continue
        hide.append(path)
    expose = [(os.path.realpath(data.workspace), True)]
    for prefix in runtimes.exposed_prefixes():
        if any(prefix == h or prefix.startswith(h.rstrip("/") + "/") for h in hide):
            expose.append((prefix, False))
    return MountPlan(tuple(hide), tuple(expose), data.limits.fsize_mb * 1024 * 1024)


def sandbox_env(data: LocalSandboxData, extra: dict[str, str]) -> dict[str, str]:
    ws = data.workspace_inside
    internal = f"{ws}/{INTERNAL_DIR}"
    env = {
        "PATH": runtimes.search_path([f"{ws}/node_modules/.bin", f"{internal}/site-packages/bin"]),
        "HOME": ws,
        "LANG": "C.UTF-8",
        "LC_ALL": "C.UTF-8",
        "TMPDIR": "/tmp" if data.isolation == "bwrap" else f"{internal}/tmp",
        "PYTHONPATH": data.site_packages_inside(),
        "NODE_PATH": f"{ws}/node_modules",
        "PIP_DISABLE_PIP_VERSION_CHECK": "1",
    }
    if egress_inside.restricted(data):
        env.update(egress_inside.proxy_env())
    env.update(data.env)
    env.update(extra)
    return env


def path_inside(data: LocalSandboxData, cwd_rel: str = "") -> str:
    """A workspace directory as sandboxed code sees it."""
    base = WORKSPACE_IN_BWRAP if data.isolation == "bwrap" else os.path.realpath(data.workspace)
    return f"{base}/{cwd_rel}" if cwd_rel else base


def bwrap_prefix_argv(
    data: LocalSandboxData, *, network: bool, cwd_inside: str, env: dict[str, str]
) -> list[str]:
    bwrap = shutil.which("bwrap") or "bwrap"
    argv = [bwrap, "--unshare-all", "--cap-drop", "ALL", "--clearenv"]
    for name, value in env.items():
        argv += ["--setenv", name, value]
    if network:  # pasta's namespace (network_prefix_argv), never the host's
        argv = [*network_prefix_argv(), *argv, "--share-net"]
    argv += ["--die-with-parent", "--new-session", "--hostname", SANDBOX_HOSTNAME]
    argv += ["--ro-bind", "/usr", "/usr"]
    for name in ROOT_MERGED_DIRS:
        host = Path("/") / name
        if host.is_symlink():
            argv += ["--symlink", os.readlink(host), f"/{name}"]
        elif host.is_dir():
            argv += ["--ro-bind", str(host), f"/{name}"]
    for name in ETC_FILES:
        argv += ["--ro-bind-try", f"/etc/{name}", f"/etc/{name}"]
    for prefix in runtimes.exposed_prefixes():
        argv += ["--ro-bind", prefix, prefix]
    argv += ["--proc", "/proc", "--dev", "/dev"]
    argv += ["--size", str(data.limits.fsize_mb * 1024 * 1024), "--tmpfs", "/tmp"]
    argv += ["--bind", os.path.realpath(data.workspace), WORKSPACE_IN_BWRAP]
    if network:
        resolv = os.path.join(os.path.realpath(data.workspace), RESOLV_CONF)
        argv += ["--ro-bind", resolv, "/etc/resolv.conf"]
    argv += ["--chdir", cwd_inside, "--"]
    return argv


def build_launch(
    settings: Settings,
    data: LocalSandboxData,
    inner_argv: list[str],
    *,
    network: bool,
    env: dict[str, str],
    cwd_rel: str = "",
    pass_fds: tuple[int, ...] = (),
    cgroup_procs: tuple[str, ...] = (),
) -> Launch:
    """The argv, environment and child setup that run ``inner_argv`` in the sandbox."""
    root = running_as_root()
    bwrap = data.isolation == "bwrap"
    host_cwd = (
        os.path.join(os.path.realpath(data.workspace), cwd_rel) if cwd_rel else data.workspace
    )
    if bwrap:
        host_cwd = BWRAP_HOST_CWD
    plan = _mount_plan(settings, data) if root else None
    nproc = (
        data.limits.nproc
        if data.dedicated_uid
        else _count_processes_of(os.getuid()) + data.limits.nproc
    )
    setup = ChildSetup(
        limits=data.limits,
        uid=data.uid if data.dedicated_uid else None,
        gid=data.gid if data.dedicated_uid else None,
        mount_plan=plan,
        chdir=host_cwd if plan is not None else None,
        nproc=nproc,
        cgroup_procs=cgroup_procs,
    )
    inner_env = sandbox_env(data, env)
    if network and egress_inside.restricted(data):  # no pasta: the proxy is the way out
        inner_argv, network = egress_inside.forwarder_argv(data, inner_argv), False
    if bwrap and network:
        owner = (data.uid, data.gid) if data.dedicated_uid else None
        nameserver = f"nameserver {DNS_FORWARD}\n".encode()
        files.write_file(data.workspace, RESOLV_CONF, nameserver, max_bytes=64, owner=owner)
    if bwrap:
        inside = WORKSPACE_IN_BWRAP + (f"/{cwd_rel}" if cwd_rel else "")
        argv = bwrap_prefix_argv(data, network=network, cwd_inside=inside, env=inner_env)
        argv += inner_argv
        exec_env = dict(BWRAP_HOST_ENV)
    else:
        argv, exec_env = list(inner_argv), inner_env
    return Launch(argv, exec_env, host_cwd, setup, data.workspace, pass_fds, bwrap)


def enable_subreaper() -> None:
    """Orphans of sandboxed processes get reparented to us (and reaped), not to init."""
    _libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)


# --------------------------------------------------------------------------- bwrap probe

_probe: dict[str, str | None] = {}


async def bwrap_unavailable_reason(settings: Settings, data: LocalSandboxData) -> str | None:
    """None when bwrap works here (probed once per process with a real launch), else why."""
    if "result" in _probe:
        return _probe["result"]
    reason: str | None
    if shutil.which("bwrap") is None:
        reason = "bwrap is not installed"
    else:
        probe = data.model_copy(update={"isolation": "bwrap"})
        launch = build_launch(settings, probe, ["/usr/bin/true"], network=False, env={})
        enable_subreaper()
        report = SetupReport()
        try:
            proc = await asyncio.create_subprocess_exec(
                *launch.argv,
                env=launch.env,
                cwd=launch.cwd,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.DEVNULL,
                stderr=asyncio.subprocess.PIPE,
                preexec_fn=report.setup(launch.setup),
                start_new_session=True,
            )
            _, err = await asyncio.wait_for(proc.communicate(), 10)
        except (OSError, TimeoutError, ValueError, subprocess.SubprocessError) as exc:
            # Not bwrap's verdict (our child setup, a fork under load, a slow node): said
            # now, probed again next time, never remembered as "bwrap does not work".
            failure = report.failure()
            return f"bwrap failed to start: {failure or exc}"
        finally:
            report.close()
        detail = err.decode(errors="replace").strip()
        reason = None if proc.returncode == 0 else f"bwrap failed: {detail}"
    _probe["result"] = reason
    return reason


def policy_notice(settings: Settings) -> str:
    """One line for the server's start: the isolation policy and whether it can be met."""
    if settings.sandbox_isolation == "rlimits":
        return (
            "sandbox isolation: rlimits, chosen by the operator (CERVER_SANDBOX_ISOLATION): "
            "no namespaces; sandboxed code sees the host's network and filesystem"
        )
    bwrap = shutil.which("bwrap")
    reason = "bwrap is not installed" if bwrap is None else None
    if bwrap is not None:
        try:
            done = subprocess.run(
                [bwrap, "--unshare-all", "--ro-bind", "/", "/", "/usr/bin/true"],
                env=BWRAP_HOST_ENV, cwd=BWRAP_HOST_CWD, capture_output=True, timeout=10,
            )  # fmt: skip
        except (OSError, subprocess.SubprocessError) as exc:
            reason = f"bwrap failed to start: {exc}"
        else:
            if done.returncode != 0:
                reason = f"bwrap failed: {done.stderr.decode(errors='replace').strip()}"
    if reason is not None:
        return (
            f"sandbox isolation: bwrap, which does not work here ({reason}): this node "
            "REFUSES to run code until it does, or until the operator sets "
            "CERVER_SANDBOX_ISOLATION=rlimits"
        )
    return "sandbox isolation: bwrap (namespaces, no network unless asked)"
