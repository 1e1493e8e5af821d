"""Another user for the tests that need one (authorization, RLIMIT_NPROC): created per
test, every process of it killed and the user deleted afterwards."""

from __future__ import annotations

import contextlib
import os
import pwd
import secrets
import signal
import subprocess
import sys

from conftest import Supervisor, alive, wait_until
from timeouts import TIMEOUT

from supervisor.client import SupervisorError

VENV_PYTHON = sys.executable  # the venv's python: the package is installed there


def tasks_of(uid: int) -> list[int]:
    """Pids of every process whose owner is ``uid``."""
    pids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if os.stat(f"/proc/{entry}").st_uid == uid:
                    pids.append(int(entry))
            except FileNotFoundError:
                continue
    return pids


@contextlib.contextmanager
def make_user():
    """A fresh system user with no home and no shell; every process of it is killed and
    the user deleted afterwards."""
    name = f"sv-test-{secrets.token_hex(4)}"
    subprocess.run(["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin",
                    name], check=True, capture_output=True, timeout=TIMEOUT)
    try:
        yield pwd.getpwnam(name)
    finally:
        uid = pwd.getpwnam(name).pw_uid
        for pid in tasks_of(uid):  # only ever processes this test started as that user
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        wait_until(lambda: not [p for p in tasks_of(uid) if alive(p)],
                   what=f"the processes of {name} to end")
        subprocess.run(["userdel", name], check=True, capture_output=True, timeout=TIMEOUT)


def start_daemon_as(user: pwd.struct_passwd, rundir: str) -> subprocess.Popen:
    """``supervisor-daemon -i 0`` in the foreground as ``user``, once it answers.

    Not through ``supervisor init``: that re-executes the interpreter as the user, and on a
    machine whose Python lives under a 0700 home (pyenv in /root) the user may not.
    ``setpriv`` itself execs it before it gives up root's search rights."""
    env = {"PATH": "/usr/bin:/bin", "SUPERVISOR_RUNTIME_DIR": rundir, "LANG": "C.UTF-8",
           "PYTHONDONTWRITEBYTECODE": "1", "HOME": "/"}
    daemon = subprocess.Popen(
        ["setpriv", f"--reuid={user.pw_uid}", f"--regid={user.pw_gid}", "--clear-groups",
         "--", VENV_PYTHON, "-m", "supervisor.daemon", "-i", "0"],
        env=env, cwd="/", stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL, start_new_session=True)
    root = Supervisor(rundir)

    def answers() -> bool:
        if daemon.poll() is not None:
            raise AssertionError(f"the daemon as {user.pw_name} exited: {daemon.returncode}")
        try:
            return root.pid == daemon.pid
        except SupervisorError:
            return False

    wait_until(answers, what=f"the daemon run by {user.pw_name} to answer")
    return daemon


def stop_daemon(daemon: subprocess.Popen) -> None:
    if daemon.poll() is None:
        daemon.send_signal(signal.SIGTERM)
        try:
            daemon.wait(timeout=TIMEOUT)
        except subprocess.TimeoutExpired:
            daemon.kill()
            daemon.wait()
            raise AssertionError("the daemon did not close on SIGTERM") from None


