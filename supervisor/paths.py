"""Where an instance keeps its socket, lock, log and state (docs/reference.md, "Paths and
environment"), and whether that place can be trusted.

A runtime directory is trusted only when it is ours: a real directory (not a symbolic
link), owned by the daemon's user, writable by nobody else; and nothing on the way to it
lets another user replace it: every directory above it is owned by root or by us (one that
others may write has the sticky bit, as /tmp has), and every symbolic link on the way is
root's or ours (another's, even in a sticky directory, is theirs to swap). Otherwise
another user could plant a state file there whose commands the daemon would run as itself,
or pose as the daemon to the CLI.
"""

from __future__ import annotations

import os
import stat

INSTANCES = range(100)


class UnsafeDir(Exception):
    """The runtime directory cannot be trusted; the message says why, in one line."""


def runtime_dir() -> str:
    explicit = os.environ.get("SUPERVISOR_RUNTIME_DIR")
    if explicit:  # a relative one is the caller's: the daemon runs in /
        return os.path.abspath(explicit)
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
    path = os.path.abspath(path)  # no trailing slash: lstat must see a link as a link
    try:
        st = os.lstat(path)
    except OSError as exc:
        return f"runtime directory {path}: {exc.strerror}"
    if stat.S_ISLNK(st.st_mode):
        return f"runtime directory {path} is a symbolic link"
    if not stat.S_ISDIR(st.st_mode):
        return f"runtime directory {path} is not a directory"
    why = _why_not_ours(st, path, owner)
    if why is not None:
        return why
    return _why_unsafe_way(os.path.dirname(path), path, st.st_uid, 0)


def _why_not_ours(st: os.stat_result, path: str, owner: int | None) -> str | None:
    """Why the directory of ``st`` is not ``owner``'s alone (None: whoever owns it)."""
    if owner is not None and st.st_uid != owner:
        return f"runtime directory {path} belongs to uid {st.st_uid}, not to uid {owner}"
    if st.st_mode & 0o022:
        return (f"runtime directory {path} is writable by group or others "
                f"(mode {stat.S_IMODE(st.st_mode):04o})")
    return None


def why_unsafe_fd(fd: int, path: str) -> str | None:
    """Why the directory open as ``fd`` (found at ``path``) is not ours alone, or None:
    what :func:`why_unsafe` checked at the path, checked again on the directory held, for
    another may have been put there, or its owner or mode changed, since."""
    return _why_not_ours(os.fstat(fd), path, os.geteuid())


def _why_unsafe_way(way: str, path: str, owner: int, depth: int) -> str | None:
    """Why the directories and links that lead to ``way`` (as written, and where a link
    leads) could let a user other than root and ``owner`` replace what is below them."""
    if depth > 40:
        return f"too many symbolic links on the way to runtime directory {path}"
    here = "/"
    for part in [p for p in way.split("/") if p]:
        here = os.path.join(here, part)
        try:
            st = os.lstat(here)
        except OSError as exc:
            return f"{here}: {exc.strerror}"
        if st.st_uid not in (0, owner):
            kind = "a symbolic link" if stat.S_ISLNK(st.st_mode) else "a directory"
            return (f"{here}, on the way to runtime directory {path}, is {kind} of uid "
                    f"{st.st_uid}: it could replace the directory")
        if stat.S_ISLNK(st.st_mode):  # root's or ours: follow it, and check where it leads
            target = os.path.join(os.path.dirname(here), os.readlink(here))
            why = _why_unsafe_way(os.path.normpath(target), path, owner, depth + 1)
            if why is not None:
                return why
            here = os.path.realpath(here)
            st = os.stat(here)
        if st.st_mode & 0o022 and not st.st_mode & stat.S_ISVTX:
            return (f"{here}, above runtime directory {path}, is writable by others "
                    f"without the sticky bit (mode {stat.S_IMODE(st.st_mode):04o})")
    if way == "/":
        st = os.stat("/")
        if st.st_uid != 0 or st.st_mode & 0o022:
            return "/ is not root's alone"
    return None


def ensure_runtime_dir() -> str:
    """Create the runtime directory (mode 0700) where it is missing, and return it once it
    is ours alone; :class:`UnsafeDir` otherwise."""
    path = os.path.abspath(runtime_dir())
    if not os.path.lexists(path):  # nothing is made under a way another user could change
        above = os.path.dirname(path)
        while above != "/" and not os.path.lexists(above):
            above = os.path.dirname(above)
        why = _why_unsafe_way(above, path, os.geteuid(), 0)
        if why is not None:
            raise UnsafeDir(why)
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
    if isinstance(text, bool) or not isinstance(text, (int, str)):  # 70.9 is no instance
        raise ValueError(f"instance must be a number from 0 to 99, not {text!r}")
    if isinstance(text, str) and not (text.isascii() and text.isdigit()):
        # int() would take " 7", Arabic-Indic digits or "7_0": not an instance number
        raise ValueError(f"instance must be a number from 0 to 99, not {text!r}")
    try:
        n = int(text)
    except (TypeError, ValueError):
        raise ValueError(f"instance must be a number from 0 to 99, not {text!r}") from None
    if n not in INSTANCES:
        raise ValueError(f"instance must be from 0 to 99, not {n}")
    return n
