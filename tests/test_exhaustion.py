"""Exhaustion (issue 4): out of file descriptors, out of processes.

The damage is done for real to a real daemon: its RLIMIT_NOFILE is lowered from outside
with util-linux ``prlimit --pid``; processes run out through RLIMIT_NPROC (which the
kernel applies only to a non-root user, so that test runs the daemon as a fresh system
user) and through the ``pids`` cgroup controller (which binds root too). Each time: a clear
one-line error, every other service carries on, and once the limit is lifted again the
daemon works as before.
"""

from __future__ import annotations

import contextlib
import json
import os
import pwd
import resource
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile

import pytest
from conftest import Supervisor, alive, assert_one_line_error, wait_until
from timeouts import TIMEOUT
from users import start_daemon_as, stop_daemon, tasks_of

from supervisor import protocol

VENV_PYTHON = sys.executable
SPARE = 6  # fds above the daemon's highest open one when the limit is lowered


def _prlimit(pid: int, as_user: pwd.struct_passwd | None = None, **limits: str) -> None:
    """util-linux ``prlimit --pid`` on another process. Only soft limits are changed:
    raising a hard limit back needs CAP_SYS_RESOURCE, which root in a container may lack
    (and without it, root may not change the limits of another user's process at all:
    then it runs as that user)."""
    args = [f"--{name}={value}" for name, value in limits.items()]
    as_user_args = [] if as_user is None else [
        "setpriv", f"--reuid={as_user.pw_uid}", f"--regid={as_user.pw_gid}", "--clear-groups",
        "--"]
    result = subprocess.run([*as_user_args, "prlimit", f"--pid={pid}", *args],
                            capture_output=True, text=True, timeout=TIMEOUT)
    assert result.returncode == 0, f"prlimit {' '.join(args)}: {result.stderr.strip()}"


def _open_fds(pid: int) -> list[int]:
    return sorted(int(fd) for fd in os.listdir(f"/proc/{pid}/fd"))


def _limits(pid: int, what: str) -> tuple[str, str]:
    """(soft, hard) of one line of /proc/<pid>/limits, e.g. what="Max open files"."""
    with open(f"/proc/{pid}/limits") as f:
        for line in f:
            if line.startswith(what):
                soft, hard = line[len(what):].split()[:2]
                return soft, hard
    raise AssertionError(f"no {what!r} in /proc/{pid}/limits")


def _cgroup(pid: int) -> str:
    with open(f"/proc/{pid}/cgroup") as f:
        return "".join(line for line in f if line.startswith("0::")).strip()


def _fill_until_refused(sup, most: int, limit: str):
    """Create sleeping services until one is refused: (the names created, the refusal)."""
    created = []
    for i in range(most):
        result = sup.run("create-service", "-n", f"filler{i}", "-o", "null",
                         "/bin/sleep", "3600")
        if result.rc != 0:
            return created, result
        created.append(f"filler{i}")
    raise AssertionError(f"{most} services created under {limit}")


def _statuses(sup) -> dict[str, str]:
    return {s["name"]: s["status"] for s in sup.json("list-supervisor")["services"]}


class _Raw:
    """A raw protocol connection (one that already holds its fd in the daemon)."""

    def __init__(self, path: str) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
        self.sock.settimeout(TIMEOUT)
        self.buf = bytearray()
        try:
            self.sock.connect(path)
        except OSError:
            self.sock.close()
            raise

    def ask(self, cmd: str, **args) -> dict:
        self.sock.sendall(protocol.encode_request(1, cmd, args))
        while b"\n" not in self.buf:
            chunk = self.sock.recv(65536)
            assert chunk, f"the daemon hung up on {cmd}"
            self.buf += chunk
        line, _, rest = bytes(self.buf).partition(b"\n")
        self.buf = bytearray(rest)
        return json.loads(line)

    def close(self) -> None:
        self.sock.close()


def _accepted(path: str) -> _Raw | None:
    """A connection the daemon accepted and answers on, or None when it was shed (the fd
    of a client that just hung up may not be closed by the daemon yet)."""
    conn = _Raw(path)
    try:
        if conn.ask("ping")["ok"]:
            return conn
    except (AssertionError, OSError):
        pass
    conn.close()
    return None


def _restarted(holder: _Raw, name: str, restarts: int) -> bool | None:
    """Whether ``name`` runs again after ``restarts`` restarts; None when the daemon hung
    up (it died)."""
    try:
        svc = holder.ask("service-status", service=name)["result"]
    except (AssertionError, OSError):
        return None
    return svc["restarts"] == restarts and svc["status"] == "RUNNING"


def _cgroup_tree(daemon: int) -> str | None:
    """The daemon's cgroup tree (supervisor.<N>.<pid> under its own cgroup), if any."""
    with open("/proc/self/mountinfo") as f:
        mount = next((line.split()[4] for line in f if " - cgroup2 " in line), None)
    if mount is None:
        return None
    for top, dirs, _ in os.walk(mount):
        for d in dirs:
            if d.startswith("supervisor.") and d.endswith(f".{daemon}"):
                return os.path.join(top, d)
        if top.count("/") - mount.count("/") >= 3:
            dirs.clear()
    return None


def _remove_tree(path: str) -> None:
    for entry in os.listdir(path):
        if entry.startswith("svc-"):
            with contextlib.suppress(OSError):
                os.rmdir(os.path.join(path, entry))
    with contextlib.suppress(OSError):
        os.rmdir(path)


# ---- file descriptors -------------------------------------------------------------------


def test_the_daemon_raises_its_soft_nofile_limit_to_the_hard_one(rundir):
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard <= 256:
        pytest.skip(f"the hard RLIMIT_NOFILE here is only {hard}")
    s = Supervisor(rundir)
    # `init` (and so the daemon it starts) with a low soft limit under the usual hard one
    result = subprocess.run(["prlimit", f"--nofile=256:{'unlimited' if hard < 0 else hard}",
                             VENV_PYTHON, "-m", "supervisor", "init", "-i", "0"],
                            env=s.env, capture_output=True, text=True, timeout=TIMEOUT)
    assert result.returncode == 0, result
    daemon = s.pid
    try:
        text_soft, text_hard = _limits(daemon, "Max open files")
        assert text_soft == text_hard, (text_soft, text_hard)
        assert resource.prlimit(daemon, resource.RLIMIT_NOFILE) == (hard, hard)
        print(f"\ndaemon started with soft RLIMIT_NOFILE 256: now {text_soft}/{text_hard}")
    finally:
        s.ok("close", "-i", "0")


def test_out_of_fds_create_fails_clearly_and_the_rest_carries_on(sup):
    daemon = sup.pid
    home = _cgroup(daemon)
    path = os.path.join(sup.rundir, "0.sock")
    with sup.client() as c:
        keeper = c.create_service("/bin/sleep", ["3600"], name="keeper", output="null")
        phoenix = c.create_service("/bin/sleep", ["3600"], name="phoenix", output="null",
                                   restart_times=5)
    original = resource.prlimit(daemon, resource.RLIMIT_NOFILE)
    limit = _open_fds(daemon)[-1] + 1 + SPARE
    holders: list[_Raw] = []
    pids = {keeper["pid"], phoenix["pid"]}
    try:
        _prlimit(daemon, nofile=f"{limit}:{original[1]}")
        assert resource.prlimit(daemon, resource.RLIMIT_NOFILE) == (limit, original[1])
        created = []
        for i in range(SPARE + 20):
            result = sup.run("create-service", "-n", f"filler{i}", "-o", "null",
                             "/bin/sleep", "3600")
            if result.rc != 0:
                break
            created.append(f"filler{i}")
            pids.add(int(result.out.split()[-1]))
        else:
            raise AssertionError(f"{SPARE + 20} services created under a limit of {limit} fds")
        cgroup_seen = _cgroup(daemon)
        print(f"\nRLIMIT_NOFILE {limit}: {len(created)} more services, then: {result.err!r}; "
              f"the daemon's cgroup: {cgroup_seen}")
        # the refusal: exit 1, one line, naming the cause
        assert_one_line_error(result, 1, "Too many open files")
        assert alive(daemon)
        # nothing lost, nothing half-made
        statuses = _statuses(sup)
        assert statuses == dict.fromkeys(["keeper", "phoenix", *created], "RUNNING")
        assert sup.status("keeper")["pid"] == keeper["pid"]

        # Now take the last fds with connections of our own (the refused create's process
        # is reaped a turn later, which frees its pidfd): the daemon cannot accept another
        # client. It hangs up on it at once (a clear error, exit 3), no spinning.
        def saturated():
            while (conn := _accepted(path)) is not None:
                holders.append(conn)
            answer = sup.run("list-supervisor", "-i", "0")
            return answer if holders and answer.rc != 0 else None

        result = wait_until(saturated, what="the daemon to run out of fds")
        holder = holders[0]
        assert result.rc in (1, 3), result
        assert_one_line_error(result, result.rc)
        assert alive(daemon)
        # ... and with no fd to spare, crashes are still seen and restarted (the dead
        # process's pidfd is closed before the new one is opened), twice
        for restarts in (1, 2):
            pid = holder.ask("service-status", service="phoenix")["result"]["pid"]
            os.kill(pid, signal.SIGSEGV)
            wait_until(lambda: _restarted(holder, "phoenix", restarts) is not False,  # noqa: B023
                       what=f"phoenix to be restarted ({restarts})")
            if _restarted(holder, "phoenix", restarts) is None:  # it hung up: dying
                wait_until(lambda: not alive(daemon), what="the daemon to end")
            assert alive(daemon), f"phoenix's crash {restarts} killed the daemon (the " \
                                  f"daemon's cgroup before it: {cgroup_seen})"
            cgroup_seen = _cgroup(daemon)
            pids.add(holder.ask("service-status", service="phoenix")["result"]["pid"])
        answer = holder.ask("create-service", path="/bin/sleep", args=["3600"], name="late",
                            output="null")
        assert not answer["ok"] and answer["error"]["code"] == "spawn-failed", answer
        assert "Too many open files" in answer["error"]["message"], answer
        listing = holder.ask("list-supervisor")["result"]["services"]
        assert {s["name"]: s["status"] for s in listing} == statuses
        assert _cgroup(daemon) == home, "the daemon was left in a service's cgroup"
    finally:
        for conn in holders:
            conn.close()
        if alive(daemon):
            _prlimit(daemon, nofile=f"{original[0]}:{original[1]}")
        else:  # the test failed: leave no orphan behind
            for pid in pids:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            wait_until(lambda: not any(alive(p) for p in pids), what="the orphans to end")
        tree = _cgroup_tree(daemon)
        if not alive(daemon) and tree is not None:
            _remove_tree(tree)
    assert resource.prlimit(daemon, resource.RLIMIT_NOFILE) == original
    # the limit lifted: back to normal
    sup.ok("create-service", "-n", "after", "-o", "null", "/bin/sleep", "3600")
    assert set(_statuses(sup).values()) == {"RUNNING"}
    for name in created:
        sup.ok("close-service", name)
        assert alive(daemon), f"closing {name} killed the daemon"
    assert _cgroup(daemon) == home
    assert sup.status("keeper")["status"] == "RUNNING"
    # and it closes cleanly: no cgroup of it is left behind
    sup.ok("close", "-i", "0")
    if tree is not None:
        leftover = os.path.isdir(tree)
        if leftover:
            _remove_tree(tree)
        assert not leftover, f"{tree} was left behind"


# ---- processes ----------------------------------------------------------------------------


def _threads_of(uid: int) -> int:
    """What RLIMIT_NPROC counts: every task (thread) of the user."""
    total = 0
    for pid in tasks_of(uid):
        with contextlib.suppress(FileNotFoundError):
            total += len(os.listdir(f"/proc/{pid}/task"))
    return total


@contextlib.contextmanager
def _daemon_as(user: pwd.struct_passwd):
    """``supervisor-daemon -i 0`` run as ``user`` in a directory of its own; yields a root
    Supervisor for it and the daemon's Popen; SIGTERM after."""
    rundir = tempfile.mkdtemp(prefix="sv-x-", dir="/tmp")
    os.chown(rundir, user.pw_uid, user.pw_gid)
    daemon = start_daemon_as(user, rundir)
    try:
        yield Supervisor(rundir), daemon
    finally:
        stop_daemon(daemon)
        shutil.rmtree(rundir, ignore_errors=True)


def test_out_of_processes_rlimit_nproc(other_user):
    """RLIMIT_NPROC binds only a non-root user (root, CAP_SYS_RESOURCE and CAP_SYS_ADMIN
    are exempt), so the daemon runs as a fresh system user; root commands it."""
    uid = other_user.pw_uid
    with _daemon_as(other_user) as (sup, daemon):
        sup.ok("create-service", "-n", "keeper", "-o", "null", "/bin/sleep", "3600")
        limit = _threads_of(uid) + 3
        soft, hard = _limits(daemon.pid, "Max processes")
        _prlimit(daemon.pid, other_user, nproc=f"{limit}:{hard}")
        assert _limits(daemon.pid, "Max processes") == (str(limit), hard)
        created, result = _fill_until_refused(sup, limit + 10, f"RLIMIT_NPROC {limit}")
        print(f"\nRLIMIT_NPROC {limit}: {len(created)} more services, then: {result.err!r}")
        assert_one_line_error(result, 1, "Resource temporarily unavailable")
        # created stopped: fork() instead of posix_spawn(), the same clear refusal
        result = sup.run("create-service", "-c", "-n", "held", "-o", "null", "/bin/sleep", "1")
        assert_one_line_error(result, 1, "Resource temporarily unavailable")
        assert daemon.poll() is None
        assert _statuses(sup) == dict.fromkeys(["keeper", *created], "RUNNING")
        _prlimit(daemon.pid, other_user, nproc=f"{soft}:{hard}")
        sup.ok("create-service", "-n", "after", "-o", "null", "/bin/sleep", "3600")
        sup.ok("create-service", "-c", "-n", "held", "-o", "null", "/bin/sleep", "1")
        assert sup.status("held")["status"] == "STOPPED"
        assert _statuses(sup)["after"] == "RUNNING"


PIDS_V1 = "/sys/fs/cgroup/pids"


def _pids_root() -> str | None:
    """A pids controller this test may use for a root daemon: cgroup v1's, or v2's where
    the controller is enabled at the root."""
    if os.path.isfile(os.path.join(PIDS_V1, "cgroup.procs")):
        return PIDS_V1
    with contextlib.suppress(OSError), open("/sys/fs/cgroup/cgroup.controllers") as f:
        if "pids" in f.read().split():
            with open("/sys/fs/cgroup/cgroup.subtree_control") as g:
                if "pids" in g.read().split():
                    return "/sys/fs/cgroup"
    return None


def test_out_of_processes_pids_controller(rundir):
    """Process exhaustion for a root daemon: its pids cgroup is full."""
    root_cg = _pids_root()
    if root_cg is None or os.geteuid() != 0:
        pytest.skip("no pids cgroup controller this test may use")
    cg = os.path.join(root_cg, f"sv-test-{secrets.token_hex(4)}")
    os.mkdir(cg)
    sup = Supervisor(rundir)
    daemon = None
    try:
        sup.ok("init", "-i", "0")
        daemon = sup.pid
        with open(os.path.join(cg, "cgroup.procs"), "w") as f:
            f.write(str(daemon))
        sup.ok("create-service", "-n", "keeper", "-o", "null", "/bin/sleep", "3600")
        with open(os.path.join(cg, "pids.current")) as f:
            current = int(f.read())
        with open(os.path.join(cg, "pids.max"), "w") as f:
            f.write(str(current + 2))
        created, result = _fill_until_refused(sup, 10, f"pids.max {current + 2}")
        print(f"\npids.max {current + 2}: {len(created)} more services, then: {result.err!r}")
        assert_one_line_error(result, 1, "Resource temporarily unavailable")
        assert alive(daemon)
        assert _statuses(sup) == dict.fromkeys(["keeper", *created], "RUNNING")
        with open(os.path.join(cg, "pids.max"), "w") as f:
            f.write("max")
        sup.ok("create-service", "-n", "after", "-o", "null", "/bin/sleep", "3600")
        assert _statuses(sup)["after"] == "RUNNING"
    finally:
        with contextlib.suppress(OSError), open(os.path.join(cg, "pids.max"), "w") as f:
            f.write("max")
        if daemon is not None and alive(daemon):
            sup.run("close", "-i", "0", timeout=TIMEOUT + 10)
        # move whatever is left (nothing, normally) back to the root and remove ours
        with open(os.path.join(cg, "cgroup.procs")) as f:
            left = [line.strip() for line in f if line.strip()]
        for pid in left:
            with contextlib.suppress(OSError), \
                    open(os.path.join(root_cg, "cgroup.procs"), "w") as f:
                f.write(pid)
        wait_until(lambda: _rmdir(cg), what=f"{cg} to be removable")


def _rmdir(path: str) -> bool:
    try:
        os.rmdir(path)
    except FileNotFoundError:
        return True
    except OSError:
        return False
    return True
