"""Every command of the spec, through the real CLI, against a real daemon and processes."""

from __future__ import annotations

import contextlib
import os
import signal
import stat
import subprocess
import sys
import tempfile
import time

import pytest
from conftest import (
    PARROT,
    TEST_RESTART,
    Supervisor,
    alive,
    assert_one_line_error,
    close_instance,
    kill_daemon,
    make_a_directory_at,
    state,
    wait_until,
)
from timeouts import TIMEOUT

from supervisor import client
from supervisor.control import SocketKeeper

# the service object v2 (docs/reference.md "The service object")
SERVICE_KEYS = {"name", "pid", "status", "restarts", "exit_code", "signal", "started_at",
                "next_start", "command", "opened", "exited_at", "restart", "restart_times",
                "restart_delay", "start_limit", "schedule", "delay", "create_stopped", "cwd",
                "user", "env", "env_file", "stop_signal", "stop_timeout", "output",
                "declared", "cpu_seconds", "memory_bytes", "tasks", "error"}


def test_of_inits_racing_one_says_started_the_others_already_running(rundir):
    """Four `init` at once of an instance that does not run: one daemon, and only the init
    whose daemon it is says it started it."""
    s = Supervisor(rundir)
    argv = [sys.executable, "-m", "supervisor", "init", "-i", "0"]
    try:
        inits = [subprocess.Popen(argv, env=s.env, stdout=subprocess.PIPE, text=True)
                 for _ in range(4)]
        outs = [p.communicate(timeout=TIMEOUT)[0] for p in inits]
        assert [p.returncode for p in inits] == [0] * 4
        assert sorted(" started " in out for out in outs) == [False, False, False, True], outs
        assert {out.split("(pid ")[1].split(",")[0] for out in outs} == {str(s.pid)}
    finally:
        close_instance(s)


def test_init_is_idempotent_and_listed(sup):
    again = sup.ok("init", "-i", "0")
    assert "already running" in again.out
    listing = sup.json("list-supervisors")
    [entry] = listing["supervisors"]
    assert entry["instance"] == 0
    assert entry["pid"] == sup.pid
    assert entry["socket"] == os.path.join(sup.rundir, "0.sock")
    assert entry["services"] == 0
    assert time.time() - entry["started_at"] < 60
    text = sup.ok("list-supervisors").out
    assert text.splitlines()[0].split() == ["INSTANCE", "PID", "SERVICES", "UPTIME", "SOCKET"]
    assert str(sup.pid) in text


def test_several_instances_are_independent(rundir):
    a, b = Supervisor(rundir, 3), Supervisor(rundir, 42)
    a.ok("init", "-i", "3")
    b.ok("init", "-i", "42")
    try:
        a.ok("create-service", "-i", "3", "/bin/sleep", "60")
        found = {s["instance"]: s for s in a.json("list-supervisors")["supervisors"]}
        assert set(found) == {3, 42}
        assert found[3]["services"] == 1 and found[42]["services"] == 0
        assert b.json("list-supervisor", "-i", "42")["services"] == []
        assert os.stat(os.path.join(rundir, "3.sock")).st_mode & 0o777 == 0o600
    finally:
        a.ok("close", "-i", "3")
        b.ok("close", "-i", "42")
    assert a.json("list-supervisors") == {"supervisors": []}


def test_list_supervisors_shows_an_instance_that_does_not_answer(rundir):
    a, b = Supervisor(rundir, 3), Supervisor(rundir, 42)
    a.ok("init", "-i", "3")
    b.ok("init", "-i", "42")
    hung = b.pid
    os.kill(hung, signal.SIGSTOP)  # it listens (the kernel queues connections), never answers
    try:
        result = a.run("list-supervisors")
        assert result.rc == 0, result
        [row] = [line for line in result.out.splitlines() if line.startswith("42 ")]
        assert "NOT ANSWERING" in row and "42.sock" in row
        assert result.err == ("supervisor: instance 42 did not answer within "
                              f"{client.LIST_TIMEOUT:g} s\n")
        found = {s["instance"]: s for s in a.json("list-supervisors")["supervisors"]}
        assert found[3]["services"] == 0 and "error" not in found[3]
        assert found[42]["pid"] is None and "did not answer" in found[42]["error"]
    finally:
        os.kill(hung, signal.SIGCONT)
        a.ok("close", "-i", "3")
        b.ok("close", "-i", "42")


def test_create_service_prints_name_and_pid(sup, tmp_path):
    log = tmp_path / "parrot.log"
    out = sup.ok("create-service", "-i", "0", PARROT, str(log), "0.05").out.split()
    assert out[0] == "parrot_service"
    pid = int(out[1])
    assert alive(pid)
    wait_until(lambda: log.exists() and len(log.read_text().splitlines()) >= 2,
               what="the parrot to write two lines")
    assert f"parrot {pid} " in log.read_text()
    svc = sup.json("service-status", "parrot_service", "-i", "0")
    assert set(svc) == SERVICE_KEYS
    assert svc["status"] == "RUNNING" and svc["pid"] == pid and svc["opened"] is False
    assert svc["command"] == [PARROT, str(log), "0.05"]
    assert svc["restarts"] == 0 and svc["next_start"] is None


def test_default_names_are_made_unique_and_names_can_be_given(sup):
    names = [sup.json("create-service", "/bin/sleep", "60")["name"] for _ in range(3)]
    assert names == ["sleep", "sleep-2", "sleep-3"]
    assert sup.json("create-service", "-n", "nap", "/bin/sleep", "60")["name"] == "nap"
    taken = sup.run("create-service", "--name", "nap", "/bin/sleep", "60")
    assert_one_line_error(taken, 1, "nap")
    assert len(sup.json("list-supervisor")["services"]) == 4


def test_args_after_double_dash_reach_the_program(sup, tmp_path):
    out = tmp_path / "out"
    svc = sup.json("create-service", "-n", "sh", "/bin/sh", "--", "-c", f"echo $0 $1 > {out}",
                   "-x", "-y")
    assert svc["command"] == ["/bin/sh", "-c", f"echo $0 $1 > {out}", "-x", "-y"]
    wait_until(lambda: out.exists() and out.read_text() == "-x -y\n", what="the output")
    sup.wait_status("sh", "EXITED")


def test_relative_path_is_resolved_from_the_callers_directory(sup):
    svc = sup.json("create-service", "toy_services/test_restart", "60")  # cwd is the checkout
    assert svc["command"][0] == TEST_RESTART
    bare = sup.json("create-service", "sleep", "60")  # no slash: looked up in PATH
    assert os.path.isabs(bare["command"][0])


def test_suspend_and_resume(sup):
    pid = sup.create("/bin/sleep", ["60"], name="nap")["pid"]
    assert "suspended nap (STOPPED)" in sup.ok("suspend-service", "nap").out
    wait_until(lambda: state(pid) == "T",
               what="the process to stop")
    assert sup.json("service-status", "nap")["status"] == "STOPPED"
    assert sup.json("resume-service", str(pid))["status"] == "RUNNING"
    wait_until(lambda: state(pid) != "T",
               what="the process to continue")
    assert sup.json("service-status", "nap")["status"] == "RUNNING"


def test_close_service_kills_and_never_restarts(sup):
    pid = sup.create("/bin/sleep", ["60"], name="nap", restart_times=5)["pid"]
    assert sup.json("close-service", "nap")["status"] == "KILLED"
    wait_until(lambda: not alive(pid), what="the process to die")
    svc = sup.wait_status("nap", "KILLED")
    # no pid once it does not run (the old one could be anyone's by now)
    assert svc["signal"] == "SIGKILL" and svc["restarts"] == 0 and svc["pid"] is None


def test_crash_restarts_then_crashed(sup):
    first = sup.json("create-service", "-r", "2", TEST_RESTART, "0.1")
    svc = sup.wait_status(first["name"], "CRASHED")
    assert svc["restarts"] == 2
    assert svc["signal"] == "SIGSEGV"
    assert svc["pid"] != first["pid"]
    # any pid the service has had names it
    assert sup.json("service-status", str(first["pid"]))["name"] == first["name"]
    assert "CRASHED (SIGSEGV)" in sup.ok("service-status", first["name"]).out


def test_exit_codes_map_to_statuses(sup):
    sup.create("/bin/sh", ["-c", "exit 0"], name="zero")
    sup.create("/bin/sh", ["-c", "exit 3"], name="three")
    sup.create("/bin/sh", ["-c", "kill -TERM $$"], name="term")
    sup.create("/bin/sh", ["-c", "kill -ABRT $$"], name="abrt")
    assert sup.wait_status("zero", "EXITED")["exit_code"] == 0
    three = sup.wait_status("three", "CRASHED")
    assert three["exit_code"] == 3 and three["signal"] is None
    assert sup.wait_status("term", "KILLED")["signal"] == "SIGTERM"
    assert sup.wait_status("abrt", "CRASHED")["signal"] == "SIGABRT"


def test_delay_is_pending_then_runs(sup):
    before = time.time()
    # 2 s: a listing is in time on a slow machine
    svc = sup.json("create-service", "-d", "2", "/bin/sleep", "60")
    assert svc["status"] == "PENDING" and svc["pid"] is None
    assert before + 1.9 < svc["next_start"] < before + 4
    assert "PENDING" in sup.ok("list-supervisor").out
    running = sup.wait_status(svc["name"], "RUNNING")
    assert running["started_at"] >= svc["next_start"] - 0.01
    assert alive(running["pid"])


def test_create_stopped_runs_no_program_code_until_resumed(sup, tmp_path):
    log = tmp_path / "parrot.log"
    svc = sup.json("create-service", "-c", "-n", "p", PARROT, str(log), "0.05")
    pid = svc["pid"]
    assert svc["status"] == "STOPPED"
    assert state(pid) == "T"
    assert os.readlink(f"/proc/{pid}/exe") != "/usr/bin/dash"  # not exec'd yet
    assert not log.exists()
    sup.ok("resume-service", "p")
    wait_until(lambda: log.exists() and log.read_text(), what="the parrot to write")
    assert f"parrot {pid} " in log.read_text()  # same pid: exec, not a new process


def test_remove_service(sup):
    created = sup.create("/bin/sleep", ["60"], name="mine")["pid"]
    stranger = subprocess.Popen(["sleep", "60"])
    try:
        sup.ok("open-service", str(stranger.pid), "-n", "theirs")
        assert sup.json("remove-service", "mine")["removed"] is True
        wait_until(lambda: not alive(created), what="the created process to be killed")
        sup.ok("remove-service", str(stranger.pid))
        assert stranger.poll() is None  # an opened process is left running
        assert sup.json("list-supervisor")["services"] == []
        assert_one_line_error(sup.run("remove-service", "mine"), 1, "mine")
    finally:
        stranger.kill()
        stranger.wait()


def test_open_service_adopts_and_sees_exit(sup):
    stranger = subprocess.Popen(["sleep", "60"])
    try:
        svc = sup.json("open-service", str(stranger.pid))
        assert svc["opened"] is True and svc["status"] == "RUNNING"
        assert svc["command"] == ["sleep", "60"]
        assert svc["name"] == "sleep"
        assert abs(svc["started_at"] - time.time()) < 5
        assert "(opened)" in sup.ok("list-supervisor").out
        stranger.terminate()
        stranger.wait()
        gone = sup.wait_status("sleep", "EXITED")
        # not our child, yet how it ended is knowable (PIDFD_INFO_EXIT, or its zombie)
        assert gone["exit_code"] is None and gone["signal"] == "SIGTERM"
    finally:
        if stranger.poll() is None:
            stranger.kill()
            stranger.wait()


def test_open_service_refusals(sup):
    assert_one_line_error(sup.run("open-service", "1"), 1, "pid 1")
    assert_one_line_error(sup.run("open-service", str(sup.pid)), 1, "daemon itself")
    assert_one_line_error(sup.run("open-service", "4194304"), 1, "no process")
    pid = sup.create("/bin/sleep", ["60"], name="nap")["pid"]
    assert_one_line_error(sup.run("open-service", str(pid)), 1, "already")
    zombie = subprocess.Popen(["true"])
    wait_until(lambda: state(zombie.pid) == "Z",
               what="a zombie")
    try:
        assert_one_line_error(sup.run("open-service", str(zombie.pid)), 1, "zombie")
    finally:
        zombie.wait()
    kthread = 2  # kthreadd
    assert_one_line_error(sup.run("open-service", str(kthread)), 1, "kernel thread")
    assert_one_line_error(sup.run("open-service", "abc"), 2, "<pid>")
    assert [s["name"] for s in sup.json("list-supervisor")["services"]] == ["nap"]


def test_list_supervisor(sup):
    sup.create("/bin/sleep", ["60"], name="a")
    sup.create("/bin/sleep", ["60"], name="b", delay=30)
    listing = sup.json("list-supervisor")
    assert listing["instance"] == 0
    assert [(s["name"], s["status"]) for s in listing["services"]] == [
        ("a", "RUNNING"), ("b", "PENDING")]
    assert all(set(s) == SERVICE_KEYS for s in listing["services"])
    lines = sup.ok("list-supervisor").out.splitlines()
    assert lines[0].split() == ["NAME", "PID", "STATUS", "RESTARTS", "CPU", "MEM", "UPTIME",
                                "COMMAND"]
    assert lines[1].split()[:3] == ["a", str(listing["services"][0]["pid"]), "RUNNING"]
    # the pid column is empty for a service that does not run: no pid to kill by mistake
    assert lines[2].split()[:2] == ["b", "PENDING"]
    assert lines[2][lines[0].index("PID"):lines[0].index("STATUS")].strip() == ""


def test_freelist_removes_all_or_nothing(sup):
    pids = [sup.create("/bin/sleep", ["60"], name=n)["pid"] for n in ("a", "b", "c")]
    assert_one_line_error(sup.run("supervisor-freelist", "a", "nope"), 1, "nope")
    assert len(sup.json("list-supervisor")["services"]) == 3
    removed = sup.json("supervisor-freelist", "a", str(pids[1]))["removed"]
    assert [s["name"] for s in removed] == ["a", "b"]
    assert [s["name"] for s in sup.json("list-supervisor")["services"]] == ["c"]
    wait_until(lambda: not alive(pids[0]) and not alive(pids[1]), what="both killed")
    # shell patterns, as every command on several services takes them
    sup.create("/bin/sleep", ["60"], name="c2")
    assert_one_line_error(sup.run("supervisor-freelist", "c*", "z*"), 1, "z*")
    removed = sup.json("supervisor-freelist", "c*")["removed"]
    assert [s["name"] for s in removed] == ["c", "c2"]
    assert sup.json("list-supervisor")["services"] == []


def test_cancel_only_pending(sup):
    sup.create("/bin/sleep", ["60"], name="later", delay=30)
    sup.create("/bin/sleep", ["60"], name="now")
    assert_one_line_error(sup.run("supervisor-cancel", "now"), 1, "RUNNING", "PENDING")
    assert sup.json("supervisor-cancel", "later")["removed"] is True
    assert [s["name"] for s in sup.json("list-supervisor")["services"]] == ["now"]


def test_close_instance_stops_created_and_releases_opened(rundir):
    s = Supervisor(rundir, 7)
    s.ok("init", "-i", "7")
    daemon = s.pid
    stranger = subprocess.Popen(["sleep", "60"])
    try:
        created = s.create("/bin/sleep", ["60"], name="mine")["pid"]
        stopped = s.create("/bin/sleep", ["60"], name="frozen", create_stopped=True)["pid"]
        stubborn = s.create("/bin/sh", ["-c", "trap '' TERM; while :; do sleep 0.01; done"],
                            name="stubborn")["pid"]
        s.ok("open-service", "-i", "7", str(stranger.pid))
        out = s.ok("close", "-i", "7").out
        assert f"instance 7 closed (pid {daemon})" in out
        assert not alive(daemon)
        assert not any(alive(p) for p in (created, stopped, stubborn))
        assert stranger.poll() is None
        assert not os.path.exists(os.path.join(rundir, "7.sock"))
        assert_one_line_error(s.run("list-supervisor", "-i", "7"), 3, "not running")
    finally:
        stranger.kill()
        stranger.wait()


def test_daemon_closes_on_sigterm(rundir):
    s = Supervisor(rundir, 5)
    s.ok("init", "-i", "5")
    daemon = s.pid
    pid = s.create("/bin/sleep", ["60"])["pid"]
    os.kill(daemon, signal.SIGTERM)
    wait_until(lambda: not alive(daemon) and not alive(pid), what="the daemon to close")


def test_second_daemon_for_the_same_instance_is_refused(sup):
    r = subprocess.run([sys.executable, "-m", "supervisor.daemon", "-i", "0"], env=sup.env,
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 1
    assert r.stderr.strip() == "supervisor-daemon: instance 0 is already running"
    sup.ok("list-supervisor")  # the first one still serves


def test_the_instance_lock_outlives_its_file_and_a_reload(sup, tmp_path):
    """The lock file can be removed with the runtime directory; the lock's abstract name
    cannot: a second daemon is refused even in the moment before the first has made the
    directory again, and the name is carried over a re-exec."""
    from supervisor.lock import Held, InstanceLock

    elsewhere = str(tmp_path / "other.lock")  # the file free: the name alone refuses
    with pytest.raises(Held):
        InstanceLock.take(sup.rundir, 0, elsewhere)
    sup.ok("reload", "-i", "0")
    with pytest.raises(Held):
        InstanceLock.take(sup.rundir, 0, elsewhere)
    InstanceLock.take(sup.rundir, 1, elsewhere).close()  # another instance's is free
    daemon = sup.pid
    subprocess.run(["rm", "-rf", sup.rundir], check=False, timeout=TIMEOUT)
    r = subprocess.run([sys.executable, "-m", "supervisor.daemon", "-i", "0"], env=sup.env,
                       capture_output=True, text=True, timeout=TIMEOUT)
    assert (r.returncode, r.stderr) == (1, "supervisor-daemon: instance 0 is already running\n")
    wait_until(lambda: os.path.exists(os.path.join(sup.rundir, "0.sock")),
               what="the socket made again")
    assert sup.pid == daemon


def test_python_dash_m_and_console_script(sup):
    exe = os.path.join(os.path.dirname(sys.executable), "supervisor")
    r = subprocess.run([exe, "list-supervisor", "--json"], env=sup.env, capture_output=True,
                       text=True, timeout=30)
    assert r.returncode == 0 and '"services": []' in r.stdout
    help_text = sup.ok("--help").out
    for cmd in ("init", "list-supervisors", "close", "create-service", "open-service",
                "suspend-service", "resume-service", "close-service", "remove-service",
                "service-status", "list-supervisor", "supervisor-freelist",
                "supervisor-cancel"):
        assert f"supervisor {cmd}" in help_text


# ---- parsing: one command's usage line, as the whole usage text would --------------------

WELL_FORMED = [
    ["init"], ["init", "-i", "7", "--json"], ["list-supervisors", "--json"],
    ["close", "--inst", "3"], ["reload", "-i5"],
    ["create-service", "-n", "x", "-r", "2", "-c", "-d", "1.5", "--every", "5m", "--restart",
     "always", "--restart-delay", "2", "--start-limit", "3/5", "-o", "null", "--json", "/bin/x",
     "--", "-a", "b"],
    ["create-service", "/bin/x", "a", "b"],
    ["create-service", "--at=12:00", "--cro", "@daily", "x"],
    ["open-service", "123", "-n", "x"], ["suspend-service", "s"], ["resume-service", "12"],
    ["close-service", "s", "--json"], ["remove-service", "-i", "1", "s"],
    ["service-status", "s1", "-i", "7"], ["service-status", "--js", "s1"], ["list-supervisor"],
    ["supervisor-freelist", "a", "b", "3"], ["supervisor-cancel", "a"],
    ["logs", "s", "-n", "5", "-f"], ["logs", "s"],
]


@pytest.mark.parametrize("argv", WELL_FORMED, ids=" ".join)
def test_a_commands_usage_line_parses_as_the_whole_text(argv):
    from docopt import docopt

    from supervisor import cli

    # create-service's words are put in order first (the program's after --), for both
    split = cli._split_create(argv) if argv[0] == "create-service" else argv
    whole = docopt(cli.__doc__, argv=split)
    short = cli._parse(argv)
    assert short[argv[0]] is True
    assert len(short) < len(whole)  # the short text was used
    assert {key: whole[key] for key in short} == short


@pytest.mark.parametrize("argv", [["service-status", "s1", "-h"], ["logs", "--he", "s"],
                                  ["create-service", "-ch", "x"]])
def test_help_after_a_command_prints_the_whole_text(argv, capsys):
    from supervisor import cli

    with pytest.raises(SystemExit) as exit_:
        cli.main(argv)
    assert exit_.value.code is None
    assert capsys.readouterr().out == cli.__doc__.strip("\n") + "\n"


@pytest.mark.parametrize("argv", [["service-status", "s1", "--at", "5"], ["service-status"],
                                  ["logs", "s", "--re"], ["service-status", "a", "b"]])
def test_a_usage_error_after_a_command_is_one_line_and_exit_2(argv, capsys):
    from supervisor import cli

    assert cli.main(argv) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert err == f"supervisor: usage: {cli._usage_line(argv)}  (see supervisor --help)\n"
    assert argv[0] in err


def test_a_process_we_suspended_is_resumed_when_let_go(sup):
    """remove-service (and close) let go of an opened process as they found it: one we
    suspended is resumed (nobody else would know to); one stopped from outside stays
    stopped (whoever stopped it will continue it)."""
    ours, theirs, at_close = (subprocess.Popen(["sleep", "600"]) for _ in range(3))
    try:
        sup.ok("open-service", str(ours.pid), "-n", "ours")
        sup.ok("suspend-service", "ours")
        wait_until(lambda: state(ours.pid) == "T", what="the suspend")
        os.kill(theirs.pid, signal.SIGSTOP)
        wait_until(lambda: state(theirs.pid) == "T", what="the outside stop")
        sup.ok("open-service", str(theirs.pid), "-n", "theirs")
        assert sup.status("theirs")["status"] == "STOPPED"
        sup.ok("open-service", str(at_close.pid), "-n", "at-close")
        sup.ok("suspend-service", "at-close")
        sup.ok("remove-service", "ours")
        sup.ok("remove-service", "theirs")
        wait_until(lambda: state(ours.pid) in ("S", "R"), what="ours to be resumed")
        assert state(theirs.pid) == "T"
        sup.ok("close", "-i", "0")
        wait_until(lambda: state(at_close.pid) in ("S", "R"), what="a resume on close")
    finally:
        for p in (ours, theirs, at_close):
            p.kill()
            p.wait()



@pytest.mark.parametrize("word", ["7", "07", "0070", "099"])
def test_a_trailing_instance_may_have_leading_zeros(word):
    from supervisor import cli

    split = cli._split_create(["create-service", "/bin/true", "-i", word])
    assert split[-2:] == ["/bin/true", "--"] and split[-4:-2] == ["-i", word]


def test_a_trailing_instance_written_as_one_word_is_the_instance(rundir):
    """`-i40` at the end, as every other command takes it: the instance, not an argument
    of the program sent to instance 0; in the middle of the program's words, the same
    question as `-i 40` there."""
    from supervisor import cli

    split = cli._split_create(["create-service", "/bin/echo", "hi", "-i40"])
    assert split[-5:] == ["-i", "40", "/bin/echo", "--", "hi"]
    s = Supervisor(rundir, 40)
    try:
        s.ok("init", "-i", "40")
        made = s.json("create-service", "-n", "e7", "/bin/echo", "hi", "-i40")
        assert made["command"] == ["/bin/echo", "hi"]
        assert_one_line_error(s.run("create-service", "/bin/echo", "-i40", "hi"), 2,
                              "is '-i40' the instance")
    finally:
        close_instance(s)


def test_a_runtime_dir_whose_name_is_not_utf8_works(rundir):
    odd = os.path.join(rundir, os.fsdecode(b"\xffrun"))  # a byte no UTF-8 text has
    s = Supervisor(odd)

    def cli(*args: str) -> bytes:  # its output names the directory: bytes, not text
        done = subprocess.run([sys.executable, "-m", "supervisor", *args], env=s.env,
                              capture_output=True, timeout=TIMEOUT)
        assert done.returncode == 0 and done.stderr == b"", done
        return done.stdout

    assert b"\xffrun/0.sock" in cli("init")
    try:
        cli("create-service", "-n", "a", "/bin/sleep", "1019")
        assert s.status("a")["status"] == "RUNNING"
    finally:
        cli("close")


@pytest.mark.parametrize("args", [["--help"], ["--version"], ["list-supervisor"]])
def test_a_reader_that_went_away_ends_the_command_quietly(sup, args):
    """``supervisor --help | head -1``: the rest of the output has nowhere to go; no
    traceback (docopt prints --help and --version itself)."""
    r, w = os.pipe()
    os.close(r)  # the reader is gone before anything is written
    try:
        proc = subprocess.run([sys.executable, "-m", "supervisor", *args], env=sup.env,
                              stdout=w, stderr=subprocess.PIPE, text=True, timeout=TIMEOUT)
    finally:
        os.close(w)
    assert (proc.returncode, proc.stderr) == (0, "")


def test_a_command_with_its_stdout_closed_runs_and_prints_nothing(sup):
    # `supervisor create-service ... >&-`: the service is made, what it would print dropped
    proc = subprocess.run(["sh", "-c", 'exec "$@" >&-', "sh", sys.executable, "-m",
                           "supervisor", "create-service", "-n", "quiet", "/bin/sleep",
                           "600"], env=sup.env, stderr=subprocess.PIPE, text=True,
                          timeout=TIMEOUT)
    assert (proc.returncode, proc.stderr) == (0, "")
    assert sup.status("quiet")["status"] == "RUNNING"


def test_a_removed_or_replaced_socket_is_made_again(sup):
    """A clean-up of the runtime directory (or an rm by hand) took the daemon's socket:
    it listens there again at once (inotify), once, instead of running on unreachable."""
    from journald import journal_mark, read_entries

    path = os.path.join(sup.rundir, "0.sock")
    sup.create("/bin/sleep", ["600"], name="kept")
    mark = journal_mark()
    os.unlink(path)
    wait_until(lambda: os.path.exists(path), what="the socket to be made again")
    assert sup.status("kept")["status"] == "RUNNING"
    with open(path + ".plain", "w") as f:
        f.write("not a socket")
    os.rename(path + ".plain", path)  # replaced by a plain file, atomically
    def a_socket_there() -> bool:  # (none for a moment, while the daemon makes it)
        try:
            return stat.S_ISSOCK(os.lstat(path).st_mode)
        except FileNotFoundError:
            return False
    wait_until(a_socket_there, what="a socket there again")
    inode = os.lstat(path).st_ino
    for _ in range(5):  # it stays: no loop of making it again
        assert sup.status("kept")["status"] == "RUNNING"
    assert os.lstat(path).st_ino == inode
    entries = read_entries(count=2, since=mark, SUPERVISOR_EVENT="socket")
    assert len(entries) == 2, [e["MESSAGE"] for e in entries]
    for _ in range(200):  # removed again and again, faster than it is made
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
    wait_until(a_socket_there, what="a socket after 200 removals")
    assert sup.status("kept")["status"] == "RUNNING"
    # its name taken by a directory: it cannot listen there until the name is free again
    make_a_directory_at(path, "its socket")
    wait_until(lambda: read_entries(count=1, since=mark, SUPERVISOR_EVENT="socket",
                                    PRIORITY="3"), what="the daemon to say it cannot listen")
    os.rmdir(path)
    wait_until(a_socket_there, what="a socket once the name is free")
    assert sup.status("kept")["status"] == "RUNNING"


def _locked(path: str) -> bool:
    import fcntl

    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False


def _saved_names(sup) -> list[str]:
    from conftest import read_state

    return [entry["name"] for entry in read_state(sup.rundir)["services"]]


def test_a_removed_runtime_directory_is_made_again_with_the_daemons_files(sup):
    """`rm -rf` of the runtime directory (a clean-up script) took the socket, the lock and
    the state: the daemon makes them again at once, so it stays reachable, no second
    daemon starts for its instance, and it can still recover after a crash. Before, it ran
    on unreachable, and `init` started another one beside it."""
    from journald import journal_mark, wait_for_entry

    kept = sup.create("/bin/sleep", ["600"], name="kept")
    daemon = sup.pid
    mark = journal_mark()
    subprocess.run(["rm", "-rf", sup.rundir], check=False, timeout=TIMEOUT)
    files = [os.path.join(sup.rundir, f"0.{x}") for x in ("sock", "lock", "state.json")]
    wait_until(lambda: all(os.path.exists(f) for f in files), what=f"{files} made again")
    assert stat.S_IMODE(os.stat(sup.rundir).st_mode) == 0o700
    assert sup.status("kept")["pid"] == kept["pid"]
    assert _locked(files[1])
    assert _saved_names(sup) == ["kept"]
    log = os.path.join(sup.rundir, "0.log")  # stdout and stderr: the new log file
    assert [os.readlink(f"/proc/{daemon}/fd/{fd}") for fd in (1, 2)] == [log, log]
    again = sup.ok("init", "-i", "0").out
    assert f"already running (pid {daemon}" in again
    wait_for_entry(lambda e: "made again" in e["MESSAGE"] and "the lock" in e["MESSAGE"],
                   since=mark, SUPERVISOR_EVENT="socket")
    # its files alone removed (the directory left): made again as well
    os.unlink(files[1])
    os.unlink(files[2])
    wait_until(lambda: os.path.exists(files[1]) and os.path.exists(files[2]),
               what="the lock and the state made again")
    assert _locked(files[1])
    assert _saved_names(sup) == ["kept"]
    # the state file's log alone: the state is written whole again, and a new log begun
    os.unlink(f"{files[2]}.log")
    wait_until(lambda: os.path.exists(f"{files[2]}.log"), what="the state's log made again")
    sup.create("/bin/sleep", ["600"], name="later")  # goes to the new log
    assert _saved_names(sup) == ["kept", "later"]
    kill_daemon(daemon)  # a crash: the next daemon takes the service back
    sup.ok("init", "-i", "0")
    assert sup.status("kept")["pid"] == kept["pid"]


def test_the_runtime_directory_made_again_by_someone_else_or_removed_in_a_loop(sup, tmp_path):
    """Whoever makes the directory again first, and however often it is removed, the
    daemon's files come back; a directory that is not safely its own gets nothing of the
    daemon's, and is tried again until it is."""
    import pwd

    sup.create("/bin/sleep", ["600"], name="kept")
    files = [os.path.join(sup.rundir, f"0.{x}") for x in ("sock", "lock", "state.json")]
    def made_again_by_us() -> bool:
        # an rm -rf fails where the daemon made a file in the directory meanwhile: again
        return subprocess.run(
            ["sh", "-c", 'rm -rf "$1" && mkdir -p -m 700 "$1"', "sh", sup.rundir],
            timeout=TIMEOUT).returncode == 0

    for _ in range(3):  # made again by someone else before the daemon could
        wait_until(made_again_by_us, what="the directory removed whole and made by us")
        wait_until(lambda: all(os.path.exists(f) for f in files), what=f"{files} made again")
        assert _locked(files[1]) and _saved_names(sup) == ["kept"]
    end = time.monotonic() + 1
    while time.monotonic() < end:  # removed again and again
        subprocess.run(["rm", "-rf", sup.rundir], check=False, timeout=TIMEOUT)
    wait_until(lambda: all(os.path.exists(f) for f in files), what=f"{files} after a loop")
    assert _locked(files[1]) and _saved_names(sup) == ["kept"]
    assert sup.status("kept")["status"] == "RUNNING"
    # replaced by a directory of another user's, writable by all, put there whole (a
    # rename): nothing of ours there, even what the daemon was making when it came
    nobody = pwd.getpwnam("nobody")
    theirs = tempfile.mkdtemp(dir=os.path.dirname(sup.rundir))
    os.chown(theirs, nobody.pw_uid, nobody.pw_gid)
    os.chmod(theirs, 0o777)

    def swapped() -> bool:
        subprocess.run(["rm", "-rf", sup.rundir], check=False, timeout=TIMEOUT)
        try:
            os.rename(theirs, sup.rundir)
        except OSError:  # made again with files in it first: removed again
            return False
        return True
    wait_until(swapped, what="the directory to be swapped for another user's")
    deadline = time.monotonic() + 2 * SocketKeeper.RETRY
    while time.monotonic() < deadline:
        assert os.listdir(sup.rundir) == [], "the daemon made files in an unsafe directory"
        time.sleep(0.05)
    os.chown(sup.rundir, 0, 0)
    os.chmod(sup.rundir, 0o700)  # safe again: taken up at the next try
    wait_until(lambda: all(os.path.exists(f) for f in files), what=f"{files} once safe")
    assert sup.status("kept")["status"] == "RUNNING"


@pytest.mark.parametrize("grace", ["abc", "-1", "inf"])
def test_a_bad_grace_for_the_daemon_names_the_option(rundir, grace):
    r = subprocess.run([sys.executable, "-m", "supervisor.daemon", "-i", "0", "--grace",
                        grace], env={**os.environ, "SUPERVISOR_RUNTIME_DIR": rundir},
                       capture_output=True, text=True, timeout=TIMEOUT)
    assert (r.returncode, r.stdout) == (2, "")
    assert r.stderr == f"supervisor-daemon: --grace must be a number of seconds >= 0, not " \
                       f"{grace!r}\n"
