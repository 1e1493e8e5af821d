"""The runtime directory of a running daemon: held open (the state file is written
relative to it), and kept (docs/reference.md, "Paths and environment").

A clean-up (``rm -rf``, a tmpfiles rule) may remove the directory or the daemon's files
in it while the daemon runs. :meth:`RuntimeDir.keep`, called by the control socket's
keeper (``control.SocketKeeper``) before it makes the socket again, makes again what is
ours there where it is gone: the directory itself (as at start: mode 0700, ours alone,
checked again on the very directory held), a new lock file, taken (the lock's abstract
name held the instance meanwhile: no second daemon could start), the state, the log file
where our stderr was one, the log relay's files. The socket made again next then leads
to a daemon that can recover.
"""

from __future__ import annotations

import os
from collections.abc import Callable

from supervisor import paths
from supervisor.lock import Held


class RuntimeDir:
    """``path``, held open as ``fd``. ``log(message, priority)`` journals what is made
    again and what cannot be; ``lock()`` is the instance lock (``lock.InstanceLock``);
    ``save()`` writes the state file (``state_names``: it and its log) anew (True when it
    is on disk); ``moved(fd)`` hands
    the log relay the directory made again; ``move_log(fd)`` makes the daemon's log file
    again where it was its stderr (True when made)."""

    def __init__(self, path: str, state_names: tuple[str, ...], *, log: Callable[[str, int], None],
                 lock: Callable[[], object], save: Callable[[], bool],
                 moved: Callable[[int], None], move_log: Callable[[int], bool]) -> None:
        self.path, self.state_names = path, state_names
        self.fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        self.log, self.lock, self.save = log, lock, save
        self.moved, self.move_log = moved, move_log
        self.trouble: str | None = None  # why the directory cannot be had, while so
        self.kept_before = False  # it was looked at before (the first look is at start)

    def keep(self, names: set[str]) -> int | None:
        """Files were removed from the directory (``names``; ``""``: the directory itself,
        by ``rm -rf`` or moved away): what is ours there is made again where it is gone.
        Returns the directory's fd (the socket is made in it), or None when the directory
        cannot be had safely (journaled once while it lasts)."""
        try:
            base = paths.ensure_runtime_dir()
            fd = os.open(base, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC | os.O_NOFOLLOW)
            why = paths.why_unsafe_fd(fd, base)  # the very one held (and made in) next
            if why is not None:
                os.close(fd)
                raise paths.UnsafeDir(why)
        except (paths.UnsafeDir, OSError) as exc:
            why = f"{getattr(exc, 'strerror', None) or exc}"
            if why != self.trouble:  # once, while it lasts (retried every second)
                self.log(f"the runtime directory cannot be had safely ({why}): nothing is "
                         "made there; clients cannot reach the daemon until it can", 3)
            self.trouble = why
            return None
        self.trouble = None
        made = []
        if _ident(os.fstat(fd)) != _ident(os.fstat(self.fd)):
            os.close(self.fd)
            self.fd = fd
            made.append("the directory")
        else:
            os.close(fd)
        lock = self.lock()
        # in the directory held (checked safe), not whatever is at its path now
        if _ident_at(os.path.basename(lock.path), self.fd) != _ident(os.fstat(lock.file_fd)):
            try:
                lock.take_file(self.fd)
                made.append("the lock")
            except (Held, OSError) as exc:  # Held: a daemon in another network namespace
                why = "another daemon holds it" if isinstance(exc, Held) else \
                    (exc.strerror or str(exc))
                self.log(f"cannot lock {lock.path} again: {why}", 3)
        if any(_ident_at(n, self.fd) is None for n in self.state_names) and self.save():
            made.append("the state")
        if self.move_log(self.fd):
            made.append("the log")
        if made[:1] == ["the directory"] or any(n.endswith(".out") for n in names):
            self.moved(self.fd)  # the log relay's files, gone too
        if made and self.kept_before:
            self.log(f"{', '.join(made)} removed from {base}: made again", 4)
        self.kept_before = True
        return self.fd

    def close(self) -> None:
        os.close(self.fd)


def _ident_at(name: str, dir_fd: int) -> tuple[int, int] | None:
    """The file ``name`` of the directory ``dir_fd`` (None where it cannot be seen)."""
    try:
        return _ident(os.stat(name, dir_fd=dir_fd, follow_symlinks=False))
    except OSError:
        return None


def _ident(st: os.stat_result) -> tuple[int, int]:
    return st.st_dev, st.st_ino
