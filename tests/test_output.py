"""Services' output: to the journal through the log relay (daemon not in the data path),
to /dev/null, to the daemon's own output, or to a file; and `supervisor logs`."""

from __future__ import annotations

import json
import os
import select
import selectors
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
from conftest import ROOT, Supervisor, children_of, close_instance, wait_until
from journald import journal_mark, read_entries, wait_for_entry
from timeouts import TIMEOUT

from supervisor import outfiles, output
from supervisor.watcher import PidfdWatcher


def _cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _relay_pid(daemon: int) -> int:
    for pid, _state in children_of(daemon):
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:  # a child that ended since it was listed
            continue
        if b"supervisor.logrelay" in cmdline:
            return pid
    raise AssertionError("no log relay")


def test_output_lines_are_journal_entries_with_fields(sup, tmp_path):
    mark = journal_mark()
    name = f"parrot-{uuid.uuid4().hex[:8]}"
    svc = sup.create("/bin/sh", ["-c", "echo hello from $$; echo to stderr >&2; sleep 60"],
                     name=name)
    hello = wait_for_entry(None, TIMEOUT, since=mark, SYSLOG_IDENTIFIER=name,
                           MESSAGE=f"hello from {svc['pid']}")
    assert hello["SUPERVISOR_INSTANCE"] == "0"
    assert hello["SERVICE_NAME"] == name
    assert hello["SERVICE_PID"] == str(svc["pid"])
    assert hello["PRIORITY"] == 6
    wait_for_entry(None, TIMEOUT, since=mark, SYSLOG_IDENTIFIER=name, MESSAGE="to stderr")
    # the real journalctl finds them by identifier and by our fields
    shown = subprocess.run(["journalctl", "-t", name, "-o", "cat", "--no-pager"],
                           capture_output=True, text=True, timeout=30).stdout.splitlines()
    assert f"hello from {svc['pid']}" in shown and "to stderr" in shown
    shown = subprocess.run(["journalctl", "-t", name, "SUPERVISOR_INSTANCE=0",
                            f"SERVICE_NAME={name}", "-o", "json", "--no-pager"],
                           capture_output=True, text=True, timeout=30).stdout.splitlines()
    assert {json.loads(line)["MESSAGE"] for line in shown} >= {"to stderr"}
    # the daemon keeps the read end of the pipe (so a dead relay costs no SIGPIPE), never
    # the write end (the pipe reaches EOF when the service's side closes)
    pipe = os.readlink(f"/proc/{svc['pid']}/fd/1")
    modes = [_access_mode(sup.pid, fd) for fd in os.listdir(f"/proc/{sup.pid}/fd")
             if _target(sup.pid, fd) == pipe]
    assert modes == [os.O_RDONLY]


def _target(pid: int, fd: str) -> str | None:
    try:
        return os.readlink(f"/proc/{pid}/fd/{fd}")
    except FileNotFoundError:
        return None


def _access_mode(pid: int, fd: str) -> int:
    with open(f"/proc/{pid}/fdinfo/{fd}") as f:
        flags = next(int(line.split()[1], 8) for line in f if line.startswith("flags:"))
    return flags & os.O_ACCMODE


def test_restarted_service_logs_with_its_new_pid(sup):
    mark = journal_mark()
    name = f"crashy-{uuid.uuid4().hex[:8]}"
    first = sup.create("/bin/sh", ["-c", "echo run $$; exit 1"], name=name,
                       restart_times=1)["pid"]
    sup.wait_status(name, "CRASHED")
    # the restart's pid, as the daemon's own "restarted" entry names it
    again = wait_for_entry(None, TIMEOUT, since=mark, SERVICE_NAME=name,
                           SUPERVISOR_EVENT="restarted")["SERVICE_PID"]
    assert again != str(first)
    for pid in (str(first), again):  # each run's line, under that run's pid
        line = wait_for_entry(None, TIMEOUT, since=mark, SERVICE_NAME=name,
                              MESSAGE=f"run {pid}")
        assert line["SERVICE_PID"] == pid and str(line["SYSLOG_PID"]) == pid
        assert line["SERVICE_STREAM"] == "stdout" and line["PRIORITY"] == 6


def test_null_inherit_and_file(sup, tmp_path):
    out = tmp_path / "out.txt"
    out.write_text("before\n")
    sup.ok("create-service", "-n", "tofile", "-o", str(out), "/bin/sh", "--", "-c",
           "echo to the file")
    sup.wait_status("tofile", "EXITED")
    assert out.read_text() == "before\nto the file\n"  # appended
    # under init the daemon's stdout and stderr are its log file, 0.log: a service never
    # writes there (past its rotation, lines posing as the daemon's); it goes as journal
    mark = journal_mark()
    sup.ok("create-service", "-n", "inherit", "-o", "inherit", "/bin/sh", "--", "-c",
           "echo inherited-line")
    sup.wait_status("inherit", "EXITED")
    wait_for_entry(None, TIMEOUT, since=mark, SERVICE_NAME="inherit",
                   MESSAGE="inherited-line")
    assert "inherited-line" not in Path(sup.rundir, "0.log").read_text()
    svc = sup.json("create-service", "-n", "quiet", "-o", "null", "/bin/sleep", "60")
    assert os.readlink(f"/proc/{svc['pid']}/fd/1") == "/dev/null"
    bad = sup.run("create-service", "-o", "/nonexistent/dir/file", "/bin/true")
    assert bad.rc == 1 and "cannot write output file" in bad.err
    # the daemon's own files: its state (appended to, it would be set aside at recovery)
    state_file = Path(sup.rundir, "0.state.json")
    before = state_file.read_bytes()
    linked = tmp_path / "log-link"
    os.link(Path(sup.rundir, "0.log"), linked)  # a hard link elsewhere to its log
    for target in (state_file, Path(sup.rundir, "new.txt"), linked):
        bad = sup.run("create-service", "-o", str(target), "/bin/true")
        assert bad.rc == 2 and "a file of the daemon's runtime directory" in bad.err, bad
    assert state_file.read_bytes() == before and not Path(sup.rundir, "new.txt").exists()


def test_inherit_is_the_daemons_own_stdout_where_it_runs_in_the_foreground(rundir):
    daemon = subprocess.Popen([sys.executable, "-m", "supervisor.daemon", "-i", "0"],
                              env={**os.environ, "SUPERVISOR_RUNTIME_DIR": rundir},
                              stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, cwd=ROOT)
    try:
        s = Supervisor(rundir)
        wait_until(lambda: os.path.exists(os.path.join(rundir, "0.sock")), what="its socket")
        s.ok("create-service", "-n", "talk", "-o", "inherit", "/bin/sh", "--", "-c",
             "echo to-the-terminal")
        got = bytearray()

        def seen() -> bool:
            if select.select([daemon.stdout], [], [], 0.1)[0]:
                got.extend(os.read(daemon.stdout.fileno(), 65536))
            return b"to-the-terminal\n" in got
        wait_until(seen, what="the line on the daemon's stdout")
        s.ok("close")
    finally:
        if daemon.poll() is None:
            daemon.kill()
        daemon.wait(TIMEOUT)
        daemon.stdout.close()


def test_without_any_relay_output_falls_back_to_a_file(tmp_path, monkeypatch):
    # no log relay can start at all (no process can be made): the service writes the file
    # itself, raw
    def no_spawn(*args, **kw):
        raise OSError(11, "Resource temporarily unavailable")

    monkeypatch.setattr(output.process, "spawn", no_spawn)
    logged = []
    with selectors.DefaultSelector() as sel:
        outs = output.Outputs(4, str(tmp_path), PidfdWatcher(sel), dict(os.environ),
                              lambda m, p: logged.append(m))
        try:
            handoff = outs.prepare("parrot", "journal")
            os.write(handoff.out, b"kept\n")
            outs.done(handoff, "parrot", 123)
            assert outs.relay is None
            outs.prepare("parrot", "journal")  # no second try within the second
        finally:
            outs.close()
    assert (tmp_path / "4.parrot.out").read_text() == "kept\n"
    assert logged == ["cannot start the log relay: [Errno 11] Resource temporarily "
                      "unavailable"]


def test_an_output_file_is_rotated_and_stays_bounded(tmp_path, monkeypatch):
    monkeypatch.setattr(outfiles, "MAX_BYTES", 1000)
    dir_fd = os.open(tmp_path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        writer = outfiles.Writer(dir_fd, 3, "web")
        for i in range(100):
            writer.write(1796500000.0 + i, "stderr" if i % 2 else "stdout", 42,
                         [f"line {i}".encode()])
        writer.close()
    finally:
        os.close(dir_fd)
    now, old = tmp_path / "3.web.out", tmp_path / "3.web.out.1"
    assert now.stat().st_size <= 1000 and old.stat().st_size <= 1000
    assert sorted(p.name for p in tmp_path.iterdir()) == ["3.web.out", "3.web.out.1"]
    first = now.read_text().splitlines()[0]
    assert first.startswith("2026-") and " 42 line " in first
    entries = outfiles.read(str(tmp_path), 3, ["web"], lines=None)
    numbers = [int(e["message"].split()[1]) for e in entries]
    assert numbers == list(range(numbers[0], 100))  # the newest, in order, none lost
    last = entries[-1]
    assert last == {"time": 1796500099.0, "identifier": "web", "pid": 42,
                    "message": "line 99", "event": None, "priority": 3, "service": "web",
                    "stream": "stderr"}
    assert [e["message"] for e in outfiles.read(str(tmp_path), 3, ["web"], lines=2,
                                                priority=3)] == ["line 97", "line 99"]
    assert outfiles.read(str(tmp_path), 3, ["web"], since=1796500098.5) == [last]
    # a line the service wrote itself (no relay could run) is its own message
    assert outfiles.parse("raw text", "web")["message"] == "raw text"


def test_an_output_file_on_a_full_disk_keeps_whole_lines(tmp_path):
    small = tmp_path / "small"
    small.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16k", "tmpfs", str(small)], check=True)
    try:
        dir_fd = os.open(small, os.O_RDONLY | os.O_DIRECTORY)
        try:
            writer = outfiles.Writer(dir_fd, 1, "big")
            full = 0
            for i in range(100):
                try:
                    writer.write(1796500000.0, "stdout", 7, [f"{i} ".encode() + b"x" * 1000])
                except OSError:
                    full += 1
            kept = (small / "1.big.out").read_bytes().split(b"\n")
            assert kept[-1] == b"" and all(line.endswith(b"x" * 1000) for line in kept[:-1])
            # room again (say a rotation made some): the loss is said before the next line
            os.ftruncate(writer.fd, 0)
            writer.size = 0
            writer.write(1796500001.0, "stdout", 7, [b"after"])
            writer.close()
        finally:
            os.close(dir_fd)
        assert full > 0  # the disk did fill up
        lines = (small / "1.big.out").read_text().splitlines()
        assert lines[0].endswith(f"stderr 7 supervisor: {full} lines of output lost before "
                                 "this one (No space left on device)")
        assert lines[1].endswith("stdout 7 after") and len(lines) == 2
    finally:
        subprocess.run(["umount", str(small)], check=True)


def test_the_daemon_rotates_its_own_log_file(tmp_path):
    """Without journald the daemon's entries go to its stderr, <N>.log where init started
    it: rotated beyond journal.LOG_MAX (to .log.1), each line with its time."""
    script = """if True:
        import os, sys
        import supervisor.journal as j
        j.JOURNAL_SOCKET = "/nonexistent"
        j.LOG_MAX = 2000
        d = os.open(sys.argv[1], os.O_RDONLY | os.O_DIRECTORY)
        journal = j.Journal(5)
        journal.keep_log(d, "5.log")
        for i in range(100):
            journal.send(f"entry {i}", 6, SERVICE_NAME="web")
            journal.flush()
        """
    log = tmp_path / "5.log"
    with open(log, "ab") as err:
        done = subprocess.run([sys.executable, "-c", script, str(tmp_path)], stderr=err,
                              timeout=TIMEOUT, cwd=ROOT)
    assert done.returncode == 0
    old = tmp_path / "5.log.1"
    assert log.stat().st_size <= 2200 and old.stat().st_size <= 2200
    last = log.read_text().splitlines()[-1]
    assert last.endswith("supervisor[5] <6> entry 99  SERVICE_NAME=web")
    assert last.startswith("20") and last.split()[0].endswith("Z")
    entry = outfiles.parse_daemon(last)
    assert entry["service"] == "web" and entry["message"] == "entry 99"
    assert abs(entry["time"] - time.time()) < TIMEOUT


def _no_journald(s: Supervisor) -> None:
    """Start instance ``s`` where no journald answers: a private mount namespace with an
    empty /run/systemd/journal (journald runs for the tests, outside)."""
    started = subprocess.run(
        ["unshare", "-m", "sh", "-c", 'mount -t tmpfs none /run/systemd/journal && exec "$@"',
         "sh", sys.executable, "-m", "supervisor", "init", "-i", str(s.instance)],
        env=s.env, capture_output=True, text=True, timeout=TIMEOUT, cwd=ROOT)
    assert started.returncode == 0, started


def test_without_journald_follow_with_no_lines_shows_only_what_comes(rundir):
    """`logs -f -n 0`, as `journalctl -f -n 0`: nothing of what was there, then every new
    line (it showed every file from its start)."""
    s = Supervisor(rundir)
    _no_journald(s)
    try:
        s.json("create-service", "-n", "talk", "/bin/sh", "--", "-c",
               "i=0; while :; do i=$((i+1)); echo n $i; sleep 0.02; done")
        out = Path(rundir) / "0.talk.out"
        wait_until(lambda: out.exists() and " n 30\n" in out.read_text(), what="30 lines")
        before = int(out.read_text().splitlines()[-1].split()[-1])
        follower = subprocess.Popen([sys.executable, "-m", "supervisor", "logs", "-f", "-n",
                                     "0"], env=s.env, stdout=subprocess.PIPE, cwd=ROOT)
        try:
            got = bytearray()

            def seen() -> list[str]:
                if select.select([follower.stdout], [], [], 0.1)[0]:
                    got.extend(os.read(follower.stdout.fileno(), 65536))
                return got.decode().splitlines()

            wait_until(lambda: len(seen()) >= 5, what="five followed lines")
            numbers = [int(x.split()[-1]) for x in seen()[:5]]
            assert numbers[0] > before, seen()[:5]
            assert numbers == list(range(numbers[0], numbers[0] + 5))
        finally:
            follower.terminate()
            follower.wait(timeout=TIMEOUT)
            follower.stdout.close()
    finally:
        close_instance(s)


def test_without_journald_output_files_removed_are_written_again(rundir):
    """A service's output file removed (by hand, or with the whole runtime directory): the
    relay writes a new one there, and `logs` shows what comes; before, it wrote on into
    the removed file and nothing could be read."""
    s = Supervisor(rundir)
    _no_journald(s)
    try:
        s.json("create-service", "-n", "talk", "/bin/sh", "--", "-c",
               "i=0; while :; do i=$((i+1)); echo n $i; sleep 0.02; done")
        out = Path(rundir) / "0.talk.out"
        wait_until(lambda: out.exists() and " n 3\n" in out.read_text(), what="output")
        for remove in (["rm", "-f", str(out)], ["rm", "-rf", rundir]):
            # (an rm -rf fails where the daemon made a file in the directory meanwhile)
            wait_until(lambda r=remove: subprocess.run(r, timeout=TIMEOUT).returncode == 0,
                       what=f"{remove} to succeed")
            wait_until(lambda: out.exists() and out.read_text().count("\n") >= 3,
                       what=f"new lines in a new {out} after {remove}")
            numbers = [int(line.split()[-1]) for line in out.read_text().splitlines()]
            assert numbers[0] > 3 and numbers == list(range(numbers[0], numbers[-1] + 1))
        shown = s.ok("logs", "talk", "-n", "1").out
        assert " talk[" in shown and ": n " in shown
        end = time.monotonic() + 1
        while time.monotonic() < end:  # removed again and again: the relay cannot start
            subprocess.run(["rm", "-rf", rundir], check=False, timeout=TIMEOUT)
        wait_until(lambda: out.exists() and out.read_text().count("\n") >= 3,
                   what=f"new lines in {out} after a loop of rm -rf")
        assert s.status("talk")["status"] == "RUNNING"
        daemon_log = Path(rundir) / "0.log"
        wait_until(lambda: daemon_log.exists() and "made again" in daemon_log.read_text(),
                   what="the daemon's log file made again, saying so")
    finally:
        close_instance(s)


def test_without_journald_the_relay_writes_files_that_logs_reads(rundir):
    s = Supervisor(rundir)
    _no_journald(s)
    try:
        script = "echo hello $$; echo oops >&2; i=0; while :; do i=$((i+1)); echo n $i; " \
                 "sleep 0.02; done"
        svc = s.json("create-service", "-n", "talk", "/bin/sh", "--", "-c", script)
        out = Path(rundir) / "0.talk.out"
        wait_until(lambda: out.exists() and " n 3\n" in out.read_text(), what="output")
        lines = out.read_text().splitlines()
        assert lines[0].endswith(f" stdout {svc['pid']} hello {svc['pid']}")
        assert any(line.endswith(f" stderr {svc['pid']} oops") for line in lines)
        shown = s.ok("logs", "talk", "-n", "2").out.splitlines()
        assert len(shown) == 2 and all(f" talk[{svc['pid']}]: n " in x for x in shown)
        errors = s.ok("logs", "talk", "-p", "err").out.splitlines()
        assert len(errors) == 1 and errors[0].endswith(f"talk[{svc['pid']}]: oops")
        doc = json.loads(s.ok("logs", "talk", "-n", "1", "--json").out)  # one document
        assert (doc["instance"], doc["service"]) == (s.instance, "talk")
        [entry] = doc["entries"]
        assert entry["service"] == "talk" and entry["stream"] == "stdout"
        assert entry["pid"] == svc["pid"] and abs(entry["time"] - time.time()) < TIMEOUT
        assert s.ok("logs", "-n", "1").out.startswith("20")  # every service's: the same
        follower = subprocess.Popen([sys.executable, "-m", "supervisor", "logs", "talk", "-f",
                                     "-n", "1"], env=s.env, stdout=subprocess.PIPE, cwd=ROOT)
        try:
            got = bytearray()

            def seen() -> list[str]:  # unbuffered: a line read ahead is never left waiting
                if select.select([follower.stdout], [], [], 0.1)[0]:
                    got.extend(os.read(follower.stdout.fileno(), 65536))
                return got.decode().splitlines()

            wait_until(lambda: len(seen()) >= 20, what="twenty followed lines")
            numbers = [int(x.split()[-1]) for x in seen()[:20]]
            assert numbers == list(range(numbers[0], numbers[0] + len(numbers)))  # no gap
            s.ok("suspend-service", "talk")  # a lifecycle entry, from the daemon's log
            # (not always the last line: one the relay read just before is written after)
            wait_until(lambda: any(x.endswith("supervisor: talk suspended") for x in seen()),
                       what="the suspension, followed")
        finally:
            follower.terminate()
            follower.wait(timeout=TIMEOUT)
            follower.stdout.close()
        since = s.ok("logs", "--since", "10m").out.splitlines()  # every one, in time order
        assert any(x.endswith("supervisor: talk suspended") for x in since)
        # (a line read by the relay after the suspension is stamped after it: not last)
        assert [x.split()[0] for x in since] == sorted(x.split()[0] for x in since)
        assert any(f"talk[{svc['pid']}]: hello {svc['pid']}" in x for x in since)
        # a carriage return (a progress bar) is inside its line, not an end of one
        s.ok("create-service", "-n", "bar", "/bin/sh", "--", "-c",
             r"printf '10%%\r100%%\n' >&2; exec sleep 600")
        wait_until(lambda: (Path(rundir) / "0.bar.out").exists()
                   and (Path(rundir) / "0.bar.out").read_text(), what="the bar")
        [bar] = json.loads(s.ok("logs", "bar", "--json", "-p", "err").out)["entries"]
        assert bar["message"] == "10%\r100%" and bar["stream"] == "stderr"
        # a service whose output goes elsewhere still has its lifecycle entries; a follow
        # of a service still to come shows it when it comes
        later = subprocess.Popen([sys.executable, "-m", "supervisor", "logs", "later", "-f"],
                                 env=s.env, stdout=subprocess.PIPE, cwd=ROOT)
        try:
            quiet = s.json("create-service", "-n", "quiet", "-o", "null", "/bin/sleep", "600")
            assert f"supervisor: quiet started with pid {quiet['pid']}" in s.ok(
                "logs", "quiet").out
            silent = s.json("create-service", "-n", "silent", "/bin/sleep", "600")  # pipes,
            # to the relay before the later one's, but never a line
            s.ok("create-service", "-n", "later", "/bin/sh", "--", "-c", "echo here; sleep 600")
            came = bytearray()

            def later_lines() -> str:
                if select.select([later.stdout], [], [], 0.1)[0]:
                    came.extend(os.read(later.stdout.fileno(), 65536))
                return came.decode()

            wait_until(lambda: "]: here\n" in later_lines() and "later started" in
                       later_lines(), what="the later service, followed")
        finally:
            later.terminate()
            later.wait(timeout=TIMEOUT)
            later.stdout.close()
        # a service that never printed has no file; its lifecycle is there all the same
        assert not (Path(rundir) / "0.silent.out").exists()
        assert f"supervisor: silent started with pid {silent['pid']}" in s.ok(
            "logs", "silent").out
        every = s.ok("logs", "talk", "-n", "100000").out.splitlines()
        assert f"supervisor: talk started with pid {svc['pid']}" in every[0]  # lifecycle too
        s.ok("remove-service", "talk")
        after = s.ok("logs", "talk", "-n", "1000").out.splitlines()  # it outlives the service
        assert "supervisor: talk removed" in after[-1]
        assert any(f"talk[{svc['pid']}]: n " in line for line in after)
        events = json.loads(s.ok("logs", "talk", "-n", "1000", "--json", "-p",
                                 "info").out)["entries"]
        assert next(e["event"] for e in events if e["identifier"] == "supervisor") == "started"
    finally:
        close_instance(s)


def test_logs_shows_output_and_lifecycle(sup):
    name = f"talker-{uuid.uuid4().hex[:8]}"
    mark = journal_mark()
    svc = sup.json("create-service", "-n", name, "/bin/sh", "--", "-c",
                   "echo ready $$; sleep 60")
    wait_for_entry(None, TIMEOUT, since=mark, SERVICE_NAME=name, MESSAGE=f"ready {svc['pid']}")
    sup.ok("suspend-service", name)
    wait_for_entry(None, TIMEOUT, since=mark, SERVICE_NAME=name, SUPERVISOR_EVENT="stopped")
    lines = sup.ok("logs", name, "-n", "50").out.splitlines()
    assert any(f"supervisor[{sup.pid}]: {name} started with pid {svc['pid']}" in line
               for line in lines)
    assert any(line.endswith(f"{name}[{svc['pid']}]: ready {svc['pid']}") for line in lines)
    assert lines[-1].endswith(f"{name} suspended")
    assert not any("suspend-service" in line for line in lines)  # commands are left out
    entries = json.loads(sup.ok("logs", str(svc["pid"]), "--json", "-n", "2").out)["entries"]
    assert [e["message"] for e in entries] == [f"ready {svc['pid']}", f"{name} suspended"]
    assert entries[-1]["event"] == "stopped" and entries[0]["identifier"] == name
    unknown = sup.run("logs", "never-was-here")
    assert unknown.rc == 1 and "no journal entries" in unknown.err


def test_logs_follow(sup):
    name = f"talker-{uuid.uuid4().hex[:8]}"
    sup.create("/bin/sh", ["-c", "i=0; while :; do i=$((i+1)); echo line $i; sleep 0.05; done"],
               name=name)
    follower = subprocess.Popen([sys.executable, "-m", "supervisor", "logs", name, "-f", "-n",
                                 "1"], env=sup.env, stdout=subprocess.PIPE, text=True, cwd=ROOT)
    try:
        seen = []
        with selectors.DefaultSelector() as sel:
            sel.register(follower.stdout, selectors.EVENT_READ)
            wait_until(lambda: (sel.select(0.1) and seen.append(follower.stdout.readline()))
                       or len([s for s in seen if "line" in s]) >= 5,
                       what="five followed lines")
        numbers = [int(s.split()[-1]) for s in seen if ": line " in s]
        assert numbers == sorted(numbers) and len(set(numbers)) == len(numbers)
    finally:
        follower.terminate()
        follower.wait(timeout=TIMEOUT)
        follower.stdout.close()


def test_logs_follow_json_is_one_entry_a_line_as_they_come(sup):
    """``logs --json`` is one document; followed, a stream cannot wait for its end: one
    entry a line (each a JSON document), as they come."""
    name = f"talker-{uuid.uuid4().hex[:8]}"
    sup.create("/bin/sh", ["-c", "i=0; while :; do i=$((i+1)); echo line $i; sleep 0.05; done"],
               name=name)
    follower = subprocess.Popen([sys.executable, "-m", "supervisor", "logs", name, "-f", "-n",
                                 "1", "--json"], env=sup.env, stdout=subprocess.PIPE,
                                text=True, cwd=ROOT)
    try:
        seen = []
        with selectors.DefaultSelector() as sel:
            sel.register(follower.stdout, selectors.EVENT_READ)
            wait_until(lambda: (sel.select(0.1) and seen.append(follower.stdout.readline()))
                       or len(seen) >= 5, what="five followed lines")
        entries = [json.loads(line) for line in seen]
        numbers = [int(e["message"].split()[-1]) for e in entries if e["service"] == name
                   and e["message"].startswith("line ")]
        assert len(numbers) >= 4 and numbers == sorted(set(numbers))
    finally:
        follower.terminate()
        follower.wait(timeout=TIMEOUT)
        follower.stdout.close()
    doc = json.loads(sup.ok("logs", name, "-n", "3", "--json").out)
    assert (doc["instance"], doc["service"], len(doc["entries"])) == (sup.instance, name, 3)


@pytest.mark.slow
def test_daemon_cpu_does_not_grow_with_output(sup):
    """5 MB of output through the journal: the relay carries it, the daemon does not."""
    mark = journal_mark()
    daemon = sup.pid
    with sup.client() as c:
        c.create_service("/bin/sh", ["-c", "sleep 60"], name="warm-up")  # starts the relay
        relay = _relay_pid(daemon)
        daemon_before, relay_before = _cpu_seconds(daemon), _cpu_seconds(relay)
        # 5,000,000 bytes folded at 99: 50,505 full lines, then "xxxxx"
        svc = c.create_service("/bin/sh", ["-c", "head -c 5000000 /dev/zero | tr '\\0' x | "
                                                 "fold -w 99; echo"], name="loud")
    wait_for_entry(None, TIMEOUT * 3, since=mark, SERVICE_NAME="loud", MESSAGE="xxxxx")
    daemon_cpu = _cpu_seconds(daemon) - daemon_before
    relay_cpu = _cpu_seconds(relay) - relay_before
    print(f"\n5 MB of output (pid {svc['pid']}): daemon CPU {daemon_cpu:.2f} s, relay CPU "
          f"{relay_cpu:.2f} s")
    assert daemon_cpu < 0.05 < relay_cpu


def test_the_log_relay_is_no_single_point_of_failure(sup):
    """kill -9 of the log relay, three times: services writing all the while never get
    SIGPIPE (the daemon holds a reader of every pipe), a new relay is started and handed
    every pipe (after 1 s, 2 s... while it keeps dying at once), and the output after the
    last kill still reaches the journal. The relay cannot be opened as a service."""
    daemon = sup.pid
    names = [f"chatty-{uuid.uuid4().hex[:6]}" for _ in range(3)]
    svcs = [sup.create("/bin/sh", ["-c", "while :; do echo tick $$; sleep 0.01; done"],
                       name=n) for n in names]
    relay = wait_until(lambda: _relay_pid(daemon), what="the relay")
    for _ in range(3):
        os.kill(relay, 9)
        relay = wait_until(lambda old=relay: (r := _relay_pid_or_none(daemon)) != old and r,
                           what="a new relay")
    mark = journal_mark()
    for name in names:
        wait_for_entry(None, TIMEOUT, since=mark, SYSLOG_IDENTIFIER=name)
    deaths = 0
    for svc in svcs:
        now = sup.status(svc["name"])
        deaths += now["status"] != "RUNNING" or now["pid"] != svc["pid"]
    print(f"\n3 kill -9 of the log relay: {deaths} service deaths")
    assert deaths == 0
    refused = sup.run("open-service", str(relay))
    assert refused.rc == 1 and "log relay" in refused.err, refused


def _relay_pid_or_none(daemon: int) -> int | None:
    try:
        return _relay_pid(daemon)
    except (AssertionError, FileNotFoundError):
        return None


def test_a_stopped_relay_never_holds_the_daemon_up(sup):
    """kill -STOP of the relay: it takes no more pipes. The daemon does not wait for it
    (its socket is non-blocking, pipes wait in a queue): every create is answered at
    once; a relay that takes no pipe for Outputs.STUCK seconds is killed, and the next
    one is handed every pipe."""
    daemon = sup.pid
    sup.create("/bin/sleep", ["600"], name="first")
    stopped = wait_until(lambda: _relay_pid_or_none(daemon), what="the relay")
    os.kill(stopped, 19)  # SIGSTOP
    with sup.client() as c:
        answers = c.pipeline([("create-service", {"path": "/bin/sleep", "args": ["600"],
                                                  "name": f"s{i}"}) for i in range(300)])
    assert all(isinstance(a, dict) for a in answers)
    start = time.monotonic()
    with sup.client() as c:
        answers = c.pipeline([("create-service", {"path": "/bin/sleep", "args": ["600"],
                                                  "name": f"t{i}"}) for i in range(300)])
    assert all(isinstance(a, dict) for a in answers) and time.monotonic() - start < TIMEOUT
    relay = wait_until(lambda: (r := _relay_pid_or_none(daemon)) not in (None, stopped) and r,
                       timeout=TIMEOUT + output.Outputs.STUCK, what="a new relay")
    assert relay != stopped
    mark = journal_mark()
    name = f"late-{uuid.uuid4().hex[:6]}"
    sup.create("/bin/sh", ["-c", "echo still relayed; sleep 60"], name=name)
    wait_for_entry(None, TIMEOUT, since=mark, SYSLOG_IDENTIFIER=name, MESSAGE="still relayed")


def test_a_stopped_relay_is_killed_at_once_and_output_flows_again(sup):
    """A stopped relay reads no pipe: services printing would block in write(). The
    daemon sees the stop (SIGCHLD, WSTOPPED), kills it, and the next relay takes over."""
    daemon = sup.pid
    name = f"chatty-{uuid.uuid4().hex[:6]}"
    sup.create("/bin/sh", ["-c", "i=0; while :; do i=$((i+1)); echo chat $i; done"],
               name=name)
    stopped = wait_until(lambda: _relay_pid_or_none(daemon), what="the relay")
    mark = journal_mark()
    os.kill(stopped, signal.SIGSTOP)
    entry = wait_for_entry(None, TIMEOUT, since=mark, SYSLOG_IDENTIFIER="supervisor",
                           SUPERVISOR_EVENT="log-relay", PRIORITY="3")
    assert f"log relay (pid {stopped}) was stopped: killed" in entry["MESSAGE"]
    wait_until(lambda: (r := _relay_pid_or_none(daemon)) not in (None, stopped) and r,
               what="a new relay")
    later = journal_mark()
    wait_for_entry(None, TIMEOUT, since=later, SYSLOG_IDENTIFIER=name)  # it flows again


def _kill_the_relay_twice(sup, daemon: int) -> tuple[int, int]:
    """A chatty service, and its relay killed twice in a row: the next relay waits out
    its back-off (the second died within a second of its start). Their pids."""
    sup.create("/bin/sh", ["-c", "while :; do echo x; sleep 0.01; done"], name="chatty")
    relay = wait_until(lambda: _relay_pid_or_none(daemon), what="the relay")
    os.kill(relay, 9)
    second = wait_until(lambda: (r := _relay_pid_or_none(daemon)) not in (None, relay) and r,
                        what="a new relay")
    os.kill(second, 9)
    return relay, second


def test_a_relay_restart_waiting_out_its_back_off_survives_a_reload(sup):
    daemon = sup.pid
    relay, second = _kill_the_relay_twice(sup, daemon)
    sup.ok("reload", "-i", "0")
    wait_until(lambda: _relay_pid_or_none(daemon) not in (None, relay, second),
               what="a relay after the reload")
    assert sup.status("chatty")["status"] == "RUNNING"


def test_output_of_a_service_that_ends_while_no_relay_runs_waits_for_the_next(sup):
    """The relay dies twice in a row: the next starts only after its back-off (2 s). A
    service that prints and ends meanwhile loses nothing: its pipes wait for that relay
    (they were closed at its end, and what it printed with them)."""
    daemon = sup.pid
    mark = journal_mark()
    _relay, second = _kill_the_relay_twice(sup, daemon)
    name = f"brief-{uuid.uuid4().hex[:6]}"
    sup.create("/usr/bin/seq", ["1", "100"], name=name)
    assert _relay_pid_or_none(daemon) in (None, second)  # (it ended while none ran)
    sup.wait_status(name, "EXITED")
    entries = read_entries(count=100, since=mark, SYSLOG_IDENTIFIER=name)
    assert [e["MESSAGE"] for e in entries] == [str(i) for i in range(1, 101)]


def test_a_pid_given_out_again_never_takes_an_ended_services_kept_pipes(sup):
    """An ended service's unread pipes are kept under its pid; a new service that gets
    that pid must not take them over (its own pipes were then taken for ended ones,
    closed once drained, and it died of SIGPIPE at the next relay's death)."""
    daemon = sup.pid
    _kill_the_relay_twice(sup, daemon)  # no relay for 2 s: what ends now stays unread
    first = sup.create("/bin/sh", ["-c", "echo from-the-first"], name="first")
    sup.wait_status("first", "EXITED")
    for _ in range(50):  # a new service on that pid
        with open("/proc/sys/kernel/ns_last_pid", "w") as f:
            f.write(str(first["pid"] - 1))
        with sup.client() as c:
            loop = c.create_service("/bin/sh", ["-c", "while :; do echo tick; sleep 0.01; "
                                    "done"], name="loop")
        if loop["pid"] == first["pid"]:
            break
        sup.ok("remove-service", "loop")
    else:
        pytest.fail(f"no new service got pid {first['pid']}")
    relay = wait_until(lambda: _relay_pid_or_none(daemon), timeout=TIMEOUT + 60,
                       what="the relay back")
    back = time.monotonic()  # the daemon's look at kept pipes: past it
    wait_until(lambda: time.monotonic() > back + 1.5 * output.Outputs.DRAINED,
               what="a look at the kept pipes")
    mark = journal_mark()
    os.kill(relay, 9)  # the next one must be handed the loop's pipes: the daemon kept them
    wait_for_entry(None, TIMEOUT + 60, since=mark, SYSLOG_IDENTIFIER="loop",
                   MESSAGE="tick")
    assert sup.status("loop")["status"] == "RUNNING", sup.status("loop")


def test_logs_shows_control_characters_escaped_never_raw(sup, rundir):
    """A service's escape sequences (clear the screen, move the cursor) or bare carriage
    returns reach no terminal through `logs`: shown as \\xNN, as journalctl hides them;
    --json carries them as they were. With journald and without."""
    script = r"printf '\033[2Jcleared\rover\n'; exec sleep 600"
    sup.ok("create-service", "-n", "esc", "/bin/sh", "--", "-c", script)
    wait_until(lambda: "cleared" in sup.run("logs", "esc").out, what="the line, logged")
    shown = [x for x in sup.ok("logs", "esc").out.splitlines() if "cleared" in x]
    assert shown[0].endswith(r": \x1b[2Jcleared\x0dover") and "\x1b" not in shown[0]
    entry = next(e for e in json.loads(sup.ok("logs", "esc", "--json").out)["entries"]
                 if "cleared" in e["message"])
    assert entry["message"] == "\x1b[2Jcleared\rover"
    s = Supervisor(rundir, 1)  # the same without journald: from its output file
    _no_journald(s)
    try:
        s.ok("create-service", "-i", "1", "-n", "esc", "/bin/sh", "--", "-c", script)
        wait_until(lambda: "cleared" in s.run("logs", "-i", "1", "esc").out,
                   what="the line, in the file")
        shown = [x for x in s.ok("logs", "-i", "1", "esc").out.splitlines() if "cleared" in x]
        assert shown[0].endswith(r": \x1b[2Jcleared\x0dover") and "\x1b" not in shown[0]
    finally:
        close_instance(s)


def test_every_entry_since_a_time_is_read_as_it_goes_merged_by_time(tmp_path):
    """`logs --since` without journald, over many services' files (8 MiB each, rotated):
    their entries and the lifecycle ones, merged by time as they are read, never all held
    (61 MB of files took 667 MB before)."""
    import tracemalloc

    t0 = 1_800_000_000.0
    for k, service in enumerate(("a", "b")):
        for suffix, start in ((".1", 0), ("", 10_000)):  # the rotated one is older
            with open(tmp_path / f"0.{service}.out{suffix}", "w") as f:
                for i in range(start, start + 10_000):
                    when = t0 + i * 0.01 + k * 0.005
                    f.write(f"{outfiles.stamp(when)} stdout {100 + k} {service} {i}\n")
    with open(tmp_path / "0.log", "w") as f:
        f.write(f"{outfiles.stamp(t0 + 150.0)[:-4]}Z supervisor[0] <6> a suspended  "
                "SUPERVISOR_EVENT=stopped SERVICE_NAME=a SERVICE_PID=100\n")
    tracemalloc.start()
    try:
        count, last, lifecycle, peak = 0, 0.0, [], 0
        for entry in outfiles.stream(str(tmp_path), 0, ["a", "b"], None, since=t0 + 100.0):
            assert entry["time"] >= last  # one stream of time
            last = entry["time"]
            count += 1
            if entry["identifier"] == "supervisor":
                lifecycle.append(entry["message"])
            peak = max(peak, tracemalloc.get_traced_memory()[1])
    finally:
        tracemalloc.stop()
    assert count == 2 * 10_000 + 1  # the second half of each: since t0 + 100 s
    assert lifecycle == ["a suspended"]
    assert peak < 2_000_000, f"{peak:,} bytes at the peak"


def test_lines_journald_did_not_take_are_counted_and_said(monkeypatch, capsys):
    """journald went away under the relay (and came back): the lines meanwhile are lost,
    which the relay says at once on the daemon's log, and in the journal when it answers
    again, as journald says what it suppressed."""
    from supervisor import logrelay

    sent, refusing = [], [3]

    def sendv(*fields):
        if refusing[0]:
            refusing[0] -= 1
            raise ConnectionRefusedError(111, "Connection refused")
        sent.append(fields)

    monkeypatch.setattr(logrelay, "sendv", sendv)
    ours, theirs = socket.socketpair()
    try:
        relay = logrelay.Relay(ours, 4)
        stream = logrelay.Stream(-1, "web", 77, 4, "stdout")
        for i in range(5):
            relay._line(stream, f"line {i}".encode())
        relay.sel.close()
    finally:
        ours.close()
        theirs.close()
    assert [f[0] for f in sent] == [
        "MESSAGE=supervisor: 3 lines of output lost while journald did not answer",
        "MESSAGE=line 3", "MESSAGE=line 4"]
    assert "PRIORITY=3" in sent[0] and "SERVICE_NAME=web" in sent[0]
    said = capsys.readouterr().err.splitlines()
    assert len(said) == 2 and all(" supervisor[4] <3> log relay: " in x for x in said)
    assert "journald does not answer (Connection refused)" in said[0]
    assert said[1].endswith("journald answers again; 3 lines of output were lost")


def test_follow_behind_two_rotations_still_shows_the_file_between(tmp_path):
    """`logs -f` woken after its file was rotated twice: the file it follows (held open,
    read to its end), the one between (now .out.1) and the new one are shown, whole, in
    order (the new one could have the number of the first, which is gone: it was taken
    for the same file, its start skipped)."""
    path = tmp_path / "0.web.out"
    at: dict = {}
    held: dict = {}
    path.write_bytes(b"a1\n")
    assert outfiles._more(str(path), "web", at, held) == b"a1\n"
    with open(path, "ab") as f:
        f.write(b"a2\n")  # not read yet: its file is removed, but still held
    path.rename(str(path) + ".1")
    path.write_bytes(b"b1\nb2\n")
    path.rename(str(path) + ".1")  # the first one dropped, as the relay's rotation does
    path.write_bytes(b"c1\n")
    assert outfiles._more(str(path), "web", at, held) == b"a2\nb1\nb2\nc1\n"
    with open(path, "ab") as f:
        f.write(b"c2\n")
    assert outfiles._more(str(path), "web", at, held) == b"c2\n"
    for f in held.values():
        f.close()
