"""The shell: carries out what the machine decides, and keeps one record per service.

``machine.py`` says what should happen; this module makes it happen (spawn, signal, arm
and cancel timers, forget, log) and reports back what the world did (a spawn's outcome, a
process's exit, a timer firing) as events. :meth:`Shell.apply` is the one way into the
machine, for commands and facts alike: events that arise while effects run are queued and
stepped after, never nested.

Each service has one :class:`Record`: its service value, its watched process, its timers,
the start ticks of that process, its cgroup, and its cached entry of the state document. The only
other indexes (``by_pid``, ``counts``) are kept in step in one place each
(:meth:`_put`, :meth:`_attach`, :meth:`_forget`).
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import functools
import os
import signal
import time

from supervisor import context, machine, process, state
from supervisor.machine import Ev, Event, Refused, Service, State, signal_name
from supervisor.process import Proc

_FIRED = {"start": Ev.DUE, "stop": Ev.STOP_TIMEOUT}  # what a timer of each slot reports
_RUNS = (State.RUNNING, State.STOPPED, State.STOPPING)  # a process of its own exists


class Record:
    """Everything the shell keeps for one service."""

    __slots__ = ("cached", "cgroup", "cpu_base", "ino", "pids", "proc", "saved", "svc",
                 "ticks", "timers")

    def __init__(self, svc: Service, cgroup: str | None = None, pids=()) -> None:
        self.svc = svc
        # every pid it has had, oldest first: each once, but for one the kernel gave it
        # again after another service had it
        self.pids: list[int] = list(pids)
        self.saved = 0  # how many of them the state file has (its log writes the rest)
        self.proc: Proc | None = None  # its watched process, until reaped or released
        self.ticks: int | None = None  # that process's start time (read when saving)
        self.ino: int | None = None  # and its pidfs inode (process.identity), likewise
        self.timers: dict = {}  # slot ("start", "stop") -> (Timers, Handle)
        self.cgroup = cgroup  # its directory in the instance's cgroup tree, once made
        self.cached: tuple | None = None  # (svc, ident, cgroup, pids, its document entry)
        # (cgroup, CPU seconds) of the runs before, in a cgroup kept for a restart into it:
        # its cpu.stat counts them all
        self.cpu_base: tuple[str, float] | None = None


class Shell:
    def __init__(self, *, watcher, timers, wall_timers, journal, outputs, cgroups,
                 env: dict[str, str], fdstore) -> None:
        self.watcher = watcher
        self.timers = timers  # CLOCK_BOOTTIME: delays, intervals, back-off
        self.wall_timers = wall_timers  # CLOCK_REALTIME: --at, --cron
        self.journal = journal
        self.outputs = outputs
        self.cgroups = cgroups
        self.env = env
        self.fdstore = fdstore  # sdnotify.Notifier: keeps pidfds across a crash, where it can
        self.records: dict[str, Record] = {}
        self.by_pid: dict[int, str] = {}  # every pid a service has had -> its name
        self.counts: collections.Counter[State] = collections.Counter()
        self.orphans: set[Proc] = set()  # children of forgotten services, until reaped
        self.dirty = False  # services changed since the state document was last written
        self.touched: set[str] = set()  # the names of those services (changes())
        self.counts_changed = False
        self.on_reaped = None  # called after a process of ours was reaped (shutdown waits)
        self._queue: collections.deque[tuple[str, Event]] = collections.deque()
        self._feeding = False
        self._rejects: list[tuple[str, machine.Reject]] = []
        self._last: dict[str, Service] = {}

    # ---- the one entry into the machine ---------------------------------------------------

    def apply(self, name: str, event: Event, *, new: Service | None = None,
              proc: Proc | None = None) -> Service:
        """Step ``name``'s machine with ``event`` and carry out the effects in order; then
        the events that arose meanwhile. Returns the service as it stands after (or as it
        was last, when it was forgotten).

        ``new``: a service not registered yet (create-service, open-service), with
        ``proc``, its adopted process. Raises :class:`Refused` when the machine refuses
        the command (nothing changed), or when a ``Reject`` effect says the command failed
        (what came before it was carried out; a new service is then gone)."""
        if self._feeding:  # an effect's report: stepped after the current event
            self._queue.append((name, event))
            return self.records[name].svc if name in self.records else self._last[name]
        if new is not None:
            rec = self._put(Record(new))
            if proc is not None:
                self._attach(rec, proc)
        self._feeding, self._rejects, self._last = True, [], {}
        try:
            self._step(name, event)
            while self._queue:
                self._step(*self._queue.popleft())
        except Exception:  # refused, or a bug: a new service is never left half-made
            if new is not None and name in self.records:
                self._forget(self.records[name])
            raise
        finally:
            self._feeding = False
            self._queue.clear()
        for who, reject in self._rejects:
            if who == name:
                raise Refused(reject.message, reject.code)
        return self.records[name].svc if name in self.records else self._last[name]

    def check(self, name: str, event: Event) -> None:
        """Raise :class:`Refused` if ``name``'s machine would refuse ``event`` now; nothing
        is changed or carried out (the machine is pure). A command on several services
        checks them all first: all or nothing."""
        machine.step(self.records[name].svc, event, time.time(), self.timers.now())

    def _step(self, name: str, event: Event) -> None:
        rec = self.records.get(name)
        if rec is None:  # forgotten meanwhile
            return
        svc, effects = machine.step(rec.svc, event, time.time(), self.timers.now())
        self._commit(rec, svc, effects, event.kind)

    def _commit(self, rec: Record, svc: Service, effects: list, cause: Ev) -> None:
        if rec.svc.state is not svc.state:
            self.counts[rec.svc.state] -= 1
            self.counts[svc.state] += 1
            self.counts_changed = True
        rec.svc = self._last[svc.name] = svc
        self.dirty = True
        self.touched.add(svc.name)
        for effect in effects:
            match effect:
                case machine.Spawn(stopped=stopped):
                    # a start that follows a fact (a timer, an exit: a restart) lets its
                    # child's exec run before the daemon goes on; one a command asked
                    # for does not: the answer to the client waiting for it comes first
                    self._spawn(rec, stopped, let_it_exec=cause in machine.FACTS)
                case machine.Signal(signo=signo, group=group):
                    self._signal(rec, signo, group)
                case machine.ArmTimer(due=due, wall=wall, slot=slot):
                    self._arm(rec, due, wall, slot)
                case machine.CancelTimer(slot=slot):
                    self._cancel_timer(rec, slot)
                case machine.Forget():
                    self._forget(rec)
                case machine.Reject():
                    self._rejects.append((svc.name, effect))
                case machine.Log(event=what, message=message, priority=priority):
                    self.log_event(svc, what, message, priority)

    # ---- the records ----------------------------------------------------------------------

    def _put(self, rec: Record) -> Record:
        self.records[rec.svc.name] = rec
        self.counts[rec.svc.state] += 1
        self.counts_changed = self.dirty = True
        self.touched.add(rec.svc.name)
        for pid in rec.pids:
            # a pid in its history names it, unless another service's process has that pid
            # now (the kernel gave it out again): the one that holds it wins, whatever the
            # order services are taken back in after a reload or a crash
            holder = self.records.get(self.by_pid.get(pid))
            if holder is None or holder.proc is None or holder.proc.pid != pid:
                self.by_pid[pid] = rec.svc.name
        return rec

    def _attach(self, rec: Record, proc: Proc, ticks: int | None = None, *,
                stored: bool = False) -> None:
        """``proc`` is now the service's process: watched until it ends, its pidfd kept by
        the manager's fd store where there is one (``stored``: it has it already)."""
        rec.proc, rec.ticks, rec.ino = proc, ticks, None
        self.touched.add(rec.svc.name)
        if self.by_pid.get(proc.pid) != rec.svc.name:  # (else in its history already)
            rec.pids.append(proc.pid)
            self.by_pid[proc.pid] = rec.svc.name
        self.watcher.watch(proc, functools.partial(self._exited, rec.svc.name))
        self.fdstore.keep(proc.pid, proc.pidfd, sent=stored)

    def _forget(self, rec: Record) -> None:
        svc = rec.svc
        if self.records.get(svc.name) is not rec:
            return
        del self.records[svc.name]
        self.counts[svc.state] -= 1
        self.counts_changed = self.dirty = True
        self.touched.add(svc.name)
        for slot in list(rec.timers):
            self._cancel_timer(rec, slot)
        for pid in rec.pids:
            if self.by_pid.get(pid) == svc.name:
                del self.by_pid[pid]
        proc, rec.proc = rec.proc, None
        if proc is None:
            if self.cgroups and rec.cgroup:
                self.cgroups.discard(rec.cgroup)
        elif proc.child:
            self.orphans.add(proc)  # watched until reaped, so it never lingers as a zombie
        else:
            self.fdstore.drop(proc.pid)
            self.watcher.release(proc)  # released: we only stop watching it

    def find(self, ref) -> str | None:
        """The name of the service that ``ref`` (a name, or any pid it has had) names."""
        text = str(ref)
        if text in self.records:
            return text
        pid = as_pid(ref)
        return self.by_pid.get(pid) if pid is not None else None

    def get(self, name: str) -> Service:
        return self.records[name].svc

    def __contains__(self, name: str) -> bool:
        return name in self.records

    def __len__(self) -> int:
        return len(self.records)

    def services(self) -> list[Service]:
        return [rec.svc for rec in self.records.values()]

    def supervises(self, pid: int) -> bool:
        """Whether ``pid`` is a live process of ours (a service's, or one still unreaped)."""
        return pid in self.watcher.procs

    def refresh(self, name: str) -> Service:
        """An opened process's stop/continue is not reported to us: read it from /proc
        when asked."""
        rec = self.records[name]
        if rec.proc is not None and not rec.proc.child \
                and rec.svc.state in (State.RUNNING, State.STOPPED):
            stopped = process.is_stopped(rec.proc.pid)
            if stopped is not None:
                self.apply(name, Event(Ev.STOPPED_SEEN if stopped else Ev.CONTINUED_SEEN))
        return self.records[name].svc

    def usage(self, name: str) -> tuple[float | None, int | None, int | None]:
        """(CPU seconds, memory bytes, tasks) of a service that runs: its cgroup's where it
        has one, else its process's (``/proc``); Nones where nothing runs."""
        rec = self.records[name]
        proc = rec.proc
        if proc is None or rec.svc.state not in _RUNS:
            return None, None, None
        if self.cgroups and proc.cgroup:
            cpu, mem, tasks = self.cgroups.usage(proc.cgroup)
            base = rec.cpu_base
            if cpu is not None and base is not None and base[0] == proc.cgroup:
                cpu = max(0.0, cpu - base[1])
            return cpu, mem, tasks
        return process.usage(proc.pid) or (None, None, None)

    # ---- effects --------------------------------------------------------------------------

    def _spawn(self, rec: Record, stopped: bool, let_it_exec: bool) -> None:
        svc = rec.svc
        proc = None
        in_cgroup = False
        if self.cgroups and not self.cgroups.spawnable(rec.cgroup):
            # a first start, or the last cgroup was killed: a new one (the old is removed
            # once empty)
            rec.cgroup = self.cgroups.new_dir(svc.name)
            self.touched.add(svc.name)
        try:
            ids, env = self._context_of(svc)
            try:
                handoff = self.outputs.prepare(svc.name, svc.output)
            except OSError as exc:  # the program is not to blame: say where output goes
                where = f" {exc.filename}" if exc.filename else ""
                raise ValueError(f"its output{where}: {exc.strerror or exc}") from None
            try:
                with (self.cgroups.spawning_in(rec.cgroup) if self.cgroups
                      else contextlib.nullcontext((None, False))) as (cgroup_fd, in_cgroup):
                    proc = process.spawn(list(svc.command), env=env, stopped=stopped,
                                         cwd=svc.cwd, stdout=handoff.out, stderr=handoff.err,
                                         cgroup_fd=cgroup_fd, ids=ids,
                                         let_it_exec=let_it_exec)
            finally:
                self.outputs.done(handoff, svc.name, proc.pid if proc else None)
        except (OSError, ValueError) as exc:  # ValueError: an argument no exec can take
            why = getattr(exc, "strerror", None) or str(exc)
            if isinstance(exc, OSError) and exc.filename == svc.cwd:
                why = f"its working directory {svc.cwd}: {why}"  # not the program's fault
            self._queue.append((svc.name, Event(
                Ev.SPAWN_FAILED, error=f"{svc.command[0]!s}: {why}")))
            return
        if in_cgroup:
            proc.cgroup = rec.cgroup
        self._attach(rec, proc)  # its start ticks are read when the state is next saved
        self._queue.append((svc.name, Event(Ev.SPAWNED, pid=proc.pid, stopped=stopped)))

    def _context_of(self, svc: Service):
        """(ids, environment) of a start of ``svc``; ValueError naming what is to blame
        where it cannot be had (its user or env file, gone since the create), not the
        program."""
        try:
            ids, user_env = context.resolve_user(svc.user) if svc.user else (None, None)
        except ValueError as exc:
            raise ValueError(f"its user {svc.user}: {exc}") from None
        try:
            return ids, context.environment(self.env, svc.env, svc.env_file, user_env)
        except OSError as exc:
            raise ValueError(f"its env file {svc.env_file}: {exc.strerror or exc}") from None
        except ValueError as exc:  # "PATH: line N: why"
            raise ValueError(f"its env file {exc}") from None

    def _signal(self, rec: Record, signo: int, group: bool) -> None:
        group = group and not rec.svc.opened  # created services lead their process group
        if rec.proc is not None:
            process.send(rec.proc, signo, group=group)
        if signo == signal.SIGKILL and group and rec.cgroup and self.cgroups:
            self.cgroups.kill(rec.cgroup)  # and whatever escaped the group

    def _arm(self, rec: Record, due: float, wall: bool, slot: str) -> None:
        self._cancel_timer(rec, slot)
        timers = self.wall_timers if wall else self.timers
        rec.timers[slot] = (timers, timers.call_at(
            due, functools.partial(self._fired, rec.svc.name, slot)))

    def _cancel_timer(self, rec: Record, slot: str) -> None:
        armed = rec.timers.pop(slot, None)
        if armed is not None:
            armed[0].cancel(armed[1])

    def _fired(self, name: str, slot: str) -> None:
        rec = self.records.get(name)
        if rec is not None:
            rec.timers.pop(slot, None)
            self.apply(name, Event(_FIRED[slot]))

    def _exited(self, name: str, proc: Proc, code: int | None, signo: int | None) -> None:
        """The watcher reaped ``proc`` (and closed its pidfd): report it. Its pid is free
        from here on (a restart may get it again): what is kept by pid goes first."""
        self.fdstore.drop(proc.pid)
        self.outputs.release(proc.pid)
        cgroup = proc.cgroup if self.cgroups else None
        left = cgroup is not None and self.cgroups.populated(cgroup)
        if left:
            # as systemd does: once the main process is gone, what it left behind goes too
            # (the cgroup once empty; a restart gets a new one: a killed one is no home)
            self.cgroups.discard(cgroup)
        rec = self.records.get(name)
        if rec is not None and rec.proc is proc:
            rec.proc = None
            self.touched.add(name)
            self.apply(name, Event(Ev.EXITED, pid=proc.pid, code=code, signal=signo))
        else:
            self.orphans.discard(proc)
        # an empty cgroup stays for a restart into it (no rmdir and mkdir again); else gone
        if cgroup and not left and not (
                rec is not None and rec.proc is not None and rec.cgroup == cgroup):
            self.cgroups.remove(cgroup)
        elif cgroup and not left and rec is not None and rec.cgroup == cgroup:
            # CPU% is the new run's: what the runs before used is kept aside (read after
            # the restart's spawn, which has used next to nothing by then)
            cpu = self.cgroups.cpu_seconds(cgroup)
            if cpu is not None:
                rec.cpu_base = (cgroup, cpu)
        if self.on_reaped is not None:
            self.on_reaped()

    def stop_continue_seen(self, reports) -> None:
        """Children's stops and continues (``(pid, stopped)`` from the SIGCHLD drain)."""
        for pid, stopped in reports:
            if stopped and self.outputs.relay_stopped(pid):
                continue
            proc = self.watcher.child(pid)
            name = self.by_pid.get(pid) if proc is not None else None
            rec = self.records.get(name) if name is not None else None
            if rec is not None and rec.proc is proc:
                self.apply(name, Event(Ev.STOPPED_SEEN if stopped else Ev.CONTINUED_SEEN,
                                       pid=pid))

    def clock_changed(self) -> None:
        self.journal.send("the wall clock was set: calendar schedules re-armed", 5,
                          SUPERVISOR_EVENT="clock-changed")
        for name in list(self.records):
            self.apply(name, Event(Ev.CLOCK_CHANGED))

    def log_event(self, svc: Service, what: str, message: str, priority: int = 6) -> None:
        self.journal.send(
            message, priority, SUPERVISOR_EVENT=what, SERVICE_NAME=svc.name,
            SERVICE_PID=svc.pid, SERVICE_STATUS=svc.status, EXIT_CODE=svc.exit_code,
            EXIT_SIGNAL=signal_name(svc.signal), SERVICE_RESTARTS=svc.restarts,
            SERVICE_OPENED=int(svc.opened))

    # ---- every service at once ----------------------------------------------------------

    def apply_all(self, kind: Ev, **fields) -> None:
        """A fact or command for every service (shutdown)."""
        for name in list(self.records):
            if name in self.records:
                self.apply(name, Event(kind, **fields))

    def live_children(self) -> bool:
        """Whether a process of ours (a service's, or one forgotten) awaits reaping."""
        return bool(self.orphans) or any(
            rec.proc is not None and rec.proc.child for rec in self.records.values())

    # ---- the state document ---------------------------------------------------------------

    def encode(self, head: dict) -> bytes:
        """The whole state document (see ``supervisor/state.py``), for a re-exec: what is
        saved next is unchanged by it."""
        return state.encode(head, [self._entry(rec) for rec in self.records.values()])

    def entries(self) -> dict[str, str]:
        """Every service's entry in the state document, by name, for a save of the whole
        document. Each is cached until the service changes (services are immutable
        values): a save encodes only those."""
        self.touched.clear()
        out = {}
        for name, rec in self.records.items():
            out[name] = self._entry(rec)
            rec.saved = len(rec.pids)
        return out

    def changes(self) -> dict[str, str | None]:
        """The entries of the services changed since the last :meth:`entries` or
        ``changes`` (None: gone), for the state file's log: a turn that touched one service
        of 10,000 costs one, not 10,000; each with only the pids it had since (a history
        of 10,000 restarts is not written again at the next)."""
        touched, self.touched = self.touched, set()
        out: dict[str, str | None] = {}
        for name in touched:
            rec = self.records.get(name)
            if rec is None:
                out[name] = None
                continue
            ticks, ino = self._ident(rec)
            out[name] = state.encode_service(rec.svc, ticks, rec.cgroup, rec.pids, rec.saved,
                                             ino)
            rec.saved = len(rec.pids)
        return out

    @staticmethod
    def _ident(rec: Record) -> tuple[int | None, int | None]:
        """(start ticks, pidfs inode) of its process, read once it is saved (off the spawn's
        path); Nones without one."""
        if rec.proc is None:
            return None, None
        if rec.ticks is None:
            rec.ticks = state.start_ticks(rec.proc.pid)
        if rec.ino is None:
            rec.ino = process.identity(rec.proc)
        return rec.ticks, rec.ino

    def _entry(self, rec: Record) -> str:
        """Its whole entry (every pid it had), cached until it changes."""
        ident, pids = self._ident(rec), len(rec.pids)
        cached = rec.cached
        if cached is None or cached[0] is not rec.svc or cached[1] != ident \
                or cached[2] != rec.cgroup or cached[3] != pids:
            cached = rec.cached = (rec.svc, ident, rec.cgroup, pids, state.encode_service(
                rec.svc, ident[0], rec.cgroup, rec.pids, None, ident[1]))
        return cached[4]

    def carried_procs(self) -> list[tuple[Proc, str | None]]:
        """Every process of ours with its service's name (None: an orphan), for a re-exec."""
        out: list[tuple[Proc, str | None]] = [
            (rec.proc, name) for name, rec in self.records.items() if rec.proc is not None]
        return out + [(proc, None) for proc in self.orphans]

    def take_back(self, services: list[state.Stored],
                  carried: dict[str, Proc] | None = None,
                  orphans: list[Proc] = (),
                  stored: dict[int, int] | None = None) -> tuple[int, int]:
        """Services from a state document, after a crash of the previous daemon
        (``carried`` None) or a re-exec of this one (``carried``: their processes, whose
        pidfds came across ``exec``). After a crash, a service's process is the pidfd the
        manager's fd store kept (``stored``, by pid: exact, and it tells how the process
        ended if it did); else a living process is re-adopted through a new pidfd only
        when it is provably the one recorded (see :meth:`_readopt`): a reused pid is never
        taken for ours; one that died meanwhile is reported ended, and its policy acts.
        Timers are armed again from the wall-clock ``next_start`` (``due`` was on a clock
        of another boot or program). Returns (re-adopted, ended meanwhile)."""
        ended, adopted = [], 0
        stored = dict(stored or {})
        # a pid more than one entry claims: only a created service's cgroup can prove whose
        claims = collections.Counter(s.svc.pid for s in services if s.svc.alive)
        claimed: set[int] = set()  # the pids re-adopted so far
        for svc, ticks, cgroup, pids, ino in services:
            if cgroup is None and not svc.opened and self.cgroups \
                    and os.path.isdir(self.cgroups.path(f"svc-{svc.name}")):
                cgroup = f"svc-{svc.name}"  # a document from before cgroups were recorded
            if svc.state is State.STOPPING and (svc.stopping not in ("stop", "restart")
                                                or carried is not None):
                # the close the dead daemon did not finish: this one runs it again (a
                # re-exec carries no stop: the reload waits for them to end)
                svc = dataclasses.replace(svc, state=State.RUNNING, stopping=None,
                                          killing=False)
            rec = self._put(Record(svc, cgroup, pids))
            kept = carried is not None or (svc.alive and svc.pid in stored)
            if carried is not None:
                proc = carried.get(svc.name)
            elif kept:
                proc = Proc(svc.pid, stored.pop(svc.pid), child=False)
                claimed.add(svc.pid)
                proc.cgroup = cgroup if self.cgroups else None
                self.log_event(svc, "recovered", f"{svc.name} (pid {svc.pid}) re-adopted "
                                                 "through the fd store", 5)
                adopted += 1
            elif svc.alive:
                proc = self._readopt(svc, ticks, ino, cgroup, claimed, claims)
                adopted += proc is not None
            else:
                proc = None
            if proc is not None:
                self._attach(rec, proc, ticks, stored=kept)
                if svc.state is State.STOPPING:
                    # a stop-service or restart-service the dead daemon did not see
                    # through: it goes on (its signal was sent; SIGKILL after a whole stop
                    # timeout from now, for when it was sent is not recorded)
                    wait = machine.stop_wait(svc)
                    self._arm(rec, self.timers.now() + wait, False, "stop")
                    self.log_event(svc, "recovered", f"{svc.name} (pid {svc.pid}): its "
                                   f"{svc.stopping} goes on; SIGKILL in {wait:g} s", 5)
            elif svc.alive:
                ended.append(svc.name)
                if cgroup is not None and self.cgroups:
                    # what it left there, or a restart the dead daemon never saved, goes
                    # before its policy restarts it into the same cgroup
                    self.cgroups.kill(cgroup)
            self._rearm(rec)
        for pid, fd in stored.items():  # no service of ours now: of no more use
            os.close(fd)
            self.fdstore.stored.add(pid)
            self.fdstore.drop(pid)
        for proc in orphans:
            self.orphans.add(proc)
            self.watcher.watch(proc, functools.partial(self._exited, None))
            self.fdstore.keep(proc.pid, proc.pidfd, sent=True)
        for name in ended:  # died while no daemon watched: not knowable how
            self.apply(name, Event(Ev.EXITED))
        return adopted, len(ended)

    def _readopt(self, svc: Service, ticks: int | None, ino: int | None, cgroup: str | None,
                 claimed: set[int], claims: collections.Counter) -> Proc | None:
        """The recorded process of ``svc``, through a new pidfd, if it is provably that
        process. Where the state recorded its pidfs inode (``ino``, Linux >= 6.9), the
        pidfd must have it: exact, whatever the process runs now (an opened one may have
        exec'd). Else the same start time (10 ms ticks, which a reused pid can match) and,
        for a created service, in the service's own cgroup (only its processes are); for
        an opened one, with the same command line. Else None."""
        pid = svc.pid
        if ticks is None or state.start_ticks(pid) != ticks:
            return None
        # what open-service refuses, a state file cannot make us adopt either
        why = process.why_not_adoptable(pid)
        if why is None and pid == self.outputs.relay_pid:
            why = f"pid {pid} is this instance's log relay"
        if why is None and (pid in claimed or (svc.opened and claims[pid] > 1)):
            why = f"pid {pid} is claimed by another service of the state file already"
        if why is not None:
            self.log_event(svc, "recovered", f"{svc.name} (pid {pid}) not re-adopted: {why}",
                           4)
            return None
        try:
            proc = process.open_pid(pid)
        except OSError:
            return None
        now = process.identity(proc) if ino is not None else None
        if now is not None:
            ours = now == ino
        elif svc.opened:
            ours = (tuple(process.cmdline(pid)) or (process.comm(pid),)) == svc.command
        elif self.cgroups:  # a created service's process is in its cgroup, or is not it
            ours = cgroup is not None and self.cgroups.holds(cgroup, pid)
        else:  # no cgroups: it leads its own session
            ours = process.session_of(pid) == pid
        # (and the pidfd is of the process checked: not one that ended and left its pid
        # to another meanwhile)
        if not ours or state.start_ticks(pid) != ticks:
            proc.close()
            return None
        if cgroup is not None and self.cgroups and (now is None
                                                    or self.cgroups.holds(cgroup, pid)):
            proc.cgroup = cgroup
        claimed.add(pid)
        self.log_event(svc, "recovered", f"{svc.name} (pid {svc.pid}) re-adopted after a "
                                         "daemon restart", 5)
        return proc

    def _rearm(self, rec: Record) -> None:
        """Arm the timer a taken-back service waits on (``due`` is derived again from the
        wall-clock ``next_start``)."""
        svc = rec.svc
        waits = svc.state is State.PENDING or (
            svc.schedule is not None and svc.schedule.repeats and svc.alive)
        if not waits or (svc.state is not State.PENDING and svc.next_start is None):
            return
        if svc.state is State.PENDING and svc.next_start is None and not svc.autostart:
            return  # defined, never started: it waits for start-service, as before
        now, mono = time.time(), self.timers.now()
        start = svc.next_start if svc.next_start is not None else now
        wall = svc.schedule is not None and svc.schedule.wall
        if svc.schedule is not None and svc.schedule.repeats and start < now:
            # starts missed while no daemon ran are skipped, not caught up (as cron, as
            # the schedule does when the daemon was busy): the next on its grid, which is
            # on the wall clock or on CLOCK_BOOTTIME (an --every: its anchor is)
            start = svc.schedule.next_after(now) if wall \
                else now + (svc.schedule.next_after(mono) - mono)
        due = start if wall else mono + max(0.0, start - now)
        self._arm(rec, due, wall, "start")
        self.touched.add(svc.name)
        rec.svc = dataclasses.replace(
            svc, due=due, next_start=start if svc.next_start is not None else None)

    def claimed_cgroups(self) -> set[str]:
        """The cgroups a watched process of ours is in (a service's, or an orphan's)."""
        return {rec.cgroup for rec in self.records.values() if rec.proc is not None} \
            | {proc.cgroup for proc in self.orphans}

    def sweep_cgroups(self) -> int:
        """Kill whatever is in a cgroup of ours that no service claims (left by a daemon
        that died between a spawn and saving its state, or by services that ended while no
        daemon watched) and remove those cgroups. Returns how many processes it killed."""
        if not self.cgroups:
            return 0
        claimed = self.claimed_cgroups()
        killed = 0
        for name in self.cgroups.dirs():
            if name not in claimed:
                killed += len(self.cgroups.pids(name))
                self.cgroups.discard(name)
        return killed

    def close(self) -> None:
        """Stop watching everything (the daemon is going away; services keep running)."""
        self.watcher.close()
        if self.cgroups:
            self.cgroups.close()


def as_pid(ref) -> int | None:
    """A pid from a service reference: ASCII digits only (no superscript or fullwidth)."""
    if isinstance(ref, bool):
        return None
    if isinstance(ref, int):
        return ref if 0 < ref < 1 << 31 else None
    if isinstance(ref, str) and ref.isascii() and ref.isdigit() and len(ref) < 11:
        return int(ref)
    return None


