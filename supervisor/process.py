"""Spawning and signalling: the only module that forks, opens pidfds and sends signals.

Reaping has one owner per kind of change, and the split is deliberate (docs/design.md, "Reaping"):

* **exit**: a service's pidfd becomes readable; its watcher reaps exactly that child with
  ``waitid(P_PIDFD, fd, WEXITED | WNOHANG)`` and closes the fd. Nothing else ever waits
  with ``WEXITED``, so an exit is never reaped twice or by the wrong party, and a pid is
  never reused while we still hold its number as "live".
* **stop/continue**: SIGCHLD (read on the signalfd) drains
  ``waitid(P_ALL, WSTOPPED | WCONTINUED | WNOHANG)`` in a loop; without ``WEXITED`` this
  never reaps anything. A pidfd does not become readable on a stop, so this is the only way
  to see a child's SIGSTOP/SIGCONT from outside.

Opened (adopted) processes are not our children: their exit shows on the pidfd, and how
they ended comes from ``PIDFD_INFO_EXIT`` (Linux >= 6.15) once their parent has reaped
them, or from ``/proc/<pid>/stat`` while they are a zombie their parent has not reaped;
their stop/continue is read from ``/proc/<pid>/stat`` on demand.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import resource
import signal
import stat
import sys

from supervisor import native

PIDFD_SIGNAL_PROCESS_GROUP = 4  # linux/pidfd.h, Linux >= 6.9
# linux/pidfd.h, Linux >= 6.13: struct pidfd_info (72 bytes; exit_code, a wait status, at
# offset 60, valid where the returned mask has PIDFD_INFO_EXIT, Linux >= 6.15)
_PIDFD_INFO_SIZE = 72
PIDFD_GET_INFO = (3 << 30) | (_PIDFD_INFO_SIZE << 16) | (0xFF << 8) | 11  # _IOWR(0xFF, 11)
PIDFD_INFO_EXIT = 1 << 3
_EXIT_CODE_AT = 60

# Every catchable signal back to SIG_DFL in children (Python ignores SIGPIPE and SIGXFSZ,
# and ignored dispositions survive exec).
_DEFAULT_SIGNALS = frozenset(signal.valid_signals()) - {signal.SIGKILL, signal.SIGSTOP}
# Variables that belong to the daemon's own service manager, never to its children.
_PRIVATE_ENV = ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES", "NOTIFY_SOCKET",
                "WATCHDOG_PID", "WATCHDOG_USEC")
_PF_KTHREAD = 0x00200000

_group_flag_works: bool | None = None  # learnt on first use
_clone3: bool | None = None  # spawns through clone3: chosen once, on first use
_env_cache: tuple[dict, list[bytes]] | None = None

# The soft RLIMIT_NOFILE children get: the daemon's own before it raised it to the hard
# limit (set by the daemon at start; None: leave children the daemon's).
CHILD_NOFILE: int | None = None


def prepare_spawns() -> None:
    """At the daemon's start, while its fd table is small: choose the spawn path, and for
    clone3 reserve the three low fds its children's fds wait in (native/spawn.c)."""
    if clone3_used():
        native.spawn_setup()
    pidfs()


def clone3_used() -> bool:
    """Whether spawns go through clone3 (``native/spawn.c``: the child born in its cgroup,
    its pidfd from the same call). Chosen once, on first use: where the kernel has clone3
    with CLONE_INTO_CGROUP (Linux >= 5.7), unless ``SUPERVISOR_SPAWN=fallback`` asks for
    the path kept for older kernels (posix_spawn, the daemon stepping into the cgroup;
    the test suite runs both ways)."""
    global _clone3
    if _clone3 is None:
        _clone3 = (os.environ.get("SUPERVISOR_SPAWN") != "fallback"
                   and native.clone3_missing() == 0)
    return _clone3


class Proc:
    """A process we watch through its pidfd. ``child``: we started it (we may reap it)."""

    __slots__ = ("cgroup", "child", "owner", "pid", "pidfd", "ticks")

    def __init__(self, pid: int, pidfd: int, child: bool) -> None:
        self.pid = pid
        self.pidfd = pidfd
        self.child = child
        self.owner: str | None = None  # the service it belongs to; None once forgotten
        self.ticks: int | None = None  # start time (clock ticks since boot), for the state
        self.cgroup: str | None = None  # the service whose cgroup it was put in

    def fileno(self) -> int:
        return self.pidfd

    def close(self) -> None:
        if self.pidfd >= 0:
            fd, self.pidfd = self.pidfd, -1
            os.close(fd)

    def __repr__(self) -> str:
        return f"Proc(pid={self.pid}, child={self.child}, owner={self.owner!r})"


def child_env(base: dict[str, str] | None = None) -> dict[str, str]:
    env = dict(os.environ if base is None else base)
    for key in _PRIVATE_ENV:
        env.pop(key, None)
    return env


def seal_inherited_fds() -> None:
    """Mark every fd above stderr close-on-exec: whatever the daemon inherited from the
    shell or manager that started it (a stray pipe, say) must not reach its children."""
    for entry in os.listdir("/proc/self/fd"):
        fd = int(entry)
        if fd > 2:
            try:
                os.set_inheritable(fd, False)
            except OSError:
                pass  # the fd of the listdir itself, gone by now


def check_executable(path: str, *, deferred: bool = False) -> str | None:
    """Why ``path`` cannot be started, or None when it is an executable file.

    ``deferred``: the exec happens later (a service created stopped execs on resume), so
    an exec error could not be told to the user now; then also require an ELF binary or a
    ``#!`` script (the formats every kernel runs).
    """
    if not os.path.isabs(path):
        return f"{path}: not an absolute path"
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return f"{path}: no such file"
    except OSError as exc:
        return f"{path}: {exc.strerror}"
    if not stat.S_ISREG(st.st_mode):
        return f"{path}: not a regular file"
    if not os.access(path, os.X_OK):
        return f"{path}: not executable"
    if deferred:
        try:
            with open(path, "rb") as f:
                magic = f.read(4)
        except OSError as exc:
            return f"{path}: {exc.strerror}"
        if magic != b"\x7fELF" and not magic.startswith(b"#!"):
            return f"{path}: Exec format error (neither an ELF binary nor a #! script)"
    return None


class Ids:
    """Who a service runs as: uid, gid, supplementary groups (from ``--user``)."""

    __slots__ = ("gid", "groups", "uid")

    def __init__(self, uid: int, gid: int, groups: list[int]) -> None:
        self.uid, self.gid, self.groups = uid, gid, groups


def spawn(argv: list[str], *, env: dict[str, str], cwd: str = "/", stopped: bool = False,
          stdout: int = 1, stderr: int = 2, stdin: int | None = None,
          cgroup_fd: int | None = None, ids: Ids | None = None,
          let_it_exec: bool = True) -> Proc:
    """Start ``argv`` in a session of its own with a clean signal mask, default signal
    dispositions, stdin on /dev/null (or ``stdin``), no fd of ours but the three given and
    :data:`CHILD_NOFILE`; as ``ids`` (groups, gid, uid set in the child); in the cgroup
    ``cgroup_fd`` (clone3 only: without it the caller steps into the cgroup, see
    ``Cgroups.spawning_in``).

    With ``stopped`` the child stops itself (SIGSTOP) before ``exec``: it has a pid and
    none of the program's code has run until it gets SIGCONT. Returns once that is so.
    Raises ``OSError`` when the program cannot be started. ``let_it_exec``: give the CPU
    to the child for the rest of its exec before returning (see :func:`_let_it_exec`).
    """
    if clone3_used():
        pid, pidfd = native.clone3_spawn(
            os.fsencode(argv[0]), [os.fsencode(a) for a in argv], _encoded(env),
            cwd=os.fsencode(cwd) if cwd else None, stdin=-1 if stdin is None else stdin,
            stdout=stdout, stderr=stderr, stopped=stopped,
            cgroup_fd=-1 if cgroup_fd is None else cgroup_fd,
            nofile=-1 if CHILD_NOFILE is None else CHILD_NOFILE,
            uid=-1 if ids is None else ids.uid, gid=-1 if ids is None else ids.gid,
            groups=None if ids is None else ids.groups)
        if let_it_exec:
            _let_it_exec()
        return Proc(pid, pidfd, child=True)
    if stopped or ids is not None:  # posix_spawn can do neither
        pid = _fork_spawn(argv, env, cwd, stdout, stderr, stopped, ids)
    else:
        actions = [(os.POSIX_SPAWN_OPEN, 0, "/dev/null", os.O_RDONLY, 0) if stdin is None
                   else (os.POSIX_SPAWN_DUP2, stdin, 0)]
        if stdout != 1:
            actions.append((os.POSIX_SPAWN_DUP2, stdout, 1))
        if stderr != 2:
            actions.append((os.POSIX_SPAWN_DUP2, stderr, 2))
        # posix_spawn has no chdir in Python 3.11: the caller (one thread) steps into the
        # directory for the spawn and back to where it was (unless it is there already:
        # the daemon's own "/", the usual case).
        here = (None if cwd == os.getcwd()
                else os.open(".", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC))
        try:
            if here is not None:
                os.chdir(cwd)
            with _child_nofile():
                pid = os.posix_spawn(argv[0], argv, env, file_actions=actions, setsid=True,
                                     setsigmask=(), setsigdef=_DEFAULT_SIGNALS)
        finally:
            if here is not None:
                os.fchdir(here)
                os.close(here)
    try:
        pidfd = os.pidfd_open(pid)  # the child is unreaped, so the pid is still its own
    except OSError:  # out of fds: never leave a child we cannot watch
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        raise
    proc = Proc(pid, pidfd, child=True)
    if let_it_exec:
        _let_it_exec()
    if stopped:
        # Wait (briefly: the child does nothing but stop) until it really is stopped, so a
        # quick resume cannot overtake it. WNOWAIT leaves the report for the SIGCHLD loop.
        os.waitid(os.P_PIDFD, pidfd, os.WSTOPPED | os.WEXITED | os.WNOWAIT)
    return proc


def _let_it_exec() -> None:
    """The child of a vfork-style spawn lets us go on once it has left our memory, in the
    middle of its execve, on the CPU we run on: the daemon's own work after a spawn (the
    machine's step, the state file, the journal: ~0.5 ms) would run first and hold the
    child's exec back by as much (perf: the toy's execve took 784 us instead of 164). One
    sched_yield() lets the child finish its exec first (177 us); a restart's latency over
    the least possible restart fell from 1.1 ms to 0.4 ms (docs/benchmarks.md). Not
    for a start a command asked for: a burst of creates would wait for each child's exec
    in turn (a cold start of 1,000 took 0.84 s with the yield, 0.77 s without)."""
    os.sched_yield()


def _encoded(env: dict[str, str]) -> list[bytes]:
    """``env`` as the C spawn wants it (the last one kept: most spawns share one)."""
    global _env_cache
    if _env_cache is None or _env_cache[0] is not env:
        _env_cache = (env, [os.fsencode(f"{k}={v}") for k, v in env.items()])
    return _env_cache[1]


@contextlib.contextmanager
def _child_nofile():
    """posix_spawn cannot set a limit in the child: the daemon's soft RLIMIT_NOFILE is
    lowered to :data:`CHILD_NOFILE` for the spawn (what it has open stays open)."""
    if CHILD_NOFILE is None:
        yield
        return
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(CHILD_NOFILE, hard), hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def _fork_spawn(argv, env, cwd, stdout, stderr, stopped, ids) -> int:
    """The fallback for a spawn posix_spawn cannot do: stopped before exec, or as another
    user. An exec error is reported through a close-on-exec pipe."""
    r, w = os.pipe2(os.O_CLOEXEC)
    pid = os.fork()
    if pid:
        os.close(w)
        try:
            # stopped: the report of a step before the stop; none after it
            if stopped and os.waitid(os.P_PID, pid, os.WSTOPPED | os.WEXITED | os.WNOWAIT) \
                    .si_code == os.CLD_STOPPED:
                return pid
            err = os.read(r, 16)
        finally:
            os.close(r)
        if err:
            os.waitpid(pid, 0)
            code, _, step = err.decode().partition(" ")
            raise OSError(int(code), os.strerror(int(code)), cwd if step == "cwd" else None)
        return pid
    resumed = False
    step = ""  # what a failure is about, where not the program: "cwd"
    try:  # the child: only async-signal-safe-ish steps, then exec
        os.setsid()
        for sig in _DEFAULT_SIGNALS:
            with contextlib.suppress(OSError, ValueError):
                signal.signal(sig, signal.SIG_DFL)
        null = os.open("/dev/null", os.O_RDONLY)
        os.dup2(null, 0)
        if stdout != 1:
            os.dup2(stdout, 1)
        if stderr != 2:
            os.dup2(stderr, 2)
        if CHILD_NOFILE is not None:
            hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
            resource.setrlimit(resource.RLIMIT_NOFILE, (min(CHILD_NOFILE, hard), hard))
        if ids is not None:
            os.setgroups(ids.groups)
            os.setresgid(ids.gid, ids.gid, ids.gid)
            os.setresuid(ids.uid, ids.uid, ids.uid)
        step = "cwd"  # entered as the service's user (systemd's WorkingDirectory= too)
        os.chdir(cwd)
        step = ""
        if stopped:
            os.kill(os.getpid(), signal.SIGSTOP)
            resumed = True
        signal.pthread_sigmask(signal.SIG_SETMASK, [])
        os.execve(argv[0], argv, env)
    except OSError as exc:
        with contextlib.suppress(OSError):
            if resumed:  # no one reads the pipe any more: say why where the output goes
                os.write(2, f"supervisor: cannot execute {argv[0]}: "
                            f"{os.strerror(exc.errno or 0)}\n".encode(errors="replace"))
            else:
                os.write(w, f"{exc.errno or 0} {step}".encode())
    finally:
        os._exit(127)


_pidfs: bool | None = None  # pidfds live on pidfs (learnt at start: pidfs())


def pidfs() -> bool:
    """Whether pidfds live on pidfs (Linux >= 6.9), where each process's inode is its own:
    a pidfd's device is then not that of an anonymous inode (an eventfd's). Learnt once,
    at the daemon's start (``prepare_spawns``: while fds are to spare); False until then
    if that failed, and asked again."""
    global _pidfs
    if _pidfs is None:
        with contextlib.ExitStack() as fds:
            try:
                pidfd = os.pidfd_open(os.getpid())
                fds.callback(os.close, pidfd)
                other = os.eventfd(0, os.EFD_CLOEXEC)
                fds.callback(os.close, other)
                _pidfs = os.fstat(pidfd).st_dev != os.fstat(other).st_dev
            except OSError:
                return False
    return _pidfs


def identity(proc: Proc) -> int | None:
    """The process's pidfs inode number: on Linux >= 6.9 each process's is its own for the
    whole boot, never given again (a 64-bit counter), so a process that merely got the same
    pid since can never pass for it, whatever it runs. None on an older kernel (every pidfd
    is then the one anonymous inode), or when it cannot be read (never raises)."""
    if proc.pidfd < 0 or not pidfs():
        return None
    try:
        return os.fstat(proc.pidfd).st_ino
    except OSError:
        return None


def open_pid(pid: int) -> Proc:
    """Adopt a process we did not start. Raises ``ProcessLookupError`` if it does not exist."""
    return Proc(pid, os.pidfd_open(pid), child=False)


def send(proc: Proc, signo: int, *, group: bool = False) -> None:
    """Signal a process through its pidfd (``group``: its whole process group).

    A process that is already gone is not an error: its exit report is on its way.
    """
    global _group_flag_works
    if proc.pidfd < 0:
        return
    try:
        if group and _group_flag_works is not False:
            try:
                signal.pidfd_send_signal(proc.pidfd, signo, None, PIDFD_SIGNAL_PROCESS_GROUP)
                _group_flag_works = True
                return
            except OSError as exc:
                if exc.errno != errno.EINVAL or _group_flag_works:
                    raise
                _group_flag_works = False  # kernel < 6.9
        if group:
            # The child leads its own session and group, and it is unreaped (we hold its
            # pidfd and reap only through it), so its pgid cannot have been reused.
            os.killpg(proc.pid, signo)
        else:
            signal.pidfd_send_signal(proc.pidfd, signo)
    except ProcessLookupError:
        pass


def reap(proc: Proc) -> tuple[int | None, int | None]:
    """After the pidfd became readable: (exit code, killing signal) of our child, reaped;
    of another's process, as the kernel tells it (see :func:`exit_status`). Both None
    where it is not knowable."""
    if not proc.child:
        return _decode(exit_status(proc))
    try:
        info = os.waitid(os.P_PIDFD, proc.pidfd, os.WEXITED | os.WNOHANG)
    except ChildProcessError:
        return None, None
    if info is None:  # cannot happen once the pidfd is readable, but never block
        return None, None
    if info.si_code == os.CLD_EXITED:
        return info.si_status, None
    return None, info.si_status  # CLD_KILLED or CLD_DUMPED


def exit_status(proc: Proc) -> int | None:
    """The wait status of a process that is not our child and has ended (its pidfd is
    readable), or None where the kernel cannot tell: ``PIDFD_INFO_EXIT`` once its parent
    has reaped it; before that it is a zombie, which pins its pid, and field 52 of
    ``/proc/<pid>/stat`` holds the status (read, then the pidfd asked again, so that a pid
    reused in between is never read for it)."""
    status = _pidfd_exit(proc.pidfd)
    if status is not None:
        return status
    fields = proc_stat(proc.pid)
    zombie = int(fields[49]) if fields is not None and fields[0] == "Z" \
        and len(fields) > 49 else None
    again = _pidfd_exit(proc.pidfd)  # reaped (and the pid maybe reused) meanwhile?
    return again if again is not None else zombie


def _pidfd_exit(pidfd: int) -> int | None:
    buf = bytearray(_PIDFD_INFO_SIZE)
    buf[:8] = PIDFD_INFO_EXIT.to_bytes(8, sys.byteorder)
    try:
        fcntl.ioctl(pidfd, PIDFD_GET_INFO, buf, True)
    except OSError:  # older kernel (ENOTTY, EINVAL), or gone (ESRCH)
        return None
    if not int.from_bytes(buf[:8], sys.byteorder) & PIDFD_INFO_EXIT:
        return None
    return int.from_bytes(buf[_EXIT_CODE_AT:_EXIT_CODE_AT + 4], sys.byteorder, signed=True)


def _decode(status: int | None) -> tuple[int | None, int | None]:
    if status is None:
        return None, None
    if os.WIFEXITED(status):
        return os.WEXITSTATUS(status), None
    if os.WIFSIGNALED(status):
        return None, os.WTERMSIG(status)
    return None, None


def stop_continue_reports():
    """Drain stop/continue reports of our children: yields (pid, stopped)."""
    while True:
        try:
            info = os.waitid(os.P_ALL, 0, os.WSTOPPED | os.WCONTINUED | os.WNOHANG)
        except ChildProcessError:
            return
        if info is None:
            return
        if info.si_code == os.CLD_STOPPED:
            yield info.si_pid, True
        elif info.si_code == os.CLD_CONTINUED:
            yield info.si_pid, False


# ---- /proc ------------------------------------------------------------------------------


def read_small(path: str | bytes) -> bytes | None:
    """The contents of a small kernel file (``/proc``, ``/sys``: one read of up to 4 KiB),
    or None when it cannot be read."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        return os.read(fd, 4096)
    except OSError:
        return None
    finally:
        os.close(fd)


def proc_stat(pid: int) -> list[str] | None:
    """Fields of ``/proc/<pid>/stat`` from the state on (index 0 = field 3), or None."""
    data = read_small(f"/proc/{pid}/stat")
    if not data:
        return None
    text = data.decode(errors="replace")
    return text[text.rindex(")") + 2:].split()


_HZ = os.sysconf("SC_CLK_TCK")
_PAGE = os.sysconf("SC_PAGE_SIZE")


def usage(pid: int | bytes) -> tuple[float, int, int] | None:
    """(CPU seconds, resident bytes, threads) of one process, from ``/proc/<pid>/stat``
    (utime + stime, rss, num_threads), or None when it is gone. Bytes throughout, and
    split no further than rss: a list-supervisor of 10,000 services reads 10,000."""
    data = read_small(b"/proc/%s/stat" % (pid if isinstance(pid, bytes) else b"%d" % pid))
    if not data:
        return None
    fields = data[data.rindex(b")") + 2:].split(b" ", 22)
    if len(fields) < 22:
        return None
    return ((int(fields[11]) + int(fields[12])) / _HZ, int(fields[21]) * _PAGE,
            int(fields[17]))


def session_of(pid: int) -> int | None:
    """The session id of the process (field 6 of /proc/<pid>/stat), or None when gone."""
    fields = proc_stat(pid)
    return None if fields is None else int(fields[3])


def is_stopped(pid: int) -> bool | None:
    """Whether the process is stopped (``T``/``t``), or None when it is gone."""
    fields = proc_stat(pid)
    return None if fields is None else fields[0] in ("T", "t")


def why_not_adoptable(pid: int) -> str | None:
    """Why a process may not be opened (a clear sentence), or None when it may."""
    if pid == 1:
        return "pid 1 is the init process; it cannot be supervised"
    if pid == os.getpid():
        return f"pid {pid} is this supervisor daemon itself"
    fields = proc_stat(pid)
    if fields is None:
        return f"no process with pid {pid}"
    if fields[0] == "Z":
        return f"pid {pid} is a zombie (already dead, waiting to be reaped)"
    if int(fields[6]) & _PF_KTHREAD:
        return f"pid {pid} is a kernel thread"
    try:
        os.kill(pid, 0)
    except PermissionError:
        return f"pid {pid} belongs to another user: this daemon may not signal it"
    except ProcessLookupError:
        return f"no process with pid {pid}"
    return None


def cmdline(pid: int) -> list[str]:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            parts = f.read().split(b"\0")
    except OSError:
        return []
    return [p.decode(errors="replace") for p in parts if p]


def comm(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/comm", errors="replace") as f:  # any bytes may name it
            return f.read().strip()
    except OSError:
        return f"pid{pid}"


def start_time(pid: int) -> float | None:
    """When the process started, in wall-clock seconds (from ``/proc/<pid>/stat``)."""
    fields = proc_stat(pid)
    if fields is None:
        return None
    ticks = int(fields[19])
    with open("/proc/stat") as f:
        btime = next(int(line.split()[1]) for line in f if line.startswith("btime"))
    return btime + ticks / _HZ
