"""Where an instance keeps its socket, lock, log and state (docs/reference.md, "Paths and
environment"), and whether that place can be trusted.

A runtime directory is trusted only when it is ours: a real directory (not a symbolic
link), owned by the daemon's user, writable by nobody else; and no directory above it lets
another user replace it (each is owned by root or by us, and one that others may write has
the sticky bit, as /tmp has). Otherwise another user could plant a state file there whose
commands the daemon would run as itself.
"""

from __future__ import annotations

import os
import stat

INSTANCES = range(100)


class UnsafeDir(Exception):
    """The runtime directory cannot be trusted; the message says why, in one line."""


def runtime_dir() -> str:
    explicit = os.environ.get("SUPERVISOR_RUNTIME_DIR")
    if explicit:
        return explicit
    uid = os.geteuid()
    if uid == 0:
        return "/run/supervisor"
    xdg = os.environ.get("XDG_RUNTIME_DIR")
    if xdg:
        return os.path.join(xdg, "supervisor")
    # no login session: the per-user runtime dir if logind made one, else a place under
    # the user's own home -- never a predictable path in a directory others share (/tmp)
    run_user = f"/run/user/{uid}"
    try:
        st = os.lstat(run_user)
        if stat.S_ISDIR(st.st_mode) and st.st_uid == uid:
            return os.path.join(run_user, "supervisor")
    except OSError:
        pass
    state_home = os.environ.get("XDG_STATE_HOME") or os.path.join(
        os.path.expanduser("~"), ".local", "state")
    return os.path.join(state_home, "supervisor", "run")


def why_unsafe(path: str, owner: int | None = None) -> str | None:
    """Why the directory ``path`` cannot be trusted (one sentence), or None when it can:
    it must belong to ``owner`` (None: whoever owns it, for a client that then checks the
    daemon is that user or root) and be writable by its owner alone, and no directory
    above it may let anyone else replace it."""
    try:
        st = os.lstat(path)
    except OSError as exc:
        return f"runtime directory {path}: {exc.strerror}"
    if stat.S_ISLNK(st.st_mode):
        return f"runtime directory {path} is a symbolic link"
    if not stat.S_ISDIR(st.st_mode):
        return f"runtime directory {path} is not a directory"
    if owner is not None and st.st_uid != owner:
        return f"runtime directory {path} belongs to uid {st.st_uid}, not to uid {owner}"
    owner = st.st_uid
    if st.st_mode & 0o022:
        return (f"runtime directory {path} is writable by group or others "
                f"(mode {stat.S_IMODE(st.st_mode):04o})")
    parent = os.path.dirname(os.path.realpath(path))
    while True:
        try:
            st = os.stat(parent)
        except OSError as exc:
            return f"{parent}: {exc.strerror}"
        if st.st_uid not in (0, owner):
            return (f"{parent}, above runtime directory {path}, belongs to uid "
                    f"{st.st_uid}: it could replace the directory")
        if st.st_mode & 0o022 and not st.st_mode & stat.S_ISVTX:
            return (f"{parent}, above runtime directory {path}, is writable by others "
                    f"without the sticky bit (mode {stat.S_IMODE(st.st_mode):04o})")
        if parent == "/":
            return None
        parent = os.path.dirname(parent)


def ensure_runtime_dir() -> str:
    """Create the runtime directory (mode 0700) where it is missing, and return it once it
    is ours alone; :class:`UnsafeDir` otherwise."""
    path = os.path.abspath(runtime_dir())
    try:
        os.makedirs(path, mode=0o700, exist_ok=True)
    except OSError as exc:
        raise UnsafeDir(f"cannot make runtime directory {path}: {exc.strerror}") from None
    why = why_unsafe(path, os.geteuid())
    if why is not None:
        raise UnsafeDir(why)
    return path


def socket_path(instance: int, base: str | None = None) -> str:
    return os.path.join(base or runtime_dir(), f"{instance}.sock")


def lock_path(instance: int, base: str | None = None) -> str:
    return os.path.join(base or runtime_dir(), f"{instance}.lock")


def state_path(instance: int, base: str | None = None) -> str:
    return os.path.join(base or runtime_dir(), f"{instance}.state.json")


def log_path(instance: int, base: str | None = None) -> str:
    return os.path.join(base or runtime_dir(), f"{instance}.log")


def parse_instance(text: str | int | None) -> int:
    """The instance number, or ValueError with a clear sentence."""
    if text is None:
        return 0
    try:
        n = int(text)
    except (TypeError, ValueError):
        raise ValueError(f"instance must be a number from 0 to 99, not {text!r}") from None
    if n not in INSTANCES:
        raise ValueError(f"instance must be from 0 to 99, not {n}")
    return n
