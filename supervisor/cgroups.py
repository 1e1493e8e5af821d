"""A cgroup (v2) per created service, where one may be made.

The tree lives under the daemon's own cgroup (delegated to it under systemd with
``Delegate=yes``; anywhere for root): ``<own>/supervisor.<N>.<pid>/svc-<name>``. A
service's whole process tree stays in its cgroup, even a grandchild that double-forked
into a session of its own, so :meth:`Cgroups.kill` ends all of it (``cgroup.kill``).

Where the daemon cannot make cgroups (not root and nothing delegated, no cgroup2 mount)
:meth:`Cgroups.create` returns None and services get process groups only.
"""

from __future__ import annotations

import contextlib
import os
import signal


class Cgroups:
    """The instance's cgroup tree. Python has no ``clone3(CLONE_INTO_CGROUP)``, so the
    daemon (one thread) steps into the service's cgroup for the spawn and back out
    (:meth:`spawning_in`): the child is born there, before it can fork anything."""

    def __init__(self, base: str, home: str | None = None) -> None:
        self.base = base
        self.home = home or os.path.dirname(base)  # the daemon's own cgroup
        # kept open: stepping back home must not need a new fd (it could be the last one)
        self._home_fd = os.open(os.path.join(self.home, "cgroup.procs"),
                                os.O_WRONLY | os.O_CLOEXEC)

    @classmethod
    def create(cls, instance: int) -> Cgroups | None:
        """Our cgroup tree for ``instance``, or None where none can be made."""
        try:
            with open("/proc/self/mountinfo") as f:
                mount = next((line.split()[4] for line in f if " - cgroup2 " in line), None)
            with open("/proc/self/cgroup") as f:
                own = next((line.strip()[3:] for line in f if line.startswith("0::")), None)
        except OSError:
            return None
        if mount is None or own is None:
            return None
        base = os.path.join(mount + own.rstrip("/"), f"supervisor.{instance}.{os.getpid()}")
        try:
            os.makedirs(base, exist_ok=True)
            return cls(base, mount + own.rstrip("/"))
        except OSError:
            return None

    def path(self, name: str) -> str:
        return os.path.join(self.base, f"svc-{name}")  # never "cgroup.*": those are files

    @contextlib.contextmanager
    def spawning_in(self, name: str):
        """Run the body (a spawn) with the daemon inside ``name``'s cgroup; yields whether
        it got there (where it could not, the child is spawned outside any cgroup of ours)."""
        path = self.path(name)
        try:
            try:  # a restart: the cgroup is there already
                _write(path + "/cgroup.procs", "0")  # "0": the writing process
            except FileNotFoundError:  # a first start
                try:
                    os.mkdir(path)
                except FileNotFoundError:  # our tree was removed under us: make it again
                    os.makedirs(path, exist_ok=True)
                _write(path + "/cgroup.procs", "0")
        except OSError:
            yield False
            return
        try:
            yield True
        finally:
            os.write(self._home_fd, b"0")

    def pids(self, name: str) -> list[int]:
        try:
            with open(os.path.join(self.path(name), "cgroup.procs")) as f:
                return [int(line) for line in f if line.strip()]
        except OSError:
            return []

    def kill(self, name: str) -> None:
        """SIGKILL everything left in the service's cgroup."""
        path = self.path(name)
        try:
            _write(os.path.join(path, "cgroup.kill"), "1")
            return
        except FileNotFoundError:
            if not os.path.isdir(path):
                return
        except OSError:
            pass
        for pid in self.pids(name):  # Linux < 5.14: no cgroup.kill
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)

    def remove(self, name: str) -> None:
        with contextlib.suppress(OSError):
            os.rmdir(self.path(name))

    def close(self) -> None:
        """Remove the tree (the cgroups of services still running stay, and so does it)."""
        if self._home_fd >= 0:
            os.close(self._home_fd)
            self._home_fd = -1
        try:
            entries = os.listdir(self.base)
        except OSError:
            return
        for entry in entries:
            if entry.startswith("svc-"):
                with contextlib.suppress(OSError):
                    os.rmdir(os.path.join(self.base, entry))
        with contextlib.suppress(OSError):
            os.rmdir(self.base)


def _write(path: str, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
    try:
        os.write(fd, text.encode())
    finally:
        os.close(fd)
