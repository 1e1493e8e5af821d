"""The three daemons under test behind one small interface.

Each is a context manager that starts the daemon in a private temporary directory with the
given programs, and always shuts it down (bounded), killing leftovers. All sockets are
local (Unix sockets, ZeroMQ ``ipc://``).

    with Ours() as d:  /  with Supervisord(programs) as d:  /  with Circus(programs, 0.1) as d:
        d.pid                  the daemon's pid (for /proc readings)
        d.pid_of(name)         the current pid of a program, or None when none runs
        d.all_running(names)   whether the daemon reports every one as running
        d.is_stopped(name)     whether its status shows the program stopped (peers: never)

A "program" is ``(name, argv)``. Ours gets its services through ``create`` (the pipelined
client), the peers through their config file.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid
import xmlrpc.client

from common import PEER_BIN, journald_present, kill_tree, log, stop_popen, wait_until

Program = tuple[str, list[str]]


def _tmpdir(prefix: str) -> str:
    return tempfile.mkdtemp(prefix=prefix, dir="/tmp")  # short: sockets max 108 bytes


@contextlib.contextmanager
def _environ(**changes):
    """os.environ with ``changes`` (None: unset) for the body."""
    old = {k: os.environ.get(k) for k in changes}
    try:
        for k, v in changes.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


# ---- ours ---------------------------------------------------------------------------------


class Ours:
    label = "ours"

    def __init__(self, instance: int = 0, spawn: str | None = None) -> None:
        """``spawn="fallback"``: the daemon spawns the way kept for kernels without
        clone3's CLONE_INTO_CGROUP (posix_spawn, stepping into each cgroup)."""
        self.instance = instance
        self.spawn = spawn
        self.dir = _tmpdir("svb-")
        self.pid = 0
        self.start_s = 0.0  # daemon start (init) wall time
        self.client = None
        self.journald = False  # whether our daemon found journald (it logs there, else stderr)

    def __enter__(self) -> Ours:
        from supervisor.client import Client, init

        self.journald = journald_present()
        t0 = time.perf_counter()
        try:
            with _environ(SUPERVISOR_SPAWN=self.spawn):  # the daemon's environment
                info, _ = init(self.instance, runtime_dir=self.dir)
            self.start_s = time.perf_counter() - t0
            self.pid = info["pid"]
            self.client = Client(self.instance, runtime_dir=self.dir).connect()
        except BaseException:
            self.__exit__()
            raise
        return self

    @property
    def env(self) -> dict[str, str]:
        return {**os.environ, "SUPERVISOR_RUNTIME_DIR": self.dir}

    def create(self, programs: list[Program], **opts) -> list:
        calls = [("create-service", {"path": argv[0], "args": argv[1:], "name": name,
                                     "restart_times": opts.get("restart_times", 0),
                                     "create_stopped": False, "delay": 0, "cwd": "/",
                                     # not logged, as the peers are configured here
                                     "output": opts.get("output", "null")})
                 for name, argv in programs]
        return self.client.pipeline(calls)

    def status(self, name: str | int) -> dict:
        return self.client.service_status(name)

    def pid_of(self, name: str) -> int | None:
        svc = self.client.service_status(name)
        return svc["pid"] if svc["status"] in ("RUNNING", "STOPPED") else None

    def is_stopped(self, name: str) -> bool:
        return self.client.service_status(name)["status"] == "STOPPED"

    def all_running(self, names: list[str]) -> bool:
        listing = self.client.list_supervisor()["services"]
        running = {s["name"] for s in listing if s["status"] == "RUNNING"}
        return all(n in running for n in names)

    def disconnect(self) -> None:
        if self.client is not None:
            self.client.close()

    def __exit__(self, *exc) -> None:
        from supervisor.client import SupervisorError, close_instance

        self.disconnect()
        try:
            if self.pid:
                close_instance(self.instance, runtime_dir=self.dir, timeout=30)
        except SupervisorError as e:
            log(f"ours: close failed ({e}); killing pid {self.pid} and its services")
            kill_tree(self.pid)
        if self.pid:
            with contextlib.suppress(ChildProcessError):  # init started it: our child
                for _ in range(200):
                    if os.waitpid(self.pid, os.WNOHANG)[0]:
                        break
                    time.sleep(0.01)
        shutil.rmtree(self.dir, ignore_errors=True)


# ---- supervisord -------------------------------------------------------------------------


class _UnixHTTPConnection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float) -> None:
        super().__init__("localhost", timeout=timeout)
        self.path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        sock.connect(self.path)
        self.sock = sock


class _UnixTransport(xmlrpc.client.Transport):
    def __init__(self, path: str, timeout: float = 30) -> None:
        super().__init__()
        self.path, self.timeout = path, timeout

    def make_connection(self, host):
        if self._connection and host == self._connection[0]:
            return self._connection[1]
        self._connection = host, _UnixHTTPConnection(self.path, self.timeout)
        return self._connection[1]


class Supervisord:
    """supervisord 4.3.0, tuned as fast as it allows: startsecs=0, autorestart=true,
    startretries huge; output not logged (stdout_logfile=NONE, stderr redirected)."""

    label = "supervisord"

    grace = 2.0  # seconds given to a graceful shutdown before it is killed

    def __init__(self, programs: list[Program], *, autorestart: bool = True) -> None:
        self.programs = programs
        self.dir = _tmpdir("svbs-")
        self.sock = os.path.join(self.dir, "sd.sock")
        self.conf = os.path.join(self.dir, "supervisord.conf")
        self.proc: subprocess.Popen | None = None
        self.start_t = 0.0
        lines = [
            "[unix_http_server]", f"file={self.sock}", "",
            "[supervisord]", f"logfile={self.dir}/supervisord.log",
            f"pidfile={self.dir}/supervisord.pid", f"childlogdir={self.dir}",
            "nodaemon=true", "minfds=1024", "minprocs=200", "user=root", "",
            "[rpcinterface:supervisor]",
            "supervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface",
            "", "[supervisorctl]", f"serverurl=unix://{self.sock}", "",
        ]
        for name, argv in programs:
            lines += [f"[program:{name}]", f"command={' '.join(argv)}", "startsecs=0",
                      f"autorestart={'true' if autorestart else 'false'}",
                      "startretries=1000000", "stdout_logfile=NONE", "redirect_stderr=true",
                      "stopwaitsecs=2", ""]
        with open(self.conf, "w") as f:
            f.write("\n".join(lines))
        self.rpc = xmlrpc.client.ServerProxy("http://localhost/RPC2",
                                             transport=_UnixTransport(self.sock))

    @property
    def ctl(self) -> list[str]:
        return [os.path.join(PEER_BIN, "supervisorctl"), "-c", self.conf]

    def __enter__(self) -> Supervisord:
        self.start_t = time.perf_counter()
        self.proc = subprocess.Popen([os.path.join(PEER_BIN, "supervisord"), "-n", "-c",
                                      self.conf], stdout=subprocess.DEVNULL,
                                     stderr=open(os.path.join(self.dir, "stderr"), "wb"),
                                     start_new_session=True, cwd=self.dir)
        self.pid = self.proc.pid

        def up():
            if self.proc.poll() is not None:
                raise RuntimeError(f"supervisord exited: {self.proc.returncode}")
            try:
                return self.rpc.supervisor.getState()["statename"] == "RUNNING"
            except (OSError, xmlrpc.client.Error, http.client.HTTPException):
                self.rpc = xmlrpc.client.ServerProxy("http://localhost/RPC2",
                                                     transport=_UnixTransport(self.sock))
                return False
        if not wait_until(up, 60, 0.01):
            self.__exit__()
            raise RuntimeError("supervisord did not come up within 60 s")
        return self

    def info(self, name: str) -> dict:
        return self.rpc.supervisor.getProcessInfo(name)

    def pid_of(self, name: str) -> int | None:
        info = self.info(name)
        return info["pid"] if info["statename"] == "RUNNING" and info["pid"] else None

    def is_stopped(self, name: str) -> bool:
        return self.info(name)["statename"] not in ("RUNNING", "STARTING")  # no such state

    def all_running(self, names: list[str]) -> bool:
        infos = self.rpc.supervisor.getAllProcessInfo()
        running = {i["name"] for i in infos if i["statename"] == "RUNNING"}
        return all(n in running for n in names)

    def __exit__(self, *exc) -> None:
        if self.proc is not None:
            with contextlib.suppress(Exception):
                self.rpc.supervisor.shutdown()
            # supervisord stops one program group per turn of its loop, and a turn waits
            # up to 1 s: N programs take ~N/2 s to stop. Not what is measured: after a
            # short grace the daemon and its programs are killed.
            try:
                self.proc.wait(self.grace)
            except subprocess.TimeoutExpired:
                kill_tree(self.proc.pid)
                self.proc.wait(10)
        shutil.rmtree(self.dir, ignore_errors=True)


# ---- circus -------------------------------------------------------------------------------


class Circus:
    """circus 0.19.0: one watcher per program (numprocesses=1), flapping detection off
    (it would stop a crash-looping toy), no statsd; ``check_delay`` as given (default 5)."""

    label = "circus"

    def __init__(self, programs: list[Program], check_delay: float = 5.0, *,
                 respawn: bool = True) -> None:
        self.programs = programs
        self.check_delay = check_delay
        self.label = f"circus (check_delay={check_delay:g})"
        self.dir = _tmpdir("svbc-")
        self.endpoint = f"ipc://{self.dir}/ctl.sock"
        self.conf = os.path.join(self.dir, "circus.ini")
        self.proc: subprocess.Popen | None = None
        self._sock = None
        lines = ["[circus]", f"endpoint = {self.endpoint}",
                 f"pubsub_endpoint = ipc://{self.dir}/pub.sock",
                 f"check_delay = {check_delay}", "statsd = False",
                 f"logoutput = {self.dir}/circus.log", "loglevel = INFO", ""]
        for name, argv in programs:
            lines += [f"[watcher:{name}]", f"cmd = {argv[0]}",
                      f"args = {' '.join(argv[1:])}", "numprocesses = 1",
                      "check_flapping = False", f"respawn = {respawn}",
                      "copy_env = True",  # the run's environment, as the others pass on
                      "graceful_timeout = 2", ""]
        with open(self.conf, "w") as f:
            f.write("\n".join(lines))

    @property
    def ctl(self) -> list[str]:
        return [os.path.join(PEER_BIN, "circusctl"), "--endpoint", self.endpoint]

    def _connect(self) -> None:
        import zmq

        self._ctx = zmq.Context.instance()
        sock = self._ctx.socket(zmq.DEALER)
        sock.setsockopt(zmq.IDENTITY, uuid.uuid4().hex.encode())
        sock.setsockopt(zmq.LINGER, 0)
        sock.connect(self.endpoint)
        self._sock = sock
        self._poller = zmq.Poller()
        self._poller.register(sock, zmq.POLLIN)

    def call(self, command: str, timeout: float = 30, **props) -> dict:
        """One request over circus's ZeroMQ control socket (what circusctl sends)."""
        if self._sock is None:
            self._connect()
        call_id = uuid.uuid4().hex
        self._sock.send(json.dumps({"id": call_id, "command": command,
                                    "properties": props}).encode())
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0 or not self._poller.poll(left * 1000):
                # a lost answer would poison the next call: start a fresh socket
                self._sock.close()
                self._sock = None
                raise TimeoutError(f"circus did not answer {command} within {timeout} s")
            answer = json.loads(self._sock.recv())
            if answer.get("id") == call_id:
                if answer.get("status") == "error":
                    raise RuntimeError(f"circus {command}: {answer}")
                return answer

    def __enter__(self) -> Circus:
        self.start_t = time.perf_counter()
        self.proc = subprocess.Popen([os.path.join(PEER_BIN, "circusd"), self.conf],
                                     stdout=subprocess.DEVNULL,
                                     stderr=open(os.path.join(self.dir, "stderr"), "wb"),
                                     start_new_session=True, cwd=self.dir)
        self.pid = self.proc.pid

        def up():
            if self.proc.poll() is not None:
                raise RuntimeError(f"circusd exited: {self.proc.returncode}")
            try:
                self.call("list", timeout=0.5)
                return True
            except TimeoutError:
                return False
        if not wait_until(up, 60, 0.01):
            self.__exit__()
            raise RuntimeError("circusd did not come up within 60 s")
        return self

    def pids(self, name: str) -> list[int]:
        return self.call("list", name=name)["pids"]

    def pid_of(self, name: str) -> int | None:
        pids = self.pids(name)
        return pids[0] if pids else None

    def is_stopped(self, name: str) -> bool:
        return self.call("status", name=name)["status"] != "active"  # per watcher only

    def all_running(self, names: list[str]) -> bool:
        statuses = self.call("status")["statuses"]
        return all(statuses.get(n) == "active" for n in names)

    def __exit__(self, *exc) -> None:
        if self.proc is not None:
            with contextlib.suppress(Exception):
                self.call("quit", timeout=5)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                log("circusd: no exit within 60 s of quit; killing its tree")
                stop_popen(self.proc, signal.SIGKILL)
            if self.proc.poll() is None:
                kill_tree(self.proc.pid)
        if self._sock is not None:
            self._sock.close()
            self._sock = None
        shutil.rmtree(self.dir, ignore_errors=True)


def peer_kinds(smoke: bool) -> list[tuple[str, dict]]:
    """The peer configurations every figure compares against."""
    return [("supervisord", {}), ("circus", {"check_delay": 5.0}),
            ("circus", {"check_delay": 0.1})]


def make_peer(kind: str, programs: list[Program], **opts):
    if kind == "supervisord":
        return Supervisord(programs, **{k: v for k, v in opts.items() if k != "check_delay"})
    return Circus(programs, **opts)
