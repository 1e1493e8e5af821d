"""supervisor-daemon: runs one supervisor instance in the foreground.

Usage:
  supervisor-daemon [-i N] [--grace S] [--reexec-fd FD]
  supervisor-daemon (-h | --help)

Options:
  -i N, --instance N  The instance to run, 0 to 99 [default: 0].
  --grace S           When the instance closes, seconds between the stop signal and
                      SIGKILL for services without a --stop-timeout of their own
                      [default: 5].
  --reexec-fd FD      Internal: the state a live re-exec hands over.
  -h, --help          Show this text.

Signals: SIGTERM and SIGINT close the instance (as `supervisor close` does); SIGHUP
re-executes the daemon in place (as `supervisor reload` does); SIGUSR1, SIGUSR2, SIGALRM,
SIGQUIT, SIGVTALRM, SIGPROF, SIGXCPU and SIGIO are logged and ignored. `supervisor init` is what
starts it detached; start-up itself is in `supervisor/startup.py`.
"""

from __future__ import annotations

import collections
import math
import os
import selectors
import signal
import socket
import sys
import time
import traceback

from supervisor import declare, paths, process, protocol, reexec, state
from supervisor.cgroups import Cgroups
from supervisor.commands import DAEMON_COMMANDS, READ_ONLY, CommandError, Commands, Waiting
from supervisor.control import Connection, Reply, Server, SocketKeeper
from supervisor.journal import Journal
from supervisor.lock import InstanceLock
from supervisor.machine import Ev, State, stop_wait
from supervisor.native import CLOCK_BOOTTIME, CLOCK_REALTIME, SignalFd
from supervisor.output import Outputs
from supervisor.process import child_env, stop_continue_reports
from supervisor.rundir import RuntimeDir
from supervisor.sdnotify import Notifier
from supervisor.shell import Shell
from supervisor.timers import Timers
from supervisor.watcher import PidfdWatcher

# signals with no meaning here, whose default action would end the daemon without a word
# (an admin's `kill -USR1` to reopen logs, say): taken on the signalfd, logged, ignored
IGNORED_SIGNALS = (signal.SIGUSR1, signal.SIGUSR2, signal.SIGALRM, signal.SIGQUIT,
                   signal.SIGVTALRM, signal.SIGPROF, signal.SIGXCPU, signal.SIGIO)
HANDLED_SIGNALS = (signal.SIGCHLD, signal.SIGTERM, signal.SIGINT, signal.SIGHUP,
                   *IGNORED_SIGNALS)


CLOSE_MARGIN = 5.0  # seconds after the last SIGKILL of a close, told the service manager
DRAIN_AFTER_END = 0.02  # seconds from a SIGCHLD of an end to its drain (_drain_stops)
_ENDS = (os.CLD_EXITED, os.CLD_KILLED, os.CLD_DUMPED)


class Daemon:
    """One instance: the loop and what surrounds it. ``shell`` owns the services,
    ``commands`` answers requests, ``server`` the control socket."""

    def __init__(self, instance: int, listener: socket.socket, *, socket_path: str,
                 rundir: str, grace: float = 5.0) -> None:
        self.instance = instance
        self.socket_path = socket_path
        self.grace = grace
        self.started_at = time.time()
        self.uid = os.getuid()  # who else (with root) may command it: asked once, not per request
        self.journal = Journal(instance)
        self.sel = selectors.DefaultSelector()
        self.sigfd = SignalFd(HANDLED_SIGNALS)
        self.sel.register(self.sigfd, selectors.EVENT_READ, self._on_signal)
        self.timers = Timers(self.sel, CLOCK_BOOTTIME, on_error=self._timer_failed)
        self.wall_timers = Timers(self.sel, CLOCK_REALTIME, cancel_on_set=True,
                                  on_error=self._timer_failed)
        self.watcher = PidfdWatcher(self.sel)
        self.notifier = Notifier()
        env = child_env()
        self.shell = Shell(
            watcher=self.watcher, timers=self.timers, wall_timers=self.wall_timers,
            journal=self.journal, env=env, cgroups=Cgroups.create(instance, rundir, self.sel),
            outputs=Outputs(instance, rundir, self.watcher, env, self._log_relay,
                            self.timers),
            fdstore=self.notifier)
        self.shell.on_reaped = self._maybe_finish
        self.wall_timers.on_clock_change = self.shell.clock_changed
        self.server = Server(self.sel, listener, self._handle_line, self._refuse)
        def said(message: str, priority: int) -> None:  # of the socket, the directory
            self.journal.send(message, priority, SUPERVISOR_EVENT="socket")
        self.commands = Commands(self)
        self.state_path = paths.state_path(instance, rundir)
        self.state_file = state.StateFile(os.path.basename(self.state_path))
        # the runtime directory, held open (the state is written relative to it) and kept
        self.rundir = RuntimeDir(
            rundir, (self.state_file.path, self.state_file.log_path), log=said,
            lock=lambda: self.lock, save=self._save_anew, moved=self.shell.outputs.moved,
            move_log=self.journal.move_log)
        self.keeper = SocketKeeper(  # its path, where the daemon made it (not activated)
            self.server, socket_path, said, self.rundir.keep,
            lambda seconds, fn: self.timers.call_at(self.timers.now() + seconds, fn))
        self.journal.keep_log(self.dir_fd, os.path.basename(paths.log_path(instance)))
        self.shell.outputs.inherit_as_journal = self.journal.keeps_log
        self.boot_id = state.boot_id()
        if self.notifier.watchdog_interval:
            self._watchdog()
        self.stopping = False
        self.done = False
        self.generation = 0  # how many times this daemon re-executed itself
        self.lock: InstanceLock | None = None  # startup's
        self.owns_socket = True
        self.reexec_requested = False
        # answers of this turn's commands that changed services, with their undo: sent
        # only once the state they report is on disk
        self.unsaved: list[tuple[Reply, object, object]] = []
        # answers that wait for services to stop: (reply, request, connection, Waiting)
        self.waiting: list[tuple[Reply, object, Connection, Waiting]] = []
        self.held_reloads: list[tuple[Reply, Connection]] = []  # answered at the re-exec
        self.save_error: str | None = None  # why the last save failed, while it fails
        self.drain_due = None  # the timer of a drain of stops and continues, while armed

    @property
    def dir_fd(self) -> int:
        """The runtime directory, held open (made again while the daemon runs, the new)."""
        return self.rundir.fd

    # ---- the loop ------------------------------------------------------------------------

    def run(self) -> None:
        if self.owns_socket:
            self.keeper.keep()
        spawn = ("clone3 into each service's cgroup" if process.clone3_used()
                 else "posix_spawn (no clone3 with CLONE_INTO_CGROUP here, or "
                      "SUPERVISOR_SPAWN=fallback)")
        self.journal.send(f"instance {self.instance} serving on {self.socket_path}; "
                          f"services spawned with {spawn}", SUPERVISOR_EVENT="daemon-started")
        self.notifier.ready(self.status_line())
        self._end_of_turn()
        while not self.done:
            self.run_once(0 if self.server.pending else None)

    def run_once(self, timeout: float | None) -> None:
        """One turn of the loop: wait up to ``timeout`` seconds (None: until something
        happens), handle what is ready, then save the state if services changed and only
        then send the answers (a client is told only what is on disk)."""
        for key, mask in self.sel.select(timeout):
            try:
                key.data(mask)
            except Exception as exc:  # a bug must cost one event, never the daemon
                self.journal.send(f"internal error handling fd {key.fd}: {exc!r}\n"
                                  f"{traceback.format_exc()}", 2,
                                  SUPERVISOR_EVENT="internal-error")
        self._end_of_turn()

    def _end_of_turn(self) -> None:
        if self.waiting:
            self._answer_waiting()
        if self.shell.dirty and not self.save_state():
            self._not_saved()
        self.unsaved.clear()
        self.server.flush_pending()
        if self.shell.counts_changed:
            self.shell.counts_changed = False
            self.notifier.status(self.status_line())
        self.journal.flush()
        if self.reexec_requested and not self.waiting:  # not while a stop is answered
            self.reexec_requested = False
            reexec.hand_over(self)

    def _answer_waiting(self) -> None:
        """Answers whose services are done stopping: they go out with this turn's save."""
        still = []
        for reply, req, conn, waiting in self.waiting:
            if not waiting.ready():
                still.append((reply, req, conn, waiting))
                continue
            if reply is None:  # the config applied at start: nobody waits for it
                continue
            reply.data = protocol.encode_result(req.id, waiting.result())
            self.unsaved.append((reply, req, None))
            self.server.pending.add(conn)
        self.waiting = still

    def status_line(self) -> str:
        """The STATUS= text for the service manager: counts by status."""
        if self.stopping:
            return "closing"
        by_status = collections.Counter()
        for st, n in self.shell.counts.items():
            by_status[st.status] += n
        parts = [f"{n} {status}" for status, n in sorted(by_status.items()) if n]
        total = sum(by_status.values())
        return f"{total} services" + (f": {', '.join(parts)}" if parts else "")

    def _timer_failed(self, exc: BaseException) -> None:
        self.journal.send(f"internal error in a timer callback: {exc!r}\n"
                          f"{''.join(traceback.format_exception(exc))}", 2,
                          SUPERVISOR_EVENT="internal-error")

    def _watchdog(self) -> None:
        self.notifier.watchdog()
        self.timers.call_at(self.timers.now() + self.notifier.watchdog_interval,
                            self._watchdog)

    # ---- state on disk --------------------------------------------------------------------

    def state_head(self) -> dict:
        """The head of the state document (its services aside): this daemon's."""
        cgroups = self.shell.cgroups
        return {"instance": self.instance, "started_at": self.started_at,
                "boot_id": self.boot_id, "cgroups": cgroups.base if cgroups else None}

    def save_state(self) -> bool:
        """Write the services that changed to the state file's log, or the whole document
        anew (see :class:`state.StateFile`): so that it survives a crash of the daemon
        always, and durably (fsync) when a client is to be told what it reports. Without a
        client waiting (a restart, an exit) the fsync buys nothing: after a crash of the
        machine the next boot drops the document anyway (its boot id). False when it could
        not be written (journaled once while it keeps failing; tried again at the end of
        every turn, whole)."""
        head, durable, file = self.state_head(), bool(self.unsaved), self.state_file
        try:
            if file.whole(head, self.dir_fd):
                file.rewrite(head, self.shell.entries(), self.dir_fd, durable=durable)
            else:
                file.append(self.shell.changes(), self.dir_fd, durable=durable)
        except OSError as exc:
            file.close()  # whatever failed, the next save is whole (changes() moved on)
            why = exc.strerror or str(exc)
            if why != self.save_error:
                self.journal.send(f"cannot write {self.state_path}: {why}", 3,
                                  SUPERVISOR_EVENT="state-error")
            self.save_error = why
            return False
        if self.save_error is not None:
            self.journal.send(f"{self.state_path} written again", 5,
                              SUPERVISOR_EVENT="state-saved")
            self.save_error = None
        self.shell.dirty = False
        return True

    def _save_anew(self) -> bool:
        """The state file, written again whole (it was removed)."""
        self.shell.dirty = True
        self.state_file.close()
        return self.save_state()

    def _not_saved(self) -> None:
        """The state of this turn is not on disk: what its commands made is undone, and
        every command that changed something is answered with an error instead."""
        for reply, req, undo in self.unsaved:
            if undo is not None:
                undo()
                what = "it was undone"
            else:
                what = "the change is in effect but would not survive a crash of the daemon"
            message = f"could not save the state ({self.save_error}): {what}"
            reply.data = protocol.encode_error(req.id, "not-saved", message)
            self.journal.send(f"{req.cmd} {_brief(req.args)} -> {message}", 3,
                              SUPERVISOR_COMMAND=req.cmd, ERROR_CODE="not-saved")

    def apply_config(self) -> None:
        """At start (after recovery): the config file's services (``declare.at_start``)."""
        applying = declare.at_start(self.commands)
        if applying is not None:  # nobody waits for its answer
            self.waiting.append((None, None, None, applying))

    # ---- live re-exec -----------------------------------------------------------------------

    def close(self) -> None:
        self.keeper.close()  # first: the socket is removed on purpose next
        self.state_file.close()
        self.shell.close()
        self.server.close()
        self.shell.outputs.close()
        self.timers.close()
        self.wall_timers.close()
        self.sel.unregister(self.sigfd)
        self.sigfd.close()
        self.sel.close()
        self.rundir.close()

    # ---- signals -------------------------------------------------------------------------

    def _on_signal(self, mask: int) -> None:
        now = False  # a stop or continue to look for at once
        chld = False
        for info in self.sigfd.read():
            if info.signo == signal.SIGCHLD:
                chld = True
                now = now or info.code not in _ENDS
                continue  # drained below, once for however many records coalesced
            if info.signo in (signal.SIGTERM, signal.SIGINT):
                self.journal.send(f"{signal.Signals(info.signo).name} from pid {info.pid}: "
                                  "closing the instance", 5, SUPERVISOR_EVENT="signal")
                self.shutdown()
            elif info.signo == signal.SIGHUP:
                self.journal.send(f"SIGHUP from pid {info.pid}: re-executing", 5,
                                  SUPERVISOR_EVENT="signal")
                self.reexec_requested = not self.stopping
            elif info.signo in IGNORED_SIGNALS:
                self.journal.send(f"{signal.Signals(info.signo).name} from pid {info.pid}: "
                                  "ignored (SIGTERM closes, SIGHUP re-executes)", 4,
                                  SUPERVISOR_EVENT="signal")
        if now:
            self._drain_stops()
        elif chld and self.drain_due is None:
            self.drain_due = self.timers.call_at(self.timers.now() + DRAIN_AFTER_END,
                                                 self._drain_stops)

    def _drain_stops(self) -> None:
        """Children's stops and continues, drained (``waitid(P_ALL, WSTOPPED | WCONTINUED)``,
        which walks every child the kernel holds for us: ~0.3 ms with 10,000). A SIGCHLD
        that says a child stopped or continued is drained at once; one that says a child
        ended (whose end its pidfd told) only DRAIN_AFTER_END later, off the path of the
        restart it starts: it is there for a stop of another child that came while that
        SIGCHLD was pending (signals of one kind do not queue: the stop's own was lost)."""
        if self.drain_due is not None:
            self.timers.cancel(self.drain_due)
            self.drain_due = None
        self.shell.stop_continue_seen(stop_continue_reports())

    # ---- shutdown ------------------------------------------------------------------------

    def shutdown(self) -> int:
        """Close the instance: SIGTERM created services, release opened ones, then exit.
        Returns how many services it waits for."""
        if not self.stopping:
            self.stopping = True
            self.notifier.stopping()
            self.shell.apply_all(Ev.TERMINATE, timeout=self.grace)
            waits = [stop_wait(svc, self.grace) for svc in self.shell.services()
                     if svc.state is State.STOPPING]
            if waits:  # each service's own stop timeout, then a moment to reap
                self.notifier.extend_stop(max(waits) + CLOSE_MARGIN)
        self._maybe_finish()
        return self.shell.counts[State.STOPPING]

    def _maybe_finish(self) -> None:
        """Once closing, the loop ends when no service is stopping and no process of ours
        awaits reaping."""
        if self.stopping and not self.shell.counts[State.STOPPING] \
                and not self.shell.live_children():
            self.done = True

    # ---- requests: the one error boundary ----------------------------------------------

    def _refuse(self, size: int, code: str) -> bytes:
        """The answer to a request not taken (too large, or too many large ones at once)."""
        why = ("request is over 1 MiB" if code == "request-too-large" else
               f"the daemon holds too many large unfinished requests to take this one "
               f"({size} bytes so far)")
        self.journal.send(f"request of {size} bytes refused: {why}", 4,
                          SUPERVISOR_COMMAND="?", ERROR_CODE=code)
        return protocol.encode_error(None, code, f"{why}; connection closed")

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
            if peer.uid not in (0, self.uid):
                raise CommandError("permission-denied",
                                   f"uid {peer.uid} may not command this supervisor")
            if self.stopping and req.cmd not in READ_ONLY | {"shutdown"}:
                raise CommandError("shutting-down",
                                   f"instance {self.instance} is shutting down")
            self.commands.undo = self.commands.about = None
            result = self.commands.table[req.cmd](req.args)
        except CommandError as exc:
            ref = req.args.get("service")
            name = self.shell.find(ref) if isinstance(ref, str | int) \
                and not isinstance(ref, bool) else None
            named = self.shell.get(name) if name is not None else None
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
        if req.cmd == "reload" and self.waiting:
            # a stop is under way and its client waits: the re-exec comes after it, and so
            # does this answer (the client's next request is then the new program's)
            self._log_command(req, peer, "under way: answered after the stops under way", 6)
            reply = Reply()
            reply.held = protocol.encode_result(req.id, result)
            self.held_reloads.append((reply, conn))
            return reply
        if isinstance(result, Waiting | declare.Applying):
            # not "ok" yet: the answer comes once they are done (a crash meanwhile: none)
            self._log_command(req, peer, f"under way, answered once done: "
                              f"{' '.join(result.names)[:200]}", 6)
            reply = Reply()  # sent once its services are done stopping
            self.waiting.append((reply, req, conn, result))
            return reply
        if req.cmd not in ("ping", "info"):
            svc = result if isinstance(result, dict) and "status" in result else {}
            pid = svc.get("pid")
            about = self.commands.about
            if pid is None and about is not None and about.name == svc.get("name"):
                pid = about.pid  # the process it had (a KILLED one shows none)
            self._log_command(req, peer, f"ok{': ' + svc['name'] if svc else ''}",
                              7 if req.cmd in READ_ONLY else 6,
                              SERVICE_NAME=svc.get("name"), SERVICE_PID=pid,
                              SERVICE_STATUS=svc.get("status"))
        answer = protocol.encode_result(req.id, result)
        if req.cmd in READ_ONLY or req.cmd in DAEMON_COMMANDS:
            return answer
        reply = Reply(answer)  # it waits for the end of the turn: saved, or an error
        self.unsaved.append((reply, req, self.commands.undo))
        return reply

    def _log_command(self, req, peer, answer: str, priority: int, **fields) -> None:
        self.journal.send(f"{req.cmd} {_brief(req.args)} -> {answer}", priority,
                          SUPERVISOR_COMMAND=req.cmd, PEER_PID=peer.pid, PEER_UID=peer.uid,
                          **fields)

    def _log_relay(self, message: str, priority: int) -> None:
        self.journal.send(message, priority, SUPERVISOR_EVENT="log-relay")


def _brief(args: dict) -> str:
    text = " ".join(f"{k}={v!r}" for k, v in args.items())
    return text if len(text) <= 200 else text[:197] + "..."


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
        try:
            grace = float(opts["--grace"])
        except ValueError:
            grace = math.nan
        if not math.isfinite(grace) or grace < 0:
            raise ValueError(f"--grace must be a number of seconds >= 0, not "
                             f"{opts['--grace']!r}")
    except ValueError as exc:
        print(f"supervisor-daemon: {exc}", file=sys.stderr)
        return 2
    from supervisor.startup import serve  # startup builds a Daemon: imported here, not above

    reexec_fd = opts["--reexec-fd"]
    return serve(instance, grace, int(reexec_fd) if reexec_fd else None)


if __name__ == "__main__":
    sys.exit(main())
