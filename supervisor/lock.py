"""The instance lock: one daemon an instance of a runtime directory, ever.

Two holds, taken together at start and carried over a live re-exec:

* ``<dir>/<N>.lock``, ``flock``-ed: seen by every daemon that shares the directory, in
  any network namespace;
* a name in the abstract Unix socket namespace, derived from the directory's path and
  the instance: it cannot be removed with the directory. A ``rm -rf`` of the runtime
  directory (a clean-up script, tmpfiles) takes the lock file with it, and an ``init``
  would otherwise start a second daemon for the instance while the first still runs its
  services; the first makes the directory again (``SocketKeeper``) and takes a new lock
  file there (:meth:`InstanceLock.take_file`).

Both go with the process: nothing stale is ever left to clean up.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import os
import socket


class Held(Exception):
    """Another daemon holds the instance."""


def abstract_name(base: str, instance: int) -> bytes:
    digest = hashlib.sha256(os.fsencode(base) + b"\0" + str(instance).encode()).hexdigest()
    return b"\0supervisor-instance-" + digest[:40].encode()


class InstanceLock:
    """``InstanceLock.take(base, instance)``; ``fds()`` to carry over a re-exec,
    ``InstanceLock.carried(...)`` in the new program; ``close()``."""

    def __init__(self, path: str, file_fd: int, name_sock: socket.socket | None) -> None:
        self.path = path
        self.file_fd = file_fd
        self.name_sock = name_sock

    @classmethod
    def take(cls, base: str, instance: int, path: str) -> InstanceLock:
        """Both holds, or :class:`Held`; ``OSError`` where the lock file cannot be made."""
        sock = _take_name(base, instance)
        try:
            fd = _take_file(path)
        except BaseException:
            sock.close()
            raise
        return cls(path, fd, sock)

    @classmethod
    def carried(cls, base: str, instance: int, path: str, file_fd: int,
                name_fd: int | None) -> InstanceLock:
        """The lock a re-exec carried (``name_fd`` None: an older version's, which held the
        file alone: the name is taken now)."""
        os.set_inheritable(file_fd, False)
        if name_fd is not None:
            os.set_inheritable(name_fd, False)
            return cls(path, file_fd, socket.socket(fileno=name_fd))
        try:
            sock = _take_name(base, instance)
        except (Held, OSError):
            sock = None  # the file still holds it, as it did before
        return cls(path, file_fd, sock)

    def take_file(self, dir_fd: int) -> None:
        """A new lock file (the directory was made again), made and taken in the directory
        ``dir_fd`` (the one held and checked safe, not whatever is at the path now); the
        old one let go. :class:`Held` or ``OSError`` when it cannot be (the old one is
        kept)."""
        fd = _take_file(os.path.basename(self.path), dir_fd)
        os.close(self.file_fd)
        self.file_fd = fd

    def fds(self) -> list[int]:
        return [self.file_fd] + ([self.name_sock.fileno()] if self.name_sock else [])

    def close(self) -> None:
        if self.file_fd >= 0:
            os.close(self.file_fd)
            self.file_fd = -1
        if self.name_sock is not None:
            self.name_sock.close()
            self.name_sock = None


def _take_name(base: str, instance: int) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
    try:
        sock.bind(abstract_name(base, instance))
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            raise Held from None
        raise
    return sock


def _take_file(path: str, dir_fd: int | None = None) -> int:
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600,
                 dir_fd=dir_fd)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise Held from None
    except BaseException:
        os.close(fd)
        raise
    return fd
