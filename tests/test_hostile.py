"""Hostile clients against a real daemon (issue 4, "Survive everything").

(a) random request objects (hypothesis) to one live daemon: every answer is a well-formed
    response with a known error code, no refused request leaves a service behind, the
    daemon stays alive and serves afterwards;
(b) 1,000 client connections held open at once;
(c) 200 connections that each send half a request and stall;
(d) a client that pipelines 10,000 requests and reads no answer (backpressure), and one
    that starts reading them late.

test_bad_input.py already covers the single malformed or oversized request, one stalled
half request and ordinary pipelining; this file is about volume and randomness, plus a few
exact cases the random search turned up (see the tests after the hypothesis test).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import resource
import select
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time

import pytest
from conftest import Supervisor, alive, fd_count, rss_kib, wait_until
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from timeouts import TIMEOUT

from supervisor import protocol

with open("/proc/sys/kernel/pid_max") as _f:
    PID_MAX = int(_f.read())
# `shutdown` ends the daemon and `reload` re-executes it: both by design, so the random
# search leaves them out (it checks that the daemon survives everything else).
SAFE_COMMANDS = sorted(protocol.COMMANDS - {"shutdown", "reload"})
NAME_RE = re.compile(r"[A-Za-z0-9_.@:+-]{1,128}\Z")  # README: 1-128 letters, digits, _.@:+-


# ---- helpers ------------------------------------------------------------------------------


def _connect(path: str, timeout: float = TIMEOUT) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
    sock.settimeout(timeout)
    try:
        sock.connect(path)
    except OSError:
        sock.close()
        raise
    return sock


def _read_line(sock: socket.socket, buf: bytearray) -> bytes:
    while b"\n" not in buf:
        chunk = sock.recv(1 << 16)
        assert chunk, "the daemon closed the connection without answering"
        buf += chunk
    end = buf.index(b"\n")
    line = bytes(buf[:end])
    del buf[:end + 1]
    return line


def _ask(sock: socket.socket, buf: bytearray, line: bytes) -> dict:
    sock.sendall(line)
    return json.loads(_read_line(sock, buf))


def _check_answer(answer: object, sent_id: object = None) -> None:
    """A well-formed response: v 1, ok true with a result, or ok false with an error whose
    code is one of protocol.ERRORS and is not "internal" (which the daemon answers only
    when a command raised: a bug by its own definition)."""
    assert isinstance(answer, dict), answer
    assert answer.get("v") == protocol.VERSION, answer
    assert answer.get("ok") in (True, False), answer
    assert answer.get("id") in (sent_id, None), answer
    if answer["ok"]:
        assert "result" in answer, answer
        return
    error = answer.get("error")
    assert isinstance(error, dict), answer
    assert isinstance(error.get("code"), str), answer
    assert error["code"] in protocol.ERRORS, answer
    assert isinstance(error.get("message"), str) and error["message"], answer
    assert error["code"] != "internal", f"the daemon failed inside: {answer}"


@contextlib.contextmanager
def _nofile_at_least(n: int):
    """Raise this process's soft RLIMIT_NOFILE (up to the hard limit) for the block."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = n if hard == resource.RLIM_INFINITY else min(n, hard)
    if soft != resource.RLIM_INFINITY and soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


# ---- (a) random requests ------------------------------------------------------------------


@pytest.fixture(scope="module")
def hostile():
    """One live daemon for the whole random search, in its own runtime directory, and a
    sleeping process of ours: the only real process open-service may be pointed at."""
    rundir = tempfile.mkdtemp(prefix="sv-h-", dir="/tmp")
    s = Supervisor(rundir)
    bait = subprocess.Popen(["/bin/sleep", "3600"], stdin=subprocess.DEVNULL)
    pid = None
    try:
        s.ok("init", "-i", "0")
        pid = s.pid
        s.daemon_pid = pid
        s.bait = bait
        yield s
    finally:
        broke = False
        if pid is not None and alive(pid):
            s.run("close", "-i", "0", timeout=TIMEOUT + 10)
            if alive(pid):
                os.kill(pid, signal.SIGKILL)
                broke = True
        bait.kill()
        bait.wait()
        shutil.rmtree(rundir, ignore_errors=True)
        if broke:
            raise AssertionError("the daemon did not close")


_WEIRD_STRINGS = ["", " ", "NaN", "nan", "Infinity", "-Infinity", "1e309", "-1", "0x10",
                  "²", "٣", "\uff11\uff12", "\0", "a\0b", "\n", "x\n", "../..", "/", "🙂" * 40,
                  "ping", "create-service", "x" * 300]
_HUGE_INTS = [2**31, 2**63, 2**64 + 1, -(2**63) - 1, 10**400, -(10**400)]
scalars = (st.none() | st.booleans() | st.integers() | st.sampled_from(_HUGE_INTS)
           | st.floats(allow_nan=True, allow_infinity=True) | st.text(max_size=40)
           | st.sampled_from(_WEIRD_STRINGS))
json_values = st.recursive(
    scalars,
    lambda kids: st.lists(kids, max_size=4) | st.dictionaries(st.text(max_size=8), kids,
                                                              max_size=4),
    max_leaves=12)
not_a_list = scalars | st.dictionaries(st.text(max_size=8), scalars, max_size=3)
not_a_str = st.none() | st.booleans() | st.integers() | st.floats() | st.lists(scalars,
                                                                               max_size=3)
numbers = (st.integers() | st.sampled_from(_HUGE_INTS)
           | st.floats(allow_nan=True, allow_infinity=True)
           | st.sampled_from([0, 0.001, 0.2, 1e-300, 1e9, 1e19, 1e300]))
junk_keys = st.dictionaries(st.text(max_size=10), json_values, max_size=3)

def _mostly(valid, hostile):
    """Two times in three a valid value, so that one hostile field at a time gets through
    to the code behind the others' checks."""
    return st.one_of(valid, valid, hostile)


# create-service may only ever start /bin/true: every other path is refused, argv is empty
# or not a list of strings, and output never names a file that open(O_CREAT) could make.
create_args = st.fixed_dictionaries({
    "path": _mostly(st.just("/bin/true"),
                    st.sampled_from(["/nonexistent", "relative", "", "/", "/tmp",
                                     "/bin/true\0x", "bin/true"]) | not_a_str),
}, optional={
    "args": _mostly(st.just([]), st.lists(not_a_str, min_size=1, max_size=3) | not_a_list),
    "name": _mostly(st.from_regex(r"[A-Za-z0-9_.@:+-]{1,20}", fullmatch=True),
                    st.text(max_size=140) | st.sampled_from(_WEIRD_STRINGS) | json_values),
    "restart_times": _mostly(st.integers(0, 3), numbers | json_values),
    "delay": _mostly(st.sampled_from([0, 0.01, 0.5, 3600]), numbers | json_values),
    "create_stopped": _mostly(st.booleans(), json_values),
    "output": _mostly(st.sampled_from(["null", "journal", "/dev/null"]),
                      st.sampled_from(["inherit", "relative", "", "/\0x", "null\n"])
                      | not_a_str),
    "cwd": _mostly(st.sampled_from(["/", "/tmp"]),
                   st.text(max_size=20) | st.sampled_from(["/nonexistent", "/\0"])
                   | not_a_str),
    # schedules and restart policies; never one that starts /bin/true over and over:
    # no --restart always, no --every under a second
    "at": numbers | json_values,
    "every": (numbers | json_values).filter(lambda v: not (isinstance(v, float)
                                                            and 0 < v < 1)),
    "cron": st.sampled_from(["* * * * *", "0 0 31 2 *", "@hourly", "60 * * * *",
                             "*/0 * * * *", "a b c", ""]) | st.text(max_size=20)
            | not_a_str,
    "restart": st.sampled_from(["on-failure", "never", "sometimes", "", "ALWAYS"])
               | not_a_str,
    "restart_delay": numbers | json_values,
    "restart_max_delay": numbers | json_values,
    "start_limit": st.sampled_from(["5/10s", "0/1", "1/0", "x", "1/1e400", "9" * 30 + "/1"])
                   | st.text(max_size=10) | not_a_str,
})
# create-service four times as often as any other command: it has the most arguments
WEIGHTED_COMMANDS = SAFE_COMMANDS + ["create-service"] * 3


def _open_args(daemon_pid: int, bait_pid: int):
    # Never a pid in 2..pid_max other than the bait and the daemon itself: adopting (and
    # then close-service-ing) a random process of the machine would really kill it.
    pids = (st.integers(max_value=0) | st.integers(min_value=PID_MAX + 1)
            | st.sampled_from([1, daemon_pid, bait_pid]) | not_a_str.filter(
                lambda v: not isinstance(v, int) or isinstance(v, bool)
                or v <= 0 or v > PID_MAX))
    return st.fixed_dictionaries({"pid": pids}, optional={
        "name": st.text(max_size=20) | json_values})


class _Known:
    """A placeholder for "one of the daemon's services, by name or by pid", filled in when
    the request is built (the strategy itself must not depend on the daemon's state)."""

    def __init__(self, index: int, by_pid: bool) -> None:
        self.index, self.by_pid = index, by_pid

    def resolve(self, names: list[str], pids: list[int]) -> object:
        pool = pids if self.by_pid else names
        return pool[self.index % len(pool)] if pool else "ghost"


# A pid reference only ever resolves to this daemon's own services: any int is safe.
service_refs = _mostly(st.builds(_Known, st.integers(0, 1000), st.booleans()),
                       st.integers() | st.sampled_from(_WEIRD_STRINGS) | json_values)


def _fill(value, names, pids):
    if isinstance(value, _Known):
        return value.resolve(names, pids)
    if isinstance(value, list):
        return [_fill(v, names, pids) for v in value]
    if isinstance(value, dict):
        return {k: _fill(v, names, pids) for k, v in value.items()}
    return value


def _request(data, names, pids, daemon_pid, bait_pid) -> tuple[object, bytes]:
    """One request line: (the id sent, the bytes). Mostly a known command with hostile
    arguments; one in ten an unknown or ill-typed command, one in ten a broken envelope."""
    kind = data.draw(st.integers(0, 9), label="kind")
    if kind == 0:
        cmd = data.draw(st.text(max_size=20) | not_a_str
                        | st.sampled_from(["SHUTDOWN", "create_service", "ping ", ""]),
                        label="cmd")
    else:
        cmd = data.draw(st.sampled_from(WEIGHTED_COMMANDS), label="cmd")
    if cmd == "create-service":
        args = data.draw(create_args, label="args")
    elif cmd == "open-service":
        args = data.draw(_open_args(daemon_pid, bait_pid), label="args")
    elif cmd == "supervisor-freelist":
        args = data.draw(st.fixed_dictionaries({
            "services": _mostly(st.lists(service_refs, max_size=4), not_a_list)}),
            label="args")
    elif cmd in SAFE_COMMANDS:
        args = data.draw(st.fixed_dictionaries({"service": service_refs}), label="args")
    else:
        args = data.draw(json_values, label="args")
    if isinstance(args, dict):
        args = {**data.draw(junk_keys, label="junk args"), **_fill(args, names, pids)}
        if args and data.draw(st.integers(0, 9), label="drop an argument") == 0:
            args.pop(data.draw(st.sampled_from(sorted(args)), label="dropped argument"))
    req_id = data.draw(st.none() | st.integers() | st.text(max_size=10), label="id")
    obj: dict = {"v": 1, "id": req_id, "cmd": cmd, "args": args}
    if kind == 1:
        obj.update(data.draw(st.fixed_dictionaries({}, optional={
            "v": json_values, "args": json_values, "extra": json_values}), label="envelope"))
        if data.draw(st.booleans(), label="drop a field"):
            obj.pop(data.draw(st.sampled_from(sorted(obj)), label="dropped"), None)
    line = json.dumps(obj, ensure_ascii=data.draw(st.booleans(), label="ascii")).encode()
    return req_id, line + b"\n"


def test_random_requests_get_well_formed_answers(hostile):
    sock_path = os.path.join(hostile.rundir, "0.sock")
    daemon = hostile.daemon_pid
    seen: dict[str, int] = {}
    names: list[str] = []
    pids: list[int] = []

    @settings(max_examples=300, deadline=None, database=None,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                     HealthCheck.function_scoped_fixture])
    @given(data=st.data())
    def one(data):
        req_id, line = _request(data, names, pids, daemon, hostile.bait.pid)
        buf = bytearray()
        with _connect(sock_path) as sock:
            before = _ask(sock, buf, protocol.encode_request(0, "list-supervisor"))
            assert before["ok"], before
            answer = _ask(sock, buf, line)
            _check_answer(answer, req_id)
            after = _ask(sock, buf, protocol.encode_request(0, "list-supervisor"))
        assert alive(daemon), f"the daemon died on {line!r}"
        assert after["ok"], after
        listed = [s["name"] for s in after["result"]["services"]]
        bad = [n for n in listed if not NAME_RE.match(n)]
        assert not bad, f"services with names the README forbids, after {line!r}: {bad!r}"
        if not answer["ok"]:
            # refused: nothing lost, nothing half-made
            seen[answer["error"]["code"]] = seen.get(answer["error"]["code"], 0) + 1
            assert sorted(listed) == sorted(s["name"] for s in before["result"]["services"]), \
                f"a refused request ({answer['error']}) changed the services: {line!r}"
        else:
            seen["ok"] = seen.get("ok", 0) + 1
            for svc in after["result"]["services"]:
                if svc["name"] not in names:
                    names.append(svc["name"])
                if svc["pid"] is not None and svc["pid"] not in pids:
                    pids.append(svc["pid"])

    one()
    print(f"\nanswers by kind over the random requests: {dict(sorted(seen.items()))}")
    assert alive(daemon)
    listing = hostile.json("list-supervisor")
    assert listing["instance"] == 0
    with hostile.client() as c:
        assert c.ping()["pid"] == daemon


# Exact cases of the kinds the random search looks for (each one found by it or by the
# fuzz target, fuzz/fuzz_protocol.py), so that a failure names the bug at once.


def _one_request(sup, cmd: str, args: dict) -> dict:
    buf = bytearray()
    with _connect(os.path.join(sup.rundir, "0.sock")) as sock:
        return _ask(sock, buf, protocol.encode_request(7, cmd, args))


def _names(sup) -> list[str]:
    return sorted(s["name"] for s in sup.json("list-supervisor")["services"])


@pytest.mark.parametrize("ref", ["²", "٣", "\uff11\uff12"],
                         ids=["superscript-2", "arabic-3", "fullwidth-12"])
@pytest.mark.parametrize("cmd", ["service-status", "suspend-service", "supervisor-freelist"])
def test_unicode_digits_as_a_service_reference(sup, cmd, ref):
    """str.isdigit() is true for '²' and '٣', but int() of them fails (or reads fullwidth
    '12' as 12): a reference that is not an ASCII number must just be an unknown name."""
    args = {"services": [ref]} if cmd == "supervisor-freelist" else {"service": ref}
    answer = _one_request(sup, cmd, args)
    _check_answer(answer, 7)
    assert answer["error"]["code"] == "no-such-service", answer
    assert alive(sup.pid)


@pytest.mark.parametrize("value", [1e300, 1e19, 10**400], ids=["1e300", "1e19", "10**400"])
@pytest.mark.parametrize("key", ["delay", "at", "every", "restart_delay", "restart_max_delay"])
def test_absurd_times_are_refused_and_leave_nothing(sup, key, value):
    """A finite number of seconds so large that its deadline does not fit a timerfd (or a
    float): refused as an invalid argument, or taken; never an internal error, never a
    service left behind by a refusal, and the timers still work afterwards."""
    args = {"path": "/bin/true", key: value, "name": "later", "output": "null"}
    if key.startswith("restart_"):
        args["restart"] = "on-failure"
    answer = _one_request(sup, "create-service", args)
    _check_answer(answer, 7)
    if not answer["ok"]:
        assert answer["error"]["code"] == "invalid-argument", answer
        assert _names(sup) == []
    # a near deadline still fires on time
    sup.create("/bin/true", name="soon", delay=0.05, output="null")
    sup.wait_status("soon", "EXITED")


def test_an_error_while_refusing_neither_hangs_nor_replays(sup):
    """A request refused for a missing argument that also carries a "service" of unicode
    digits: it is answered, and a request pipelined before it runs exactly once."""
    buf = bytearray()
    with _connect(os.path.join(sup.rundir, "0.sock")) as sock:
        sock.sendall(protocol.encode_request(1, "create-service", {
            "path": "/bin/sleep", "args": ["3600"], "output": "null", "name": "once"}))
        sock.sendall(protocol.encode_request(2, "supervisor-freelist", {"service": "²"}))
        answers = []
        with contextlib.suppress(TimeoutError):
            while len(answers) < 2:
                answers.append(json.loads(_read_line(sock, buf)))
        assert len(answers) == 2, f"{len(answers)} answers to 2 requests within {TIMEOUT} s"
        first, second = answers
        assert first["ok"] and first["id"] == 1, first
        _check_answer(second, 2)
        assert second["error"]["code"] == "invalid-argument", second
        assert _ask(sock, buf, protocol.encode_request(3, "ping"))["ok"]
    assert _names(sup) == ["once"]


def test_nul_byte_in_output_path_is_refused(sup):
    answer = _one_request(sup, "create-service",
                          {"path": "/bin/true", "output": "/tmp/a\0b", "name": "nul"})
    _check_answer(answer, 7)
    assert answer["error"]["code"] == "invalid-argument", answer
    assert _names(sup) == []


@pytest.mark.parametrize("name", ["evil\n", "a\nb", "tab\t", "x" * 129, ".", ".."])
def test_service_names_outside_the_readme_rule_are_refused(sup, name):
    answer = _one_request(sup, "create-service", {"path": "/bin/true", "delay": 60,
                                                  "name": name})
    _check_answer(answer, 7)
    assert not answer["ok"], f"{name!r} was accepted as a service name: {answer}"
    assert answer["error"]["code"] == "invalid-argument", answer
    assert _names(sup) == []


# ---- (b) 1,000 connections at once -------------------------------------------------------

MANY = 1000


def _settled_fds(daemon: int, probe: socket.socket) -> int:
    """The daemon's fd count once it has handled every close that came before: two round
    trips on ``probe`` (the second starts a turn of its loop after the one that saw the
    earlier hang-ups)."""
    buf = bytearray()
    for _ in range(2):
        assert _ask(probe, buf, protocol.encode_request(0, "ping"))["ok"]
    return fd_count(daemon)


def test_a_thousand_open_connections(sup):
    daemon = sup.pid
    path = os.path.join(sup.rundir, "0.sock")
    sup.create("/bin/sleep", ["3600"], name="steady", output="null")
    socks: list[socket.socket] = []
    with _nofile_at_least(fd_count(os.getpid()) + MANY + 64), _connect(path) as probe:
        baseline = _settled_fds(daemon, probe)
        try:
            for _ in range(MANY):
                socks.append(_connect(path))
            wait_until(lambda: fd_count(daemon) >= baseline + MANY,
                       what=f"the daemon to accept {MANY} connections")
            start = time.monotonic()
            with sup.client() as c:
                assert c.ping()["pid"] == daemon
                assert c.service_status("steady")["status"] == "RUNNING"
            took = time.monotonic() - start
            assert took < TIMEOUT
            assert sup.json("service-status", "steady")["status"] == "RUNNING"
            assert alive(daemon)
            # every one of them is a live client: all get their answer
            for i, sock in enumerate(socks):
                sock.sendall(protocol.encode_request(i, "ping"))
            for i, sock in enumerate(socks):
                answer = json.loads(_read_line(sock, bytearray()))
                assert answer["ok"] and answer["id"] == i, answer
            print(f"\n{MANY} open connections: another client answered in {took * 1000:.1f} "
                  f"ms; daemon fds {baseline} -> {fd_count(daemon)}")
        finally:
            for sock in socks:
                sock.close()
        wait_until(lambda: _settled_fds(daemon, probe) <= baseline,
                   what=f"the daemon to close the {MANY} connections")
    assert sup.json("service-status", "steady")["status"] == "RUNNING"


# ---- (c) stalled half requests -----------------------------------------------------------

STALLED = 200


def test_many_stalled_half_requests(sup):
    daemon = sup.pid
    path = os.path.join(sup.rundir, "0.sock")
    sup.create("/bin/sleep", ["3600"], name="steady", output="null")
    socks: list[socket.socket] = []
    with _nofile_at_least(fd_count(os.getpid()) + STALLED + 64), _connect(path) as probe:
        baseline = _settled_fds(daemon, probe)
        try:
            for i in range(STALLED):
                sock = _connect(path)
                socks.append(sock)
                # junk, a request cut short, a long run of bytes: never a newline
                sock.sendall([b"x" * (1 + i * 97 % 4000),
                              b'{"v": 1, "id": 1, "cmd": "service-sta',
                              b"\xff\xfe" * 512][i % 3])
            wait_until(lambda: fd_count(daemon) >= baseline + STALLED,
                       what=f"the daemon to accept {STALLED} connections")
            start = time.monotonic()
            with sup.client() as c:
                assert c.service_status("steady")["status"] == "RUNNING"
            took = time.monotonic() - start
            assert took < TIMEOUT
            assert [s["name"] for s in sup.json("list-supervisor")["services"]] == ["steady"]
            print(f"\n{STALLED} stalled half requests: another client answered in "
                  f"{took * 1000:.1f} ms")
        finally:
            for sock in socks:
                sock.close()
        wait_until(lambda: _settled_fds(daemon, probe) <= baseline,
                   what="the daemon to close the stalled connections")
    assert alive(daemon)


# ---- (d) a client that does not read its answers ------------------------------------------

PIPELINED = 10_000
BIG_ARGS = ["y" * 100] * 200  # ~20 KB of argv: every status answer is ~20 KB
PAD = "p" * 200  # ~270-byte requests: 10,000 of them are more than kernel buffers hold
# What the daemon may hold for one client that does not read: control.py stops serving it
# at 16 MiB of queued answers and stops reading it then; bytearray growth can transiently
# double that, and up to 1 MiB of requests comes on top. 10,000 answers are ~200 MB.
RSS_BOUND_KIB = 48 * 1024


def _big_service(sup) -> bytes:
    sup.create("/bin/sh", ["-c", "exec sleep 3600", "big", *BIG_ARGS], name="big",
               output="null")
    return b"".join(protocol.encode_request(i, "service-status", {"service": "big",
                                                                  "pad": PAD})
                    for i in range(PIPELINED))


def _send_until_stalled(sup, hog: socket.socket, pending: memoryview) -> tuple[int, bool]:
    """Send ``pending`` on the non-blocking ``hog`` without reading until the daemon stops
    reading it. Returns (bytes sent, whether it stalled)."""
    path = os.path.join(sup.rundir, "0.sock")
    sent, deadline = 0, time.monotonic() + TIMEOUT
    while sent < len(pending):
        assert time.monotonic() < deadline, f"sent {sent} bytes in {TIMEOUT} s"
        try:
            sent += hog.send(pending[sent:sent + 65536])
            continue
        except BlockingIOError:
            pass
        # The hog cannot write: the daemon is busy with it, or it stopped reading it.
        # Another client is served either way; after its round trips (full turns of the
        # daemon's loop) a daemon that still read the hog would have made room.
        with _connect(path) as other:
            buf = bytearray()
            for _ in range(3):
                answer = _ask(other, buf, protocol.encode_request(1, "service-status",
                                                                  {"service": "big"}))
                assert answer["ok"] and answer["result"]["status"] == "RUNNING", answer
        _, writable, _ = select.select([], [hog], [], 0)
        if not writable:
            return sent, True
    return sent, False


def test_a_client_that_never_reads_holds_nobody_up(sup):
    daemon = sup.pid
    path = os.path.join(sup.rundir, "0.sock")
    requests = _big_service(sup)
    with _connect(path) as probe:
        baseline_fds = _settled_fds(daemon, probe)
        rss_before = rss_kib(daemon)
        hog = _connect(path)
        try:
            hog.setblocking(False)
            sent, stalled = _send_until_stalled(sup, hog, memoryview(requests))
            rss_during = rss_kib(daemon)
            print(f"\nnon-reading client: {sent} of {len(requests)} bytes of {PIPELINED} "
                  f"pipelined requests taken before the daemon stopped reading it; daemon "
                  f"RSS {rss_before} -> {rss_during} KiB")
            assert stalled, f"the daemon read all {PIPELINED} requests of a client that " \
                            "reads no answer (no backpressure)"
            assert rss_during - rss_before < RSS_BOUND_KIB
            start = time.monotonic()
            with sup.client() as c:
                assert c.ping()["pid"] == daemon
                c.create_service("/bin/sleep", ["3600"], name="meanwhile", output="null")
            assert time.monotonic() - start < TIMEOUT
        finally:
            hog.close()
        # + the pidfd of "meanwhile"
        wait_until(lambda: _settled_fds(daemon, probe) <= baseline_fds + 1,
                   what="the daemon to drop the non-reading client")
    assert alive(daemon)
    assert {s["name"]: s["status"] for s in sup.json("list-supervisor")["services"]} == \
        {"big": "RUNNING", "meanwhile": "RUNNING"}


def test_many_clients_that_never_read_hold_only_themselves_up(sup):
    """30 clients each pipeline 1,000 list-supervisor (~20 KB answers) and read none:
    their unsent answers pass the 16 MiB the daemon holds for all clients, after which a
    client that reads its answers is still served (it has none waiting)."""
    daemon = sup.pid
    path = os.path.join(sup.rundir, "0.sock")
    with sup.client() as c:
        c.pipeline([("create-service", {"path": "/bin/sleep", "args": ["3600"],
                                        "name": f"s{i}", "output": "null"})
                    for i in range(100)])
    requests = b'{"v":1,"id":1,"cmd":"list-supervisor"}\n' * 1000
    hogs = []
    try:
        for _ in range(30):
            hog = _connect(path)
            hog.setblocking(False)
            with contextlib.suppress(BlockingIOError):
                hog.send(requests)
            hogs.append(hog)

        last = [-1]

        def done_with_them() -> bool:  # all it may hold for them held: it waits, idle
            with open(f"/proc/{daemon}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            ticks = int(fields[11]) + int(fields[12])  # utime + stime
            idle, last[0] = fields[0] == "S" and ticks == last[0], ticks
            return idle
        wait_until(done_with_them, what="the daemon to hold what it may for the hogs",
                   every=0.1)
        for _ in range(20):  # served, each in its turn, while the hogs stay connected
            with sup.client() as c:
                assert c.service_status("s7")["status"] == "RUNNING"
                assert len(c.list_supervisor()["services"]) == 100
    finally:
        for hog in hogs:
            hog.close()
    assert alive(daemon)


def test_a_late_reader_of_a_long_pipeline_gets_every_answer(sup):
    """The same client, once the daemon has stopped reading it, starts reading and sends
    the rest: every one of the 10,000 requests (each ~270 bytes, far under the 1 MiB
    limit of one request) is answered, in order."""
    daemon = sup.pid
    path = os.path.join(sup.rundir, "0.sock")
    requests = memoryview(_big_service(sup))
    with _connect(path) as hog:
        hog.setblocking(False)
        sent, stalled = _send_until_stalled(sup, hog, requests)
        assert stalled
        buf = bytearray()
        answered: list[object] = []
        refused: dict[str, int] = {}
        deadline = time.monotonic() + TIMEOUT * 3
        while len(answered) < PIPELINED:
            assert time.monotonic() < deadline, f"{len(answered)} answers in {TIMEOUT * 3} s"
            readable, writable, _ = select.select(
                [hog], [hog] if sent < len(requests) else [], [], TIMEOUT)
            if writable:
                with contextlib.suppress(BlockingIOError):
                    sent += hog.send(requests[sent:sent + 65536])
            if readable:
                chunk = hog.recv(1 << 20)
                if not chunk:
                    break
                buf += chunk
                lines = buf.split(b"\n")
                buf = bytearray(lines.pop())
                for line in lines:
                    answer = json.loads(line)
                    answered.append(answer["id"])
                    if not answer["ok"]:
                        code = answer["error"]["code"]
                        refused[code] = refused.get(code, 0) + 1
    print(f"\nlate reader: {len(answered)} answers to {PIPELINED} pipelined requests, "
          f"refused: {refused}")
    assert not refused, f"after {len(answered)} answers the daemon refused: {refused} " \
                        "(and hung up)"
    assert answered == list(range(PIPELINED))
    assert alive(daemon)


def test_memory_stays_bounded_under_many_pipelining_clients(sup):
    """20 clients each pipeline 300 list-supervisor (~20 KB answers) before reading any:
    6 MB of answers each, 120 MB in all if the daemon held them. It holds at most 1 MiB a
    client and 16 MiB for all (docs/design.md, "Control socket"): its peak RSS grows by
    far less, and every answer arrives, in order."""
    daemon = sup.pid
    with sup.client() as c:
        c.pipeline([("create-service", {"path": "/bin/sleep", "args": ["3600"],
                                        "name": f"s{i}", "output": "null"})
                    for i in range(100)])
    before = _status_kib(daemon, "VmRSS")
    counts = [0] * 20

    def client(k: int) -> None:
        with sup.client() as c:
            answers = c.pipeline([("list-supervisor", {})] * 300)
            counts[k] = sum(len(a["services"]) == 100 for a in answers)

    threads = [threading.Thread(target=client, args=(k,)) for k in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(TIMEOUT * 6)
    growth = (_status_kib(daemon, "VmHWM") - before) / 1024
    print(f"\n20 clients x 300 pipelined list-supervisor: daemon peak RSS +{growth:.1f} MB")
    assert counts == [300] * 20
    assert growth < 60


def _status_kib(pid: int, key: str) -> int:
    with open(f"/proc/{pid}/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith(key + ":"))


def test_memory_stays_bounded_under_many_large_unfinished_requests(sup):
    """200 clients each send 1 MB of one request and no newline: 200 MB if the daemon kept
    them all. It keeps at most 32 MiB of unfinished requests in all: past that, a client
    whose request is large is refused (too-busy) and hung up on; the daemon answers on."""
    daemon = sup.pid
    path = os.path.join(sup.rundir, "0.sock")
    before = _status_kib(daemon, "VmRSS")
    head = b'{"v": 1, "id": 1, "cmd": "ping", "args": {"pad": "'
    body = head + b"x" * (1_000_000 - len(head))
    clients: list[socket.socket] = []
    refused: set[int] = set()

    def count_refused() -> int:
        for k, s in enumerate(clients):
            with contextlib.suppress(BlockingIOError, ConnectionResetError):
                if b'"too-busy"' in s.recv(4096):
                    refused.add(k)
        return len(refused)

    try:
        for _ in range(200):
            s = socket.socket(socket.AF_UNIX)
            s.settimeout(TIMEOUT)
            s.connect(path)
            clients.append(s)
            with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                s.sendall(body)
            s.setblocking(False)
        with sup.client() as c:
            assert c.ping()["pid"] == daemon
        wait_until(count_refused, what="a client refused as too busy")
    finally:
        for s in clients:
            s.close()
    growth = (_status_kib(daemon, "VmHWM") - before) / 1024
    print(f"\n200 clients x 1 MB unfinished requests: {len(refused)} refused (too-busy), "
          f"daemon peak RSS +{growth:.1f} MB")
    assert growth < 80
