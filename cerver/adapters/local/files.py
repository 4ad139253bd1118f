"""Safe file access inside a workspace: relative paths only, never out through a symlink.

A path is checked as text (relative, no ``..``, no NUL), resolved (symlinks inside the
workspace are fine, any that lead out are refused), and then opened by walking the
*resolved* components one ``openat`` at a time with ``O_NOFOLLOW``, so a symlink swapped
in by sandboxed code between the check and the open fails instead of being followed.
When we are root, a file we did not create for the sandbox must belong to the sandbox's
uid (a hard link to a foreign file is refused), and what we write is chowned to it.
"""

from __future__ import annotations

import errno
import os
import stat
from pathlib import PurePosixPath

from cerver.errors import BadRequest, NotFound, PathEscape, PayloadTooLarge

DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


def relative_parts(path: str) -> list[str]:
    """The components of a workspace-relative path; PathEscape for anything else."""
    if not path or "\x00" in path:
        raise BadRequest("file path must be a non-empty string without NUL bytes")
    if path.startswith("/"):
        raise PathEscape(
            f"path {path!r} is absolute; use a path relative to the workspace",
            details={"path": path},
        )
    parts = [p for p in PurePosixPath(path).parts if p != "."]
    if ".." in parts:
        raise PathEscape(f"path {path!r} leaves the workspace", details={"path": path})
    if not parts:
        raise BadRequest(f"path {path!r} names the workspace itself, not a file")
    return parts


def _resolved_parts(workspace: str, path: str) -> list[str]:
    parts = relative_parts(path)
    root = os.path.realpath(workspace)
    target = os.path.realpath(os.path.join(root, *parts))
    if target != root and not target.startswith(root + "/"):
        raise PathEscape(
            f"path {path!r} leads out of the workspace (through a symlink)",
            details={"path": path},
        )
    rel = os.path.relpath(target, root)
    if rel == ".":
        raise BadRequest(f"path {path!r} names the workspace itself, not a file")
    return rel.split("/")


def _open_dir_chain(
    workspace: str, parts: list[str], path: str, *, create: bool, owner: tuple[int, int] | None
) -> int:
    """Walk to the parent directory of the last component; return its fd."""
    fd = os.open(os.path.realpath(workspace), DIR_FLAGS)
    try:
        for name in parts[:-1]:
            try:
                nxt = os.open(name, DIR_FLAGS, dir_fd=fd)
            except FileNotFoundError:
                if not create:
                    raise NotFound(
                        f"file {path!r} does not exist", details={"path": path}
                    ) from None
                os.mkdir(name, 0o755, dir_fd=fd)
                if owner is not None:
                    os.chown(name, *owner, dir_fd=fd, follow_symlinks=False)
                nxt = os.open(name, DIR_FLAGS, dir_fd=fd)
            os.close(fd)
            fd = nxt
        return fd
    except OSError as exc:
        os.close(fd)
        raise _translate(exc, path) from exc
    except BaseException:
        os.close(fd)
        raise


def _translate(exc: OSError, path: str) -> Exception:
    if exc.errno in (errno.ELOOP, errno.ENOTDIR, errno.EXDEV):
        return PathEscape(
            f"path {path!r} goes through a symlink or non-directory", details={"path": path}
        )
    if exc.errno == errno.ENOENT:
        return NotFound(f"file {path!r} does not exist", details={"path": path})
    if exc.errno in (errno.ENXIO, errno.EAGAIN):  # a FIFO without a reader, a device
        return BadRequest(f"path {path!r} is not a regular file", details={"path": path})
    if exc.errno == errno.EISDIR:
        return BadRequest(f"path {path!r} is a directory", details={"path": path})
    return BadRequest(f"cannot access {path!r}: {exc.strerror}", details={"path": path})


def _check_owner(st: os.stat_result, owner: tuple[int, int] | None, path: str) -> None:
    if not stat.S_ISREG(st.st_mode):
        raise BadRequest(f"path {path!r} is not a regular file", details={"path": path})
    if owner is not None and st.st_uid != owner[0]:
        raise PathEscape(
            f"file {path!r} does not belong to the sandbox (a link to a foreign file?)",
            details={"path": path},
        )


def read_file(workspace: str, path: str, *, max_bytes: int, owner: tuple[int, int] | None) -> bytes:
    """Read a workspace file (blocking: call it in a thread)."""
    parts = _resolved_parts(workspace, path)
    parent = _open_dir_chain(workspace, parts, path, create=False, owner=owner)
    try:
        # O_NONBLOCK: a FIFO (or device) the sandbox made must not block us; fstat refuses it
        flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK
        fd = os.open(parts[-1], flags, dir_fd=parent)
    except OSError as exc:
        raise _translate(exc, path) from exc
    finally:
        os.close(parent)
    with os.fdopen(fd, "rb") as fh:
        st = os.fstat(fh.fileno())
        _check_owner(st, owner, path)
        if st.st_size > max_bytes:
            raise PayloadTooLarge(
                f"file {path!r} is {st.st_size} bytes; the limit is {max_bytes}",
                details={"path": path, "size": st.st_size, "limit": max_bytes},
            )
        data = fh.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise PayloadTooLarge(
            f"file {path!r} is larger than the limit of {max_bytes} bytes",
            details={"path": path, "limit": max_bytes},
        )
    return data


def write_file(
    workspace: str, path: str, data: bytes, *, max_bytes: int, owner: tuple[int, int] | None
) -> None:
    """Write a workspace file, creating parent directories (blocking: call it in a thread)."""
    if len(data) > max_bytes:
        raise PayloadTooLarge(
            f"file {path!r} would be {len(data)} bytes; the limit is {max_bytes}",
            details={"path": path, "size": len(data), "limit": max_bytes},
        )
    parts = _resolved_parts(workspace, path)
    parent = _open_dir_chain(workspace, parts, path, create=True, owner=owner)
    flags = os.O_WRONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK  # see read_file
    created = True
    try:
        try:
            fd = os.open(parts[-1], flags | os.O_CREAT | os.O_EXCL, 0o644, dir_fd=parent)
        except FileExistsError:
            created = False
            fd = os.open(parts[-1], flags, dir_fd=parent)
    except OSError as exc:
        raise _translate(exc, path) from exc
    finally:
        os.close(parent)
    with os.fdopen(fd, "wb") as fh:
        _check_owner(os.fstat(fd), None, path)  # a regular file, before anything else
        if created and owner is not None:
            os.fchown(fd, *owner)
        _check_owner(os.fstat(fd), owner, path)
        os.set_blocking(fd, True)
        fh.truncate(0)
        fh.write(data)


def resolve_dir(workspace: str, path: str | None) -> str:
    """A workspace-relative working directory, checked; '' for the workspace itself."""
    if not path or path in (".", "./"):
        return ""
    parts = _resolved_parts(workspace, path)
    full = os.path.join(os.path.realpath(workspace), *parts)
    if not os.path.isdir(full):
        raise BadRequest(f"cwd {path!r} is not a directory in the workspace", details={"cwd": path})
    return "/".join(parts)
