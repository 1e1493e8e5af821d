"""The spawn in C (native/spawn.c, through supervisor/process.py), in its own terms: what a
child finds at its first instruction, and what a spawn that fails leaves behind.

The toy ``tests/toys/first_look.c`` (compiled here with gcc) reads its cgroup with its
first instructions and prints its signal mask, its fds, its limits, its session, its
directory and ids. The clone3 path and the fallback (posix_spawn, fork for "created
stopped") must give the same child, but for the cgroup, where clone3 alone can have the
child born in one without the spawning process ever being in it.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import resource
import select
import signal
import subprocess
import uuid
from pathlib import Path

import pytest
from conftest import children_of, wait_until
from timeouts import TIMEOUT

from supervisor import native, process

TOY_SOURCE = Path(__file__).parent / "toys" / "first_look.c"


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    exe = tmp_path_factory.mktemp("toy") / "first_look"
    subprocess.run(["gcc", "-O2", "-o", str(exe), str(TOY_SOURCE)], check=True,
                   timeout=TIMEOUT * 6)
    return str(exe)


@pytest.fixture(params=["clone3", "fallback"])
def path(request, monkeypatch):
    """Spawns through clone3, or through the path kept for kernels without it."""
    if request.param == "clone3":
        assert native.clone3_missing() == 0  # Linux 6.x here: clone3 with CLONE_INTO_CGROUP
        native.spawn_setup()  # its fds held for good, as the daemon opens them at start
    monkeypatch.setattr(process, "_clone3", request.param == "clone3")
    return request.param


def run(argv, **kw) -> tuple[process.Proc, dict[str, str]]:
    """Spawn ``argv`` with its stdout on a pipe; its report as {key: rest of line}."""
    r, w = os.pipe2(os.O_CLOEXEC)
    try:
        proc = process.spawn(argv, env={"PATH": "/usr/bin:/bin"}, stdout=w, **kw)
    finally:
        os.close(w)
    try:
        out = b""
        while chunk := _read(r):
            out += chunk
    finally:
        os.close(r)
    return proc, dict(line.split(" ", 1) for line in out.decode().splitlines())


def pids_of_children() -> list[int]:
    """Our children's pids (their states change under us: other tests' leftovers run)."""
    return sorted(pid for pid, _state in children_of(os.getpid()))


def _read(fd: int) -> bytes:
    assert select.select([fd], [], [], TIMEOUT)[0], "the toy said nothing"
    return os.read(fd, 65536)


def reap(proc: process.Proc) -> tuple[int | None, int | None]:
    assert select.select([proc], [], [], TIMEOUT)[0], "the child did not end"
    try:
        return process.reap(proc)
    finally:
        proc.close()


@contextlib.contextmanager
def cgroup():
    """A fresh cgroup of ours: (its path relative to the cgroup2 mount, its dir fd)."""
    with open("/proc/self/mountinfo") as f:
        mount = next(line.split()[4] for line in f if " - cgroup2 " in line)
    with open("/proc/self/cgroup") as f:
        own = next(line.strip()[3:] for line in f if line.startswith("0::"))
    path = os.path.join(mount + own.rstrip("/"), f"sv-spawn-test-{uuid.uuid4().hex[:8]}")
    os.mkdir(path)
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        yield path[len(mount):], fd
    finally:
        os.close(fd)
        with open(os.path.join(path, "cgroup.procs")) as f:
            for pid in f.read().split():
                os.kill(int(pid), signal.SIGKILL)
        for _ in range(1000):
            try:
                os.rmdir(path)
                break
            except OSError as exc:
                if exc.errno != errno.EBUSY:
                    raise
                select.select([], [], [], 0.01)  # its killed processes are still dying


SIG_IGN = 1


class _KernelSigaction(ctypes.Structure):
    """The kernel's struct sigaction (x86-64, arm64): glibc's sigaction() refuses 32 and 33."""

    _fields_ = [("handler", ctypes.c_void_p), ("flags", ctypes.c_ulong),
                ("restorer", ctypes.c_void_p), ("mask", ctypes.c_uint64)]


def _kernel_sigaction(sig: int, handler: int) -> int:
    """Set ``sig``'s disposition to ``handler`` (SIG_DFL 0 or SIG_IGN 1); the one before."""
    libc = ctypes.CDLL(None, use_errno=True)
    new, old = _KernelSigaction(handler=handler), _KernelSigaction()
    sys_rt_sigaction = {"x86_64": 13, "aarch64": 134}[os.uname().machine]
    if libc.syscall(sys_rt_sigaction, sig, ctypes.byref(new), ctypes.byref(old), 8) != 0:
        raise OSError(ctypes.get_errno(), "rt_sigaction")
    return old.handler or 0


def test_the_child_finds_no_fd_of_ours_an_empty_mask_and_default_dispositions(toy, path):
    # what the daemon is like: signals blocked (for its signalfd), SIGPIPE ignored (Python
    # does that). Its fds are all close-on-exec (it seals what it inherited), which is all
    # posix_spawn can rely on; clone3 closes every fd but 0-2 whatever its flags
    if path == "fallback":
        process.seal_inherited_fds()
    stray = os.open("/dev/null", os.O_RDONLY)  # inheritable
    old = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM, signal.SIGCHLD})
    # and a daemon started by a posix_spawn may have glibc's signal 32 ignored (CI's is)
    ignored_before = _kernel_sigaction(32, SIG_IGN)
    try:
        proc, seen = run([toy], cwd="/tmp")
    finally:
        _kernel_sigaction(32, ignored_before)
        signal.pthread_sigmask(signal.SIG_SETMASK, old)
        os.close(stray)
    assert seen["fds"].split() == ["0", "1", "2"]
    assert int(seen["sigblk"], 16) == 0
    # glibc's posix_spawn sets its two internal signals (32, 33) to SIG_IGN in the child,
    # and that survives exec; the C spawn resets every signal it can name
    glibc_own = (1 << 31 | 1 << 32) if path == "fallback" else 0
    assert int(seen["sigign"], 16) & ~glibc_own == 0
    assert seen["sid"] == "1"  # a session (and process group) of its own
    assert seen["cwd"] == "/tmp"
    assert reap(proc) == (0, None)


def test_the_child_gets_the_file_limit_the_daemon_started_with(toy, path, monkeypatch):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    monkeypatch.setattr(process, "CHILD_NOFILE", 1024 if soft != 1024 else 512)
    proc, seen = run([toy])
    assert int(seen["nofile"]) == process.CHILD_NOFILE
    assert resource.getrlimit(resource.RLIMIT_NOFILE) == (soft, hard)  # ours unchanged
    reap(proc)


def test_with_clone3_the_child_is_born_in_its_cgroup_and_we_never_move(toy, monkeypatch):
    assert native.clone3_missing() == 0
    monkeypatch.setattr(process, "_clone3", True)  # the C spawn, whichever the suite uses
    with open("/proc/self/cgroup") as f:
        ours = f.read()
    with cgroup() as (where, fd):
        proc, seen = run([toy], cgroup_fd=fd)
        assert seen["cgroup"] == where  # read with its first instructions
        reap(proc)
    with open("/proc/self/cgroup") as f:
        assert f.read() == ours


@pytest.mark.parametrize(("make", "code"), [
    ("missing", errno.ENOENT), ("not-executable", errno.EACCES),
    ("not-a-program", errno.ENOEXEC), ("bad-cwd", errno.ENOENT)])
def test_a_child_that_cannot_exec_is_an_oserror_and_leaves_nothing(tmp_path, path, make,
                                                                    code):
    prog, cwd = str(tmp_path / "prog"), "/"
    if make == "not-executable":
        Path(prog).write_text("#!/bin/sh\n")
    elif make == "not-a-program":
        Path(prog).write_bytes(b"\x00\x01 not a program")
        os.chmod(prog, 0o755)
    elif make == "bad-cwd":
        prog, cwd = "/bin/true", str(tmp_path / "no-such-dir")
    fds, kids = len(os.listdir("/proc/self/fd")), pids_of_children()
    with pytest.raises(OSError) as info:
        process.spawn([prog], env={}, cwd=cwd)
    assert info.value.errno == code
    # the directory is named where it is to blame, not the program
    assert (info.value.filename == cwd) == (make == "bad-cwd")
    assert len(os.listdir("/proc/self/fd")) == fds  # no pidfd left open
    assert pids_of_children() == kids  # and no child left, not even a zombie


def test_created_stopped_has_a_pid_and_runs_nothing_until_continued(toy, path):
    r, w = os.pipe2(os.O_CLOEXEC)
    try:
        proc = process.spawn([toy], env={}, stdout=w, stopped=True)
    finally:
        os.close(w)
    try:
        assert process.is_stopped(proc.pid)
        assert not select.select([r], [], [], 0)[0]  # not a line of the program's yet
        process.send(proc, signal.SIGCONT)
        assert _read(r).startswith(b"cgroup ")
        assert reap(proc) == (0, None)
    finally:
        os.close(r)


def test_created_stopped_whose_step_before_the_stop_fails_is_an_oserror(tmp_path, path):
    """A step before the stop (chdir here) fails as any spawn's would: told to the create,
    nothing left behind."""
    fds, kids = len(os.listdir("/proc/self/fd")), pids_of_children()
    with pytest.raises(OSError) as info:
        process.spawn(["/bin/true"], env={}, cwd=str(tmp_path / "no-such-dir"), stopped=True)
    assert info.value.errno == errno.ENOENT
    assert len(os.listdir("/proc/self/fd")) == fds
    assert pids_of_children() == kids


def test_created_stopped_that_cannot_exec_on_resume_says_why_on_its_stderr(toy, path,
                                                                          tmp_path):
    """A service created stopped execs when resumed, long after the spawn was answered:
    an exec error then has no one to report to but the service's own output."""
    prog = tmp_path / "prog"
    prog.write_bytes(Path(toy).read_bytes())
    prog.chmod(0o755)
    r, w = os.pipe2(os.O_CLOEXEC)
    try:
        proc = process.spawn([str(prog)], env={}, stdout=w, stderr=w, stopped=True)
    finally:
        os.close(w)
    try:
        prog.unlink()  # gone before the resume
        process.send(proc, signal.SIGCONT)
        said = b""
        while chunk := _read(r):  # to the end: the child is gone
            said += chunk
        assert said == f"supervisor: cannot execute {prog}: No such file or directory\n" \
            .encode()
        assert reap(proc) == (127, None)
    finally:
        os.close(r)


def test_the_daemon_never_writes_cgroup_procs_to_spawn(sup, tmp_path):
    """strace of the daemon while a service crashes and restarts: with clone3 the child
    is born in its cgroup, and the daemon never moves itself (no write to cgroup.procs,
    which takes cgroup_threadgroup_rwsem and can wait an RCU grace period, 10-20 ms); the
    fallback path steps in and out of the cgroup for each spawn."""
    trace = tmp_path / "trace"
    tracer = subprocess.Popen(["strace", "-qq", "-p", str(sup.pid), "-e", "trace=openat,clone3",
                               "-o", str(trace)], stderr=subprocess.DEVNULL)
    try:
        wait_until(lambda: trace.exists() and _traced(sup), what="strace to attach")
        svc = sup.create("/bin/sh", ["-c", "exit 3"], name="flaky", restart_times=3,
                         output="null")
        wait_until(lambda: sup.status("flaky")["status"] == "CRASHED", what="3 restarts")
    finally:
        tracer.send_signal(signal.SIGINT)
        tracer.wait(TIMEOUT)
    lines = trace.read_text().splitlines()
    born_in = [ln for ln in lines if ln.startswith("clone3(") and "CLONE_INTO_CGROUP" in ln
               and not ln.endswith("(Bad file descriptor)")]  # not the start-up probe
    # opened to write (a move); read-only opens count a service's processes for its memory
    moves = [ln for ln in lines if "cgroup.procs" in ln and "O_RDONLY" not in ln]
    print(f"\n{svc['name']}: 4 starts; strace of the daemon: {len(born_in)} clone3 into "
          f"a cgroup, {len(moves)} opens of cgroup.procs to write")
    if process.clone3_used():
        assert len(born_in) == 4 and moves == []
    else:  # glibc's posix_spawn clones too, but never into a cgroup
        assert born_in == [] and len(moves) >= 4


def _traced(sup) -> bool:
    """Whether the daemon has a tracer (TracerPid in its status)."""
    with open(f"/proc/{sup.pid}/status") as f:
        return any(line.startswith("TracerPid:") and line.split()[1] != "0" for line in f)


def test_a_process_identity_is_its_own_for_the_boot():
    """process.identity: the pidfs inode of a process's pidfd (this kernel has pidfs): the
    same through any pidfd of it, another for any other process, None once its pidfd is
    closed; never an error."""
    assert process.pidfs()
    a, again = process.open_pid(os.getpid()), process.open_pid(os.getpid())
    other = subprocess.Popen(["sleep", "60"])
    b = process.open_pid(other.pid)
    try:
        assert process.identity(a) == process.identity(again) is not None
        assert process.identity(b) not in (None, process.identity(a))
    finally:
        for proc in (a, again, b):
            proc.close()
        other.kill()
        other.wait()
    assert process.identity(a) is None
