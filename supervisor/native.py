"""Thin Pythonic wrappers over the cffi-built C (``supervisor._native``, from ``native/``):
the signalfd, timerfd and inotify file objects, and the clone3 spawn of ``native/spawn.c``.

Every fd made here is CLOEXEC (the fds also non-blocking). A failing C call becomes
``OSError`` in exactly one place: :func:`_check`.
"""

from __future__ import annotations

import os
import signal
import struct
import warnings

from supervisor._native import ffi, lib

CLOCK_REALTIME = lib.CLOCK_REALTIME
CLOCK_MONOTONIC = lib.CLOCK_MONOTONIC
CLOCK_BOOTTIME = lib.CLOCK_BOOTTIME

_SIGINFO_SIZE = ffi.sizeof("struct signalfd_siginfo")
_NS = 1_000_000_000


def _check(ret: int) -> int:
    """The one place where a C call's ``-1``/errno turns into ``OSError``."""
    if ret == -1:
        err = ffi.errno
        raise OSError(err, os.strerror(err))
    return ret


class _Fd:
    """An owned file descriptor with ``fileno``/``close`` and context-manager support."""

    __slots__ = ("_fd",)

    def __init__(self, fd: int) -> None:
        self._fd = fd

    def fileno(self) -> int:
        if self._fd < 0:
            raise ValueError("I/O operation on closed fd")
        return self._fd

    @property
    def closed(self) -> bool:
        return self._fd < 0

    def close(self) -> None:
        if self._fd >= 0:
            fd, self._fd = self._fd, -1
            os.close(fd)

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __del__(self) -> None:
        if getattr(self, "_fd", -1) >= 0:
            warnings.warn(f"unclosed {type(self).__name__} fd {self._fd}", ResourceWarning,
                          stacklevel=2)
            self.close()


class SigInfo:
    """The fields of one ``struct signalfd_siginfo`` that a supervisor needs."""

    __slots__ = ("code", "pid", "signo", "status", "uid")

    def __init__(self, signo: int, code: int, pid: int, uid: int, status: int) -> None:
        self.signo = signo
        self.code = code
        self.pid = pid
        self.uid = uid
        self.status = status

    def __repr__(self) -> str:
        return f"SigInfo(signo={self.signo}, code={self.code}, pid={self.pid}, uid={self.uid})"


class SignalFd(_Fd):
    """``signalfd(2)`` for a set of signals. The caller blocks them first (see :meth:`block`)."""

    __slots__ = ()

    def __init__(self, signals) -> None:
        mask = ffi.new("sigset_t *")
        _check(lib.sigemptyset(mask))
        for sig in signals:
            _check(lib.sigaddset(mask, int(sig)))
        super().__init__(_check(lib.signalfd(-1, mask, lib.SFD_CLOEXEC | lib.SFD_NONBLOCK)))

    @staticmethod
    def block(signals) -> None:
        """Block ``signals`` in this thread so that they queue for a signalfd."""
        signal.pthread_sigmask(signal.SIG_BLOCK, signals)

    def read(self) -> list[SigInfo]:
        """Every queued signal (an empty list when none is queued)."""
        try:
            data = os.read(self.fileno(), _SIGINFO_SIZE * 32)
        except BlockingIOError:
            return []
        out = []
        for off in range(0, len(data), _SIGINFO_SIZE):
            info = ffi.cast("struct signalfd_siginfo *", ffi.from_buffer(data[off:]))
            out.append(SigInfo(info.ssi_signo, info.ssi_code, info.ssi_pid, info.ssi_uid,
                               info.ssi_status))
        return out


class TimerFd(_Fd):
    """``timerfd_create(2)`` on one clock, armed at absolute deadlines in seconds."""

    __slots__ = ("clock",)

    def __init__(self, clock: int = CLOCK_BOOTTIME) -> None:
        super().__init__(_check(lib.timerfd_create(clock, lib.TFD_CLOEXEC | lib.TFD_NONBLOCK)))
        self.clock = clock

    def arm_at(self, deadline: float, *, cancel_on_set: bool = False) -> None:
        """Fire once at ``deadline`` (seconds on this fd's clock)."""
        ns = max(int(deadline * _NS), 1)  # 0 would disarm
        spec = ffi.new("struct itimerspec *")
        spec.it_value.tv_sec, spec.it_value.tv_nsec = divmod(ns, _NS)
        flags = lib.TFD_TIMER_ABSTIME
        if cancel_on_set:
            flags |= lib.TFD_TIMER_CANCEL_ON_SET
        _check(lib.timerfd_settime(self.fileno(), flags, spec, ffi.NULL))

    def disarm(self) -> None:
        spec = ffi.new("struct itimerspec *")
        _check(lib.timerfd_settime(self.fileno(), 0, spec, ffi.NULL))

    def armed_at(self) -> float | None:
        """Seconds until the timer fires, or None when disarmed (``timerfd_gettime``)."""
        spec = ffi.new("struct itimerspec *")
        _check(lib.timerfd_gettime(self.fileno(), spec))
        ns = spec.it_value.tv_sec * _NS + spec.it_value.tv_nsec
        return ns / _NS if ns else None

    def read(self) -> int:
        """Expirations since the last read; 0 when none (spurious wake-up).

        Raises ``OSError(ECANCELED)`` when a CANCEL_ON_SET realtime timer saw a clock step.
        """
        try:
            return struct.unpack("=Q", os.read(self.fileno(), 8))[0]
        except BlockingIOError:
            return 0


class Inotify(_Fd):
    """An inotify fd (non-blocking) watching ``path``: readable when what ``watch`` names
    happened; :meth:`drain` empties it. ``watch``: ``"written"``, files of the directory
    written to, made or moved in; ``"removed"``, files of the directory removed or moved
    away; ``"unlinked"``, files of the directory removed (not moved: a file saved by
    rename does not wake it), or the directory itself removed or moved away (its name
    then ``""``); ``"itself"``, the file itself: a link of it going (removed, replaced),
    moved, its attributes changing."""

    __slots__ = ()

    def __init__(self, path: str, watch: str = "written") -> None:
        fd = _check(lib.inotify_init1(lib.IN_CLOEXEC | lib.IN_NONBLOCK))
        super().__init__(fd)
        events = {"written": lib.IN_CREATE | lib.IN_MOVED_TO | lib.IN_MODIFY,
                  "removed": lib.IN_DELETE | lib.IN_MOVED_FROM,
                  "unlinked": lib.IN_DELETE | lib.IN_DELETE_SELF | lib.IN_MOVE_SELF,
                  "itself": lib.IN_ATTRIB | lib.IN_MOVE_SELF | lib.IN_DELETE_SELF}[watch]
        try:
            _check(lib.inotify_add_watch(fd, os.fsencode(path), events))
        except OSError:
            self.close()
            raise

    def drain(self) -> set[str]:
        """Empty it: the names of the files it reported."""
        names = set()
        try:
            while data := os.read(self.fileno(), 65536):
                pos = 0
                while pos + 16 <= len(data):  # struct inotify_event: wd, mask, cookie, len
                    size = struct.unpack_from("=iIII", data, pos)[3]
                    name = data[pos + 16:pos + 16 + size].rstrip(b"\0")
                    names.add(os.fsdecode(name))
                    pos += 16 + size
        except BlockingIOError:
            pass
        return names


# ---- the clone3 spawn (native/spawn.c) ---------------------------------------------------


def spawn_setup() -> None:
    """Reserve the clone3 spawn's three low fds (call early, while the fd table is small:
    a child copies the daemon's fds up to them)."""
    _check(lib.sv_spawn_setup())


_envp: tuple = (None, None, None)  # (the list, its C strings, the C array) of the last spawn


def clone3_missing() -> int:
    """0 when clone3 with CLONE_PIDFD and CLONE_INTO_CGROUP works here; else the errno
    that says why not (ENOSYS: no clone3; E2BIG or EINVAL: no CLONE_INTO_CGROUP)."""
    return lib.sv_clone3_probe()


def clone3_spawn(path: bytes, argv: list[bytes], envp: list[bytes], *, cwd: bytes | None,
                 stdin: int = -1, stdout: int = 1, stderr: int = 2, cgroup_fd: int = -1,
                 stopped: bool = False, umask: int = -1, nofile: int = -1, uid: int = -1,
                 gid: int = -1, groups: list[int] | None = None) -> tuple[int, int]:
    """Start ``argv`` with ``sv_spawn`` (see native/spawn.c): (pid, pidfd) once the child
    has exec'd (or stopped itself, ``stopped``); ``OSError`` when it could not be started.
    -1 in a number means "as the daemon has it"."""
    global _envp
    keep = []  # the C strings live until the call returns

    def c(data: bytes):
        keep.append(ffi.new("char[]", data))
        return keep[-1]

    c_argv = ffi.new("char *[]", [*map(c, argv), ffi.NULL])
    if _envp[0] is not envp:  # most spawns share one environment: built once for them
        strings = [ffi.new("char[]", e) for e in envp]
        _envp = (envp, strings, ffi.new("char *[]", [*strings, ffi.NULL]))
    c_envp = _envp[2]
    req = ffi.new("struct sv_spawn *")
    req.path = c(path)
    req.argv = c_argv
    req.envp = c_envp
    req.cwd = c(cwd) if cwd is not None else ffi.NULL
    req.stdin_fd, req.stdout_fd, req.stderr_fd = stdin, stdout, stderr
    req.cgroup_fd = cgroup_fd
    req.stopped = int(stopped)
    req.umask = umask
    req.nofile, req.uid, req.gid = nofile, uid, gid
    c_groups = ffi.new("gid_t[]", groups) if groups is not None else ffi.NULL
    req.ngroups = len(groups) if groups is not None else -1
    req.groups = c_groups
    pidfd = ffi.new("int *")
    try:
        pid = _check(lib.sv_spawn(req, pidfd))
    except OSError as exc:
        if cwd is not None and lib.sv_spawn_failed_step() == lib.SV_STEP_CWD:
            exc.filename = os.fsdecode(cwd)  # not the program's fault: its directory's
        raise
    return pid, pidfd[0]
