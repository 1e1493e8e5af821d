"""Nothing read back is trusted: the runtime directory, the files in it, the state file.

Each attack is made for real: a second user (``tests/users.py``) plants what it can, the
daemon (root, as in production) must refuse to run there or never follow what was
planted. See docs/reference.md, "Paths and environment".
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile

import pytest
from conftest import ROOT, Supervisor, assert_one_line_error, read_state
from timeouts import TIMEOUT
from users import VENV_PYTHON

pytestmark = pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("setpriv"),
                                reason="needs root and setpriv")


def as_user(user, *argv: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(["setpriv", f"--reuid={user.pw_uid}", f"--regid={user.pw_gid}",
                           "--clear-groups", "--", *argv], capture_output=True, text=True,
                          timeout=TIMEOUT, cwd="/",
                          env=env or {"PATH": "/usr/bin:/bin", "HOME": "/"})


def run_daemon(rundir: str) -> subprocess.CompletedProcess:
    """``supervisor-daemon -i 0`` as root in ``rundir``: returns once it exits."""
    return subprocess.run([sys.executable, "-m", "supervisor.daemon", "-i", "0"],
                          env={**os.environ, "SUPERVISOR_RUNTIME_DIR": rundir},
                          capture_output=True, text=True, timeout=TIMEOUT, cwd="/")


def planted_state(marker: str) -> str:
    """A state file whose PENDING service, were it recovered, would create ``marker``."""
    svc = {"name": "evil", "command": ["/bin/sh", "-c", f"touch {marker}"], "opened": False,
           "state": "PENDING", "pid": None, "pids": [], "alive": False, "restarts": 0,
           "restart_limit": 0, "restart_mode": "on-failure", "restart_delay": 0.0,
           "restart_max_delay": 60.0, "start_limit": None, "failures": [], "streak": 0,
           "schedule": None, "exit_code": None, "signal": None, "started_at": None,
           "next_start": 0.0, "create_stopped": False, "delay": 0.0, "cwd": "/",
           "output": "null", "error": None, "start_ticks": None, "cgroup": None}
    return json.dumps({"version": 1, "instance": 0, "started_at": 0.0, "cgroups": None,
                       "services": [svc]})


@pytest.fixture
def shared_dir():
    top = tempfile.mkdtemp(prefix="sv-trust-", dir="/tmp")
    os.chmod(top, 0o755)  # the other user may enter it (as /tmp itself)
    yield top
    shutil.rmtree(top, ignore_errors=True)


@pytest.mark.parametrize("how", ["theirs-0700", "theirs-0777", "root-0777", "root-1777"])
def test_a_runtime_dir_another_user_can_write_is_refused(other_user, shared_dir, how):
    # the attacker made (or may write) the directory and planted a state file in it whose
    # command would run as root: the daemon and `init` refuse to run there at all
    rundir = os.path.join(shared_dir, "run")
    os.mkdir(rundir)
    owner = other_user.pw_uid if how.startswith("theirs") else 0
    os.chown(rundir, owner, owner and other_user.pw_gid)
    os.chmod(rundir, int(how.split("-")[1], 8))
    marker = os.path.join(shared_dir, "pwned")
    state = os.path.join(rundir, "0.state.json")
    plant = as_user(other_user, VENV_PYTHON, "-c",
                    f"open({state!r}, 'w').write({planted_state(marker)!r})")
    assert plant.returncode == 0, plant
    result = run_daemon(rundir)
    assert result.returncode == 1, result
    [line] = result.stderr.splitlines()
    assert line.startswith("supervisor-daemon: runtime directory") and "refusing" in line
    assert "Traceback" not in result.stderr
    s = Supervisor(rundir)
    assert_one_line_error(s.run("init", "-i", "0"), 1, "runtime directory",
                          "not starting a daemon")
    assert not os.path.exists(marker)
    assert not os.path.exists(os.path.join(rundir, "0.sock"))


def test_a_runtime_dir_that_is_a_link_is_refused(shared_dir):
    real = os.path.join(shared_dir, "real")
    os.mkdir(real, 0o700)
    link = os.path.join(shared_dir, "link")
    os.symlink(real, link)
    result = run_daemon(link)
    assert result.returncode == 1
    assert "is a symbolic link" in result.stderr and len(result.stderr.splitlines()) == 1


def test_a_runtime_dir_under_a_dir_another_user_owns_is_refused(other_user, shared_dir):
    # ours, 0700 -- but its parent is theirs, so they could swap it for one of their own
    parent = os.path.join(shared_dir, "theirs")
    os.mkdir(parent, 0o755)
    os.chown(parent, other_user.pw_uid, other_user.pw_gid)
    rundir = os.path.join(parent, "run")
    os.mkdir(rundir, 0o700)
    result = run_daemon(rundir)
    assert result.returncode == 1
    assert f"a directory of uid {other_user.pw_uid}" in result.stderr


def test_nothing_is_made_under_a_dir_another_user_owns(other_user, shared_dir):
    """The runtime directory missing, under a directory of another user's: refused before
    anything is made there (before, the daemon made it, and only then refused it)."""
    parent = os.path.join(shared_dir, "theirs")
    os.mkdir(parent, 0o755)
    os.chown(parent, other_user.pw_uid, other_user.pw_gid)
    rundir = os.path.join(parent, "a", "run")
    result = run_daemon(rundir)
    assert result.returncode == 1
    assert f"a directory of uid {other_user.pw_uid}" in result.stderr
    assert os.listdir(parent) == []

def test_links_planted_in_the_runtime_dir_are_never_followed(rundir, shared_dir):
    # the temporary state file and the state file itself: never followed, never truncated
    victim = os.path.join(shared_dir, "victim")
    with open(victim, "w") as f:
        f.write("precious\n")
    os.symlink(victim, os.path.join(rundir, "0.state.json.tmp"))
    os.symlink(victim, os.path.join(rundir, "0.state.json"))
    os.symlink(victim, os.path.join(rundir, "0.state.json.log"))
    s = Supervisor(rundir)
    s.ok("init", "-i", "0")
    try:
        s.create("/bin/sleep", ["600"], name="nap", output="null")
        with open(victim) as f:
            assert f.read() == "precious\n"
        state = os.path.join(rundir, "0.state.json")
        assert not os.path.islink(state) and not os.path.islink(f"{state}.log")
        assert [e["name"] for e in read_state(rundir)["services"]] == ["nap"]
        aside = [e for e in os.listdir(rundir) if e.startswith("0.state.json.bad-")]
        assert len(aside) == 1 and os.path.islink(os.path.join(rundir, aside[0]))
    finally:
        s.run("close", "-i", "0")


def test_a_link_at_the_lock_is_refused_in_one_line(rundir, shared_dir):
    os.symlink(os.path.join(shared_dir, "elsewhere"), os.path.join(rundir, "0.lock"))
    result = run_daemon(rundir)
    assert result.returncode == 1
    assert "0.lock" in result.stderr and len(result.stderr.splitlines()) == 1
    assert not os.path.exists(os.path.join(shared_dir, "elsewhere"))


def test_the_default_for_a_user_without_a_session_is_not_a_shared_path(other_user,
                                                                          shared_dir):
    # no XDG_RUNTIME_DIR: not /tmp/supervisor-<uid> (predictable, in a dir everyone shares)
    home = os.path.join(shared_dir, "home")
    os.mkdir(home, 0o700)
    os.chown(home, other_user.pw_uid, other_user.pw_gid)
    env = {"PATH": "/usr/bin:/bin", "HOME": home}
    code = "from supervisor import paths; print(paths.ensure_runtime_dir())"
    result = as_user(other_user, VENV_PYTHON, "-c", f"import sys; sys.path.insert(0, "
                     f"{str(ROOT)!r}); {code}", env=env)
    assert result.returncode == 0, result
    path = result.stdout.strip()
    assert path.startswith(home + "/") and not path.startswith("/tmp/supervisor-")
    assert os.stat(path).st_uid == other_user.pw_uid
    assert os.stat(path).st_mode & 0o777 == 0o700


def test_a_runtime_dir_reached_through_another_users_link_is_refused(other_user, shared_dir):
    # root's own directory, but the way to it goes through a link the other user owns (in
    # a sticky directory: theirs to swap for a link to a directory of theirs)
    real = os.path.join(shared_dir, "real")
    os.makedirs(os.path.join(real, "rt"), mode=0o700)
    link = os.path.join(shared_dir, "theirs-link")
    os.symlink(real, link)
    os.chown(link, other_user.pw_uid, other_user.pw_gid, follow_symlinks=False)
    rundir = os.path.join(link, "rt")
    result = run_daemon(rundir)
    assert result.returncode == 1
    assert f"symbolic link of uid {other_user.pw_uid}" in result.stderr
    s = Supervisor(rundir)
    assert_one_line_error(s.run("init", "-i", "0"), 1, "symbolic link of uid")
    assert_one_line_error(s.run("list-supervisor", "-i", "0"), 3, "not running")
