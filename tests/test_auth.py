"""Authorization (issue 4): only the daemon's own user and root may command an instance.

Each test makes a real second user (``useradd --system``) and runs the real CLI as that
user with ``setpriv`` (which execs, so the CLI's pid is the one ``SO_PEERCRED`` reports),
then removes the user again. Root commanding a root daemon is what every other test does.
"""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import tempfile

import pytest
from conftest import Result, Supervisor, alive, assert_one_line_error
from journald import journal_mark, wait_for_entry
from timeouts import TIMEOUT
from users import VENV_PYTHON, start_daemon_as, stop_daemon

pytestmark = pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("useradd")
                                or not shutil.which("setpriv"),
                                reason="needs root, useradd and setpriv")

def run_as(user: pwd.struct_passwd, rundir: str, *args: str) -> tuple[Result, int]:
    """The real CLI as ``user``: (its result, its pid)."""
    env = {"PATH": "/usr/bin:/bin", "SUPERVISOR_RUNTIME_DIR": rundir, "LANG": "C.UTF-8",
           "PYTHONDONTWRITEBYTECODE": "1", "HOME": "/"}
    proc = subprocess.Popen(
        ["setpriv", f"--reuid={user.pw_uid}", f"--regid={user.pw_gid}", "--clear-groups",
         "--", VENV_PYTHON, "-m", "supervisor", *args],
        env=env, cwd="/", stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True)
    try:
        out, err = proc.communicate(timeout=TIMEOUT)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        raise
    return Result(subprocess.CompletedProcess(proc.args, proc.returncode, out, err)), proc.pid


def _snapshot(sup) -> list[tuple]:
    return [(s["name"], s["status"], s["pid"]) for s in sup.json("list-supervisor")["services"]]


def test_the_user_can_run_the_cli(other_user, rundir):
    """The premise of the other tests: as that user the CLI itself works (it reaches no
    daemon here: exit 3, not a Python error about files it may not read)."""
    os.chmod(rundir, 0o755)
    result, _ = run_as(other_user, rundir, "list-supervisor", "-i", "5")
    assert_one_line_error(result, 3, "instance 5 is not running")


def test_another_user_cannot_even_reach_the_socket(sup, other_user):
    """The runtime directory is 0700 and the socket 0600, both root's: connecting fails
    before the daemon sees anything. One clear line, no traceback."""
    assert os.stat(sup.rundir).st_mode & 0o777 == 0o700
    assert os.stat(os.path.join(sup.rundir, "0.sock")).st_mode & 0o777 == 0o600
    sup.create("/bin/sleep", ["3600"], name="mine", output="null")
    before = _snapshot(sup)
    result, _ = run_as(other_user, sup.rundir, "list-supervisor", "-i", "0")
    assert result.rc in (1, 3), result
    assert_one_line_error(result, result.rc, "ermission denied")
    assert _snapshot(sup) == before


@pytest.mark.parametrize("args, says", [
    (["list-supervisors"], "cannot list the instances in"),
    (["logs", "-i", "0"], "permission denied on"),
    (["logs", "mine", "-i", "0"], "permission denied on"),
])
def test_another_user_is_told_it_may_not_look_not_that_nothing_is_there(sup, other_user,
                                                                        args, says):
    # before: "no supervisor instance is running", and logs showed nothing, both exit 0
    sup.create("/bin/sleep", ["3600"], name="mine")
    result, _ = run_as(other_user, sup.rundir, *args)
    assert_one_line_error(result, 1, says, sup.rundir, "ermission denied")


@pytest.mark.parametrize("args", [
    ["list-supervisor"],
    ["service-status", "mine"],
    ["create-service", "/bin/true"],
    ["close-service", "mine"],
    ["supervisor-freelist", "mine"],
    ["close"],
])
def test_another_user_is_refused_by_the_daemon(sup, other_user, args):
    """With the directory and socket opened up (0755/0666) the other user reaches the
    daemon, which checks SO_PEERCRED: exit 1, one line, and a journal entry with the
    client's uid and pid. Nothing changes."""
    daemon = sup.pid
    sup.create("/bin/sleep", ["3600"], name="mine", output="null")
    os.chmod(sup.rundir, 0o755)
    os.chmod(os.path.join(sup.rundir, "0.sock"), 0o666)
    before = _snapshot(sup)
    mark = journal_mark()
    result, cli_pid = run_as(other_user, sup.rundir, *args, "-i", "0")
    uid = other_user.pw_uid
    assert_one_line_error(result, 1, f"uid {uid} may not command this supervisor")
    entry = wait_for_entry(since=mark, SYSLOG_IDENTIFIER="supervisor",
                           ERROR_CODE="permission-denied", PEER_UID=uid)
    assert entry["PEER_PID"] == str(cli_pid), entry
    assert entry["SUPERVISOR_COMMAND"] == ("shutdown" if args == ["close"] else args[0])
    assert int(entry["PRIORITY"]) == 4
    assert alive(daemon)
    assert _snapshot(sup) == before
    assert sup.status("mine")["status"] == "RUNNING"


def test_the_daemons_own_user_and_root_may_command_it(other_user):
    """A daemon run by the other user: that user commands it, and so does root."""
    rundir = tempfile.mkdtemp(prefix="sv-u-", dir="/tmp")
    os.chown(rundir, other_user.pw_uid, other_user.pw_gid)
    os.chmod(rundir, 0o700)
    daemon = None
    try:
        daemon = start_daemon_as(other_user, rundir)
        as_root = Supervisor(rundir)
        assert os.stat(f"/proc/{daemon.pid}").st_uid == other_user.pw_uid
        mark = journal_mark()
        result, cli_pid = run_as(other_user, rundir, "create-service", "-n", "theirs",
                                 "-o", "null", "/bin/sleep", "3600", "-i", "0")
        assert result.rc == 0 and result.err == "", result
        entry = wait_for_entry(since=mark, SYSLOG_IDENTIFIER="supervisor",
                               SUPERVISOR_COMMAND="create-service", SERVICE_NAME="theirs")
        assert entry["PEER_UID"] == str(other_user.pw_uid)
        assert entry["PEER_PID"] == str(cli_pid)
        assert "ERROR_CODE" not in entry
        # root, through the ordinary CLI
        svc = as_root.json("service-status", "theirs")
        assert svc["status"] == "RUNNING"
        assert os.stat(f"/proc/{svc['pid']}").st_uid == other_user.pw_uid
        as_root.ok("suspend-service", "theirs")
        result, _ = run_as(other_user, rundir, "resume-service", "theirs", "-i", "0")
        assert result.rc == 0, result
        assert as_root.json("service-status", "theirs")["status"] == "RUNNING"
        result, _ = run_as(other_user, rundir, "close", "-i", "0")
        assert result.rc == 0, result
        assert daemon.wait(timeout=TIMEOUT) == 0
        assert not alive(svc["pid"])
    finally:
        if daemon is not None:
            stop_daemon(daemon)
        shutil.rmtree(rundir, ignore_errors=True)


def test_credentials_are_those_of_the_process_that_connected(sup, other_user):
    """SO_PEERCRED names the process that connected: a socket the other user connected and
    handed to root (SCM_RIGHTS) is still refused when root writes the request on it, and
    the journal names the other user's process."""
    os.chmod(sup.rundir, 0o755)
    os.chmod(os.path.join(sup.rundir, "0.sock"), 0o666)
    mark = journal_mark()
    parent, child = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    helper = (
        "import socket, sys\n"
        "out = socket.socket(fileno=int(sys.argv[1]))\n"
        "s = socket.socket(socket.AF_UNIX)\n"
        "s.connect(sys.argv[2])\n"
        "socket.send_fds(out, [b'x'], [s.fileno()])\n"
        "out.recv(1)\n"
    )
    with parent:
        with child:
            proc = subprocess.Popen(
                ["setpriv", f"--reuid={other_user.pw_uid}", f"--regid={other_user.pw_gid}",
                 "--clear-groups", "--", VENV_PYTHON, "-c", helper, str(child.fileno()),
                 os.path.join(sup.rundir, "0.sock")],
                pass_fds=(child.fileno(),), cwd="/", env={"PATH": "/usr/bin:/bin"},
                stdin=subprocess.DEVNULL)
        try:
            parent.settimeout(TIMEOUT)
            _, fds, _, _ = socket.recv_fds(parent, 1, 1)
            assert len(fds) == 1
            with socket.socket(fileno=fds[0]) as conn:
                conn.settimeout(TIMEOUT)
                conn.sendall(b'{"v": 1, "id": 1, "cmd": "ping"}\n')
                answer = conn.recv(65536)
            parent.sendall(b"x")
        finally:
            try:
                proc.wait(timeout=TIMEOUT)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
    assert proc.returncode == 0
    assert b'"permission-denied"' in answer, answer
    wait_for_entry(since=mark, SYSLOG_IDENTIFIER="supervisor", ERROR_CODE="permission-denied",
                   PEER_UID=other_user.pw_uid, PEER_PID=proc.pid)
