"""The operator's verbs and a service's context, from the CLI as an operator types them
(docs/reference.md "Lifecycle verbs", "create-service", "Restart policy").

stop-service lets a service clean up (its stop signal to its process group, SIGKILL to all
of its cgroup after its stop timeout); start-service and restart-service run it again with
the same definition; signal-service sends any signal; show-service shows every field.
--env, --env-file, --cwd and --user are what the process sees in /proc.
"""

from __future__ import annotations

import grp
import os
import re
import signal
import time
from pathlib import Path

import pytest
from conftest import ROOT, Supervisor, alive, assert_one_line_error, wait_until
from journald import journal_mark, wait_for_entry
from timeouts import TIMEOUT

from supervisor.client import RemoteError

TERM_TRAP = str(ROOT / "tests" / "toys" / "term_trap")


def lines(path: Path) -> list[str]:
    try:
        return path.read_text().splitlines()
    except FileNotFoundError:
        return []


def ready(path: Path, count: int = 1) -> list[str]:
    """Wait until the toy has written ``count`` "ready" lines (its traps are set)."""
    return wait_until(lambda: [ln for ln in lines(path) if ln.startswith("ready")][count - 1:]
                      and lines(path), what=f"{path} to say ready")


def make(sup, *args: str) -> dict:
    return sup.json("create-service", *args)


# ---- stop-service ---------------------------------------------------------------------


def test_stop_service_lets_a_term_trapping_script_clean_up(sup, tmp_path):
    log = tmp_path / "log"
    svc = make(sup, "-n", "web", "--restart", "always", TERM_TRAP, str(log), "clean")
    ready(log)
    result = sup.ok("stop-service", "web")
    # the answer comes once it has stopped: its clean-up has run by then
    assert "cleaned TERM" in lines(log), lines(log)
    assert result.out.strip() == "stopped web (EXITED (code 0))"
    after = sup.status("web")
    assert (after["status"], after["exit_code"], after["pid"]) == ("EXITED", 0, None)
    assert after["exited_at"] is not None
    assert not alive(svc["pid"])
    assert after["restarts"] == 0  # never restarted by its policy ("always")
    # nothing to do the second time: exit 0 all the same
    again = sup.ok("stop-service", "web")
    assert "nothing to do" in again.out


def test_stop_signal_option(sup, tmp_path):
    log = tmp_path / "log"
    make(sup, "-n", "web", "--stop-signal", "INT", TERM_TRAP, str(log), "clean")
    ready(log)
    obj = sup.json("stop-service", "web")
    assert obj["status"] == "EXITED" and obj["changed"] is True
    assert "cleaned INT" in lines(log)


def test_stop_timeout_escalates_to_sigkill_of_the_whole_cgroup(sup, tmp_path):
    log = tmp_path / "log"
    svc = make(sup, "-n", "stubborn", "--stop-timeout", "0.5", TERM_TRAP, str(log), "ignore")
    wait_until(lambda: any(ln.startswith("child") for ln in lines(log)) and ready(log),
               what="the toy and its child")
    child = int(next(ln for ln in lines(log) if ln.startswith("child")).split()[1])
    assert os.getsid(child) == child  # a session of its own: out of the service's group
    start = time.monotonic()
    mark = journal_mark()
    obj = sup.json("stop-service", "stubborn")
    took = time.monotonic() - start
    assert obj["status"] == "KILLED" and obj["signal"] == "SIGKILL", obj
    assert 0.5 <= took < TIMEOUT, took
    # the command's journal line, written when the stop began: under way, not yet "ok"
    entry = wait_for_entry(since=mark, SUPERVISOR_COMMAND="stop-service")
    assert "-> under way, answered once done: stubborn" in entry["MESSAGE"], entry["MESSAGE"]
    wait_until(lambda: not alive(child) and not alive(svc["pid"]),
               what="the service and its escaped child to be gone")


def test_stop_of_a_pending_restart_calls_it_off(sup):
    make(sup, "-n", "flappy", "--restart", "always", "--restart-delay", "30", "/bin/false")
    wait_until(lambda: sup.status("flappy")["status"] == "PENDING"
               and sup.status("flappy")["restarts"] == 1, what="a restart to be pending")
    obj = sup.json("stop-service", "flappy")
    assert obj["status"] == "EXITED" and obj["next_start"] is None


# ---- start / restart -------------------------------------------------------------------


def test_restart_service_gives_a_new_pid_and_keeps_the_definition(sup, tmp_path):
    log = tmp_path / "log"
    first = make(sup, "-n", "web", "-e", "GREETING=hello", "-C", str(tmp_path),
                 TERM_TRAP, str(log), "clean")
    ready(log)
    result = sup.ok("restart-service", "web")
    second = sup.status("web")
    assert second["status"] == "RUNNING"
    assert second["pid"] != first["pid"]
    assert f"restarted web (RUNNING, pid {second['pid']})" == result.out.strip()
    assert "cleaned TERM" in lines(log)  # stopped gracefully first
    for key in ("command", "cwd", "env", "stop_signal", "restart", "output"):
        assert second[key] == first[key], key
    assert _environ(second["pid"])["GREETING"] == "hello"
    assert second["restarts"] == 0


def test_start_service_runs_an_ended_service_again(sup, tmp_path):
    out = tmp_path / "out"
    make(sup, "-n", "once", "-o", str(out), "/bin/echo", "ran")
    sup.wait_status("once", "EXITED")
    obj = sup.json("start-service", "once")
    assert obj["changed"] is True and obj["restarts"] == 0
    wait_until(lambda: lines(out) == ["ran", "ran"], what="a second run")
    # a running one: nothing to do, exit 0
    make(sup, "-n", "nap", "/bin/sleep", "60")
    result = sup.ok("start-service", "nap")
    assert result.out.strip() == "nap: nothing to do (RUNNING)"


def test_start_of_a_service_whose_program_is_gone_fails_and_retries(sup, tmp_path):
    prog = tmp_path / "prog"
    prog.write_text("#!/bin/sh\nexit 0\n")
    prog.chmod(0o755)
    make(sup, "-n", "gone", str(prog))
    sup.wait_status("gone", "EXITED")
    prog.unlink()
    result = sup.run("start-service", "gone")
    assert result.rc == 1, result
    assert "could not start" in result.out and "retrying" in result.out


def test_verbs_take_several_services_and_patterns(sup):
    for name in ("web-1", "web-2", "db"):
        make(sup, "-n", name, "/bin/sleep", "60")
    answer = sup.json("stop-service", "web-*")
    assert answer["instance"] == 0 and set(answer) == {"instance", "services"}
    assert [s["name"] for s in answer["services"]] == ["web-1", "web-2"]
    # sleep dies of the stop signal: a stop that worked (KILLED only when SIGKILL was needed)
    assert {(s["status"], s["signal"]) for s in answer["services"]} == {("EXITED", "SIGTERM")}
    assert sup.status("db")["status"] == "RUNNING"
    result = sup.ok("start-service", "web-1", "web-2")
    assert result.out.splitlines()[0].startswith("started web-1 (RUNNING, pid ")
    assert len(result.out.splitlines()) == 2
    assert_one_line_error(sup.run("stop-service", "cache-*"), 1, "matches 'cache-*'")
    # all or nothing: a name that names nothing stops none of the others
    assert_one_line_error(sup.run("stop-service", "db", "nope"), 1, "nope")
    assert sup.status("db")["status"] == "RUNNING"


def test_opened_services_stop_but_do_not_start(sup):
    import subprocess

    outside = subprocess.Popen(["/bin/sleep", "60"])
    try:
        make_open = sup.json("open-service", str(outside.pid), "-n", "adopted")
        assert make_open["restart"] == "never"
        obj = sup.json("stop-service", "adopted")
        assert obj["status"] == "EXITED"
        assert outside.wait(TIMEOUT) == -signal.SIGTERM
        assert_one_line_error(sup.run("start-service", "adopted"), 1, "opened")
    finally:
        outside.kill()
        outside.wait()


# ---- signal-service ------------------------------------------------------------------


@pytest.mark.parametrize("spelling", ["USR1", "SIGUSR1", "usr1", str(int(signal.SIGUSR1))])
def test_signal_service_sends_any_signal(sup, tmp_path, spelling):
    log = tmp_path / "log"
    svc = make(sup, "-n", "listener", TERM_TRAP, str(log), "usr1")
    ready(log)
    result = sup.ok("signal-service", "listener", spelling)
    assert result.out.strip() == f"signalled listener ({spelling})"
    wait_until(lambda: "usr1" in lines(log), what="the toy to get SIGUSR1")
    assert sup.status("listener")["pid"] == svc["pid"]


def test_signal_service_refuses_what_is_no_signal_or_no_process(sup):
    make(sup, "-n", "nap", "/bin/sleep", "60")
    assert_one_line_error(sup.run("signal-service", "nap", "NOPE"), 2, "not a signal")
    assert_one_line_error(sup.run("signal-service", "nap", "99"), 2, "not a signal")
    make(sup, "-n", "later", "-d", "60", "/bin/sleep", "60")
    assert_one_line_error(sup.run("signal-service", "later", "HUP"), 1, "no process")


def test_signal_stop_shows_up_as_any_stop_would(sup):
    make(sup, "-n", "nap", "/bin/sleep", "60")
    sup.ok("signal-service", "nap", "STOP")
    sup.wait_status("nap", "STOPPED")
    sup.ok("signal-service", "nap", "CONT")
    sup.wait_status("nap", "RUNNING")


# ---- restart policy, as systemd's Restart= ------------------------------------------


def test_restart_always_restarts_after_sigkill(sup):
    first = make(sup, "-n", "phoenix", "--restart", "always", "/bin/sleep", "60")
    os.kill(first["pid"], signal.SIGKILL)
    after = wait_until(lambda: (s := sup.status("phoenix"))["pid"] not in (None, first["pid"])
                       and s, what="a restart after SIGKILL")
    assert after["status"] == "RUNNING" and after["restarts"] == 1


def test_restart_on_failure_restarts_after_sigkill_not_after_sigterm(sup):
    first = make(sup, "-n", "oom", "--restart", "on-failure", "/bin/sleep", "60")
    os.kill(first["pid"], signal.SIGKILL)  # the OOM killer's signal
    second = wait_until(lambda: (s := sup.status("oom"))["restarts"] == 1
                        and s["status"] == "RUNNING" and s, what="a restart")
    os.kill(second["pid"], signal.SIGTERM)
    after = sup.wait_status("oom", "KILLED")
    assert after["restarts"] == 1 and after["signal"] == "SIGTERM"


def test_seed_restart_times_alone_does_not_restart_after_sigkill(sup):
    """``-r K`` alone restarts crashes: shown as on-failure (one of the service object's
    three modes, never a fourth), but a SIGKILL from outside ends it KILLED, as the
    seed's did."""
    first = make(sup, "-n", "seed", "-r", "3", "/bin/sleep", "60")
    assert first["restart"] == "on-failure"
    assert "restart: on-failure\n" in sup.ok("show-service", "seed").out
    os.kill(first["pid"], signal.SIGKILL)
    assert sup.wait_status("seed", "KILLED")["restarts"] == 0


def test_restart_always_of_a_quick_success_ends_crashed_at_the_start_limit(sup):
    make(sup, "-n", "spin", "--restart", "always", "/bin/true")
    after = sup.wait_status("spin", "CRASHED")
    # the default 5/10s: 5 starts (the first and 4 restarts); a 6th is one too many
    assert after["restarts"] == 4
    assert after["start_limit"] == "5/10s"


def test_the_start_limit_holds_with_a_back_off(sup):
    make(sup, "-n", "fail", "--restart", "always", "--restart-delay", "0.05",
         "--start-limit", "3/30s", "/bin/false")
    after = sup.wait_status("fail", "CRASHED")
    # 3 starts: the waits between them (0.05, 0.1 s...) do not spread them out of the window
    assert after["restarts"] == 2


# ---- create-service: the program's words are the program's ----------------------------


def test_a_programs_options_are_never_ours(sup, tmp_path):
    out = tmp_path / "out"
    obj = make(sup, "-o", str(out), "/bin/echo", "-n", "hi")
    assert obj["command"] == ["/bin/echo", "-n", "hi"]
    assert obj["name"] == "echo"
    wait_until(lambda: out.exists() and out.read_text() == "hi", what="echo -n hi")
    listing = make(sup, "-o", "null", "/usr/bin/ls", "-la", "/tmp")
    assert listing["command"] == ["/usr/bin/ls", "-la", "/tmp"]
    for word in ("-c", "-o", "-d", "-r", "-e", "-u", "-C"):
        obj = make(sup, "-o", "null", "/bin/echo", word, "1")
        assert obj["command"] == ["/bin/echo", word, "1"], word


def test_a_trailing_instance_and_json_are_ours(sup):
    result = sup.ok("create-service", "/bin/sleep", "60", "-i", "0", "--json")
    assert Path("/bin/sleep").samefile(result.json()["command"][0])
    assert result.json()["command"][1:] == ["60"]
    result = sup.ok("create-service", "/bin/sleep", "61", "--instance", "0")
    assert result.out.startswith("sleep-2 ")
    # after --, everything is the program's
    obj = make(sup, "-o", "null", "/bin/echo", "--", "-i", "0")
    assert obj["command"] == ["/bin/echo", "-i", "0"]


def test_an_ambiguous_line_says_how_to_write_it(sup):
    result = sup.run("create-service", "/bin/echo", "-i", "0", "x")
    assert_one_line_error(result, 2, "-i 0", "before <path>", "--")


# ---- a service's context ----------------------------------------------------------------


def _environ(pid: int) -> dict[str, str]:
    data = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    return dict(item.decode().split("=", 1) for item in data if b"=" in item)


def test_env_env_file_and_cwd_are_what_the_process_sees(sup, tmp_path):
    env_file = tmp_path / "env"
    env_file.write_text("# comment\nA=from-file\nB='quoted value'\nexport C=c\n")
    work = tmp_path / "work"
    work.mkdir()
    obj = make(sup, "-e", "A=from-option", "--env", "D=d=1", "--env-file", str(env_file),
               "-C", str(work), "/bin/sleep", "60")
    env = _environ(obj["pid"])
    assert env["A"] == "from-option"  # --env wins over --env-file
    assert (env["B"], env["C"], env["D"]) == ("quoted value", "c", "d=1")
    assert os.readlink(f"/proc/{obj['pid']}/cwd") == str(work)
    assert obj["env"] == ["A", "D"] and obj["env_file"] == str(env_file)
    assert obj["cwd"] == str(work)
    # the file is read at each start
    env_file.write_text("A=changed\n")
    sup.ok("restart-service", obj["name"])
    assert _environ(sup.status(obj["name"])["pid"])["A"] == "from-option"
    assert "B" not in _environ(sup.status(obj["name"])["pid"])


def test_an_env_file_that_could_block_the_daemon_is_refused(sup, tmp_path):
    """A FIFO (or a device) given as --env-file is never read: its open or read would block
    the daemon. At create, a one-line error; made one later, the restart cannot start (and
    is retried) while the daemon goes on answering."""
    fifo = tmp_path / "fifo.env"
    os.mkfifo(fifo)
    assert_one_line_error(sup.run("create-service", "--env-file", str(fifo), "/bin/true"), 2,
                          "not a regular file")
    assert_one_line_error(sup.run("create-service", "--env-file", "/dev/zero", "/bin/true"),
                          2, "not a regular file")
    later = tmp_path / "later.env"
    later.write_text("A=1\n")
    make(sup, "-n", "envy", "--restart", "always", "--env-file", str(later),
         "/bin/sh", "-c", "exec sleep 1000")
    later.unlink()
    os.mkfifo(later)
    again = sup.run("restart-service", "envy")
    assert again.rc == 1 and "not a regular file (retrying)" in again.out, again
    gone = sup.wait_status("envy", "PENDING")  # cannot start: retried with back-off
    assert "not a regular file" in gone["error"], gone
    assert sup.ok("service-status", "envy").out  # the daemon answers on
    sup.ok("remove-service", "envy")


def test_context_errors_are_one_line(sup, tmp_path):
    assert_one_line_error(sup.run("create-service", "-C", str(tmp_path / "nope"),
                                  "/bin/true"), 2, "no such directory")
    assert_one_line_error(sup.run("create-service", "-e", "NOEQUALS", "/bin/true"), 2,
                          "KEY=VALUE")
    assert_one_line_error(sup.run("create-service", "-e", "1X=2", "/bin/true"), 2,
                          "KEY")
    bad = tmp_path / "bad.env"
    bad.write_text("A=1\nthis is not a pair\n")
    assert_one_line_error(sup.run("create-service", "--env-file", str(bad), "/bin/true"), 2,
                          "bad.env:2")
    assert_one_line_error(sup.run("create-service", "--env-file", str(tmp_path / "none"),
                                  "/bin/true"), 2, "none")
    assert_one_line_error(sup.run("create-service", "-u", "no-such-user-here", "/bin/true"),
                          2, "no such user")
    # empty paths (a variable that was not set) are errors, never the caller's directory
    for args, what in ((["--cwd", ""], "--cwd"), (["-o", ""], "--output"),
                       (["--env-file", ""], "--env-file")):
        assert_one_line_error(sup.run("create-service", *args, "/bin/true"), 2,
                              f"{what} is empty")
    assert_one_line_error(sup.run("create-service", ""), 2, "the program's path is empty")
    # an empty one (a variable that was not set) is no user, never "as the daemon"
    assert_one_line_error(sup.run("create-service", "-u", "", "/bin/true"), 2,
                          "--user '': no user named")
    assert_one_line_error(sup.run("create-service", "-u", "root:", "/bin/true"), 2,
                          "--user root:: no group named after the ':'")
    assert_one_line_error(sup.run("create-service", "--stop-signal", "BOGUS", "/bin/true"),
                          2, "not a signal")
    assert_one_line_error(sup.run("create-service", "--stop-timeout", "-1", "/bin/true"),
                          2, "stop timeout")
    assert sup.json("list-supervisor")["services"] == []  # nothing half-made


def test_user_is_what_the_process_runs_as(sup, other_user):
    obj = make(sup, "-u", other_user.pw_name, "-C", "/", "/bin/sleep", "60")
    status = Path(f"/proc/{obj['pid']}/status").read_text()
    fields = dict(line.split(":", 1) for line in status.splitlines())
    assert fields["Uid"].split() == [str(other_user.pw_uid)] * 4
    assert fields["Gid"].split() == [str(other_user.pw_gid)] * 4
    assert fields["Groups"].split() == [str(g) for g in os.getgrouplist(
        other_user.pw_name, other_user.pw_gid)]
    env = _environ(obj["pid"])
    assert env["USER"] == env["LOGNAME"] == other_user.pw_name
    assert obj["user"] == other_user.pw_name
    # and with a group: USER:GROUP
    obj = make(sup, "-u", f"{other_user.pw_name}:daemon", "-C", "/", "/bin/sleep", "60")
    status = Path(f"/proc/{obj['pid']}/status").read_text()
    assert f"Gid:\t{grp.getgrnam('daemon').gr_gid}\t" in status


def test_user_needs_a_root_daemon(other_user, rundir):
    from conftest import Supervisor
    from users import start_daemon_as, stop_daemon

    os.chown(rundir, other_user.pw_uid, other_user.pw_gid)  # the daemon's own
    daemon = start_daemon_as(other_user, rundir)
    try:
        result = Supervisor(rundir).run("create-service", "-u", "root", "/bin/true")
        assert_one_line_error(result, 1, "--user", "root")
    finally:
        stop_daemon(daemon)


def test_children_get_the_file_limit_the_daemon_was_started_with(sup):
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    daemon_soft = resource.prlimit(sup.pid, resource.RLIMIT_NOFILE)[0]
    obj = make(sup, "/bin/sleep", "60")
    assert resource.prlimit(obj["pid"], resource.RLIMIT_NOFILE) == (soft, hard)
    assert daemon_soft == hard  # the daemon raised its own


# ---- show-service, the service object v2 ------------------------------------------------


def test_show_service_shows_every_field_for_people(sup, tmp_path):
    make(sup, "-n", "cronjob", "--cron", "*/5 * * * *", "-e", "K=V", "--stop-timeout", "3",
         "/bin/true")
    text = sup.ok("show-service", "cronjob").out
    fields = dict(line.split(": ", 1) for line in text.splitlines())
    assert fields["schedule"] == "cron */5 * * * *"
    assert fields["next_start"].startswith("in ") and "(at " in fields["next_start"]
    assert (fields["env"], fields["stop_timeout"], fields["stop_signal"]) == ("K", "3",
                                                                               "SIGTERM")
    assert fields["pid"] == "-"
    make(sup, "-n", "later", "-d", "3600", "/bin/true")
    obj = sup.json("show-service", "later")
    assert obj["schedule"] is None and obj["delay"] == 3600
    assert sup.json("show-service", "cronjob")["schedule"] == {"cron": "*/5 * * * *"}


def test_resources_of_a_running_service(sup):
    burn = make(sup, "-n", "burn", "/bin/sh", "-c", "while :; do :; done")
    wait_until(lambda: (sup.status("burn")["cpu_seconds"] or 0) > 0.05, what="CPU time")
    obj = sup.status("burn")
    assert obj["memory_bytes"] > 0 and obj["tasks"] == 1
    assert obj["pid"] == burn["pid"]
    listing = sup.ok("list-supervisor").out.splitlines()
    assert listing[0].split() == ["NAME", "PID", "STATUS", "RESTARTS", "CPU", "MEM",
                                  "UPTIME", "COMMAND"]
    row = listing[1].split()
    assert row[4].endswith("%") and float(row[4][:-1]) > 0 and row[5][-1] in "KMG"
    sup.ok("close-service", "burn")
    gone = sup.wait_status("burn", "KILLED")
    assert (gone["pid"], gone["cpu_seconds"], gone["memory_bytes"]) == (None, None, None)
    row = sup.ok("list-supervisor").out.splitlines()[1]
    assert row.split()[1] == "KILLED"  # the PID column is empty
    # no CPU or MEM (nothing runs), and when it ended
    assert re.search(r" KILLED \(SIGKILL\) +0 +\S+ ago ", row), row


def test_queries_leave_usage_out_when_asked_to(sup):
    """"usage": false: the three usage fields are null (not read); by default they are."""
    make(sup, "-n", "burn", "/bin/sh", "-c", "while :; do :; done")
    with sup.client() as c:
        wait_until(lambda: (c.service_status("burn")["cpu_seconds"] or 0) > 0.01,
                   what="CPU time")
        bare = c.service_status("burn", usage=False)
        assert (bare["cpu_seconds"], bare["memory_bytes"], bare["tasks"]) == (None,) * 3
        assert bare["status"] == "RUNNING" and bare["pid"] is not None
        listed = c.list_supervisor(usage=False)["services"]
        assert [(s["name"], s["cpu_seconds"], s["tasks"]) for s in listed] == [
            ("burn", None, None)]
        assert c.list_supervisor()["services"][0]["tasks"] == 1
        shown = c.show_service("burn", usage=False)["services"][0]
        assert shown["memory_bytes"] is None
        assert c.show_service("burn")["services"][0]["memory_bytes"] > 0
        with pytest.raises(RemoteError) as err:
            c.call("service-status", service="burn", usage="no")
        assert err.value.code == "invalid-argument"
    sup.ok("close-service", "burn")


def test_cpu_share_is_the_running_process_s_own_after_a_restart(sup):
    """The cgroup is kept for a restart into it, and its cpu.stat counts every run: the
    CPU a service shows is its current run's."""
    burn = make(sup, "-n", "burn", "--restart", "always", "/bin/sh", "-c",
                "end=$(($(date +%s) + 1)); while [ $(date +%s) -lt $end ]; do :; done; "
                "kill -9 $$")
    wait_until(lambda: sup.status("burn")["restarts"] >= 1, what="a restart")
    # the first run burnt ~1 s; the new one has just begun
    first = sup.status("burn")
    assert first["pid"] != burn["pid"]
    assert first["cpu_seconds"] is not None and first["cpu_seconds"] < 0.9, first


# ---- close, reload and the verbs -------------------------------------------------------


def test_close_gives_each_service_its_own_stop_timeout(sup, tmp_path):
    clean, stubborn = tmp_path / "clean", tmp_path / "stubborn"
    make(sup, "-n", "clean", TERM_TRAP, str(clean), "clean")
    obj = make(sup, "-n", "stubborn", "--stop-timeout", "0.3", TERM_TRAP, str(stubborn),
               "ignore")
    ready(clean)
    wait_until(lambda: any(ln.startswith("child") for ln in lines(stubborn))
               and ready(stubborn), what="the stubborn toy and its child")
    child = int(next(ln for ln in lines(stubborn) if ln.startswith("child")).split()[1])
    start = time.monotonic()
    sup.ok("close")
    took = time.monotonic() - start
    assert "cleaned TERM" in lines(clean)  # its stop signal: it cleaned up
    # SIGKILL to all of the stubborn one after its 0.3 s, not after the daemon's grace (5 s)
    assert took < 5, took
    wait_until(lambda: not alive(obj["pid"]) and not alive(child),
               what="the stubborn service and its child to be gone")


def test_reload_waits_for_a_stop_under_way(sup, tmp_path):
    import subprocess
    import sys

    log = tmp_path / "log"
    make(sup, "-n", "slow", "--stop-timeout", "1", TERM_TRAP, str(log), "ignore")
    ready(log)
    generation = sup.json("list-supervisors")["supervisors"][0]["generation"]
    mark = journal_mark()
    stopping = subprocess.Popen([sys.executable, "-m", "supervisor", "stop-service", "slow",
                                 "--json"], env=sup.env, stdout=subprocess.PIPE, text=True)
    # under way: its stop signal sent (it shows RUNNING until it has stopped)
    wait_for_entry(None, TIMEOUT, since=mark, SERVICE_NAME="slow", SUPERVISOR_EVENT="stopping")
    sup.ok("reload")  # answered once the daemon has re-executed: after the stop
    out, _ = stopping.communicate(timeout=TIMEOUT)
    assert stopping.returncode == 0
    import json

    assert json.loads(out)["status"] == "KILLED"  # the client waiting on the stop got it
    info = sup.json("list-supervisors")["supervisors"][0]
    assert info["generation"] == generation + 1 and info["pid"] == sup.pid


@pytest.mark.parametrize("first, then, now, as_json", [
    ("stop-service", "start-service", "RUNNING", False),  # the stop became a restart
    ("restart-service", "close-service", "KILLED", True),  # the restart became an end
])
def test_a_verb_that_another_command_undid_while_it_waited_fails_saying_so(
        sup, tmp_path, first, then, now, as_json):
    import json
    import subprocess
    import sys

    log = tmp_path / "log"
    make(sup, "-n", "slow", "--stop-timeout", "5", TERM_TRAP, str(log), "ignore")
    ready(log)
    mark = journal_mark()
    waiting = subprocess.Popen([sys.executable, "-m", "supervisor", first, "slow",
                                *(["--json"] if as_json else [])], env=sup.env,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    wait_for_entry(None, TIMEOUT, since=mark, SERVICE_NAME="slow", SUPERVISOR_EVENT="stopping")
    sup.ok(then, "slow")
    out, err = waiting.communicate(timeout=TIMEOUT)
    assert (waiting.returncode, err) == (1, ""), (out, err)
    if as_json:
        answer = json.loads(out)
        assert answer["overridden"] == ["slow"] and answer["services"][0]["status"] == now
    else:
        what = first.removesuffix("-service")
        assert out.startswith(f"slow: {what} undone by another command meanwhile (now {now}")
    assert sup.wait_status("slow", now)["name"] == "slow"


def test_suspending_a_service_being_stopped_is_refused_saying_so(sup, tmp_path):
    import subprocess
    import sys

    log = tmp_path / "log"
    make(sup, "-n", "slow", "--stop-timeout", "5", TERM_TRAP, str(log), "ignore")
    ready(log)
    mark = journal_mark()
    stopping = subprocess.Popen([sys.executable, "-m", "supervisor", "stop-service", "slow"],
                                env=sup.env, stdout=subprocess.DEVNULL)
    wait_for_entry(None, TIMEOUT, since=mark, SERVICE_NAME="slow", SUPERVISOR_EVENT="stopping")
    assert_one_line_error(sup.run("suspend-service", "slow"), 1,
                          "service slow is being stopped: cannot suspend it")
    sup.ok("close-service", "slow")
    stopping.wait(TIMEOUT)


# ---- logs ------------------------------------------------------------------------------


def test_logs_of_every_service_since_a_time_and_by_priority(sup):
    import json
    from datetime import datetime

    since = datetime.now().astimezone().isoformat(timespec="microseconds")  # this test's
    make(sup, "-n", "talk", "/bin/sh", "-c", "echo said; echo complained >&2")
    make(sup, "-n", "mutter", "/bin/sh", "-c", "echo murmured")
    sup.wait_status("talk", "EXITED")
    sup.wait_status("mutter", "EXITED")

    def entries(*args: str) -> list[dict]:
        return json.loads(sup.ok("logs", "--json", "--since", since, *args).out)["entries"]

    def said() -> list[tuple]:
        return [(e["service"], e["stream"], e["priority"], e["message"])
                for e in entries() if e["stream"]]

    wait_until(lambda: len(said()) == 3, what="the three lines in the journal")
    assert sorted(said()) == [("mutter", "stdout", 6, "murmured"),
                              ("talk", "stderr", 3, "complained"),
                              ("talk", "stdout", 6, "said")]
    # every service's lifecycle too; -p err: stderr (and errors) alone
    assert {e["event"] for e in entries() if e["service"] == "mutter"} >= {"started", "exited"}
    assert [e["message"] for e in entries("-p", "err")] == ["complained"]
    assert [e["message"] for e in entries("talk", "-p", "3")] == ["complained"]
    text = sup.ok("logs", "talk", "--since", since).out
    assert re.search(r" talk\[\d+\]: complained$", text, re.M), text
    # a time to come: nothing; a bad one: a usage error
    later = datetime.fromtimestamp(time.time() + 3600).astimezone().isoformat()
    assert sup.ok("logs", "--since", later).out == ""
    assert sup.ok("logs", "--since", "0m").out == ""  # from now on: nothing yet
    assert_one_line_error(sup.run("logs", "--since", "soon"), 2, "--since")
    assert_one_line_error(sup.run("logs", ""), 2, "the service's name is empty")
    assert_one_line_error(sup.run("logs", "--since", ""), 2, "--since ''")
    assert_one_line_error(sup.run("logs", "-p", "loud"), 2, "-p")


def test_close_waits_as_long_as_the_longest_stop_and_init_meanwhile_says_it_closes(
        rundir, tmp_path):
    s = Supervisor(rundir)
    s.ok("init")
    log = tmp_path / "log"
    # it ignores SIGTERM: its stop ends with SIGKILL after 6 s, past the daemon's grace
    s.ok("create-service", "-n", "slow", "--stop-timeout", "6", TERM_TRAP, str(log), "ignore")
    ready(log)
    with s.client() as c:
        answer = c.shutdown()  # what `close` sends: it then waits for the daemon's exit
    assert (answer["grace"], answer["longest_stop"]) == (5.0, 6.0)
    assert_one_line_error(s.run("init"), 1, "is closing", "init again")
    wait_until(lambda: not alive(answer["pid"]), what="the daemon to exit after its SIGKILL")
    s.ok("init")  # closed: a new one starts
    s.ok("close")


def test_stop_service_leaves_a_start_still_to_come_and_says_how_to_call_it_off(sup):
    sup.ok("create-service", "-n", "later", "-d", "600", "/bin/sleep", "1020")
    out = sup.ok("stop-service", "later").out
    assert out.strip() == ("later: nothing to do (PENDING: it does not run; "
                           "supervisor-cancel calls off what is to come)")
    assert sup.status("later")["status"] == "PENDING"


def test_a_service_removed_while_a_restart_waits_is_told_not_hidden(sup, tmp_path):
    import subprocess
    import sys

    log = tmp_path / "log"
    sup.ok("create-service", "-n", "stub", "--stop-timeout", "3", TERM_TRAP, str(log),
           "ignore")
    ready(log)
    mark = journal_mark()
    restart = subprocess.Popen([sys.executable, "-m", "supervisor", "restart-service",
                                "stub"], env=sup.env, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    try:  # under way: its stop signal sent, the answer waits for the stop
        wait_for_entry(None, TIMEOUT, since=mark, SERVICE_NAME="stub",
                       SUPERVISOR_EVENT="stopping")
        sup.ok("remove-service", "stub")
        out, err = restart.communicate(timeout=TIMEOUT)
    finally:
        restart.kill()
        restart.wait()
    assert (restart.returncode, out.strip(), err) == (
        1, "stub: removed by another command meanwhile", "")


def test_an_output_that_cannot_be_opened_is_blamed_not_the_program(sup, tmp_path):
    out = tmp_path / "out.log"
    make(sup, "-n", "loud", "--restart", "always", "-o", str(out), "/bin/sleep", "1021")
    out.unlink()
    out.mkdir()  # no file can be opened there now
    again = sup.run("restart-service", "loud")
    assert again.rc == 1, again
    assert f"could not start: /bin/sleep: its output {out}: Is a directory (retrying)" \
        in again.out, again
    sup.ok("remove-service", "loud")


def test_an_env_file_value_with_a_nul_is_refused_not_cut(sup, tmp_path):
    env_file = tmp_path / "env"
    env_file.write_bytes(b"A=1\0x\n")
    assert_one_line_error(sup.run("create-service", "--env-file", str(env_file),
                                  "/bin/true"), 2, f"{env_file}:1", "NUL")


def test_a_refused_create_leaves_no_output_file_behind(sup, tmp_path):
    out = tmp_path / "out.log"
    assert_one_line_error(sup.run("create-service", "-o", str(out), str(tmp_path / "nope")),
                          1, "no such file")
    assert not out.exists()


def test_an_env_file_or_directory_gone_since_the_create_is_blamed_not_the_program(sup,
                                                                                  tmp_path):
    env_file, cwd = tmp_path / "svc.env", tmp_path / "dir"
    env_file.write_text("A=1\n")
    cwd.mkdir()
    make(sup, "-n", "ctx", "--restart", "always", "--env-file", str(env_file), "-C", str(cwd),
         "/bin/sleep", "1022")
    env_file.unlink()
    again = sup.run("restart-service", "ctx")
    assert again.rc == 1, again
    assert f"could not start: /bin/sleep: its env file {env_file}: No such file or " \
        "directory (retrying)" in again.out, again
    env_file.write_text("A=1\n")
    cwd.rmdir()
    sup.ok("stop-service", "ctx")  # what it retries is called off
    again = sup.run("start-service", "ctx")
    assert again.rc == 1, again
    assert f"could not start: /bin/sleep: its working directory {cwd}: No such file or " \
        "directory (retrying)" in again.out, again
    sup.ok("remove-service", "ctx")


def test_the_working_directory_is_entered_as_the_services_user(sup, other_user, tmp_path):
    """As systemd's WorkingDirectory=: a directory the user may not enter fails the start,
    rather than the program starting in it as root let it."""
    closed = tmp_path / "closed"
    closed.mkdir(mode=0o700)  # root's
    result = sup.run("create-service", "-u", other_user.pw_name, "-C", str(closed),
                     "/bin/true")
    assert result.rc == 1, result
    assert f"its working directory {closed}: Permission denied" in result.err, result
    assert sup.json("list-supervisor")["services"] == []


def test_real_time_signals_are_shown_by_name(sup):
    """As ``kill -l`` names them, and as --stop-signal and signal-service take them."""
    svc = make(sup, "-n", "rt", "--stop-signal", "RTMIN+3", "/bin/sleep", "1023")
    assert svc["stop_signal"] == "SIGRTMIN+3"
    assert "stop_signal: SIGRTMIN+3" in sup.ok("show-service", "rt").out
    sup.ok("stop-service", "rt")
    assert sup.status("rt")["signal"] == "SIGRTMIN+3"  # what ended it: its stop signal
    make(sup, "-n", "late", "/bin/sleep", "1024")
    sup.ok("signal-service", "late", "RTMAX-2")
    assert sup.wait_status("late", "CRASHED")["signal"] == "SIGRTMAX-2"
