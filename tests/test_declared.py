"""Declared services (docs/reference.md, "Declared services"): the instance's config file,
`apply` (with --dry-run and --prune), `export`, `save`, the file applied when the daemon
starts, and a reboot simulated by killing everything and wiping the runtime dir."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys

import pytest
from conftest import (
    ROOT,
    Supervisor,
    alive,
    assert_one_line_error,
    close_instance,
    kill_daemon,
    marked,
    wait_until,
)
from journald import journal_mark, wait_for_entry
from timeouts import TIMEOUT

WEB = """
[services.web]
command = ["/bin/sleep", "1001"]
restart = "always"
env = { GREETING = "hello" }
stop_timeout = 5

[services.db]
command = "/bin/sleep 1002"
restart_times = 3
"""


@pytest.fixture
def conf(tmp_path):
    path = tmp_path / "conf"
    path.mkdir()
    return path


@pytest.fixture
def inst(rundir, conf):
    """Instance 0 reading its config file from ``conf`` (not started yet)."""
    s = Supervisor(rundir)
    s.env["SUPERVISOR_CONFIG_DIR"] = str(conf)
    yield s
    close_instance(s)


def services(s: Supervisor) -> dict[str, dict]:
    return {svc["name"]: svc for svc in s.json("list-supervisor")["services"]}


def running(s: Supervisor) -> dict[str, int]:
    return {name: svc["pid"] for name, svc in services(s).items()
            if svc["status"] == "RUNNING"}


def test_the_file_is_applied_when_the_daemon_starts(inst, conf):
    (conf / "0.toml").write_text(WEB)
    inst.ok("init")
    wait_until(lambda: set(running(inst)) == {"web", "db"}, what="web and db to run")
    web = services(inst)["web"]
    assert web["declared"] is True and web["restart"] == "always"
    assert web["command"] == ["/bin/sleep", "1001"] and web["env"] == ["GREETING"]
    with open(f"/proc/{web['pid']}/environ", "rb") as f:
        assert b"GREETING=hello" in f.read().split(b"\0")


def test_apply_does_not_say_it_made_what_it_could_not_start(inst, conf, tmp_path):
    garbage = tmp_path / "garbage"  # executable, but no program: its exec fails
    garbage.write_bytes(b"\x00\x01 not a program")
    garbage.chmod(0o755)
    inst.ok("init")
    (conf / "0.toml").write_text(WEB + f'\n[services.bad]\ncommand = ["{garbage}"]\n')
    result = inst.run("apply")
    assert result.rc == 1, result
    assert result.out.splitlines() == ["create web", "create db"]
    assert "bad: cannot start" in result.err and "Exec format error" in result.err
    assert set(services(inst)) == {"web", "db"}


def test_edit_one_service_dry_run_shows_one_change_apply_restarts_only_it(inst, conf):
    (conf / "0.toml").write_text(WEB)
    inst.ok("init")
    wait_until(lambda: set(running(inst)) == {"web", "db"}, what="web and db to run")
    before = running(inst)
    assert inst.ok("apply").out == "instance 0 matches its config file: nothing to do\n"
    (conf / "0.toml").write_text(WEB.replace('"1001"', '"1003"'))
    dry = inst.ok("apply", "--dry-run")
    assert dry.out == "would restart web\n"
    assert running(inst) == before  # a dry run changes nothing
    assert inst.ok("apply").out == "restart web\n"
    after = running(inst)
    assert after["db"] == before["db"] and after["web"] != before["web"]
    assert not alive(before["web"])
    assert services(inst)["web"]["command"] == ["/bin/sleep", "1003"]
    assert inst.json("apply", "--dry-run")["changes"] == [
        {"action": "keep", "service": "web"}, {"action": "keep", "service": "db"}]


def test_a_changed_service_is_stopped_gracefully(inst, conf, tmp_path):
    """The restart of a changed service is restart-service's: its stop signal first, so a
    script that traps TERM cleans up."""
    mark = tmp_path / "cleaned"
    script = tmp_path / "trap.sh"
    script.write_text(f"#!/bin/sh\ntrap 'echo bye > {mark}; exit 0' TERM\n"
                      "while :; do sleep 0.1; done\n")
    script.chmod(0o755)
    table = f'[services.trap]\ncommand = ["{script}"]\n'
    (conf / "0.toml").write_text(table)
    inst.ok("init")
    wait_until(lambda: "trap" in running(inst), what="trap to run")
    (conf / "0.toml").write_text(table + 'env = { V = "2" }\n')
    assert inst.ok("apply").out == "restart trap\n"
    assert mark.read_text() == "bye\n"


def test_dropped_declared_services_go_and_prune_takes_ephemeral_ones_too(inst, conf):
    (conf / "0.toml").write_text(WEB)
    inst.ok("init")
    inst.ok("create-service", "-n", "eph", "/bin/sleep", "1004")
    wait_until(lambda: set(running(inst)) == {"web", "db", "eph"}, what="three to run")
    web_pid = running(inst)["web"]
    (conf / "0.toml").write_text(WEB.split("[services.db]")[0])
    assert inst.ok("apply").out == "remove db\n"
    assert set(services(inst)) == {"web", "eph"}
    assert inst.ok("apply", "--prune", "--dry-run").out == "would remove eph\n"
    assert inst.ok("apply", "--prune").out == "remove eph\n"
    assert running(inst) == {"web": web_pid}


BROKEN = [
    ('[services.bad]\ncommand = ["/bin/true"]\nrestart = "sometimes"\n', 3, "restart"),
    ('[services.bad]\ncommand = ["/bin/true"]\n\ncolour = "blue"\n', 4, "colour"),
    ('[services.bad]\ncommand = ["/bin/true"]\nstop_timeout = "soon"\n', 3, "stop_timeout"),
    ('[services.bad]\ncommand = 42\n', 2, "command"),
    ('[services.bad]\nrestart = "always"\n', 1, "command"),
    ('[services.bad]\ncommand = ["/bin/true"]\nenv = { "1X" = "y" }\n', 3, "env"),
    ('[services.bad]\ncommand = ["/bin/true"\n', 3, "TOML"),  # where tomllib stops
    ('[services.bad]\ncommand = ["/bin/true"]\nevery = "1 fortnight"\n', 3, "fortnight"),
    ('[services.bad]\ncommand = ["/no/such/program"]\n', 2, "/no/such/program"),
    ('[services.bad]\ncommand = ["/bin/true"]\ncwd = "/no/such/dir"\n', 3, "/no/such/dir"),
    ('[services.bad]\ncommand = ["/bin/true"]\nstop_signal = "NOPE"\n', 3, "stop_signal"),
    ('[services.bad]\ncommand = ' + '[' * 1000 + ']' * 1000 + '\n', None, "nested"),
    ('[services]\nbad.command = ["/bin/true"]\nbad.restart = "sometimes"\n', 3, "restart"),
    ('[services.bad]\ncommand = ["/bin/true"]\n[services.bad.env]\n"1X" = "y"\n', 3, "env"),
    ('[services."-x"]\ncommand = ["/bin/true"]\n', 1, "-x"),
    ('[service.web]\ncommand = ["/bin/true"]\n', 1, "service"),
    ('[services.bad]\ncommand = ["/bin/true"]\nautostart = false\ndelay = 5\n', 3,
     "autostart"),
    # refused by the daemon's create-service checks, not by the file's: the key's line all
    # the same (an env line first: --env is not the start of --env-file)
    ('[services.bad]\ncommand = ["/bin/true"]\nenv = { A = "1" }\nenv_file = "/no/such/f"\n',
     4, "/no/such/f"),
    ('[services.bad]\ncommand = ["/bin/true"]\n\noutput = "/no/such/dir/f"\n', 4,
     "/no/such/dir/f"),
    ('[services.bad]\ncommand = ["/bin/true"]\n\ncron = "1 2 3"\n', 4, "cron"),
    ('[services.bad]\ncommand = ["/bin/true"]\n\nat = "tea time"\n', 4, "tea time"),
    ('[services.bad]\ncommand = ["/bin/true"]\n\nstart_limit = "5 in 10"\n', 4, "start limit"),
    ('[services.bad]\ncommand = ["/bin/true"]\nrestart_times = 99999999999\n', 3,
     "restart_times"),
    ('[services.bad]\ncommand = ["/bin/true"]\ndelay = 1e308\n', 3, "] delay must be"),
    ('[services.bad]\ncommand = ["/bin/true"]\nuser = "no-such-user-here"\n', 3,
     "] user no-such-user-here: no such user"),
    # text in a multi-line string that looks like the key, or like a table, is neither
    ('[services.bad]\nuser = """\nrestart = 5\n[services.bad]\n"""\ncommand = ["/bin/true"]\n'
     'restart = "sometimes"\n', 7, "restart"),
]


@pytest.mark.parametrize(("text", "line", "needle"), BROKEN)
def test_a_broken_file_changes_nothing_and_names_file_line_and_key(inst, conf, text, line,
                                                                   needle):
    (conf / "0.toml").write_text(WEB)
    inst.ok("init")
    wait_until(lambda: set(running(inst)) == {"web", "db"}, what="web and db to run")
    before = running(inst)
    (conf / "0.toml").write_text(WEB + "\n" + text)
    offset = WEB.count("\n") + 1
    result = inst.run("apply")
    where = f"{conf}/0.toml:{offset + line}:" if line else f"{conf}/0.toml:"
    assert_one_line_error(result, 2, where, needle)
    assert " --" not in result.err  # the file's keys, not create-service's options
    assert running(inst) == before
    inst.ok("close")  # a daemon that starts with it starts all the same: without the file
    inst.ok("init")  # (one it cannot read), or without the one service it cannot make
    assert set(services(inst)) in ({"web", "db"}, set())


def test_a_service_declared_twice_across_files_is_refused(inst, conf):
    (conf / "0.toml").write_text(WEB)
    (conf / "0.d").mkdir()
    (conf / "0.d" / "extra.toml").write_text('[services.web]\ncommand = ["/bin/true"]\n')
    inst.ok("init")
    assert_one_line_error(inst.run("apply"), 2, f"{conf}/0.d/extra.toml:1:",
                          "declared already", f"{conf}/0.toml:2")


def test_drop_in_files_merge_in_name_order(inst, conf):
    (conf / "0.d").mkdir()
    (conf / "0.d" / "b.toml").write_text('[services.b]\ncommand = ["/bin/sleep", "1005"]\n')
    (conf / "0.d" / "a.toml").write_text('[services.a]\ncommand = ["/bin/sleep", "1006"]\n')
    inst.ok("init")
    wait_until(lambda: set(running(inst)) == {"a", "b"}, what="a and b to run")
    assert list(services(inst)) == ["a", "b"]


def test_a_file_others_may_write_is_not_trusted(inst, conf):
    (conf / "0.toml").write_text(WEB)
    os.chmod(conf / "0.toml", 0o666)
    inst.ok("init")  # the daemon starts, applies nothing, and says why in the journal
    assert services(inst) == {}
    assert_one_line_error(inst.run("apply"), 2, "not trusted", "chmod go-w")


def test_a_directory_others_may_write_in_is_not_trusted(inst, conf):
    """Another user who may write in the config dir or its drop-in dir could add a file
    there: neither is read (a drop-in dir, even without a main file)."""
    (conf / "0.d").mkdir()
    (conf / "0.d" / "a.toml").write_text('[services.a]\ncommand = ["/bin/sleep", "1013"]\n')
    os.chmod(conf / "0.d", 0o777)
    inst.ok("init")
    assert services(inst) == {}
    assert_one_line_error(inst.run("apply"), 2, f"{conf}/0.d", "not trusted", "chmod go-w")
    os.chmod(conf / "0.d", 0o755)
    os.chmod(conf, 0o1777)  # sticky or not: others may add files
    assert_one_line_error(inst.run("apply"), 2, f"{conf}:", "not trusted")
    os.chmod(conf, 0o755)
    inst.ok("apply")
    assert list(services(inst)) == ["a"]


def test_export_then_apply_changes_nothing(inst, conf, tmp_path):
    """Every create-service option survives export: applying the export keeps every
    process and only marks the services declared."""
    envfile = tmp_path / "env"
    envfile.write_text("A=1\n")
    inst.ok("init")
    inst.ok("create-service", "-n", "plain", "/bin/sleep", "1007")
    inst.ok("create-service", "-n", "full", "--restart", "on-failure", "-r", "4",
            "--restart-delay", "2", "--start-limit", "3/20s", "-e", "K=V", "-e", "L=W",
            "--env-file", str(envfile), "-C", str(tmp_path), "-o", "null",
            "--stop-signal", "INT", "--stop-timeout", "7", "/bin/sleep", "1008")
    inst.ok("create-service", "-n", "seed", "-r", "2", "/bin/sleep", "1009")
    inst.ok("create-service", "-n", "every", "--every", "1h30m", "/bin/sleep", "1010")
    inst.ok("create-service", "-n", "cron", "--cron", "0 3 * * *", "/bin/sleep", "1011")
    inst.ok("create-service", "-n", "later", "--at", "23:59:59", "/bin/sleep", "1012")
    inst.ok("create-service", "-n", "always", "--restart", "always", "/bin/sleep", "1013")
    before = {n: (s["pid"], s["status"]) for n, s in services(inst).items()}
    text = inst.ok("export").out
    (conf / "0.toml").write_text(text)
    changes = inst.json("apply")["changes"]
    assert {c["action"] for c in changes} == {"declare"}, changes
    assert {n: (s["pid"], s["status"]) for n, s in services(inst).items()} == before
    assert all(s["declared"] for s in services(inst).values())
    assert inst.ok("apply").out == "instance 0 matches its config file: nothing to do\n"
    assert inst.ok("export").out == text.replace("(supervisor export)", "(supervisor export)")


def test_save_makes_the_live_set_come_back_after_close(inst, conf):
    inst.ok("init")
    inst.ok("create-service", "-n", "kept", "--restart", "always", "/bin/sleep", "1014")
    out = inst.ok("save").out
    assert out == f"saved 1 services of instance 0 to {conf}/0.toml\n"
    assert "[services.kept]" in (conf / "0.toml").read_text()
    inst.ok("close")
    inst.ok("init")
    wait_until(lambda: set(running(inst)) == {"kept"}, what="kept to come back")
    assert services(inst)["kept"]["restart"] == "always"


def test_save_keeps_a_declared_service_this_instance_could_not_make(inst, conf):
    """A file declares a program not installed yet: its create fails, yet a save (which
    writes what runs) does not erase the declaration."""
    ghost = '[services.ghost]\ncommand = ["/no/such/program"]\n'
    (conf / "0.toml").write_text(WEB + "\n" + ghost)
    inst.ok("init")
    wait_until(lambda: set(running(inst)) == {"web", "db"}, what="web and db to run")
    out = inst.ok("save").out
    assert out == (f"saved 3 services of instance 0 to {conf}/0.toml\nKept: ghost (declared "
                   "there, not made here: `supervisor apply` says why)\n")
    text = (conf / "0.toml").read_text()
    assert "[services.ghost]" in text and "/no/such/program" in text


def test_save_refuses_a_file_too_large_to_be_read_back(inst, conf):
    inst.ok("init")
    word = "w" * 60_000
    with inst.client() as c:
        for i in range(20):  # 20 tables of ~900 KB: 18 MB in all
            [made] = c.pipeline([("create-service", {"path": "/bin/sleep", "name": f"big{i}",
                                                     "args": ["1020", *[word] * 15],
                                                     "output": "null"})])
            assert made["status"] == "RUNNING", made
    assert_one_line_error(inst.run("save"), 1, "would hold", "over the 16 MiB",
                          "<N>.d/")
    assert not (conf / "0.toml").exists()


def test_sigterm_then_init_brings_back_exactly_the_declared_services(inst, conf):
    (conf / "0.toml").write_text(WEB)
    inst.ok("init")
    inst.ok("create-service", "-n", "eph", "/bin/sleep", "1015")
    wait_until(lambda: set(running(inst)) == {"web", "db", "eph"}, what="three to run")
    pid = inst.pid
    os.kill(pid, signal.SIGTERM)
    wait_until(lambda: not alive(pid), what="the daemon to close")
    inst.ok("init")
    wait_until(lambda: set(running(inst)) == {"web", "db"}, what="web and db back")
    assert set(services(inst)) == {"web", "db"}
    assert services(inst)["web"]["command"] == ["/bin/sleep", "1001"]


def test_after_a_crash_recovered_services_keep_their_pids_and_new_ones_start(inst, conf):
    (conf / "0.toml").write_text(WEB)
    inst.ok("init")
    wait_until(lambda: set(running(inst)) == {"web", "db"}, what="web and db to run")
    before = running(inst)
    kill_daemon(inst.pid)
    (conf / "0.toml").write_text(WEB + '\n[services.new]\ncommand = ["/bin/sleep", "1016"]\n')
    inst.ok("init")
    wait_until(lambda: set(running(inst)) == {"web", "db", "new"}, what="new to start")
    after = running(inst)
    assert after["web"] == before["web"] and after["db"] == before["db"]


@pytest.mark.parametrize("lost", ["removed", "damaged"])
def test_declared_services_found_running_with_no_state_are_taken_back_as_declared(
        inst, conf, lost):
    """The daemon died and its state file is gone or cannot be trusted: the declared
    services still running in their cgroups are taken back as the file declares them, on
    the same process (apply finds them unchanged: no restart), and their policy acts again
    when they end. A service not in the file, found the same way, is taken back opened."""
    (conf / "0.toml").write_text(WEB)
    inst.ok("init")
    wait_until(lambda: set(running(inst)) == {"web", "db"}, what="web and db to run")
    extra = inst.create("/bin/sleep", ["1018"], name="extra", restart_times=5)
    before = running(inst)
    kill_daemon(inst.pid)
    path = os.path.join(inst.rundir, "0.state.json")
    if lost == "removed":
        os.unlink(path)
    else:
        with open(path, "r+b") as f:
            f.truncate(100)
    mark = journal_mark()
    inst.ok("init")
    found = wait_for_entry(since=mark, SYSLOG_IDENTIFIER="supervisor",
                           SUPERVISOR_EVENT="recovered", SERVICE_NAME="web")
    assert "found running in cgroup svc-web" in found["MESSAGE"], found["MESSAGE"]
    assert int(found["PRIORITY"]) == 4
    now = services(inst)
    assert running(inst) == before
    assert now["web"]["declared"] is True and now["web"]["restarts"] == 0
    assert now["web"]["restart"] == "always" and now["web"]["env"] == ["GREETING"]
    assert now["extra"]["opened"] is True and now["extra"]["pid"] == extra["pid"]
    applied = inst.json("apply", "--dry-run")
    assert [c for c in applied["changes"] if c["action"] != "keep"] == []
    os.kill(before["web"], signal.SIGKILL)  # its declared policy: always restarted
    wait_until(lambda: running(inst).get("web") not in (None, before["web"]),
               what="web to be restarted")
    os.kill(before["extra"], signal.SIGKILL)  # opened: seen ending, never restarted
    wait_until(lambda: services(inst)["extra"]["status"] in ("KILLED", "EXITED"),
               what="extra to be seen ending")
    assert services(inst)["extra"]["restarts"] == 0


def test_autostart_false_waits_for_start_service(inst, conf):
    (conf / "0.toml").write_text('[services.idle]\ncommand = ["/bin/sleep", "1017"]\n'
                                 "autostart = false\n")
    inst.ok("init")
    assert services(inst)["idle"]["status"] == "PENDING"
    assert services(inst)["idle"]["pid"] is None
    inst.ok("reload")  # taken back from the state file: still waiting, not started
    assert services(inst)["idle"]["status"] == "PENDING"
    kill_daemon(inst.pid)  # and after a crash of the daemon
    inst.ok("init")
    assert services(inst)["idle"]["status"] == "PENDING"
    inst.ok("start-service", "idle")
    wait_until(lambda: "idle" in running(inst), what="idle to start")


def test_a_reboot_brings_back_exactly_the_declared_services(inst, conf, rundir):
    """A power cut, simulated: the daemon and every service die at once (SIGKILL to all),
    and the runtime dir, a tmpfs, is empty at the next boot. The daemon that starts then
    runs exactly the declared services, with their definitions."""
    token = "4242"
    (conf / "0.toml").write_text(WEB.replace('"1001"', f'"1001.{token}"')
                                 .replace("1002", f"1002.{token}"))
    inst.ok("init")
    inst.ok("create-service", "-n", "eph", "--restart", "always", "/bin/sleep",
            f"1018.{token}")
    wait_until(lambda: set(running(inst)) == {"web", "db", "eph"}, what="three to run")
    victims = [inst.pid, *marked(token)]
    assert len(victims) == 4
    for pid in victims:
        os.kill(pid, signal.SIGKILL)
    wait_until(lambda: not any(alive(p) for p in victims), what="everything to be dead")
    for entry in os.listdir(rundir):  # /run is a fresh tmpfs after a reboot
        path = os.path.join(rundir, entry)
        shutil.rmtree(path) if os.path.isdir(path) else os.unlink(path)
    inst.ok("init")
    wait_until(lambda: set(running(inst)) == {"web", "db"}, what="the declared ones back")
    listing = services(inst)
    assert set(listing) == {"web", "db"}
    assert listing["web"]["command"] == ["/bin/sleep", f"1001.{token}"]
    assert listing["web"]["restart"] == "always" and listing["db"]["restart_times"] == 3
    assert sorted(marked(token)) == sorted(s["pid"] for s in listing.values())


def test_the_generator_wants_an_instance_for_each_config_file(tmp_path):
    """systemd/supervisor-generator: supervisor@N.service wanted by multi-user.target for
    N.toml and N.d, nothing for other names."""
    from conftest import ROOT

    conf = tmp_path / "conf"
    (conf / "7.d").mkdir(parents=True)
    # 03 is instance 3 to the daemon, but supervisor@03 would listen on 03.sock, which
    # the CLI (-i 3) never reaches: not an instance's name
    for name in ("3.toml", "x.toml", "100.toml", "4.toml.bak", "05.toml", "00.toml", "0.toml"):
        (conf / name).write_text("")
    out = tmp_path / "out"
    subprocess.run([str(ROOT / "systemd" / "supervisor-generator"), str(out), str(out),
                    str(out)], env={"SUPERVISOR_CONFIG_DIR": str(conf), "PATH": "/usr/bin:/bin"},
                   check=True)
    wants = out / "multi-user.target.wants"
    assert sorted(os.listdir(wants)) == ["supervisor@0.service", "supervisor@3.service",
                                         "supervisor@7.service"]
    assert os.readlink(wants / "supervisor@3.service") == "@UNITDIR@/supervisor@.service"


def test_one_spelling_is_as_good_as_another():
    """Tables that mean the same are equal (apply leaves such a service alone)."""
    from supervisor.config import canonical

    one = canonical({"command": "sleep 1", "every": 90, "stop_signal": "SIGINT",
                     "start_limit": "5/10s", "restart": "always"})
    other = canonical({"command": ["sleep", "1"], "every": "1m30s", "stop_signal": 2,
                       "restart": "always"})
    assert one == other
    assert canonical({"command": "x", "stop_signal": "TERM"}) == canonical({"command": "x"})


def test_what_export_cannot_write_is_left_out_and_the_rest_round_trips(inst, conf):
    inst.ok("init")
    inst.ok("create-service", "-n", "rt", "--stop-signal", "RTMIN+2", "--every", "90s",
            "/bin/sleep", "1019")
    subprocess.run([sys.executable, "-m", "supervisor", "create-service", "-n", "bytes",
                    "/bin/sleep", b"\xff"], env=inst.env, check=True, capture_output=True)
    exported = inst.json("export")
    assert exported["skipped"] == ["bytes"]
    (conf / "0.toml").write_text(inst.ok("export").out)
    assert "RTMIN+2" in (conf / "0.toml").read_text()
    changes = inst.json("apply")["changes"]
    assert changes == [{"action": "declare", "service": "rt"}], changes
    assert inst.ok("save").out == f"saved 1 services of instance 0 to {conf}/0.toml\n"


STUBBORN = """#!/bin/sh
trap '' TERM
exec /bin/sleep {arg}
"""


def test_one_apply_at_a_time_and_close_during_one_starts_nothing(inst, conf, tmp_path):
    token = "1020.5151"
    script = tmp_path / "stubborn.sh"
    script.write_text(STUBBORN.format(arg="$1"))
    script.chmod(0o755)
    table = f'[services.x]\ncommand = ["{script}", "{token}"]\nstop_timeout = 3\n'
    (conf / "0.toml").write_text(table)
    inst.ok("init")
    wait_until(lambda: "x" in running(inst), what="x to run")
    (conf / "0.toml").write_text(table.replace(token, token + "1"))
    mark = journal_mark()
    first = subprocess.Popen([sys.executable, "-m", "supervisor", "apply"], env=inst.env,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    # the first one's restart under way (else the second could come first, and do it)
    wait_for_entry(None, TIMEOUT, since=mark, SERVICE_NAME="x", SUPERVISOR_EVENT="stopping")
    wait_until(lambda: services(inst)["x"]["status"] == "RUNNING" and any(
        e for e in [inst.run("apply").err] if "under way" in e), what="a second apply refused")
    inst.ok("close")
    first.communicate(timeout=30)
    assert marked(token) == []  # the restart's new process was never started


def test_a_relative_config_dir_is_the_callers_not_the_daemons(inst, conf):
    """The daemon runs in /: a relative SUPERVISOR_CONFIG_DIR means where `init` ran."""
    (conf / "0.toml").write_text(WEB)
    env = {**inst.env, "SUPERVISOR_CONFIG_DIR": conf.name}
    subprocess.run([sys.executable, "-m", "supervisor", "init"], env=env, cwd=conf.parent,
                   check=True, capture_output=True, timeout=TIMEOUT)
    wait_until(lambda: set(running(inst)) == {"web", "db"}, what="web and db to run")


def test_a_command_on_a_service_apply_is_restarting_is_refused_not_undone(inst, conf,
                                                                         tmp_path):
    """While apply restarts a service (its stop under way), a remove-service or
    stop-service of it would be undone by the apply, which makes it again from the file:
    refused, with why; the apply goes through."""
    log = tmp_path / "log"
    trap = str(ROOT / "tests" / "toys" / "term_trap")
    table = (f'[services.a]\ncommand = ["{trap}", "{log}", "ignore"]\n'
             "stop_timeout = 3\n")
    (conf / "0.toml").write_text(table)
    inst.ok("init")
    wait_until(lambda: "ready" in (log.read_text() if log.exists() else ""),
               what="a to set its traps")
    (conf / "0.toml").write_text(table.replace("stop_timeout = 3", "stop_timeout = 2"))
    mark = journal_mark()
    apply = subprocess.Popen([sys.executable, "-m", "supervisor", "apply"], env=inst.env,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:  # its restart under way: the stop signal sent, SIGKILL in 3 s
        wait_for_entry(None, TIMEOUT, since=mark, SERVICE_NAME="a",
                       SUPERVISOR_EVENT="stopping")
        for verb in ("remove-service", "stop-service", "restart-service"):
            assert_one_line_error(inst.run(verb, "a"), 1, "a: an apply under way is making "
                                  "it again from the file", "once it is done")
        out, err = apply.communicate(timeout=TIMEOUT)
    finally:
        apply.kill()
        apply.wait()
    assert (apply.returncode, out, err) == (0, "restart a\n", "")
    wait_until(lambda: "a" in running(inst), what="the declared a to run again")
    assert services(inst)["a"]["stop_timeout"] == 2.0
    inst.ok("stop-service", "a")  # the apply done: taken


def test_a_link_among_the_drop_in_files_is_refused_and_says_why(inst, conf, tmp_path):
    (conf / "0.d").mkdir()
    real = tmp_path / "real.toml"
    real.write_text('[services.l]\ncommand = ["/bin/sleep", "1022"]\n')
    (conf / "0.d" / "l.toml").symlink_to(real)
    inst.ok("init")
    assert_one_line_error(inst.run("apply"), 2, f"{conf}/0.d/l.toml:", "a symbolic link",
                          "not followed")
