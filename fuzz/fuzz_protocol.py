"""Coverage-guided fuzzing (atheris/libFuzzer) of the wire protocol and the daemon's request
path, in process and without a client: ``protocol.decode_request`` and ``Daemon._handle_line``
on a real ``Daemon`` (real selector, signalfd, timerfds, pidfds), and the framing of
``control.Connection`` over a socketpair.

    .venv/bin/pip install atheris
    .venv/bin/python fuzz/fuzz_protocol.py -max_total_time=60      # or: make fuzz

Each input is one of three kinds (its first byte chooses):

0. raw bytes: one request line as a client could send it;
1. structured: one to four requests built from the input (a command from
   ``protocol.COMMANDS`` or junk, arguments of every JSON type), run in order;
2. framing: raw bytes written to a ``Connection`` in chunks, then EOF: every answer that
   comes back must be well formed.

A finding (the fuzzer stops and saves the input as ``crash-*``) is: an exception out of
``decode_request`` other than ``ProtocolError`` or out of ``_handle_line``; an answer that
is not one JSON line with ``v``, ``ok`` and a ``result`` or an error code from
``protocol.ERRORS``; the error code ``internal`` (the daemon's own "this is a bug"); a
refused request that changed the set of services (half-made or lost); a service whose name
breaks the README's rule. With ``FUZZ_KEEP_GOING=1`` each kind of finding is printed once
(``FINDING ...``) and fuzzing goes on; a summary follows at the end.

Nothing harmful runs: every request passes a sanitizer first, so create-service only ever
starts ``/bin/true`` (any other path becomes one that is refused: ``/nonexistent``,
``relative``, ``""``), argv is emptied, output files become ``/dev/null``,
``--restart always`` becomes ``never`` and ``--every`` under a second becomes an hour;
open-service may only name a ``sleep`` of the fuzzer's own (or a pid that is not a
process); ``reload`` only sets a flag that is never acted on. Service cgroups are off
(``FUZZ_CGROUPS=1`` turns them on): the fuzzer process itself would step into them.
Journal entries are dropped (counted), so journald is not flooded.

Without a corpus directory on the command line, one is made under $TMPDIR
(``supervisor-fuzz-corpus``) and seeded with a valid request of every command; crash
inputs go to $TMPDIR/supervisor-fuzz-artifacts/ unless ``-artifact_prefix=`` says else.
Replay one with ``fuzz/fuzz_protocol.py <crash file>``.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import json
import os
import re
import selectors
import signal
import socket
import subprocess
import sys
import tempfile
import time

import atheris

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

with atheris.instrument_imports(include=["supervisor"]):
    from supervisor import control, daemon, protocol, state

KEEP_GOING = os.environ.get("FUZZ_KEEP_GOING") == "1"
CGROUPS = os.environ.get("FUZZ_CGROUPS") == "1"
NAME_RE = re.compile(r"[A-Za-z0-9_.@:+-]{1,128}\Z")
SAFE_PATHS = ["/bin/true", "/nonexistent", "relative", ""]
with open("/proc/sys/kernel/pid_max") as _f:
    PID_MAX = int(_f.read())
JUNK_COMMANDS = ["", "PING", "create_service", "ping ", "shutdown\n", "\0", "service-status2"]
ARG_KEYS = ["service", "services", "path", "args", "name", "restart_times", "delay",
            "create_stopped", "output", "cwd", "pid", "at", "every", "cron", "restart",
            "restart_delay", "restart_max_delay", "start_limit"]
WEIRD = ["", "²", "٣", "\uff11\uff12", "1e309", "NaN", "-1", "\0", "a\nb", "evil\n", "/",
         "/dev/null", "/\0x", "/tmp/a\0b", "* * * * *", "5/10s", "always", "never",
         "on-failure", "x" * 200]


class Finding(Exception):
    pass


class State:
    """The daemon under test and what the fuzzer keeps around it."""

    def __init__(self) -> None:
        self.tmp = tempfile.mkdtemp(prefix="sv-fuzz-")
        self.sock_path = os.path.join(self.tmp, "0.sock")
        self.daemon: daemon.Daemon | None = None
        self.bait: subprocess.Popen | None = None
        self.inputs = 0
        self.requests = 0
        self.journal_entries = 0
        self.findings: dict[str, str] = {}
        self.codes: dict[str, int] = {}
        self.started = time.monotonic()
        self.new_daemon()

    def new_daemon(self) -> None:
        if self.daemon is not None:
            self.daemon.close()
        for stale in (self.sock_path, os.path.join(self.tmp, "0.state.json")):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(stale)  # a new daemon here starts empty (nothing to recover)
        listener = control.bind_listener(self.sock_path)
        d = daemon.Daemon(0, listener, socket_path=self.sock_path, rundir=self.tmp)
        if d.shell.cgroups is not None and not CGROUPS:
            d.shell.cgroups.close()
            d.shell.cgroups = None
        d.journal.send = self._journal
        self.daemon = d

    def _journal(self, *args, **fields) -> None:
        self.journal_entries += 1

    def bait_pid(self) -> int:
        if self.bait is None or self.bait.poll() is not None:
            if self.bait is not None:
                self.bait.wait()
            self.bait = subprocess.Popen(["sleep", "3600"], stdin=subprocess.DEVNULL)
        return self.bait.pid

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.reset()
        if self.daemon is not None:
            self.daemon.close()
            self.daemon = None
        if self.bait is not None:
            self.bait.kill()
            self.bait.wait()
        for entry in os.listdir(self.tmp):
            with contextlib.suppress(OSError):
                os.unlink(os.path.join(self.tmp, entry))
        with contextlib.suppress(OSError):
            os.rmdir(self.tmp)

    # -- keeping the daemon small between inputs ------------------------------------------

    def pump(self, timeout: float = 0) -> None:
        """One turn of the daemon's own loop (``run_once``): what is ready is handled, the
        state saved, and only then the answers sent; then the file on disk must hold
        exactly the services the daemon has (what a client was told is on disk)."""
        d = self.daemon
        d.reexec_requested = False  # reload is only ever a flag here
        d.run_once(timeout)
        if d.done:
            return
        try:
            with open(d.state_path, "rb") as f:
                _head, saved = state.decode(f.read())
        except FileNotFoundError:
            saved = []
        on_disk = {entry[0].name for entry in saved}
        if on_disk != set(d.shell.records):
            finding("not-on-disk", f"state file {sorted(on_disk)[:10]} but services "
                                   f"{sorted(d.shell.records)[:10]} after a turn")

    def reset(self) -> None:
        """Forget every service (the daemon's own way: removal kills created ones) and reap
        every child, so each input starts from an empty daemon and nothing accumulates."""
        d = self.daemon
        d.reexec_requested = False
        if d.shell.records:
            d.commands.table["supervisor-freelist"]({"services": list(d.shell.records)})
        deadline = time.monotonic() + 10
        while d.shell.live_children():
            if time.monotonic() > deadline:
                raise Finding(f"children not reaped 10 s after removal: {d.shell.orphans}")
            self.pump(0.05)
        if d.stopping or d.done or d.shell.records:
            self.new_daemon()


STATE: State | None = None


_AT_EXIT = []


def _state() -> State:
    global STATE
    if STATE is None:
        STATE = State()
        # libFuzzer ends the process with C exit(), which runs no Python atexit handler:
        # register the summary with the C library too (it runs once, whichever comes).
        callback = ctypes.CFUNCTYPE(None, ctypes.c_void_p)(lambda _arg: _summary())
        _AT_EXIT.append(callback)  # kept alive for as long as the process lives
        ctypes.CDLL(None).__cxa_atexit(callback, None, None)
        atexit.register(_summary)
    return STATE


# ---- making inputs harmless -------------------------------------------------------------


def sanitize(line: bytes, st: State) -> bytes:
    """The request with every argument that could start or touch something real replaced
    (see the module doc); other lines pass unchanged."""
    try:
        obj = json.loads(line)
    except (ValueError, RecursionError):
        return line
    if not isinstance(obj, dict) or not isinstance(obj.get("args"), dict):
        return line
    args = dict(obj["args"])
    cmd = obj.get("cmd")
    changed = False
    if cmd == "create-service":
        path = args.get("path")
        if isinstance(path, str) and path not in SAFE_PATHS:
            args["path"] = SAFE_PATHS[len(path) % len(SAFE_PATHS)]
            changed = True
        argv = args.get("args")
        if isinstance(argv, list) and argv and all(isinstance(a, str) for a in argv):
            args["args"] = []
            changed = True
        out = args.get("output")
        if isinstance(out, str) and out.startswith("/") and "\0" not in out \
                and out != "/dev/null":
            args["output"] = "/dev/null"
            changed = True
        if args.get("restart") == "always":
            args["restart"] = "never"
            changed = True
        every = args.get("every")
        if isinstance(every, float) and 0 < every < 1:  # a service started 1000s/s
            args["every"] = 3600
            changed = True
    elif cmd == "open-service":
        pid = args.get("pid")
        if isinstance(pid, int) and not isinstance(pid, bool) and 1 < pid <= PID_MAX \
                and pid != os.getpid():
            args["pid"] = st.bait_pid()
            changed = True
    if not changed:
        return line
    obj["args"] = args
    return json.dumps(obj).encode()


# ---- checks ------------------------------------------------------------------------------


def finding(kind: str, detail: str) -> None:
    st = _state()
    new = kind not in st.findings
    st.findings.setdefault(kind, detail)
    if not KEEP_GOING:
        raise Finding(f"{kind}: {detail}")
    if new:
        print(f"FINDING {kind}: {detail}", file=sys.stderr, flush=True)


def check_answer(raw: bytes, sent: bytes, before: set[str] | None) -> None:
    st = _state()
    if not raw.endswith(b"\n") or raw.count(b"\n") != 1:
        finding("not-one-line", f"{raw[:300]!r} for {sent[:300]!r}")
        return
    try:
        answer = json.loads(raw)
    except ValueError as exc:
        finding("not-json", f"{exc}: {raw[:300]!r} for {sent[:300]!r}")
        return
    if not isinstance(answer, dict) or answer.get("v") != protocol.VERSION \
            or answer.get("ok") not in (True, False):
        finding("bad-envelope", f"{raw[:300]!r} for {sent[:300]!r}")
        return
    if answer["ok"]:
        st.codes["ok"] = st.codes.get("ok", 0) + 1
        if "result" not in answer:
            finding("no-result", f"{raw[:300]!r} for {sent[:300]!r}")
    else:
        error = answer.get("error")
        code = error.get("code") if isinstance(error, dict) else None
        st.codes[str(code)] = st.codes.get(str(code), 0) + 1
        if code not in protocol.ERRORS or not isinstance(error.get("message"), str):
            finding("bad-error", f"{raw[:300]!r} for {sent[:300]!r}")
        elif code == "internal":
            # one kind per cause, whichever command hit it
            cause = error["message"].split("inside the daemon: ", 1)[-1]
            finding(f"internal: {re.sub(r'[0-9]+', 'N', cause)[:120]}",
                    f"{raw[:300]!r} for {sent[:300]!r}")
        if before is not None and set(st.daemon.shell.records) != before:
            finding(f"refused-but-changed ({code})",
                    f"services {sorted(before)} -> {sorted(st.daemon.shell.records)} "
                    f"for {sent[:300]!r}")
    bad = [n for n in st.daemon.shell.records if not NAME_RE.match(n)]
    if bad:
        finding("bad-name", f"{bad!r} accepted for {sent[:300]!r}")


def handle(line: bytes) -> None:
    """One request line through decode_request and the daemon."""
    st = _state()
    try:
        protocol.decode_request(line)
    except protocol.ProtocolError:
        pass
    except Exception as exc:
        finding(f"decode-raised {type(exc).__name__}", f"{exc!r} for {line[:300]!r}")
    line = sanitize(line, st)
    before = set(st.daemon.shell.records)
    st.requests += 1
    try:
        answer = st.daemon._handle_line(line, _PEER)
    except Exception as exc:
        finding(f"handle-raised {type(exc).__name__}", f"{exc!r} for {line[:300]!r}")
        return
    # the end of the turn: the state saved (and checked on disk), only then the answer of
    # a command that changed something (a Reply) is final
    st.pump()
    raw = answer.data if isinstance(answer, control.Reply) else answer
    check_answer(raw, line, before if not isinstance(answer, control.Reply) else None)


class _Conn:
    """What _handle_line needs of a connection: the peer's credentials (root here)."""

    peer = control.Peer(os.getpid(), 0, 0)


_PEER = _Conn()


# ---- structured inputs ---------------------------------------------------------------------


def json_value(fdp: atheris.FuzzedDataProvider, depth: int = 0):
    kind = fdp.ConsumeIntInRange(0, 11 if depth < 3 else 8)
    if kind == 0:
        return None
    if kind == 1:
        return fdp.ConsumeBool()
    if kind == 2:
        return fdp.ConsumeIntInRange(-3, 70000)
    if kind == 3:
        return fdp.ConsumeInt(fdp.ConsumeIntInRange(1, 64))  # up to 512-bit integers
    if kind == 4:
        return fdp.ConsumeFloat()  # NaN, inf, subnormals included
    if kind == 5:
        return fdp.ConsumeUnicodeNoSurrogates(fdp.ConsumeIntInRange(0, 40))
    if kind == 6:
        return fdp.PickValueInList(WEIRD)
    if kind == 7:
        return fdp.PickValueInList([*SAFE_PATHS, "null", "journal", "inherit"])
    if kind == 8:
        return 10 ** fdp.ConsumeIntInRange(300, 420) * (1 if fdp.ConsumeBool() else -1)
    if kind in (9, 10):
        return [json_value(fdp, depth + 1) for _ in range(fdp.ConsumeIntInRange(0, 4))]
    return {fdp.PickValueInList(ARG_KEYS) if fdp.ConsumeBool()
            else fdp.ConsumeUnicodeNoSurrogates(6): json_value(fdp, depth + 1)
            for _ in range(fdp.ConsumeIntInRange(0, 4))}


def structured_request(fdp: atheris.FuzzedDataProvider) -> bytes:
    commands = sorted(protocol.COMMANDS)
    cmd = (fdp.PickValueInList(commands) if fdp.ConsumeIntInRange(0, 9)
           else fdp.PickValueInList(JUNK_COMMANDS))
    st = _state()
    args = {}
    for _ in range(fdp.ConsumeIntInRange(0, 6)):
        key = fdp.PickValueInList(ARG_KEYS)
        if key == "service" and st.daemon.shell.records and fdp.ConsumeBool():
            names = sorted(st.daemon.shell.records)
            args[key] = names[fdp.ConsumeIntInRange(0, len(names) - 1)]
        elif key == "path" and fdp.ConsumeBool():
            args[key] = "/bin/true"
        else:
            args[key] = json_value(fdp)
    obj: dict = {"v": 1, "id": json_value(fdp) if fdp.ConsumeBool() else 1, "cmd": cmd,
                 "args": args}
    if fdp.ConsumeIntInRange(0, 9) == 0:  # a broken envelope
        obj[fdp.PickValueInList(["v", "args", "cmd", "id"])] = json_value(fdp)
    return json.dumps(obj, ensure_ascii=fdp.ConsumeBool()).encode()


# ---- framing -------------------------------------------------------------------------------


def framing(data: bytes, chunks: list[int]) -> None:
    """``data`` written to a Connection (through the sanitizer) in ``chunks``, then EOF."""
    st = _state()
    d = st.daemon
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    theirs.setblocking(False)
    conn = control.Connection(d.server, theirs)
    d.server.connections.add(conn)
    d.sel.register(theirs, selectors.EVENT_READ, conn.on_event)
    original = d.server.handle
    sent: list[bytes] = []

    def sanitized(line: bytes, c) -> bytes:
        line = sanitize(line, st)
        sent.append(line)
        return original(line, c)

    d.server.handle = sanitized
    received = bytearray()
    try:
        ours.setblocking(False)
        pos = 0
        for size in [*chunks, len(data)]:
            piece = data[pos:pos + size]
            pos += len(piece)
            with contextlib.suppress(BlockingIOError, BrokenPipeError, ConnectionResetError):
                ours.sendall(piece)
            st.pump()
            with contextlib.suppress(BlockingIOError, ConnectionResetError):
                received += ours.recv(1 << 20)
            if pos >= len(data):
                break
        with contextlib.suppress(OSError):
            ours.shutdown(socket.SHUT_WR)
        deadline = time.monotonic() + 5
        while theirs.fileno() >= 0 and time.monotonic() < deadline:
            st.pump(0.01)
            with contextlib.suppress(BlockingIOError, ConnectionResetError):
                while chunk := ours.recv(1 << 20):
                    received += chunk
        if theirs.fileno() >= 0:
            finding("connection-not-closed", f"after EOF, for {data[:300]!r}")
        with contextlib.suppress(BlockingIOError, ConnectionResetError):
            while chunk := ours.recv(1 << 20):
                received += chunk
    finally:
        d.server.handle = original
        conn.close()
        ours.close()
    lines = bytes(received).split(b"\n")
    if lines[-1]:
        finding("partial-answer", f"{bytes(received)[-300:]!r} for {data[:300]!r}")
    for raw in lines[:-1]:
        check_answer(raw + b"\n", b"(framing) " + data[:300], None)


# ---- the target ----------------------------------------------------------------------------


def TestOneInput(data: bytes) -> None:  # the name libFuzzer looks for
    st = _state()
    st.inputs += 1
    fdp = atheris.FuzzedDataProvider(data)
    kind = fdp.ConsumeIntInRange(0, 2)
    if kind == 0:
        handle(fdp.ConsumeBytes(fdp.remaining_bytes()))
    elif kind == 1:
        for _ in range(fdp.ConsumeIntInRange(1, 4)):
            handle(structured_request(fdp))
    else:
        chunks = [fdp.ConsumeIntInRange(1, 64) for _ in range(fdp.ConsumeIntInRange(0, 3))]
        framing(fdp.ConsumeBytes(fdp.remaining_bytes()), chunks)
    st.reset()


# ---- seeds and summary ---------------------------------------------------------------------


def _seeds() -> list[bytes]:
    reqs = [
        ("ping", {}), ("info", {}), ("list-supervisor", {}),
        ("create-service", {"path": "/bin/true", "name": "t", "output": "null"}),
        ("create-service", {"path": "/bin/true", "delay": 5, "output": "null"}),
        ("create-service", {"path": "/bin/true", "create_stopped": True, "restart_times": 2}),
        ("create-service", {"path": "/bin/true", "every": 60, "restart": "on-failure"}),
        ("create-service", {"path": "/bin/true", "cron": "*/5 * * * *",
                            "start_limit": "5/10s"}),
        ("open-service", {"pid": 1}), ("service-status", {"service": "t"}),
        ("suspend-service", {"service": "t"}), ("resume-service", {"service": "t"}),
        ("close-service", {"service": "t"}), ("remove-service", {"service": "t"}),
        ("supervisor-freelist", {"services": ["t"]}),
        ("supervisor-cancel", {"service": "t"}), ("shutdown", {}), ("reload", {}),
    ]
    lines = [protocol.encode_request(1, cmd, args) for cmd, args in reqs]
    seeds = [b"\x00" + line.rstrip(b"\n") for line in lines]
    seeds.append(b"\x02" + b"".join(lines) + b"garbage\n{\"v\": 1, \"cmd\": \"pi")
    return seeds


def _corpus_dir() -> str:
    path = os.path.join(tempfile.gettempdir(), "supervisor-fuzz-corpus")
    os.makedirs(path, exist_ok=True)
    for i, seed in enumerate(_seeds()):
        with open(os.path.join(path, f"seed-{i:02d}"), "wb") as f:
            f.write(seed)
    return path


def _summary() -> None:
    global STATE
    st, STATE = STATE, None
    if st is None:
        return
    took = time.monotonic() - st.started
    print(f"\nfuzz_protocol: {st.inputs} inputs tried ({st.requests} requests through the "
          f"daemon) in {took:.0f} s; {st.journal_entries} journal entries dropped",
          file=sys.stderr)
    print(f"fuzz_protocol: answers by code: {dict(sorted(st.codes.items()))}", file=sys.stderr)
    if st.findings:
        print(f"fuzz_protocol: {len(st.findings)} kinds of finding:", file=sys.stderr)
        for kind, detail in st.findings.items():
            print(f"  FINDING {kind}: {detail}", file=sys.stderr)
    else:
        print("fuzz_protocol: no finding", file=sys.stderr)
    sys.stderr.flush()
    st.close()


def main() -> None:
    os.environ.pop("NOTIFY_SOCKET", None)
    signal.pthread_sigmask(signal.SIG_BLOCK, [signal.SIGCHLD])  # for the daemon's signalfd
    argv = list(sys.argv)
    if not any(not a.startswith("-") for a in argv[1:]):
        argv.append(_corpus_dir())
    if not any(a.startswith("-artifact_prefix=") for a in argv[1:]):
        artifacts = os.path.join(tempfile.gettempdir(), "supervisor-fuzz-artifacts")
        os.makedirs(artifacts, exist_ok=True)
        argv.insert(1, f"-artifact_prefix={artifacts}/")
    atheris.Setup(argv, TestOneInput)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
