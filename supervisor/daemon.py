"""supervisor-daemon: runs one supervisor instance in the foreground.

Usage:
  supervisor-daemon [-i N] [--grace S] [--reexec-fd FD]
  supervisor-daemon (-h | --help)

Options:
  -i N, --instance N  The instance to run, 0 to 99 [default: 0].
  --grace S           Seconds between SIGTERM and SIGKILL for the services it created
                      when the instance closes [default: 5].
  --reexec-fd FD      Internal: the state a live re-exec hands over.
  -h, --help          Show this text.

Signals: SIGTERM and SIGINT close the instance (as `supervisor close` does); SIGHUP
re-executes the daemon in place (as `supervisor reload` does). `supervisor init` is what
starts it detached.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import fcntl
import functools
import json
import math
import os
import re
import resource
import selectors
import signal
import socket
import sys
import time
import traceback

from supervisor import machine, output, paths, process, protocol, schedule, state
from supervisor.control import Connection, Server, bind_listener
from supervisor.journal import Journal
from supervisor.machine import Ev, Event, Refused, State
from supervisor.native import CLOCK_BOOTTIME, CLOCK_REALTIME, SignalFd
from supervisor.output import Outputs
from supervisor.sdnotify import Notifier, activated_listener
from supervisor.timers import Timers

HANDLED_SIGNALS = (signal.SIGCHLD, signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
_NAME_RE = re.compile(r"[A-Za-z0-9_.@:+-]{1,128}")


class CommandError(Exception):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def service_object(svc: machine.Service) -> dict:
    """The service object of the spec's ``--json`` output (stable keys)."""
    return {
        "name": svc.name,
        "pid": svc.pid if svc.state is not State.PENDING else None,
        "status": svc.status,
        "restarts": svc.restarts,
        "exit_code": svc.exit_code,
        "signal": _signal_name(svc.signal),
        "started_at": svc.started_at,
        "next_start": svc.next_start if svc.state is State.PENDING or (
            svc.schedule is not None and svc.schedule.repeats) else None,
        "command": list(svc.command),
        "opened": svc.opened,
    }


def _signal_name(signo: int | None) -> str | None:
    if signo is None:
        return None
    try:
        return signal.Signals(signo).name
    except ValueError:
        return str(signo)


class Daemon:
    def __init__(self, instance: int, listener: socket.socket, *, socket_path: str,
                 rundir: str, grace: float = 5.0) -> None:
        self.instance = instance
        self.socket_path = socket_path
        self.grace = grace
        self.started_at = time.time()
        self.journal = Journal(instance)
        self.sel = selectors.DefaultSelector()
        self.sigfd = SignalFd(HANDLED_SIGNALS)
        self.sel.register(self.sigfd, selectors.EVENT_READ, self._on_signal)
        self.timers = Timers(self.sel, CLOCK_BOOTTIME)  # delays, intervals, back-off
        self.wall_timers = Timers(self.sel, CLOCK_REALTIME, cancel_on_set=True,
                                  on_clock_change=self._clock_changed)  # --at, --cron
        self.server = Server(self.sel, listener, self._handle_line, self._too_large)
        self.services: dict[str, machine.Service] = {}
        self.by_pid: dict[int, str] = {}  # every pid a service has had -> its name
        self.procs: dict[str, process.Proc] = {}  # the watched process of each service
        self.children: dict[int, process.Proc] = {}  # live children by pid (stop/continue)
        self.timer_of: dict[str, object] = {}
        self._suffix: dict[str, int] = {}  # the last -N given to a default name
        self._json_cache: dict[str, tuple] = {}  # name -> (service, ticks, its JSON)
        self.env = process.child_env()
        self.outputs = Outputs(instance, rundir, self.sel, self.env, self._log_relay)
        self.cgroups = process.Cgroups.create(instance)
        self._queue: collections.deque = collections.deque()
        self._feeding = False
        self.stopping = False
        self.done = False
        self.counts: collections.Counter[State] = collections.Counter()  # services by state
        self._counts_changed = False
        self.state_path = paths.state_path(instance, rundir)
        self._dirty = False  # services changed since the state file was written
        self.notifier = Notifier()
        if self.notifier.watchdog_interval:
            self._watchdog()
        self._grace_timer = None
        self._handlers = {
            "ping": self.cmd_ping,
            "info": self.cmd_info,
            "create-service": self.cmd_create,
            "open-service": self.cmd_open,
            "suspend-service": self._command(Ev.SUSPEND),
            "resume-service": self._command(Ev.RESUME),
            "close-service": self._command(Ev.KILL),
            "remove-service": self.cmd_remove,
            "service-status": self.cmd_status,
            "list-supervisor": self.cmd_list,
            "supervisor-freelist": self.cmd_freelist,
            "supervisor-cancel": self.cmd_cancel,
            "shutdown": self.cmd_shutdown,
            "reload": self.cmd_reload,
        }
        self.generation = 0  # how many times this daemon re-executed itself
        self.lock_fd = -1
        self.owns_socket = True
        self._reexec_requested = False

    # ---- the loop ------------------------------------------------------------------------

    def run(self) -> None:
        self.journal.send(f"instance {self.instance} serving on {self.socket_path}",
                          SUPERVISOR_EVENT="daemon-started")
        self.notifier.ready(self.status_line())
        select = self.sel.select
        while not self.done:
            self._end_of_turn()
            for key, mask in select(0 if self.server.pending else None):
                try:
                    key.data(mask)
                except Exception as exc:  # a bug must cost one event, never the daemon
                    self.journal.send(f"internal error handling fd {key.fd}: {exc!r}\n"
                                      f"{traceback.format_exc()}", 2,
                                      SUPERVISOR_EVENT="internal-error")
        self._end_of_turn()

    def _end_of_turn(self) -> None:
        """After each turn of the loop: save the state if services changed, then send the
        answers (so a client is told only what is on disk), then tell the manager."""
        if self._dirty:
            self.save_state()
        self.server.flush_pending()
        if self._counts_changed:
            self._counts_changed = False
            self.notifier.status(self.status_line())
        self.journal.flush()
        if self._reexec_requested:
            self._reexec_requested = False
            self.reexec()

    def status_line(self) -> str:
        """The STATUS= text for the service manager: counts by status."""
        if self.stopping:
            return "closing"
        by_status = collections.Counter()
        for st, n in self.counts.items():
            by_status[st.status] += n
        parts = [f"{n} {status}" for status, n in sorted(by_status.items()) if n]
        total = sum(by_status.values())
        return f"{total} services" + (f": {', '.join(parts)}" if parts else "")

    # ---- state on disk --------------------------------------------------------------------

    def snapshot(self) -> dict:
        services = []
        for svc in self.services.values():
            entry = state.service_to_dict(svc)
            proc = self.procs.get(svc.name)
            if proc is not None and proc.ticks is None:
                proc.ticks = state.start_ticks(proc.pid)  # after the spawn, off its path
            entry["start_ticks"] = proc.ticks if proc is not None else None
            services.append(entry)
        return {"version": state.VERSION, "instance": self.instance,
                "started_at": self.started_at, "services": services,
                "cgroups": self.cgroups.base if self.cgroups else None}

    def save_state(self) -> None:
        """Write the state file. Each service's JSON is cached until the service changes
        (services are immutable values), so a turn that touched one service of 10,000
        encodes one, not 10,000."""
        self._dirty = False
        cache, fresh = self._json_cache, {}
        parts = []
        for name, svc in self.services.items():
            proc = self.procs.get(name)
            if proc is not None and proc.ticks is None:
                proc.ticks = state.start_ticks(proc.pid)
            ticks = proc.ticks if proc is not None else None
            hit = cache.get(name)
            if hit is None or hit[0] is not svc or hit[1] != ticks:
                entry = state.service_to_dict(svc)
                entry["start_ticks"] = ticks
                hit = (svc, ticks, json.dumps(entry, separators=(",", ":")))
            fresh[name] = hit
            parts.append(hit[2])
        self._json_cache = fresh
        head = json.dumps({"version": state.VERSION, "instance": self.instance,
                           "started_at": self.started_at,
                           "cgroups": self.cgroups.base if self.cgroups else None})
        data = f'{head[:-1]},"services":[{",".join(parts)}]}}'.encode()
        try:
            state.dump(self.state_path, data)
        except OSError as exc:
            self.journal.send(f"cannot write {self.state_path}: {exc.strerror}", 3,
                              SUPERVISOR_EVENT="state-error")

    def recover(self, doc: dict) -> None:
        """After a crash of the previous daemon: take its services back. Living processes
        are re-adopted through a new pidfd, but only when their start time matches (a
        reused pid is never taken for ours); those that died meanwhile are reported as
        ended (and restarted where their policy says); PENDING ones keep their due time."""
        ended = []
        old_tree = doc.get("cgroups")
        if old_tree and os.path.isdir(old_tree):  # the services' cgroups are still there
            with contextlib.suppress(OSError):
                tree = process.Cgroups(old_tree)
                if self.cgroups:
                    self.cgroups.close()
                self.cgroups = tree
        for entry in doc.get("services", []):
            try:
                svc = state.service_from_dict(entry)
            except (KeyError, TypeError, ValueError):
                continue
            if svc.state is State.STOPPING:
                svc = dataclasses.replace(svc, state=State.RUNNING)
            for pid in svc.pids:
                self.by_pid[pid] = svc.name
            self.services[svc.name] = svc
            self.counts[svc.state] += 1
            if svc.state is State.PENDING:
                self.services[svc.name] = self._rearm(svc)
            elif svc.alive:
                ticks = entry.get("start_ticks")
                proc = None
                if ticks is not None and state.start_ticks(svc.pid) == ticks:
                    try:
                        proc = process.open_pid(svc.pid)
                    except OSError:
                        proc = None
                if proc is None or state.start_ticks(svc.pid) != ticks:
                    if proc is not None:
                        proc.close()
                    ended.append(svc.name)
                    continue
                proc.owner, proc.ticks = svc.name, ticks
                if not svc.opened and self.cgroups:
                    proc.cgroup = svc.name
                self.procs[svc.name] = proc
                self._watch(proc)
                self.services[svc.name] = svc = self._rearm(svc)
                self._log_event(svc, "recovered", f"{svc.name} (pid {svc.pid}) re-adopted "
                                "after a daemon restart", 5)
                self._refresh(svc.name)
        for name in ended:  # died while no daemon watched: not knowable how
            self.feed(name, Event(Ev.EXITED))
        self._counts_changed = self._dirty = True
        self.journal.send(f"recovered {len(self.services)} services "
                          f"({len(self.procs)} re-adopted, {len(ended)} ended meanwhile)", 5,
                          SUPERVISOR_EVENT="recovered")

    # ---- live re-exec -----------------------------------------------------------------------

    def reexec(self) -> None:
        """Execute the daemon's program afresh in this very process: same pid, so created
        services stay our children. Carried across exec (their CLOEXEC flag cleared): the
        lock, the listening socket, every pidfd, every client connection with what it had
        buffered, the log relay's socket; the rest (services, timers) goes in a memfd."""
        doc = self.snapshot()
        doc["generation"] = self.generation + 1
        doc["lock_fd"] = self.lock_fd
        doc["listener_fd"] = self.server.listener.fileno()
        doc["socket_path"] = self.socket_path
        doc["owns_socket"] = self.owns_socket
        doc["procs"] = {name: {"fd": p.pidfd, "pid": p.pid, "child": p.child,
                               "cgroup": p.cgroup} for name, p in self.procs.items()}
        doc["orphans"] = [{"fd": p.pidfd, "pid": p.pid, "cgroup": p.cgroup}
                          for p in self.children.values() if p.owner is None]
        doc["connections"] = [{"fd": c.sock.fileno(), "rbuf": bytes(c.rbuf).hex(),
                               "wbuf": bytes(c.wbuf).hex(), "closing": c.closing}
                              for c in self.server.connections if c.discard < 0]
        doc["relay"] = self.outputs.carry()
        fds = [self.lock_fd, doc["listener_fd"], *(p["fd"] for p in doc["procs"].values()),
               *(o["fd"] for o in doc["orphans"]), *(c["fd"] for c in doc["connections"]),
               *((doc["relay"]["pidfd"], doc["relay"]["control"]) if doc["relay"] else ())]
        memfd = os.memfd_create("supervisor-state", 0)
        os.write(memfd, json.dumps(doc).encode())
        os.lseek(memfd, 0, os.SEEK_SET)
        for fd in (*fds, memfd):
            os.set_inheritable(fd, True)
        self.journal.send(f"re-executing (generation {doc['generation']}, "
                          f"{len(self.services)} services)", 5, SUPERVISOR_EVENT="reexec")
        self.journal.flush()
        argv = [sys.executable, "-m", "supervisor.daemon", "--instance", str(self.instance),
                "--grace", repr(self.grace), "--reexec-fd", str(memfd)]
        try:
            os.execv(sys.executable, argv)
        except OSError as exc:  # still the old program: carry on as if nothing happened
            for fd in fds:
                os.set_inheritable(fd, False)
            os.close(memfd)
            self.journal.send(f"re-exec failed: {exc.strerror}; still serving", 3,
                              SUPERVISOR_EVENT="reexec")

    def restore(self, doc: dict) -> None:
        """The other half of :meth:`reexec`, in the new program."""
        self.generation = doc["generation"]
        self.started_at = doc["started_at"]
        procs = doc.get("procs", {})
        for entry in doc["services"]:
            svc = state.service_from_dict(entry)
            for pid in svc.pids:
                self.by_pid[pid] = svc.name
            carried = procs.get(svc.name)
            if carried is not None:
                os.set_inheritable(carried["fd"], False)
                proc = process.Proc(carried["pid"], carried["fd"], carried["child"])
                proc.owner, proc.ticks = svc.name, entry.get("start_ticks")
                proc.cgroup = carried.get("cgroup")
                self._watch(proc)
                self.procs[svc.name] = proc
            self.services[svc.name] = svc
            svc = self.services[svc.name] = self._rearm(svc)
            self.counts[svc.state] += 1
        for orphan in doc.get("orphans", []):
            os.set_inheritable(orphan["fd"], False)
            proc = process.Proc(orphan["pid"], orphan["fd"], True)
            proc.cgroup = orphan.get("cgroup")
            self._watch(proc)
        for c in doc.get("connections", []):
            os.set_inheritable(c["fd"], False)
            self.server.adopt(socket.socket(fileno=c["fd"]), bytes.fromhex(c["rbuf"]),
                              bytes.fromhex(c["wbuf"]), c["closing"])
        self.outputs.restore(doc.get("relay"))
        self._counts_changed = True
        self.journal.send(f"re-executed (generation {self.generation}): {len(self.services)} "
                          "services carried over", 5, SUPERVISOR_EVENT="reexec")

    def _watch(self, proc: process.Proc) -> None:
        if proc.child:
            self.children[proc.pid] = proc
        self.sel.register(proc, selectors.EVENT_READ,
                          functools.partial(self._on_exit_event, proc))

    def _on_exit_event(self, proc: process.Proc, mask: int) -> None:
        self._on_exit(proc)

    def _watchdog(self) -> None:
        self.notifier.watchdog()
        self.timers.call_at(self.timers.now() + self.notifier.watchdog_interval,
                            self._watchdog)

    def close(self) -> None:
        for proc in list(self.procs.values()) + list(self.children.values()):
            if proc.pidfd >= 0:
                self.sel.unregister(proc)
                proc.close()
        self.server.close()
        self.outputs.close()
        if self.cgroups:
            self.cgroups.close()
        self.timers.close()
        self.wall_timers.close()
        self.sel.unregister(self.sigfd)
        self.sigfd.close()
        self.sel.close()

    # ---- the state machine and its effects -----------------------------------------------

    def feed(self, name: str, event: Event) -> None:
        """Step ``name``'s machine with ``event`` and carry out the effects, in order.
        Events raised while effects run (a spawn's result) are queued, not nested."""
        self._queue.append((name, event))
        if self._feeding:
            return
        self._feeding = True
        try:
            while self._queue:
                name, event = self._queue.popleft()
                svc = self.services.get(name)
                if svc is None:
                    continue
                new, effects = machine.step(svc, event, time.time(), self.timers.now())
                self._commit(new, effects)
        finally:
            self._feeding = False

    def command(self, name: str, kind: Ev) -> machine.Service:
        """Apply a user command; raises CommandError(bad-state) when refused."""
        svc = self.services[name]
        try:
            new, effects = machine.step(svc, Event(kind), time.time(), self.timers.now())
        except Refused as exc:
            raise CommandError(exc.code, str(exc)) from None
        self._commit(new, effects)
        return new

    def _commit(self, svc: machine.Service, effects: list) -> None:
        old = self.services.get(svc.name)
        if old is None or old.state is not svc.state:
            if old is not None:
                self.counts[old.state] -= 1
            self.counts[svc.state] += 1
            self._counts_changed = True
        self.services[svc.name] = svc
        self._dirty = True
        for effect in effects:
            match effect:
                case machine.Spawn(stopped=stopped):
                    self._spawn(svc, stopped)
                case machine.Signal(signo=signo):
                    proc = self.procs.get(svc.name)
                    if proc is not None:  # created services lead their process group
                        process.send(proc, signo, group=not svc.opened)
                    if signo == signal.SIGKILL and not svc.opened and self.cgroups:
                        self.cgroups.kill(svc.name)  # and whatever escaped the group
                case machine.ArmTimer(due=due, wall=wall):
                    self._arm(svc.name, due, wall)
                case machine.CancelTimer():
                    self._cancel_timer(svc.name)
                case machine.Forget():
                    self._forget(svc)
                case machine.Log(event=what, message=message, priority=priority):
                    self._log_event(svc, what, message, priority)

    def _due(self, name: str) -> None:
        self.timer_of.pop(name, None)
        self.feed(name, Event(Ev.DUE))

    def _arm(self, name: str, due: float, wall: bool) -> None:
        self._cancel_timer(name)
        timers = self.wall_timers if wall else self.timers
        self.timer_of[name] = (timers, timers.call_at(due, functools.partial(self._due, name)))

    def _cancel_timer(self, name: str) -> None:
        armed = self.timer_of.pop(name, None)
        if armed is not None:
            armed[0].cancel(armed[1])

    def _clock_changed(self) -> None:
        self.journal.send("the wall clock was set: calendar schedules re-armed", 5,
                          SUPERVISOR_EVENT="clock-changed")
        for name in list(self.services):
            self.feed(name, Event(Ev.CLOCK_CHANGED))

    def _rearm(self, svc: machine.Service) -> machine.Service:
        """After a restart or re-exec: arm the timer a service waits on (``due`` is on a
        clock of this boot, so it is derived again from the wall-clock ``next_start``)."""
        waits = svc.state is State.PENDING or (
            svc.schedule is not None and svc.schedule.repeats and svc.alive)
        if not waits or (svc.state is not State.PENDING and svc.next_start is None):
            return svc
        now, mono = time.time(), self.timers.now()
        start = svc.next_start if svc.next_start is not None else now
        wall = svc.schedule is not None and svc.schedule.wall
        if svc.schedule is not None and svc.schedule.kind == "cron" and start < now:
            start = svc.schedule.next_after(now) if svc.alive else now
        due = start if wall else mono + max(0.0, start - now)
        self._arm(svc.name, due, wall)
        return dataclasses.replace(svc, due=due)

    def _spawn(self, svc: machine.Service, stopped: bool) -> None:
        proc = None
        in_cgroup = False
        try:
            handoff = self.outputs.prepare(svc.name, svc.output)
            try:
                with (self.cgroups.spawning_in(svc.name) if self.cgroups
                      else contextlib.nullcontext(False)) as in_cgroup:
                    proc = process.spawn(list(svc.command), env=self.env, stopped=stopped,
                                         cwd=svc.cwd, stdout=handoff.fd, stderr=handoff.fd)
            finally:
                self.outputs.done(handoff, svc.name, proc.pid if proc else None)
        except OSError as exc:
            self.feed(svc.name, Event(Ev.SPAWN_FAILED, error=f"{svc.command[0]}: "
                                      f"{exc.strerror or exc}"))
            return
        proc.owner = svc.name  # its start time is read when the state is next saved
        if in_cgroup:
            proc.cgroup = svc.name
        self.procs[svc.name] = proc
        self.by_pid[proc.pid] = svc.name
        self._watch(proc)
        self.feed(svc.name, Event(Ev.SPAWNED, pid=proc.pid, stopped=stopped))

    def _on_exit(self, proc: process.Proc) -> None:
        """A pidfd is readable: unregister, reap, close, then report."""
        self.sel.unregister(proc)
        code, signo = process.reap(proc)
        proc.close()
        self.children.pop(proc.pid, None)
        if proc.cgroup and self.cgroups:
            # as systemd does: once the main process is gone, what it left behind goes too
            self.cgroups.kill(proc.cgroup)
            if proc.owner is None:
                self.cgroups.remove(proc.cgroup)
        name = proc.owner
        if name is not None and self.procs.get(name) is proc:
            del self.procs[name]
            self.feed(name, Event(Ev.EXITED, pid=proc.pid, code=code, signal=signo))
        if self.stopping:
            self._maybe_finish()

    def _forget(self, svc: machine.Service) -> None:
        stored = self.services.pop(svc.name, None)
        if stored is not None:
            self.counts[stored.state] -= 1
            self._counts_changed = True
            self._dirty = True
        self._cancel_timer(svc.name)
        for pid in svc.pids:
            if self.by_pid.get(pid) == svc.name:
                del self.by_pid[pid]
        proc = self.procs.pop(svc.name, None)
        if proc is None and self.cgroups and not svc.opened:
            self.cgroups.remove(svc.name)
        if proc is not None:
            proc.owner = None
            if not proc.child:  # released: we only stop watching it
                self.sel.unregister(proc)
                proc.close()
            # a child stays watched until it is reaped, so it never lingers as a zombie

    def _log_relay(self, message: str, priority: int) -> None:
        self.journal.send(message, priority, SUPERVISOR_EVENT="log-relay")

    def _log_event(self, svc: machine.Service, what: str, message: str, priority: int) -> None:
        self.journal.send(
            message, priority, SUPERVISOR_EVENT=what, SERVICE_NAME=svc.name,
            SERVICE_PID=svc.pid, SERVICE_STATUS=svc.status, EXIT_CODE=svc.exit_code,
            EXIT_SIGNAL=_signal_name(svc.signal), SERVICE_RESTARTS=svc.restarts,
            SERVICE_OPENED=int(svc.opened))

    # ---- signals -------------------------------------------------------------------------

    def _on_signal(self, mask: int) -> None:
        for info in self.sigfd.read():
            if info.signo == signal.SIGCHLD:
                continue  # drained below, once for however many records coalesced
            if info.signo in (signal.SIGTERM, signal.SIGINT):
                self.journal.send(f"{signal.Signals(info.signo).name} from pid {info.pid}: "
                                  "closing the instance", 5, SUPERVISOR_EVENT="signal")
                self.shutdown()
            elif info.signo == signal.SIGHUP:
                self.journal.send(f"SIGHUP from pid {info.pid}: re-executing", 5,
                                  SUPERVISOR_EVENT="signal")
                self._reexec_requested = not self.stopping
        for pid, stopped in process.stop_continue_reports():
            proc = self.children.get(pid)
            if proc is not None and proc.owner is not None:
                self.feed(proc.owner, Event(Ev.STOPPED_SEEN if stopped else Ev.CONTINUED_SEEN,
                                            pid=pid))

    # ---- shutdown ------------------------------------------------------------------------

    def shutdown(self) -> int:
        """Close the instance: SIGTERM created services, release opened ones, then exit."""
        if not self.stopping:
            self.stopping = True
            self.notifier.stopping()
            for name in list(self.services):
                self.command(name, Ev.TERMINATE)
            if self.counts[State.STOPPING]:
                self._grace_timer = self.timers.call_at(self.timers.now() + self.grace,
                                                        self._grace_expired)
        self._maybe_finish()
        return self.counts[State.STOPPING]

    def _grace_expired(self) -> None:
        self._grace_timer = None
        for name in list(self.services):
            self.feed(name, Event(Ev.GRACE_EXPIRED))

    def _maybe_finish(self) -> None:
        if self.counts[State.STOPPING]:
            return
        if self.children:  # killed or removed ones not reaped yet
            return
        self.done = True

    # ---- requests ------------------------------------------------------------------------

    def _too_large(self, size: int) -> bytes:
        self.journal.send(f"request of over {size} bytes refused", 4,
                          SUPERVISOR_COMMAND="?", ERROR_CODE="request-too-large")
        return protocol.encode_error(None, "request-too-large",
                                     "request is over 1 MiB; connection closed")

    def _handle_line(self, line: bytes, conn: Connection) -> bytes:
        peer = conn.peer
        try:
            req = protocol.decode_request(line)
        except protocol.ProtocolError as exc:
            self.journal.send(f"bad request from pid {peer.pid}: {exc.message}", 4,
                              SUPERVISOR_COMMAND="?", ERROR_CODE=exc.code,
                              PEER_PID=peer.pid, PEER_UID=peer.uid)
            return protocol.encode_error(exc.req_id, exc.code, exc.message)
        try:
            if peer.uid not in (0, os.getuid()):
                raise CommandError("permission-denied",
                                   f"uid {peer.uid} may not command this supervisor")
            if self.stopping and req.cmd not in ("ping", "info", "service-status",
                                                 "list-supervisor", "shutdown"):
                raise CommandError("shutting-down",
                                   f"instance {self.instance} is shutting down")
            result = self._handlers[req.cmd](req.args)
        except CommandError as exc:
            ref = req.args.get("service")
            named = self.services.get(str(ref))
            if named is None and _as_pid(ref) is not None:
                named = self.services.get(self.by_pid.get(_as_pid(ref), ""))
            fields = ({"SERVICE_NAME": named.name, "SERVICE_PID": named.pid,
                       "SERVICE_STATUS": named.status} if named else {})
            self._log_command(req, peer, exc.message, 4, ERROR_CODE=exc.code, **fields)
            return protocol.encode_error(req.id, exc.code, exc.message)
        except Exception as exc:  # a bug must not take the daemon down
            self.journal.send(f"internal error in {req.cmd}: {exc!r}\n"
                              f"{traceback.format_exc()}", 2, SUPERVISOR_COMMAND=req.cmd,
                              ERROR_CODE="internal")
            return protocol.encode_error(req.id, "internal",
                                         f"{req.cmd} failed inside the daemon: {exc}")
        if req.cmd not in ("ping", "info"):
            svc = result if isinstance(result, dict) and "status" in result else {}
            self._log_command(req, peer, f"ok{': ' + svc['name'] if svc else ''}", 6,
                              SERVICE_NAME=svc.get("name"), SERVICE_PID=svc.get("pid"),
                              SERVICE_STATUS=svc.get("status"))
        return protocol.encode_result(req.id, result)

    def _log_command(self, req, peer, answer: str, priority: int, **fields) -> None:
        self.journal.send(f"{req.cmd} {_brief(req.args)} -> {answer}", priority,
                          SUPERVISOR_COMMAND=req.cmd, PEER_PID=peer.pid, PEER_UID=peer.uid,
                          **fields)

    # argument helpers

    def _resolve(self, ref) -> str:
        """A service's name from a name or any pid it has had."""
        if isinstance(ref, bool) or not isinstance(ref, (str, int)):
            raise CommandError("invalid-argument", "a service is named by a name or a pid")
        text = str(ref)
        if text in self.services:
            return text
        pid = _as_pid(ref)
        if pid is not None and pid in self.by_pid:
            return self.by_pid[pid]
        raise CommandError("no-such-service",
                           f"no service {text!r} in instance {self.instance}")

    def _refresh(self, name: str) -> machine.Service:
        """Opened processes' stop/continue is read from /proc when asked."""
        svc = self.services[name]
        proc = self.procs.get(name)
        if proc is not None and not proc.child and svc.state in (State.RUNNING, State.STOPPED):
            stopped = process.is_stopped(svc.pid)
            if stopped is not None:
                self.feed(name, Event(Ev.STOPPED_SEEN if stopped else Ev.CONTINUED_SEEN))
        return self.services[name]

    # commands

    def cmd_ping(self, args) -> dict:
        return {"pid": os.getpid(), "instance": self.instance}

    def cmd_info(self, args) -> dict:
        return {"instance": self.instance, "pid": os.getpid(), "socket": self.socket_path,
                "services": len(self.services), "started_at": self.started_at,
                "stopping": self.stopping, "generation": self.generation}

    def cmd_create(self, args) -> dict:
        path = _arg(args, "path", str)
        argv_rest = _arg(args, "args", list, [])
        if not all(isinstance(a, str) for a in argv_rest):
            raise CommandError("invalid-argument", "args must be a list of strings")
        if "\0" in path or any("\0" in a for a in argv_rest):
            raise CommandError("invalid-argument", "arguments may not contain NUL bytes")
        restart = _arg(args, "restart_times", int, None)
        if restart is not None and restart < 0:
            raise CommandError("invalid-argument", f"restart times must be >= 0, not {restart}")
        delay = _number_arg(args, "delay", 0)
        sched, policy, limit = self._schedule_and_policy(args, restart, delay)
        stopped = _arg(args, "create_stopped", bool, False)
        out = _arg(args, "output", str, "journal")
        why = output.check(out)
        if why is not None:
            raise CommandError("invalid-argument", why)
        cwd = _arg(args, "cwd", str, "/")
        if not os.path.isdir(cwd):
            cwd = "/"
        why = process.check_executable(path, deferred=stopped)
        if why is not None:
            raise CommandError("not-executable", why)
        name = _arg(args, "name", str, None)
        if name is None:
            name = self._unique_name(os.path.basename(path))
        else:
            _check_name(name)
            if name in self.services:
                raise CommandError("name-taken", f"a service named {name!r} exists already")
        svc, effects = machine.new_created(
            name, (path, *argv_rest), restart_limit=policy.limit, create_stopped=stopped,
            delay=float(delay), cwd=cwd, output=out, schedule=sched,
            restart_mode=policy.mode, restart_delay=policy.delay,
            restart_max_delay=policy.max_delay, start_limit=limit, now=time.time(),
            mono=self.timers.now())
        try:
            self._commit(svc, effects)
        except Exception:
            self._forget(self.services.get(name, svc))  # leave nothing half-made behind
            raise
        svc = self.services[name]
        if svc.state is State.CRASHED and not svc.pids:
            # it never ran: leave nothing half-made behind
            self._forget(svc)
            raise CommandError("spawn-failed", f"cannot start {svc.error}")
        return service_object(svc)

    def _schedule_and_policy(self, args: dict, restart: int | None, delay: float):
        """The schedule, restart policy and start limit a create-service asks for."""
        at = _number_arg(args, "at", None, most=time.time() + MAX_SECONDS)
        every = _number_arg(args, "every", None)
        cron = _arg(args, "cron", str, None)
        if sum(x is not None for x in (at, every, cron)) + (delay > 0) > 1:
            raise CommandError("invalid-argument",
                               "choose one of --delay, --at, --every and --cron")
        now, mono = time.time(), self.timers.now()
        try:
            if at is not None:
                if at <= now:
                    raise ValueError(f"--at time {at:.3f} is in the past")
                sched = schedule.Schedule.once(at)
            elif every is not None:
                if every <= 0:
                    raise ValueError(f"--every must be > 0 seconds, not {every}")
                sched = schedule.Schedule.every(every, mono, wall=False)
            elif cron is not None:
                sched = schedule.Schedule.cron(cron)
            else:
                sched = None
            policy = schedule.RestartPolicy.from_options(
                _arg(args, "restart", str, None), restart,
                delay=_number_arg(args, "restart_delay", 0),
                max_delay=_number_arg(args, "restart_max_delay", 60))
            text = _arg(args, "start_limit", str, None)
            limit = (schedule.StartLimit.parse(text) if text is not None
                     else schedule.DEFAULT_START_LIMIT if policy.limit is None else None)
        except ValueError as exc:
            raise CommandError("invalid-argument", str(exc)) from None
        return sched, policy, limit

    def _unique_name(self, base: str) -> str:
        """``base``, or ``base-2``, ``base-3``... (the next suffix is remembered, so naming
        the 10,000th service of one program costs what naming the first did)."""
        base = re.sub(r"[^A-Za-z0-9_.@:+-]", "_", base)[:100] or "service"
        if base.isascii() and base.isdigit():
            base = f"svc{base}"
        if base not in self.services:
            return base
        n = self._suffix.get(base, 1)
        while True:
            n += 1
            name = f"{base}-{n}"
            if name not in self.services:
                self._suffix[base] = n
                return name

    def cmd_open(self, args) -> dict:
        pid = _arg(args, "pid", int)
        if pid <= 0:
            raise CommandError("invalid-argument", f"pid must be a positive number, not {pid}")
        if pid in self.children or any(p.pid == pid for p in self.procs.values()):
            owner = self.by_pid.get(pid, "?")
            raise CommandError("already-supervised", f"pid {pid} is already service {owner!r}")
        why = process.why_not_adoptable(pid)
        if why is not None:
            code = "no-such-process" if why.startswith("no process") else "not-adoptable"
            raise CommandError(code, why)
        try:
            proc = process.open_pid(pid)
        except ProcessLookupError:
            raise CommandError("no-such-process", f"no process with pid {pid}") from None
        except OSError as exc:
            raise CommandError("not-adoptable", f"cannot open pid {pid}: {exc.strerror}") \
                from None
        name = _arg(args, "name", str, None)
        if name is None:
            name = self._unique_name(process.comm(pid))
        else:
            try:
                _check_name(name)
                if name in self.services:
                    raise CommandError("name-taken", f"a service named {name!r} exists already")
            except CommandError:
                proc.close()
                raise
        command = tuple(process.cmdline(pid)) or (process.comm(pid),)
        svc, effects = machine.new_opened(
            name, command, pid, stopped=bool(process.is_stopped(pid)),
            started_at=process.start_time(pid) or time.time())
        proc.owner = name
        proc.ticks = state.start_ticks(pid)
        self.procs[name] = proc
        self.by_pid[pid] = name
        self._watch(proc)
        self._commit(svc, effects)
        return service_object(self.services[name])

    def _command(self, kind: Ev):
        def handler(args) -> dict:
            name = self._resolve(args.get("service"))
            self._refresh(name)
            return service_object(self.command(name, kind))
        return handler

    def cmd_remove(self, args) -> dict:
        name = self._resolve(args.get("service"))
        svc = self._refresh(name)
        self.command(name, Ev.REMOVE)
        return {**service_object(svc), "removed": True}

    def cmd_cancel(self, args) -> dict:
        """A PENDING service is cancelled and removed; a recurring one that runs loses its
        schedule (the run goes on); anything else is refused."""
        name = self._resolve(args.get("service"))
        svc = self.services[name]
        if svc.state is not State.PENDING and (svc.schedule is None
                                               or not svc.schedule.repeats):
            raise CommandError("bad-state", f"service {name} is {svc.status}, not PENDING: "
                               "only a pending or scheduled service can be cancelled")
        after = self.command(name, Ev.CANCEL)
        removed = name not in self.services
        return {**service_object(svc if removed else after), "removed": removed}

    def cmd_status(self, args) -> dict:
        return service_object(self._refresh(self._resolve(args.get("service"))))

    def cmd_list(self, args) -> dict:
        return {"instance": self.instance,
                "services": [service_object(self._refresh(n)) for n in list(self.services)]}

    def cmd_freelist(self, args) -> dict:
        refs = _arg(args, "services", list)
        if not refs:
            raise CommandError("invalid-argument", "name at least one service")
        names = [self._resolve(ref) for ref in refs]  # all or nothing
        removed = []
        for name in dict.fromkeys(names):
            svc = self._refresh(name)
            self.command(name, Ev.REMOVE)
            removed.append({**service_object(svc), "removed": True})
        return {"instance": self.instance, "removed": removed}

    def cmd_reload(self, args) -> dict:
        self._reexec_requested = True  # after this answer is on its way
        return {"pid": os.getpid(), "instance": self.instance, "generation": self.generation}

    def cmd_shutdown(self, args) -> dict:
        stopping = self.shutdown()
        return {"pid": os.getpid(), "instance": self.instance, "stopping": stopping,
                "grace": self.grace}


def _brief(args: dict) -> str:
    text = " ".join(f"{k}={v!r}" for k, v in args.items())
    return text if len(text) <= 200 else text[:197] + "..."


def _arg(args: dict, key: str, types, default=...):
    value = args.get(key, default)
    if value is ...:
        raise CommandError("invalid-argument", f"missing argument {key!r}")
    if value is default:
        return value
    if isinstance(value, bool) and bool not in (types if isinstance(types, tuple) else (types,)):
        raise CommandError("invalid-argument", f"argument {key!r} has the wrong type")
    if not isinstance(value, types):
        raise CommandError("invalid-argument", f"argument {key!r} has the wrong type")
    return value


MAX_SECONDS = 100 * 365 * 86400  # no delay, interval or time is further away than this


def _number_arg(args: dict, key: str, default, *, most: float = MAX_SECONDS):
    value = _arg(args, key, (int, float), default)
    if value is default:
        return value
    try:
        ok = math.isfinite(value) and 0 <= value <= most
    except OverflowError:
        ok = False
    if not ok:
        raise CommandError("invalid-argument",
                           f"{key} must be a number from 0 to {most:g}, not {value!r:.40}")
    return float(value)


def _as_pid(ref) -> int | None:
    """A pid from a service reference: ASCII digits only (no superscript or fullwidth)."""
    if isinstance(ref, bool):
        return None
    if isinstance(ref, int):
        return ref if 0 < ref < 1 << 31 else None
    if isinstance(ref, str) and ref.isascii() and ref.isdigit() and len(ref) < 11:
        return int(ref)
    return None


def _check_name(name: str) -> None:
    if not _NAME_RE.fullmatch(name):
        raise CommandError("invalid-argument",
                           f"service name {name!r}: use 1-128 letters, digits and _.@:+-")
    if name.isascii() and name.isdigit():
        raise CommandError("invalid-argument",
                           f"service name {name!r} is all digits: it would read as a pid")


# ---- process start-up ----------------------------------------------------------------------


def _raise_nofile() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def serve(instance: int, grace: float = 5.0, reexec_fd: int | None = None) -> int:
    """Run instance ``instance`` until it is closed. Returns the exit code."""
    # Block the signals we read from the signalfd before anything else (no thread exists).
    SignalFd.block(HANDLED_SIGNALS)
    process.seal_inherited_fds()
    base = paths.ensure_runtime_dir()
    carried = None
    if reexec_fd is not None:  # we are a live re-exec: take over from our former self
        with os.fdopen(reexec_fd, "rb") as f:
            carried = json.load(f)
        lock_fd, sock_path = carried["lock_fd"], carried["socket_path"]
        owned = carried["owns_socket"]
        for fd in (lock_fd, carried["listener_fd"]):
            os.set_inheritable(fd, False)
        listener = socket.socket(fileno=carried["listener_fd"])
    else:
        lock_fd = os.open(paths.lock_path(instance, base),
                          os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(lock_fd)
            print(f"supervisor-daemon: instance {instance} is already running",
                  file=sys.stderr)
            return 1
        try:
            listener = activated_listener()  # socket activation: systemd passed it
        except OSError as exc:
            os.close(lock_fd)
            print(f"supervisor-daemon: {exc}", file=sys.stderr)
            return 1
        owned = listener is None
        if owned:
            sock_path = paths.socket_path(instance, base)
            try:
                listener = bind_listener(sock_path)
            except OSError as exc:
                os.close(lock_fd)
                print(f"supervisor-daemon: cannot listen on {sock_path}: {exc.strerror}",
                      file=sys.stderr)
                return 1
        else:
            sock_path = listener.getsockname() or paths.socket_path(instance, base)
        os.chdir("/")
        _raise_nofile()
    daemon = Daemon(instance, listener, socket_path=sock_path, rundir=base, grace=grace)
    daemon.lock_fd, daemon.owns_socket = lock_fd, owned
    try:
        if carried is not None:
            daemon.restore(carried)
        else:
            previous = state.load(daemon.state_path)
            if previous is not None:  # the last daemon of this instance did not close
                daemon.recover(previous)
        daemon.run()
        state.remove(daemon.state_path)  # closed on purpose: nothing to recover
    finally:
        daemon.close()
        if owned:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(sock_path)
        daemon.journal.send(f"instance {instance} closed", 5, SUPERVISOR_EVENT="daemon-closed")
        daemon.journal.flush()
        os.close(lock_fd)
    return 0


def main(argv: list[str] | None = None) -> int:
    from docopt import DocoptExit, docopt

    try:
        opts = docopt(__doc__, argv=argv if argv is not None else sys.argv[1:])
    except DocoptExit:
        print("supervisor-daemon: usage: supervisor-daemon [-i N] [--grace S]",
              file=sys.stderr)
        return 2
    try:
        instance = paths.parse_instance(opts["--instance"])
        grace = float(opts["--grace"])
        if not math.isfinite(grace) or grace < 0:
            raise ValueError(f"grace must be >= 0 seconds, not {opts['--grace']}")
    except ValueError as exc:
        print(f"supervisor-daemon: {exc}", file=sys.stderr)
        return 2
    reexec_fd = opts["--reexec-fd"]
    return serve(instance, grace, int(reexec_fd) if reexec_fd else None)


if __name__ == "__main__":
    sys.exit(main())
