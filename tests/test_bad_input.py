"""Every bad input of the spec: one clear line, the right exit code, the daemon keeps
running, and no service is lost or left half-made."""

from __future__ import annotations

import json
import os
import socket
import stat
import subprocess
import sys

import pytest
from conftest import Result, assert_one_line_error
from timeouts import TIMEOUT

from supervisor import protocol


@pytest.fixture
def populated(sup):
    """An instance with one service of each kind of status, to check nothing is lost."""
    sup.create("/bin/sleep", ["60"], name="running")
    sup.create("/bin/sleep", ["60"], name="later", delay=60)
    sup.create("/bin/sh", ["-c", "exit 0"], name="done")
    sup.wait_status("done", "EXITED")
    return sup


def _snapshot(sup):
    return [(s["name"], s["status"], s["pid"]) for s in sup.json("list-supervisor")["services"]]


@pytest.mark.parametrize(("args", "needle"), [
    (["list-supervisor", "-i", "100"], "0 to 99"),
    (["list-supervisor", "-i", "-1"], "0 to 99"),
    (["list-supervisor", "-i", "abc"], "0 to 99"),
    (["init", "--instance", "1000"], "0 to 99"),
    (["create-service", "-r", "-1", "/bin/true"], "restart"),
    (["create-service", "-r", "two", "/bin/true"], "restart"),
    (["create-service", "-r", "9" * 30, "/bin/true"], "restart times must be from 0 to"),
    (["create-service", "-d", "soon", "/bin/true"], "delay"),
    (["create-service", "-d", "nan", "/bin/true"], "delay"),
    (["create-service", "-d", "-3", "/bin/true"], "delay"),
    # wrong values the daemon finds are usage errors too (docs/reference.md, "Exit codes")
    (["create-service", "-d", "1e300", "/bin/true"], "delay"),
    (["create-service", "-n", "12345", "/bin/true"], "digits"),
    (["create-service", "-n", "has space", "/bin/true"], "name"),
    (["create-service", "--name=-x", "/bin/true"], "starts with '-'"),
    (["list-supervisor", "-i", "\u0661"], "0 to 99"),  # an Arabic-Indic one is no instance
    (["create-service", "--start-limit", "9" * 5000 + "/10s", "/bin/true"], "start limit"),
    (["create-service", "--restart-delay", "1e300", "/bin/true"], "--restart-delay must be"),
    (["open-service", "12ab"], "<pid>"),
    (["open-service", "0"], "<pid>"),
    (["no-such-command"], "usage"),
    (["create-service"], "create-service"),
    (["suspend-service"], "suspend-service"),
    ([], "usage"),
])
def test_usage_errors_exit_2(populated, args, needle):
    before = _snapshot(populated)
    assert_one_line_error(populated.run(*args), 2, needle)
    assert _snapshot(populated) == before


@pytest.mark.parametrize(("args", "needle"), [
    (["service-status", "ghost"], "no service 'ghost'"),
    (["service-status", "999999"], "no service '999999'"),
    (["suspend-service", "ghost"], "ghost"),
    (["resume-service", "running"], "RUNNING"),
    (["suspend-service", "later"], "PENDING"),
    (["close-service", "done"], "EXITED"),
    (["supervisor-cancel", "running"], "PENDING"),
    (["supervisor-freelist", "running", "ghost"], "ghost"),
    (["open-service", "4194303"], "no process"),
    (["create-service", "/nonexistent/program"], "no such file"),
    (["create-service", "/tmp"], "not a regular file"),
    (["create-service", "-n", "running", "/bin/true"], "exists"),
])
def test_refusals_exit_1_and_lose_nothing(populated, args, needle):
    before = _snapshot(populated)
    assert_one_line_error(populated.run(*args), 1, needle)
    assert _snapshot(populated) == before


def test_files_that_cannot_be_executed(populated, tmp_path):
    text = tmp_path / "notes.txt"
    text.write_text("hello\n")
    text.chmod(0o644)
    garbage = tmp_path / "garbage"
    garbage.write_bytes(b"\x00\x01\x02 not a program")
    garbage.chmod(0o755)
    before = _snapshot(populated)
    assert_one_line_error(populated.run("create-service", str(text)), 1, "not executable")
    assert_one_line_error(populated.run("create-service", str(garbage)), 1, "Exec format error")
    assert_one_line_error(populated.run("create-service", "-c", str(garbage)), 1,
                          "Exec format error")
    assert _snapshot(populated) == before


def test_unknown_instance_exits_3(rundir):
    from conftest import Supervisor

    s = Supervisor(rundir, 9)
    for args in (["list-supervisor", "-i", "9"], ["close", "-i", "9"],
                 ["service-status", "x", "-i", "9"], ["create-service", "-i", "9", "/bin/true"]):
        assert_one_line_error(s.run(*args), 3, "instance 9 is not running")


def test_stale_socket_file_means_not_running(rundir):
    from conftest import Supervisor

    stale = socket.socket(socket.AF_UNIX)
    stale.bind(os.path.join(rundir, "4.sock"))
    stale.close()  # the path stays, nobody listens
    s = Supervisor(rundir, 4)
    assert_one_line_error(s.run("list-supervisor", "-i", "4"), 3, "not running")
    assert s.json("list-supervisors") == {"supervisors": []}
    s.ok("init", "-i", "4")  # takes over the stale path
    assert stat.S_ISSOCK(os.stat(os.path.join(rundir, "4.sock")).st_mode)
    s.ok("close", "-i", "4")


def _raw(sup, payload: bytes) -> list[dict]:
    """Send raw bytes and read every answer until the daemon closes or goes quiet."""
    with socket.socket(socket.AF_UNIX) as sock:
        sock.settimeout(TIMEOUT)
        sock.connect(os.path.join(sup.rundir, "0.sock"))
        try:
            sock.sendall(payload)
            sock.shutdown(socket.SHUT_WR)
        except BrokenPipeError:
            pass  # the daemon hung up on us mid-request: its answer is still readable
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    return [json.loads(line) for line in data.splitlines()]


@pytest.mark.parametrize(("payload", "code"), [
    (b"this is not json\n", "bad-request"),
    (b"[1, 2, 3]\n", "bad-request"),
    (b'{"v": 1, "id": 1}\n', "bad-request"),
    (b'{"v": 99, "id": 1, "cmd": "ping"}\n', "bad-version"),
    (b'{"v": 1, "id": 1, "cmd": "rm -rf"}\n', "unknown-command"),
    (b'{"v": 1, "id": 1, "cmd": "service-status", "args": []}\n', "bad-request"),
    (b'{"v": 1, "id": 1, "cmd": "service-status", "args": {}}\n', "invalid-argument"),
    (b'{"v": 1, "id": 1, "cmd": "service-status", "args": {"service": [1]}}\n',
     "invalid-argument"),
    (b'{"v": 1, "id": 1, "cmd": "create-service", "args": {}}\n', "invalid-argument"),
    (b'{"v": 1, "id": 1, "cmd": "create-service", "args": {"path": "/bin/true", '
     b'"restart_times": "many"}}\n', "invalid-argument"),
    (b'{"v": 1, "id": 1, "cmd": "create-service", "args": {"path": "/bin/true", '
     b'"delay": true}}\n', "invalid-argument"),
    (b'{"v": 1, "id": 1, "cmd": "create-service", "args": {"path": "/bin/true", '
     b'"autostart": false, "every": 60}}\n', "invalid-argument"),
    (b'{"v": 1, "id": 1, "cmd": "open-service", "args": {"pid": "1"}}\n',
     "invalid-argument"),
    (b'{"v": 1, "id": 1, "cmd": "supervisor-freelist", "args": {"services": []}}\n',
     "invalid-argument"),
    (b"\xff\xfe\n", "bad-request"),
    (b'{"v": 1, "id": 1, "cmd": "create-service", "args": {"path": "/bin/true", '
     b'"env": {"A=B": "c"}}}\n', "invalid-argument"),  # no variable is named A=B
    (b'{"v": 1, "id": NaN, "cmd": "ping"}\n', "bad-request"),  # an id no JSON could echo
    (b'{"v": 1, "id": 1e999, "cmd": "ping"}\n', "bad-request"),
])
def test_malformed_requests_get_an_error_answer(populated, payload, code):
    before = _snapshot(populated)
    [answer] = _raw(populated, payload)
    assert answer["ok"] is False and answer["error"]["code"] == code
    assert answer["error"]["code"] in protocol.ERRORS
    assert answer["error"]["message"]
    assert _snapshot(populated) == before


@pytest.mark.parametrize(("size", "ok"), [(protocol.MAX_REQUEST, True),
                                          (protocol.MAX_REQUEST + 1, False)])
def test_a_request_may_take_1_mib_with_its_newline_not_a_byte_more(populated, size, ok):
    """One over is refused and the connection closed, whether its newline came with the
    rest or after it (before, a whole line over 1 MiB got its error and the connection
    went on: the request after it, here a ping, was answered too)."""
    head, tail = b'{"v":1,"id":1,"cmd":"ping","args":{"pad":"', b'"}}\n'
    line = head + b"x" * (size - len(head) - len(tail)) + tail
    answers = _raw(populated, line + protocol.encode_request(2, "ping", {}))
    if ok:
        assert [a["ok"] for a in answers] == [True, True]
    else:
        assert [a["error"]["code"] for a in answers] == ["request-too-large"]


def test_oversized_request_is_refused_and_connection_closed(populated):
    before = _snapshot(populated)
    answers = _raw(populated, b'{"v": 1, "id": 1, "cmd": "ping", "pad": "' + b"x" * (2 << 20))
    assert [a["error"]["code"] for a in answers] == ["request-too-large"]
    assert _snapshot(populated) == before


def test_pipelined_requests_are_answered_in_order(populated):
    lines = b"".join(protocol.encode_request(i, "service-status", {"service": name})
                     for i, name in enumerate(["running", "ghost", "later", "done"]))
    answers = _raw(populated, lines + b"garbage\n")
    assert [a["id"] for a in answers] == [0, 1, 2, 3, None]
    assert [a["ok"] for a in answers] == [True, False, True, True, False]
    assert answers[2]["result"]["status"] == "PENDING"


def test_half_a_request_holds_nobody_up(populated):
    with socket.socket(socket.AF_UNIX) as stalled:
        stalled.connect(os.path.join(populated.rundir, "0.sock"))
        stalled.sendall(b'{"v": 1, "id": 1, "cmd": "pi')  # ... and never the rest
        assert populated.json("service-status", "running")["status"] == "RUNNING"
        with populated.client() as c:
            assert c.ping()["pid"] == populated.pid


def test_create_from_a_deleted_directory_is_one_line(populated, tmp_path):
    gone = tmp_path / "gone"
    gone.mkdir()
    cli = [sys.executable, "-m", "supervisor", "create-service", "/bin/true"]
    code = f"import os, subprocess, sys; os.chdir({str(gone)!r}); os.rmdir({str(gone)!r}); " \
           f"sys.exit(subprocess.run({cli!r}).returncode)"
    result = subprocess.run([sys.executable, "-c", code], env=populated.env,
                            capture_output=True, text=True, timeout=TIMEOUT)
    assert_one_line_error(Result(result), 2, "current directory no longer exists")


def test_an_argument_that_is_not_utf8_reaches_the_program_as_typed(populated):
    # the bytes go across the wire (surrogate-escaped, \u-escaped in JSON) and back
    raw = b"caf\xe9-\xff"
    result = subprocess.run([sys.executable.encode(), b"-m", b"supervisor", b"create-service",
                             b"-n", b"bytes", b"-o", b"null", b"/bin/sh", b"--", b"-c",
                             b"sleep 600", b"sh", raw],
                            env=populated.env, capture_output=True, timeout=TIMEOUT)
    assert result.returncode == 0 and result.stderr == b"", result
    pid = int(result.stdout.split()[-1])
    with open(f"/proc/{pid}/cmdline", "rb") as f:
        assert f.read().split(b"\0")[4] == raw
    listing = subprocess.run([sys.executable, "-m", "supervisor", "list-supervisor"],
                             env=populated.env, capture_output=True, timeout=TIMEOUT)
    assert listing.returncode == 0 and listing.stderr == b"" and raw in listing.stdout
    as_json = populated.json("list-supervisor")
    [svc] = [s for s in as_json["services"] if s["name"] == "bytes"]
    assert os.fsencode(svc["command"][4]) == raw


def test_an_output_fifo_without_a_reader_is_refused_at_once(populated, tmp_path):
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    result = populated.run("create-service", "-o", str(fifo), "/bin/true")
    assert_one_line_error(result, 1, "cannot write output file", "No such device")
    assert populated.json("list-supervisor")["instance"] == 0  # it answers; nothing blocked


def test_a_lone_surrogate_is_no_argument_and_leaves_nothing(populated):
    # U+D800 stands for no byte (unlike U+DC80-U+DCFF, the escapes of bytes that are not
    # UTF-8): refused as an argument, and no service half-made
    before = _snapshot(populated)
    with socket.socket(socket.AF_UNIX) as sock:
        sock.settimeout(TIMEOUT)
        sock.connect(os.path.join(populated.rundir, "0.sock"))
        for args in ({"path": "/bin/sleep", "args": ["1", "\ud800"]},
                     {"path": "/bin/\ud800", "args": []}):
            sock.sendall(protocol.encode_request(1, "create-service",
                                                 {**args, "name": "sur", "output": "null"}))
            answer = json.loads(sock.makefile("rb").readline())
            assert answer["error"]["code"] == "invalid-argument", answer
    assert _snapshot(populated) == before


def test_an_opened_process_whose_name_is_not_utf8(populated, tmp_path):
    # its comm (and default name) comes from a file name that is not UTF-8
    link = os.fsencode(str(tmp_path)) + b"/odd\xff\xfe"
    os.symlink("/bin/sleep", link)
    proc = subprocess.Popen([link, "600"])
    try:
        svc = populated.json("open-service", str(proc.pid))
        assert svc["status"] == "RUNNING" and svc["name"].startswith("odd")
    finally:
        proc.kill()
        proc.wait()


def test_logs_of_a_name_that_is_not_utf8_is_one_line(populated):
    result = subprocess.run([sys.executable.encode(), b"-m", b"supervisor", b"logs", b"\xff"],
                            env=populated.env, capture_output=True, timeout=TIMEOUT)
    assert result.returncode in (1, 2) and b"Traceback" not in result.stderr
    assert len(result.stderr.splitlines()) == 1 and result.stderr.startswith(b"supervisor: ")


def test_an_error_about_a_huge_word_is_a_line_of_bounded_length(sup):
    """A 100,000-character name: the error says what was wrong in ~2,000 characters (the
    name's head and tail), on stderr and in the journal, not a 100 KB line each time."""
    result = sup.run("service-status", "x" * 100_000)
    assert_one_line_error(result, 1, "no service 'xxx", "characters left out",
                          "' in instance 0")
    assert len(result.err) < 2200
