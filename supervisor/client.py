"""The Python client API; the CLI is built on it.

    from supervisor.client import Client

    with Client(instance=3) as c:
        svc = c.create_service("/usr/bin/sleep", ["60"], name="nap", restart_times=2)
        c.suspend_service("nap")
        print(c.service_status(svc["pid"])["status"])   # STOPPED

Errors raise :class:`SupervisorError` subclasses whose ``exit_code`` is the CLI's:
:class:`RemoteError` (1, the daemon refused: ``code`` is a protocol error code; 2 for
``invalid-argument``),
:class:`NotRunning` (3, the instance is not running or not reachable).
"""

from __future__ import annotations

import _socket  # not `socket`: see Client.connect
import _thread  # not `threading`: a lock is all a Client needs (and the CLI starts fast)
import math
import os
import sys
import time

from supervisor import paths, protocol

TYPE_CHECKING = False  # typing is not imported at run time: the CLI must start fast
if TYPE_CHECKING:
    from typing import Any

DEFAULT_TIMEOUT = 30.0
START_TIMEOUT = 10.0
_WINDOW = 512  # pipelined requests a window; two windows are in flight at once


class SupervisorError(Exception):
    exit_code = 1

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class RemoteError(SupervisorError):
    """The daemon answered with an error. An argument with a wrong value is a usage
    error (exit code 2) wherever it is found, in the CLI or the daemon."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.exit_code = 2 if code in ("invalid-argument", "invalid-config") else 1


class InvalidArgument(SupervisorError, TypeError, ValueError):
    """A call the client refuses before anything is sent: an argument of the wrong type
    or value (a usage error, exit code 2). It is a TypeError and a ValueError too."""

    exit_code = 2
    code = "invalid-argument"


class NotRunning(SupervisorError):
    exit_code = 3


class NotAnswering(NotRunning):
    """It listens, but did not answer in time (hung, stopped, overloaded)."""


def _instance(instance) -> int:
    try:
        return paths.parse_instance(instance)
    except ValueError as exc:
        raise InvalidArgument(str(exc)) from None


def _words(value, what: str) -> list:
    """``value`` as a list: a str (or bytes) is one word, never its characters."""
    if isinstance(value, (str, bytes)) or not hasattr(value, "__iter__"):
        raise InvalidArgument(f"{what} must be a list, not {type(value).__name__} "
                              f"{value!r:.60}")
    return list(value)


class _Stale(Exception):
    """A kept connection the daemon closed, found before anything was sent on it."""


def _hung_up(sock) -> bool:
    """Whether the daemon closed ``sock`` (or it broke): an end of file, or an error,
    waiting to be read (a kept connection has nothing else unread)."""
    timeout = sock.gettimeout()
    sock.settimeout(0)  # (with a timeout, recv would wait for data first, whatever its flags)
    try:
        return sock.recv(1, _socket.MSG_PEEK) == b""
    except BlockingIOError:
        return False
    except OSError:
        return True
    finally:
        sock.settimeout(timeout)


class Client:
    """A connection to one instance. Requests may be pipelined with :meth:`pipeline`.

    One Client may be shared by threads (one call at a time goes through it); in a child
    made by ``fork()`` it connects anew. A call that failed on the way (a timeout, the
    daemon gone, an interrupt) drops the connection: the next call connects again, and
    never reads an answer meant for another; one the daemon had closed before the call
    (it was closed, or crashed, and another started) is made anew."""

    def __init__(self, instance: int = 0, *, runtime_dir: str | None = None,
                 timeout: float | None = DEFAULT_TIMEOUT) -> None:
        self.instance = _instance(instance)
        self.path = paths.socket_path(self.instance, runtime_dir)
        if timeout is not None and (isinstance(timeout, bool) or not isinstance(
                timeout, (int, float)) or not math.isfinite(timeout) or timeout <= 0):
            raise InvalidArgument(f"timeout must be a number of seconds above 0, or None, "
                                  f"not {timeout!r:.60}")
        self.timeout = timeout
        self._sock: _socket.socket | None = None
        self._pid = 0  # the process that connected
        self._buf = bytearray()
        self._next_id = 0
        self._lock = _thread.allocate_lock()

    # connection

    def connect(self) -> Client:
        if self._sock is not None and self._pid != os.getpid():  # a child of fork()
            self._drop()
        if self._sock is None:
            # The C socket object that `socket.socket` subclasses: it has all a Client
            # uses (connect, settimeout, sendall, recv, close), and importing it costs
            # ~0.5 ms where `socket` costs ~4-6 ms (its IntEnum classes and selectors),
            # which the CLI (one request, then exit) would pay on every run.
            where = os.path.dirname(self.path)
            why = paths.why_unsafe(where)
            if why is not None and os.path.exists(self.path):
                raise SupervisorError(f"{why}: not talking to a daemon there")
            sock = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM | _socket.SOCK_CLOEXEC)
            sock.settimeout(self.timeout)
            try:
                sock.connect(self.path)
            except (FileNotFoundError, ConnectionRefusedError):
                sock.close()
                raise NotRunning(f"instance {self.instance} is not running "
                                 f"(no daemon listens on {self.path})") from None
            except PermissionError:
                sock.close()
                raise RemoteError("permission-denied",
                                  f"permission denied on {self.path}") from None
            except OSError as exc:
                sock.close()
                raise NotRunning(f"instance {self.instance} is not reachable: "
                                 f"{exc.strerror or exc}") from None
            # the daemon must be root or the directory's owner: nobody else may pose as it
            uid = int.from_bytes(sock.getsockopt(_socket.SOL_SOCKET, _socket.SO_PEERCRED,
                                                 12)[4:8], sys.byteorder)
            if uid not in (0, os.stat(where).st_uid):
                sock.close()
                raise SupervisorError(f"{self.path} is served by uid {uid}, who does not own "
                                      f"{where}: not talking to it")
            self._sock, self._pid = sock, os.getpid()
            self._buf.clear()
        return self

    def close(self) -> None:
        self._drop()

    def _drop(self) -> None:
        """Forget the connection (and whatever was read of it)."""
        if self._sock is not None:
            self._sock.close()
            self._sock = None
        self._buf.clear()

    def __enter__(self) -> Client:
        return self.connect()

    def __exit__(self, *exc) -> None:
        self.close()

    # requests

    def call(self, cmd: str, **args: Any) -> Any:
        """Send one request and return its result, or raise RemoteError."""
        result = self.pipeline([(cmd, args)])[0]
        if isinstance(result, RemoteError):
            raise result
        return result

    def pipeline(self, calls: list[tuple[str, dict]]) -> list[Any]:
        """Send the requests without waiting for each answer, and return the answers in
        order: each a result or a :class:`RemoteError` instance (returned, not raised).
        Requests go out in windows, so a huge pipeline never fills both directions. Every
        request is checked (encoded) before the first is sent."""
        with self._lock:
            lines = self._encode(calls)
            reused = self._sock is not None and self._pid == os.getpid()
            self.connect()
            try:
                try:
                    return self._exchange(lines, stale_ok=reused)
                except _Stale:  # a daemon that has gone since: it was sent nothing
                    self._drop()
                    self.connect()
                    return self._exchange(lines)
            except BaseException:  # out of step with the daemon: never read on from here
                self._drop()
                raise

    def _encode(self, calls) -> list[bytes]:
        lines = []
        first = self._next_id
        for i, call in enumerate(_words(calls, "a pipeline")):
            try:
                cmd, args = call
            except (TypeError, ValueError):
                raise InvalidArgument(f"request {i} must be a (command, arguments) pair, "
                                      f"not {call!r:.60}") from None
            if not isinstance(cmd, str) or not isinstance(args, dict):
                raise InvalidArgument(f"request {i} must be a (str, dict) pair, not "
                                      f"{call!r:.60}")
            try:
                lines.append(protocol.encode_request(first + i, cmd, args))
            except (TypeError, ValueError) as exc:  # bytes, a set, NaN...
                raise InvalidArgument(f"{cmd}: {exc}") from None
        self._next_id += len(lines)
        return lines

    def _exchange(self, lines: list[bytes], stale_ok: bool = False) -> list[Any]:
        """Send ``lines``, read their answers. ``stale_ok``: a connection kept from before,
        which the daemon may have closed since (a close, a crash): where it did, raise
        :class:`_Stale` before anything is sent (for a new connection to carry them)."""
        answers: list[Any] = []
        windows = []  # (first line, size): at most two in flight, so both sides stay busy
        first_id = self._next_id - len(lines)
        if stale_ok and _hung_up(self._sock):
            raise _Stale
        try:
            for start in range(0, len(lines), _WINDOW):
                window = lines[start:start + _WINDOW]
                self._sock.sendall(b"".join(window))
                windows.append((first_id + start, len(window)))
                if len(windows) == 2:
                    first, size = windows.pop(0)
                    answers += [self._read_answer(first + i) for i in range(size)]
            for first, size in windows:
                answers += [self._read_answer(first + i) for i in range(size)]
        except (BrokenPipeError, ConnectionResetError):
            raise NotRunning(f"instance {self.instance} closed the connection") from None
        except TimeoutError:
            raise NotAnswering(f"instance {self.instance} did not answer within "
                               f"{self.timeout:g} s") from None
        return answers

    def _read_answer(self, req_id: int) -> Any:
        while True:
            end = self._buf.find(b"\n")
            if end >= 0:
                line = bytes(self._buf[:end])
                del self._buf[:end + 1]
                break
            chunk = self._sock.recv(1 << 16)
            if not chunk:
                raise NotRunning(f"instance {self.instance} closed the connection")
            self._buf += chunk
        try:
            rid, ok, value = protocol.decode_response(line)
        except protocol.ProtocolError as exc:
            raise SupervisorError(exc.message) from None
        if rid != req_id and (ok or rid is not None):  # (an error may name no request)
            raise SupervisorError(f"answer {rid!r} came for request {req_id}")
        return value if ok else RemoteError(*value)

    # the commands

    def ping(self) -> dict:
        return self.call("ping")

    def info(self) -> dict:
        return self.call("info")

    def create_service(self, path: str, args: list[str] | tuple = (), *,
                       name: str | None = None, restart_times: int | None = None,
                       create_stopped: bool = False, delay: float = 0,
                       cwd: str | None = None, output: str = "journal",
                       **schedule: Any) -> dict:
        """``output``: journal (default), null, inherit, or an absolute file path.
        ``schedule``: any of ``at`` (epoch seconds), ``every`` (seconds), ``cron`` (an
        expression), ``restart`` (on-failure/always/never), ``restart_delay`` (seconds),
        ``start_limit`` ("K/T"), and the service's context: ``env`` (a dict),
        ``env_file`` (an absolute path), ``user`` ("USER[:GROUP]"), ``stop_signal``
        ("TERM", 15), ``stop_timeout`` (seconds)."""
        unknown = sorted(set(schedule) - protocol.CREATE_ARGS)
        if unknown:
            raise InvalidArgument(f"create_service() got an unexpected keyword argument "
                                  f"{unknown[0]!r}")
        if cwd is None:
            try:
                cwd = os.getcwd()
            except OSError as exc:
                raise InvalidArgument(f"the current directory cannot be had "
                                      f"({exc.strerror}): give cwd") from None
        req: dict[str, Any] = {"path": path, "args": _words(args, "args"),
                               "create_stopped": create_stopped, "delay": delay,
                               "cwd": cwd, "output": output, **schedule}
        if restart_times is not None:
            req["restart_times"] = restart_times
        if name is not None:
            req["name"] = name
        return self.call("create-service", **req)

    def open_service(self, pid: int, *, name: str | None = None) -> dict:
        return self.call("open-service", pid=pid, **({"name": name} if name else {}))

    def suspend_service(self, service: str | int) -> dict:
        return self.call("suspend-service", service=service)

    def resume_service(self, service: str | int) -> dict:
        return self.call("resume-service", service=service)

    def close_service(self, service: str | int) -> dict:
        return self.call("close-service", service=service)

    def remove_service(self, service: str | int) -> dict:
        return self.call("remove-service", service=service)

    def service_status(self, service: str | int, *, usage: bool = True) -> dict:
        """The service object; ``usage=False``: its cpu_seconds, memory_bytes and tasks
        not read (null), which saves three kernel file reads."""
        return self.call("service-status", service=service, usage=usage)

    def list_supervisor(self, *, usage: bool = True) -> dict:
        """Every service; ``usage=False``: their resource usage not read (null)."""
        return self.call("list-supervisor", usage=usage)

    def supervisor_freelist(self, services: list[str | int]) -> dict:
        return self.call("supervisor-freelist", services=_words(services, "services"))

    def supervisor_cancel(self, service: str | int) -> dict:
        return self.call("supervisor-cancel", service=service)

    def stop_service(self, *services: str | int) -> dict:
        """Stop each service gracefully (its stop signal, SIGKILL after its stop timeout);
        returns ``{"instance", "services": [service objects, each with "changed"]}`` once
        they have all stopped: this waits as long as the stops take."""
        return self._waiting("stop-service", services=list(services))

    def start_service(self, *services: str | int) -> dict:
        return self._waiting("start-service", services=list(services))

    def restart_service(self, *services: str | int) -> dict:
        return self._waiting("restart-service", services=list(services))

    def signal_service(self, signal: str | int, *services: str | int) -> dict:
        return self._waiting("signal-service", services=list(services), signal=signal)

    def show_service(self, *services: str | int, usage: bool = True) -> dict:
        return self.call("show-service", services=list(services), usage=usage)

    def apply(self, *, dry_run: bool = False, prune: bool = False) -> dict:
        """Make the instance match its config file; returns ``{"instance", "dry_run",
        "changes": [{"action", "service"}], "errors"}`` once done (it waits for the
        stops of the services it replaces or removes)."""
        return self._waiting("apply", dry_run=dry_run, prune=prune)

    def export(self) -> dict:
        """``{"instance", "services": {name: table}, "skipped": [opened services]}``."""
        return self.call("export")

    def save(self) -> dict:
        """Write the created services to the instance's config file; as :meth:`export`,
        with ``"path"``."""
        return self.call("save")

    def _waiting(self, cmd: str, **args: Any) -> Any:
        """A command whose answer waits for services to stop: no time limit on the
        answer (the daemon sends SIGKILL after each one's stop timeout)."""
        self.connect()
        before = self._sock.gettimeout()
        self._sock.settimeout(None)
        try:
            return self.call(cmd, **args)
        finally:
            if self._sock is not None:
                self._sock.settimeout(before)

    def shutdown(self) -> dict:
        return self.call("shutdown")

    def reload(self) -> dict:
        """Re-execute the daemon in place; returns its info once the new program answers
        (on this same connection, which the re-exec carries over)."""
        before = self.call("reload")
        after = self.call("info")
        if after["generation"] <= before["generation"]:
            raise SupervisorError(f"instance {self.instance} did not re-execute")
        return after


# ---- instances ---------------------------------------------------------------------------


LIST_TIMEOUT = 5.0  # seconds an instance has to answer list-supervisors


def list_supervisors(runtime_dir: str | None = None) -> list[dict]:
    """Every running instance: its ``info`` answer, by instance number. One that listens
    but does not answer (hung, stopped, overloaded) is listed all the same, with
    ``"error"`` saying so and None for what only it could tell."""
    base = runtime_dir or paths.runtime_dir()
    try:
        names = os.listdir(base)
    except FileNotFoundError:
        names = []  # never made: no instance ever ran here
    except OSError as exc:  # not ours to read, not a directory: we cannot tell what runs
        raise SupervisorError(f"cannot list the instances in {base}: "
                              f"{exc.strerror or exc}") from None
    found = []
    for name in sorted(names):
        stem = name.removesuffix(".sock")
        if stem == name or not stem.isdigit() or int(stem) not in paths.INSTANCES:
            continue
        sock_path = os.path.join(base, name)
        try:
            with Client(int(stem), runtime_dir=base, timeout=LIST_TIMEOUT) as c:
                found.append(c.info())
        except SupervisorError as exc:
            if isinstance(exc, NotRunning) and not isinstance(exc, NotAnswering):
                continue  # a stale socket, or one that is going away
            found.append({"instance": int(stem), "pid": None, "services": None,
                          "started_at": None, "socket": sock_path, "error": str(exc)})
    return sorted(found, key=lambda i: i["instance"])


def init(instance: int, *, runtime_dir: str | None = None,
         timeout: float = START_TIMEOUT) -> tuple[dict, bool]:
    """Make sure ``instance`` runs: (its info, whether this call started it)."""
    instance = _instance(instance)
    try:
        with Client(instance, runtime_dir=runtime_dir, timeout=5) as c:
            info = c.info()
    except NotRunning:
        pass
    else:
        if info.get("stopping"):  # it would refuse every command but a read
            raise SupervisorError(f"instance {instance} (pid {info['pid']}) is closing: run "
                                  "init again once it has closed")
        return info, False
    ours = None
    if systemd_units_usable(runtime_dir):
        _systemctl("start", f"supervisor@{instance}.socket")
    else:
        ours = start_daemon(instance, runtime_dir=runtime_dir, timeout=timeout)
    with Client(instance, runtime_dir=runtime_dir, timeout=timeout) as c:
        info = c.info()  # under systemd this first request activates the daemon
    # another init that raced this one may have started it (ours then found it running)
    return info, ours is None or info.get("pid") == ours


UNIT_DIRS = ("/etc/systemd/system", "/run/systemd/system", "/usr/local/lib/systemd/system",
             "/usr/lib/systemd/system", "/lib/systemd/system")


def systemd_units_usable(runtime_dir: str | None = None, *, booted: str = "/run/systemd/system",
                         unit_dirs: tuple[str, ...] = UNIT_DIRS) -> bool:
    """Whether `init` should go through systemd: PID 1 is systemd (``booted`` exists), the
    ``supervisor@.socket`` unit is installed, and the instance uses the unit's socket
    directory (/run/supervisor)."""
    if not os.path.isdir(booted):
        return False
    if (runtime_dir or paths.runtime_dir()) != "/run/supervisor":
        return False
    return any(os.path.exists(os.path.join(d, "supervisor@.socket")) for d in unit_dirs)


def _systemctl(*args: str) -> None:
    import subprocess

    try:
        result = subprocess.run(["systemctl", *args], capture_output=True, text=True,
                                timeout=START_TIMEOUT)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise SupervisorError(f"systemctl {' '.join(args)} failed: {exc}") from None
    if result.returncode != 0:
        why = (result.stderr.strip().splitlines() or ["no reason given"])[-1]
        raise SupervisorError(f"systemctl {' '.join(args)} failed: {why}")


def start_daemon(instance: int, *, runtime_dir: str | None = None,
                 timeout: float = START_TIMEOUT) -> int:
    """Start the daemon of ``instance`` detached (its own session, stdin on /dev/null,
    output appended to ``<runtime dir>/<N>.log``) and wait until it reports READY=1 on a
    notify socket of ours. Returns its pid."""
    instance = _instance(instance)
    import contextlib
    import selectors
    import signal
    import socket
    import stat
    import sys

    from supervisor import process

    if runtime_dir:
        os.environ["SUPERVISOR_RUNTIME_DIR"] = runtime_dir
    try:
        base = paths.ensure_runtime_dir()
    except paths.UnsafeDir as exc:
        raise SupervisorError(f"{exc}; not starting a daemon there") from None
    notify_path = os.path.join(base, f".init-{instance}-{os.getpid()}.notify")
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
    log_fd = -1
    proc = None
    try:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(notify_path)
        notify.bind(notify_path)
        log_fd = os.open(paths.log_path(instance, base), os.O_WRONLY | os.O_APPEND
                         | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW | os.O_NONBLOCK, 0o600)
        if not stat.S_ISREG(os.fstat(log_fd).st_mode):  # a FIFO there would block it
            raise SupervisorError(f"{paths.log_path(instance, base)} is not a regular file")
        os.set_blocking(log_fd, True)
        log_start = os.lseek(log_fd, 0, os.SEEK_END)
        env = {**os.environ, "NOTIFY_SOCKET": notify_path, "SUPERVISOR_RUNTIME_DIR": base}
        if env.get("SUPERVISOR_CONFIG_DIR"):  # relative to us, not to the daemon's "/"
            env["SUPERVISOR_CONFIG_DIR"] = os.path.abspath(env["SUPERVISOR_CONFIG_DIR"])
        for key in ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"):
            env.pop(key, None)
        argv = [sys.executable, "-m", "supervisor.daemon", "--instance", str(instance)]
        proc = process.spawn(argv, env=env, stdout=log_fd, stderr=log_fd)
        deadline = time.monotonic() + timeout
        with selectors.DefaultSelector() as sel:
            sel.register(notify, selectors.EVENT_READ, "notify")
            sel.register(proc, selectors.EVENT_READ, "exit")
            while True:
                left = deadline - time.monotonic()
                if left <= 0:
                    process.send(proc, signal.SIGTERM)
                    raise SupervisorError(f"instance {instance} did not become ready within "
                                          f"{timeout:g} s (see {paths.log_path(instance, base)})")
                events = sel.select(left)
                if any(key.data == "notify" for key, _ in events):
                    msg = notify.recv(4096).decode(errors="replace")
                    if "READY=1" in msg.split("\n"):
                        return proc.pid
                elif events:
                    code, sig = process.reap(proc)
                    why = _log_tail(paths.log_path(instance, base), log_start)
                    if code == 1 and "already running" in why:
                        return proc.pid  # another `init` won the race: fine
                    raise SupervisorError(f"instance {instance} failed to start: "
                                          f"{why or f'exit code {code}, signal {sig}'}")
    except OSError as exc:
        raise SupervisorError(f"cannot start instance {instance}: {exc.strerror or exc}") \
            from None
    finally:
        notify.close()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(notify_path)
        if log_fd >= 0:
            os.close(log_fd)
        if proc is not None:
            proc.close()


def _log_tail(path: str, start: int) -> str:
    try:
        with open(path, "rb") as f:
            f.seek(start)
            lines = f.read().decode(errors="replace").strip().splitlines()
    except OSError:
        return ""
    return lines[-1] if lines else ""


def close_instance(instance: int, *, runtime_dir: str | None = None,
                   timeout: float | None = None) -> dict:
    """Shut ``instance`` down and wait until its daemon has exited."""
    instance = _instance(instance)
    import selectors

    from supervisor import process

    with Client(instance, runtime_dir=runtime_dir) as c:
        answer = c.shutdown()
    # every stop under way ends by its SIGKILL, the longest of them after "longest_stop"
    longest = answer.get("longest_stop", answer.get("grace", 5))
    wait = timeout if timeout is not None else longest + START_TIMEOUT
    try:
        proc = process.open_pid(answer["pid"])
    except ProcessLookupError:
        return answer
    try:
        with selectors.DefaultSelector() as sel:
            sel.register(proc, selectors.EVENT_READ)
            if not sel.select(wait):
                raise SupervisorError(f"instance {instance} (pid {answer['pid']}) did not exit "
                                      f"within {wait:g} s")
    finally:
        proc.close()
    return answer


__all__ = ["Client", "InvalidArgument", "NotAnswering", "NotRunning", "RemoteError",
           "SupervisorError", "close_instance", "init", "list_supervisors", "start_daemon"]
