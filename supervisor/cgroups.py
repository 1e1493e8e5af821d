"""A cgroup (v2) per created service, where one may be made.

The instance's tree lives under the daemon's own cgroup (delegated to it under systemd
with ``Delegate=yes``; anywhere for root): ``<own>/supervisor.<N>.<key>/<dir>``, where
``<key>`` is derived from the runtime directory, so that the next daemon of the same
instance finds the tree again after a crash, and instances of separate runtime
directories never share one. Each service gets a directory of its own (``svc-<name>``,
with a suffix where an earlier service of that name still has processes in its own:
``svc-<name>~<k>``, ``~`` being in no service's name, so that found services can tell
web's third cgroup from a service called web.3's without the state document), kept in the
state document with the service.

A service's whole process tree stays in its cgroup, even a grandchild that double-forked
into a session of its own, so :meth:`Cgroups.kill` ends all of it (``cgroup.kill``). That
is also the identity of a created service across a crash of the daemon
(:meth:`Cgroups.holds`), and the way to find what a crashed daemon left behind
(:meth:`Cgroups.dirs`). A cgroup is removed once it is empty: ``cgroup.events`` says when
(``populated 0``, notified with POLLPRI, watched by an epoll registered in the loop).

A cgroup once killed is never spawned into again: on Linux 6.18 (seen here) every process
born into it afterwards with CLONE_INTO_CGROUP is killed at once, however much later. The
next start of that service gets a new directory (:meth:`Cgroups.new_dir`), and a cgroup
that is already empty is removed without a kill.

Where the daemon cannot make cgroups (not root and nothing delegated, no cgroup2 mount)
:meth:`Cgroups.create` returns None and services get process groups only.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import select
import selectors
import signal

from supervisor import process


class Cgroups:
    """The instance's cgroup tree. A child is born in its service's cgroup
    (:meth:`spawning_in`): through ``clone3(CLONE_INTO_CGROUP)`` with the cgroup's fd
    (``native/spawn.c``), or where the kernel has no such thing, by the daemon (one
    thread) stepping into the cgroup for the spawn and back out."""

    def __init__(self, base: str, mount: str, sel: selectors.BaseSelector | None = None) -> None:
        self.base = base
        self.mount = mount  # where the cgroup2 hierarchy is mounted
        self.home = os.path.dirname(base)  # the daemon's own cgroup
        # kept open: stepping back home must not need a new fd (it could be the last one)
        self._home_fd = os.open(os.path.join(self.home, "cgroup.procs"),
                                os.O_WRONLY | os.O_CLOEXEC)
        # a spawn with clone3 holds the cgroup's fd while its pidfd is made: this fd is
        # given up for the cgroup's during each spawn, so that a spawn needs no more free
        # fds than one pidfd (a restart works with no fd to spare)
        self._reserve = os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)
        self._sel = sel
        self._events = select.epoll(flags=select.EPOLL_CLOEXEC)
        self._emptying: dict[int, str] = {}  # cgroup.events fd -> the dir to remove
        self.killed: set[str] = set()  # killed, not removed yet: never to be spawned into
        # memory.current and pids.current, until found missing (controllers off here)
        self._memory = self._tasks = True
        if sel is not None:
            sel.register(self._events, selectors.EVENT_READ, self._on_events)

    @classmethod
    def create(cls, instance: int, rundir: str,
               sel: selectors.BaseSelector | None = None) -> Cgroups | None:
        """Our cgroup tree for ``instance`` of ``rundir``, or None where none can be made."""
        try:
            with open("/proc/self/mountinfo") as f:
                mount = next((line.split()[4] for line in f if " - cgroup2 " in line), None)
            with open("/proc/self/cgroup") as f:
                own = next((line.strip()[3:] for line in f if line.startswith("0::")), None)
        except OSError:
            return None
        if mount is None or own is None:
            return None
        key = hashlib.sha256(os.fsencode(os.path.realpath(rundir))).hexdigest()[:12]
        base = os.path.join(mount + own.rstrip("/"), f"supervisor.{instance}.{key}")
        try:
            os.makedirs(base, exist_ok=True)
            return cls(base, mount, sel)
        except OSError:
            return None

    def path(self, name: str) -> str:
        return os.path.join(self.base, name)

    def new_dir(self, service: str) -> str:
        """A directory for the next start of a service, made here: ``svc-<name>``, or
        ``svc-<name>~<k>`` while one of that name is still there (an earlier process tree
        of the service, or of another service of that name, being killed or removed).
        Claimed by its mkdir (no look first: one system call where there is no clash);
        where it cannot be made, the name all the same (the spawn is then outside it)."""
        name, k = f"svc-{service}", 1  # never "cgroup.*": those are the kernel's files
        while True:
            if name not in self.killed:
                try:
                    _mkdir(self.path(name))
                    return name
                except FileExistsError:
                    pass
                except OSError:
                    return name
            k += 1
            name = f"svc-{service}~{k}"

    def spawnable(self, name: str | None) -> bool:
        """Whether a child may be born in cgroup ``name`` (made, and never killed)."""
        return name is not None and name not in self.killed

    def dirs(self) -> list[str]:
        """Every service directory in the tree."""
        try:
            return [e for e in os.listdir(self.base) if e.startswith("svc-")]
        except OSError:
            return []

    @contextlib.contextmanager
    def spawning_in(self, name: str):
        """For the spawn in the body: ``(cgroup fd, placed)``. With clone3 the fd of cgroup
        ``name`` (made where missing), for the child to be born in; else None, and the
        daemon is inside the cgroup during the body. ``placed``: whether the child will be
        in it (where it cannot be, it is spawned outside any cgroup of ours)."""
        path = self.path(name)
        if process.clone3_used():
            fd = self._open_cgroup(path)
            try:
                yield (fd, True) if fd >= 0 else (None, False)
            finally:
                if fd >= 0:
                    os.close(fd)
                if self._reserve < 0:
                    with contextlib.suppress(OSError):
                        self._reserve = os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)
            return
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
            yield None, False
            return
        try:
            yield None, True
        finally:
            os.write(self._home_fd, b"0")

    def _open_cgroup(self, path: str) -> int:
        """The cgroup's fd (made where missing: it was removed under us), in place of the
        reserve fd; or -1. The cgroup is there already (made by :meth:`new_dir`, or kept
        for a restart): opened at once."""
        if self._reserve >= 0:
            os.close(self._reserve)  # taken again after the spawn
            self._reserve = -1
        try:
            return _open_dir(path)
        except FileNotFoundError:
            pass
        except OSError:
            return -1
        try:
            os.makedirs(path, exist_ok=True)
            return _open_dir(path)
        except OSError:
            return -1

    def pids(self, name: str) -> list[int]:
        try:
            with open(os.path.join(self.path(name), "cgroup.procs")) as f:
                return [int(line) for line in f if line.strip()]
        except OSError:
            return []

    def holds(self, name: str, pid: int) -> bool:
        """Whether process ``pid`` is in cgroup ``name`` (its ``/proc/<pid>/cgroup``)."""
        want = "0::" + self.path(name)[len(self.mount):] + "\n"
        try:
            with open(f"/proc/{pid}/cgroup") as f:
                return want in f.read().splitlines(keepends=True)
        except OSError:
            return False

    def kill(self, name: str) -> None:
        """SIGKILL everything in cgroup ``name`` (which is then never spawned into again)."""
        path = self.path(name)
        self.killed.add(name)
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

    def populated(self, name: str) -> bool:
        """Whether a process is in cgroup ``name`` (its ``cgroup.events``). On every
        restart's path: three syscalls, no file object."""
        try:
            fd = os.open(f"{self.base}/{name}/cgroup.events", os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            return False
        try:
            return b"populated 1" in os.read(fd, 256)
        except OSError:
            return False
        finally:
            os.close(fd)

    def usage(self, name: str) -> tuple[float | None, int | None, int | None]:
        """(CPU seconds, memory bytes, tasks) of everything in cgroup ``name``: CPU from its
        ``cpu.stat`` (the processes gone included); memory from ``memory.current`` and
        tasks from ``pids.current`` where those controllers are on, else the sums of the
        resident memory and threads of its processes (``/proc/<pid>/stat``). None for what
        cannot be read. Three small reads either way (~6 us each here: the floor of a
        list-supervisor's usage columns, docs/benchmarks.md)."""
        path = f"{self.base}/{name}/"
        cpu = _cpu_of(process.read_small(path + "cpu.stat"))
        mem = self._counter(path + "memory.current") if self._memory else None
        if mem is None and self._memory and os.path.isdir(path):
            self._memory = False  # the controller is off in our tree
        tasks = self._counter(path + "pids.current") if self._tasks else None
        if tasks is None and self._tasks and os.path.isdir(path):
            self._tasks = False
        if mem is None or tasks is None:
            data = process.read_small(path + "cgroup.procs")
            if data is None:
                return cpu, mem, tasks
            rss = threads = 0
            for pid in data.split():
                got = process.usage(pid)
                if got is not None:
                    rss += got[1]
                    threads += got[2]
            mem = rss if mem is None else mem
            tasks = threads if tasks is None else tasks
        return cpu, mem, tasks

    def cpu_seconds(self, name: str) -> float | None:
        """The CPU time of everything that ran in cgroup ``name`` so far (``cpu.stat``'s
        ``usage_usec``, there whatever controllers are on), or None."""
        return _cpu_of(process.read_small(f"{self.base}/{name}/cpu.stat"))

    @staticmethod
    def _counter(path: str) -> int | None:
        data = process.read_small(path)
        return int(data) if data and data.strip().isdigit() else None

    def discard(self, name: str) -> None:
        """Kill what is left in cgroup ``name`` (only if anything is: a cgroup killed cannot
        be spawned into again) and remove it once it is empty."""
        if not self._rmdir(name):
            self.kill(name)
            self.remove(name)

    def _rmdir(self, name: str) -> bool:
        """Remove cgroup ``name``; False while processes are in it."""
        try:
            os.rmdir(self.path(name))
        except FileNotFoundError:
            pass
        except OSError as exc:
            if exc.errno == errno.EBUSY:
                return False
        self.killed.discard(name)
        return True

    def remove(self, name: str) -> None:
        """Remove cgroup ``name`` now, or as soon as it is empty (its processes may take a
        moment to die)."""
        path = self.path(name)
        if self._rmdir(name) or self._sel is None:
            return
        try:
            fd = os.open(os.path.join(path, "cgroup.events"), os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            return
        self._emptying[fd] = name
        self._events.register(fd, select.EPOLLPRI)
        self._check_empty(fd)  # it may have emptied meanwhile

    def _on_events(self, mask: int) -> None:
        for fd, _ in self._events.poll(0):
            self._check_empty(fd)

    def _check_empty(self, fd: int) -> None:
        try:
            populated = b"populated 1" in os.pread(fd, 4096, 0)
        except OSError:
            populated = False
        if populated:
            return
        name = self._emptying.pop(fd)
        self._events.unregister(fd)
        os.close(fd)
        self._rmdir(name)

    def close(self, *, remove_tree: bool = True) -> None:
        """Stop watching; remove the empty cgroups of the tree, and the tree when it is
        empty (the cgroups of services still running stay, and so does it)."""
        for fd in (self._home_fd, self._reserve):
            if fd >= 0:
                os.close(fd)
        self._home_fd = self._reserve = -1
        for fd in list(self._emptying):
            self._events.unregister(fd)
            os.close(fd)
        self._emptying.clear()
        if self._sel is not None:
            self._sel.unregister(self._events)
            self._sel = None
        self._events.close()
        if not remove_tree:
            return
        for entry in self.dirs():
            with contextlib.suppress(OSError):
                os.rmdir(self.path(entry))
        with contextlib.suppress(OSError):
            os.rmdir(self.base)


def _cpu_of(stat: bytes | None) -> float | None:
    """``usage_usec`` of a ``cpu.stat``, in seconds; None without it."""
    for line in (stat or b"").split(b"\n"):
        if line.startswith(b"usage_usec "):
            return int(line[11:]) / 1e6
    return None


def _mkdir(path: str) -> None:
    """mkdir, and the tree above it too where our tree was removed under us."""
    try:
        os.mkdir(path)
    except FileNotFoundError:
        os.makedirs(path)


def _open_dir(path: str) -> int:
    return os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)


def _write(path: str, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
    try:
        os.write(fd, text.encode())
    finally:
        os.close(fd)
