"""systemd integration with the real tools: systemd-analyze verify on the units, socket
activation through systemd-socket-activate, sd_notify on a datagram socket of ours."""

from __future__ import annotations

import os
import selectors
import shutil
import signal
import socket
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from conftest import ROOT, Supervisor, alive, wait_until
from timeouts import TIMEOUT

from supervisor import client

BIN = Path(sys.executable).parent
UNITS = ROOT / "systemd"


def _install_units(dest: Path, instance: int) -> dict[str, Path]:
    """The units as `make install-units` writes them (PREFIX: this venv, whose bin holds
    supervisor-daemon as `make install`'s would), instantiated for verification: system
    units in dest/system, user units in dest/user, the generator in dest/generators."""
    dirs = {k: dest / k for k in ("system", "user", "generators")}
    subprocess.run(["make", "-s", "-C", str(ROOT), "install-units", f"PREFIX={BIN.parent}",
                    f"UNITDIR={dirs['system']}", f"USERUNITDIR={dirs['user']}",
                    f"GENERATORDIR={dirs['generators']}"], check=True, capture_output=True,
                   timeout=60)
    out = {}
    for kind in ("system", "user"):
        for suffix in ("service", "socket"):
            template = dirs[kind] / f"supervisor@.{suffix}"
            target = dirs[kind] / f"supervisor@{instance}.{suffix}"
            target.write_text(template.read_text())
            out[f"{kind} {suffix}"] = target
    out["generator"] = dirs["generators"] / "supervisor-generator"
    return out


def _verify(*units: Path, user: bool = False) -> subprocess.CompletedProcess:
    scope = ["--user"] if user else []
    env = {**os.environ, "XDG_RUNTIME_DIR": str(units[0].parent)}
    return subprocess.run(["systemd-analyze", *scope, "verify", "--man=no", *map(str, units)],
                          capture_output=True, text=True, timeout=60, env=env)


def test_units_pass_systemd_analyze_verify(tmp_path):
    units = _install_units(tmp_path, 3)
    for user in (False, True):
        kind = "user" if user else "system"
        result = _verify(units[f"{kind} service"], units[f"{kind} socket"], user=user)
        assert result.returncode == 0, result.stderr
        ours = [line for line in result.stderr.splitlines() if "supervisor@" in line]
        assert ours == [], ours
        service = units[f"{kind} service"].read_text()
        for line in ("Type=notify", "KillMode=process", "Delegate=yes",
                     f"ExecStart={BIN}/supervisor-daemon --instance %i", "WatchdogSec=",
                     f"ExecReload={BIN}/supervisor reload --instance %i"):
            assert line in service
    assert "ListenStream=/run/supervisor/%i.sock" in units["system socket"].read_text()
    assert "ListenStream=%t/supervisor/%i.sock" in units["user socket"].read_text()
    assert "SUPERVISOR_RUNTIME_DIR=%t/supervisor" in units["user service"].read_text()
    for kind in ("system", "user"):
        assert "SocketMode=0600" in units[f"{kind} socket"].read_text()
    generator = units["generator"].read_text()
    assert f"{tmp_path}/system/supervisor@.service" in generator
    assert os.access(units["generator"], os.X_OK)


def test_uninstall_takes_away_the_units_too(tmp_path):
    """`make uninstall` (and uninstall-units alone) leaves no unit or generator naming
    commands that are gone."""
    dirs = [f"UNITDIR={tmp_path}/s", f"USERUNITDIR={tmp_path}/u", f"GENERATORDIR={tmp_path}/g"]
    for target in ("install-units", "uninstall-units", "install-units", "uninstall"):
        subprocess.run(["make", "-s", "-C", str(ROOT), target, f"DESTDIR={tmp_path}/stage",
                        "PREFIX=/usr", *dirs], check=True, capture_output=True, timeout=60)
        left = sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*") if p.is_file())
        assert (left != []) == (target == "install-units"), (target, left)


def test_a_broken_unit_fails_verification(tmp_path):
    """The check above can fail: a relative ExecStart is caught."""
    units = _install_units(tmp_path, 4)
    service = units["system service"]
    service.write_text(service.read_text().replace(f"ExecStart={BIN}/", "ExecStart=bin/"))
    assert _verify(service).returncode != 0


def test_install_units_without_systemd_running_is_no_error(tmp_path):
    """PID 1 is not systemd here: `make install-units` still succeeds, with no systemctl
    error (it reloads systemd only where systemd runs)."""
    result = subprocess.run(["make", "-C", str(ROOT), "install-units", "PREFIX=/usr/local",
                             f"UNITDIR={tmp_path}/s", f"USERUNITDIR={tmp_path}/u",
                             f"GENERATORDIR={tmp_path}/g"], capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0, result.stderr
    assert "systemctl" not in result.stderr and "rror" not in result.stderr, result.stderr
    # ExecStart is the daemon `make install PREFIX=...` puts there, never this checkout
    for unit in (tmp_path / "s" / "supervisor@.service", tmp_path / "u" / "supervisor@.service"):
        text = unit.read_text()
        assert "ExecStart=/usr/local/bin/supervisor-daemon --instance %i" in text
        assert str(ROOT) not in text


def test_first_connection_starts_the_daemon_which_answers_it(rundir):
    path = os.path.join(rundir, "6.sock")
    activator = subprocess.Popen(
        ["systemd-socket-activate", "-l", path, "-E", f"SUPERVISOR_RUNTIME_DIR={rundir}",
         str(BIN / "supervisor-daemon"), "--instance", "6"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        wait_until(lambda: os.path.exists(path), what="the activation socket")
        cmdline = Path(f"/proc/{activator.pid}/cmdline").read_bytes()
        assert b"systemd-socket-activate" in cmdline  # nothing started yet
        s = Supervisor(rundir, 6)
        listing = s.json("list-supervisor", "-i", "6")  # this request starts the daemon
        assert listing == {"instance": 6, "services": []}
        info = s.json("list-supervisors")["supervisors"][0]
        assert info["pid"] == activator.pid  # the activator exec'd the daemon: same pid
        assert info["socket"] == path
        svc = s.json("create-service", "-i", "6", "/bin/sleep", "60")
        env = Path(f"/proc/{svc['pid']}/environ").read_bytes()
        assert b"LISTEN_FDS" not in env and b"LISTEN_PID" not in env
        s.ok("close", "-i", "6")
        assert activator.wait(timeout=TIMEOUT) == 0
        assert not alive(svc["pid"])
    finally:
        if activator.poll() is None:
            activator.kill()
            activator.wait()
        activator.stderr.close()


class NotifyListener:
    """A NOTIFY_SOCKET of our own, read all the time (by a thread) as a service manager
    reads its own: a daemon's sd_notify blocks once a few datagrams wait unread
    (net.unix.max_dgram_qlen is 10 here), and WATCHDOG_USEC=100000 sends one every
    50 ms, so a listener read only while a test waits would stall the daemon."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
        self.sock.bind(path)
        self.messages: list[str] = []
        self._new = threading.Condition()
        self._stop_r, self._stop_w = os.pipe()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        with selectors.DefaultSelector() as sel:
            sel.register(self.sock, selectors.EVENT_READ)
            sel.register(self._stop_r, selectors.EVENT_READ)
            while True:
                for key, _ in sel.select():
                    if key.fileobj == self._stop_r:
                        return
                    msg = self.sock.recv(4096).decode()
                    with self._new:
                        self.messages.append(msg)
                        self._new.notify_all()

    def forget(self, message: str) -> None:
        """Those seen so far that are ``message``, gone: only a later one is found."""
        with self._new:
            self.messages = [m for m in self.messages if m != message]

    def wait_for(self, needle: str) -> str:
        def found() -> str | None:
            return next((m for m in self.messages if needle in m.split("\n")), None)
        with self._new:
            msg = self._new.wait_for(found, timeout=TIMEOUT)
            if msg is None:
                raise AssertionError(
                    f"no {needle!r} on the notify socket; got {self.messages}")
            return msg

    def __enter__(self) -> NotifyListener:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        os.write(self._stop_w, b"x")
        self._reader.join(TIMEOUT)
        assert not self._reader.is_alive(), "the notify reader did not stop"
        for fd in (self._stop_r, self._stop_w):
            os.close(fd)
        self.sock.close()


@pytest.fixture
def notified(rundir):
    with NotifyListener(os.path.join(rundir, "notify")) as listener:
        env = {**os.environ, "SUPERVISOR_RUNTIME_DIR": rundir,
               "NOTIFY_SOCKET": listener.path, "WATCHDOG_USEC": "100000"}
        daemon = subprocess.Popen([str(BIN / "supervisor-daemon"), "-i", "8"], env=env,
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            yield listener, daemon, Supervisor(rundir, 8)
        finally:
            if daemon.poll() is None:
                daemon.send_signal(signal.SIGKILL)
            daemon.wait()


def test_ready_status_watchdog_stopping(notified):
    listener, daemon, s = notified
    ready = listener.wait_for("READY=1")
    assert f"MAINPID={daemon.pid}" in ready.split("\n")
    assert "STATUS=0 services" in ready.split("\n")
    s.ok("list-supervisor", "-i", "8")  # it serves once READY=1 is sent
    s.create("/bin/sleep", ["60"], name="a")
    s.create("/bin/sleep", ["60"], name="b", delay=60)
    listener.wait_for("STATUS=2 services: 1 PENDING, 1 RUNNING")
    s.ok("suspend-service", "a", "-i", "8")
    listener.wait_for("STATUS=2 services: 1 PENDING, 1 STOPPED")
    listener.forget("WATCHDOG=1")
    listener.wait_for("WATCHDOG=1")  # WATCHDOG_USEC=100000: a ping every 50 ms, still
    s.ok("close", "-i", "8")
    listener.wait_for("STOPPING=1")
    assert daemon.wait(timeout=TIMEOUT) == 0


def test_a_close_extends_the_managers_stop_timeout_to_the_services_own(notified):
    """TimeoutStopSec=30 would cut short a service's own --stop-timeout 45: the close tells
    the manager how long it takes (EXTEND_TIMEOUT_USEC: the longest stop timeout + 5 s)."""
    listener, daemon, s = notified
    listener.wait_for("READY=1")
    s.ok("create-service", "-i", "8", "--stop-timeout", "45", "/bin/sleep", "600")
    s.ok("create-service", "-i", "8", "/bin/sleep", "600")  # the default 10 s (grace: 5)
    closing = subprocess.Popen([sys.executable, "-m", "supervisor", "close", "-i", "8"],
                               env=s.env, stdout=subprocess.DEVNULL)
    listener.wait_for("STOPPING=1")
    listener.wait_for("EXTEND_TIMEOUT_USEC=50000000")
    assert closing.wait(TIMEOUT) == 0  # sleep ends on SIGTERM: no wait for the 45 s
    assert daemon.wait(timeout=TIMEOUT) == 0


def test_no_watchdog_pings_unless_asked(rundir):
    with NotifyListener(os.path.join(rundir, "notify")) as listener:
        env = {**os.environ, "SUPERVISOR_RUNTIME_DIR": rundir, "NOTIFY_SOCKET": listener.path}
        env.pop("WATCHDOG_USEC", None)
        daemon = subprocess.Popen([str(BIN / "supervisor-daemon"), "-i", "9"], env=env)
        try:
            listener.wait_for("READY=1")
            Supervisor(rundir, 9).ok("close", "-i", "9")
            listener.wait_for("STOPPING=1")
            assert "WATCHDOG=1" not in listener.messages
        finally:
            if daemon.poll() is None:
                daemon.kill()
            daemon.wait()


def test_init_uses_systemd_only_where_it_can(tmp_path):
    booted = tmp_path / "booted"
    units = tmp_path / "units"
    units.mkdir()
    assert not client.systemd_units_usable("/run/supervisor", booted=str(booted),
                                           unit_dirs=(str(units),))
    booted.mkdir()
    assert not client.systemd_units_usable("/run/supervisor", booted=str(booted),
                                           unit_dirs=(str(units),))
    shutil.copy(UNITS / "supervisor@.socket", units)
    assert client.systemd_units_usable("/run/supervisor", booted=str(booted),
                                       unit_dirs=(str(units),))
    # a private runtime directory is not the unit's socket directory
    assert not client.systemd_units_usable(str(tmp_path), booted=str(booted),
                                           unit_dirs=(str(units),))
    # on this machine PID 1 is not systemd: init starts the daemon itself
    assert not client.systemd_units_usable()
