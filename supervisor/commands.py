"""What users can ask: the handler of every protocol command, the checks of their
arguments, and the JSON view of a service (``docs/reference.md`` lists them all).

A handler takes the request's ``args`` (a dict decoded from JSON: nothing in it is
trusted), checks them, asks the shell, and returns the result to encode. It raises
:class:`CommandError` with a protocol error code when it cannot do what was asked; the
daemon's request boundary turns that into the answer and the journal entry.
"""

from __future__ import annotations

import fnmatch
import math
import os
import re
import signal
import time
from datetime import datetime

from supervisor import context, declare, output, process, protocol, schedule
from supervisor.machine import (
    MAX_RESTARTS,
    Ev,
    Event,
    Refused,
    Service,
    State,
    name_problem,
    signal_name,
    stop_wait,
)

MAX_SECONDS = 100 * 365 * 86400  # no delay, interval or time is further away than this
# answered while the instance shuts down: they change nothing (journaled at debug)
READ_ONLY = frozenset({"ping", "info", "service-status", "list-supervisor", "show-service",
                       "export"})
# not about services: their answers do not wait for the state to be saved
DAEMON_COMMANDS = frozenset({"shutdown", "reload"})


class CommandError(Exception):
    """A command refused: its string code and one line for the user; ``key``: the
    create-service argument it is about, where one is (a config file's error names its
    line)."""

    def __init__(self, code: str, message: str, key: str | None = None) -> None:
        message = protocol.clamp(message)  # it may quote a name or path of 1 MiB
        super().__init__(message)
        self.code = code
        self.message = message
        self.key = key


_RUNS = (State.RUNNING, State.STOPPED, State.STOPPING)  # a process of its own exists
_NO_USAGE = (None, None, None)  # not asked for (a query's "usage": false)


def service_object(svc: Service, usage: tuple = _NO_USAGE) -> dict:
    """The service object of ``--json`` output (stable keys; docs/reference.md).
    ``usage``: (cpu_seconds, memory_bytes, tasks) where it runs (``Shell.usage``)."""
    return {
        "name": svc.name,
        "pid": svc.pid if svc.state in _RUNS else None,
        "status": svc.status,
        "restarts": svc.restarts,
        "exit_code": svc.exit_code,
        "signal": signal_name(svc.signal),
        "started_at": svc.started_at,
        "exited_at": svc.exited_at,
        "next_start": svc.next_start if svc.status == "PENDING" or (
            svc.schedule is not None and svc.schedule.repeats) else None,
        "command": list(svc.command),
        "opened": svc.opened,
        "restart": restart_shown(svc),
        "restart_times": svc.restart_limit,
        "restart_delay": svc.restart_delay,
        "start_limit": str(svc.start_limit) if svc.start_limit is not None else None,
        "schedule": schedule_object(svc.schedule),
        "delay": svc.delay,
        "create_stopped": svc.create_stopped,
        "cwd": svc.cwd,
        "user": svc.user,
        "env": [key for key, _value in svc.env],
        "env_file": svc.env_file,
        "stop_signal": signal_name(svc.stop_signal),
        "stop_timeout": stop_wait(svc),
        "output": svc.output,
        "declared": svc.declared,
        "cpu_seconds": usage[0],
        "memory_bytes": usage[1],
        "tasks": usage[2],
        "error": svc.error,
    }


def restart_shown(svc: Service) -> str:
    """The restart mode as the service object names it: never, on-failure or always
    (docs/reference.md). The seed's ``-r K`` alone is on-failure there: it restarts the
    failures that are crashes, all but a SIGKILL from outside (the seed's KILLED)."""
    if svc.opened or svc.restart_limit == 0 or (svc.schedule is not None
                                                  and svc.schedule.repeats):
        return "never"  # a repeating job's starts are its schedule's
    return "on-failure" if svc.restart_mode == "on-crash" else svc.restart_mode


def schedule_object(sch) -> dict | None:
    if sch is None:
        return None
    if sch.kind == "once":
        return {"at": sch.at}
    if sch.kind == "every":
        return {"every": sch.interval}
    return {"cron": sch.calendar.expr}


class Waiting:
    """The answer to a command on services some of which are stopping: sent once none of
    them is any more (the daemon checks at the end of each turn, :meth:`ready`)."""

    __slots__ = ("changed", "commands", "kind", "names", "started")

    def __init__(self, commands: Commands, names: list[str], changed: set[str],
                 kind: Ev | None = None, started: dict | None = None) -> None:
        self.commands, self.names, self.changed, self.kind = commands, names, changed, kind
        # when each had last started before the command: a restart that started none was
        # undone by another command
        self.started = started or {}

    def ready(self) -> bool:
        records = self.commands.shell.records
        return all(name not in records or records[name].svc.state is not State.STOPPING
                   for name in self.names)

    def result(self) -> dict:
        shell = self.commands.shell
        answer = {"instance": self.commands.daemon.instance,
                  "services": [{**self.commands.view(name), "changed": name in self.changed}
                               for name in self.names if name in shell]}
        gone = [name for name in self.names if name not in shell]
        if gone:  # removed by another command while this one waited
            answer["gone"] = gone
        overridden = [name for name in self.names
                      if name in shell and name in self.changed and self._undone(name)]
        if overridden:  # another command gave the stop another goal meanwhile
            answer["overridden"] = overridden
        return answer

    def _undone(self, name: str) -> bool:
        """Whether another command undid what this one did to ``name`` while it waited: a
        stop that a start turned into a restart (it runs again), a restart that a stop or
        close-service turned into an end (it started no process)."""
        svc = self.commands.shell.get(name)
        if self.kind is Ev.STOP:
            return svc.state in (State.RUNNING, State.STOPPED)
        if self.kind in (Ev.START, Ev.RESTART):
            return svc.state in (State.EXITED, State.KILLED, State.CRASHED) \
                and svc.started_at == self.started.get(name)
        return False


class Commands:
    """The handlers table, over one daemon and its shell."""

    def __init__(self, daemon) -> None:
        self.daemon = daemon  # supervisor.daemon.Daemon: info, shutdown, reload
        self.shell = daemon.shell
        self._suffix: dict[str, int] = {}  # the last -N given to a default name
        # set by a command that made a service: how to unmake it if the state that reports
        # it cannot be saved (the daemon resets it before each command)
        self.undo = None
        # the service a one-service command was about, as it was found (its journal entry
        # names the pid it had, even once it runs no more)
        self.about: Service | None = None
        self.table = {
            "ping": self.ping,
            "info": self.info,
            "create-service": self.create,
            "open-service": self.open,
            "suspend-service": self._simple(Ev.SUSPEND),
            "resume-service": self._simple(Ev.RESUME),
            "close-service": self._simple(Ev.KILL),
            "remove-service": self.remove,
            "service-status": self.status,
            "list-supervisor": self.list,
            "supervisor-freelist": self.freelist,
            "supervisor-cancel": self.cancel,
            "stop-service": self._verb(Ev.STOP),
            "start-service": self._verb(Ev.START),
            "restart-service": self._verb(Ev.RESTART),
            "signal-service": self.signal,
            "show-service": self.show,
            "shutdown": self.shutdown,
            "reload": self.reload,
            "apply": self.apply_config,
            "export": self.export,
            "save": self.save,
        }

    # ---- helpers ----------------------------------------------------------------------

    def resolve(self, ref) -> str:
        """A service's name from a name or any pid it has had."""
        if isinstance(ref, bool) or not isinstance(ref, str | int):
            raise CommandError("invalid-argument", "a service is named by a name or a pid")
        name = self.shell.find(ref)
        if name is None:
            raise CommandError("no-such-service",
                               f"no service {str(ref)!r} in instance {self.daemon.instance}")
        self.about = self.shell.get(name)
        return name

    def resolve_many(self, args: dict) -> list[str]:
        """The services that ``args["services"]`` names: names, pids, and shell patterns
        (``web-*``: every service whose name matches, in the order they were made). All
        or nothing: a name or pid that names none, or a pattern that matches none, is an
        error."""
        refs = args.get("services")
        if refs is None and "service" in args:
            refs = [args["service"]]
        if not isinstance(refs, list) or not refs:
            raise CommandError("invalid-argument", "name at least one service")
        names: list[str] = []
        for ref in refs:
            if isinstance(ref, str) and any(c in ref for c in "*?["):
                found = [n for n in self.shell.records if fnmatch.fnmatchcase(n, ref)]
                if not found:
                    raise CommandError("no-such-service", f"no service of instance "
                                       f"{self.daemon.instance} matches {ref!r}")
                names += found
            else:
                names.append(self.resolve(ref))
        return list(dict.fromkeys(names))

    def view(self, name: str, *, fresh: bool = False, usage: bool = True) -> dict:
        """The service object of ``name``, its resource usage read now (``usage`` False:
        not read, the three fields null); ``fresh``: an opened process's stop or continue
        read from /proc first (never right after a signal of ours, which the process may
        not have acted on yet)."""
        svc = self.shell.refresh(name) if fresh else self.shell.get(name)
        return service_object(svc, self.shell.usage(name) if usage else _NO_USAGE)

    def _not_held(self, name: str) -> None:
        """A command on a service that an apply under way restarts or removes would be
        undone by it: refused, to be run again once the apply is done."""
        doing = declare.held_by_apply(self, name) if self.daemon.waiting else None
        if doing is not None:
            raise CommandError("bad-state", f"{name}: an apply under way is {doing}; run "
                               "the command again once it is done")

    def apply(self, name: str, event: Event, **kw) -> Service:
        """The shell's apply, with a refusal as the command's error."""
        self._not_held(name)
        try:
            return self.shell.apply(name, event, **kw)
        except Refused as exc:
            raise CommandError(exc.code, str(exc)) from None

    def _unique_name(self, base: str) -> str:
        """``base``, or ``base-2``, ``base-3``... (the next suffix is remembered, so naming
        the 10,000th service of one program costs what naming the first did)."""
        base = re.sub(r"[^A-Za-z0-9_.@:+-]", "_", base)[:100].lstrip("-") or "service"
        if base.isascii() and base.isdigit():
            base = f"svc{base}"
        if base not in self.shell:
            return base
        n = self._suffix.get(base, 1)
        while True:
            n += 1
            name = f"{base}-{n}"
            if name not in self.shell:
                self._suffix[base] = n
                return name

    def _new_name(self, args: dict, default: str) -> str:
        name = arg(args, "name", str, None)
        if name is None:
            return self._unique_name(default)
        why = name_problem(name)
        if why is not None:
            raise CommandError("invalid-argument", why)
        if name in self.shell:
            raise CommandError("name-taken", f"a service named {name!r} exists already")
        return name

    # ---- the commands -------------------------------------------------------------------

    def ping(self, args) -> dict:
        return {"pid": os.getpid(), "instance": self.daemon.instance}

    def info(self, args) -> dict:
        d = self.daemon
        return {"instance": d.instance, "pid": os.getpid(), "socket": d.socket_path,
                "services": len(self.shell), "started_at": d.started_at,
                "stopping": d.stopping, "generation": d.generation,
                "journal": d.journal.to_journal}

    def create(self, args) -> dict:
        unknown = sorted(set(args) - protocol.CREATE_ARGS)
        if unknown:  # a misspelt option must not be dropped without a word
            raise CommandError("invalid-argument", f"create-service takes no argument "
                               f"{unknown[0]!r}", unknown[0])
        fields = self._definition(args)
        name = self._new_name(args, os.path.basename(fields["command"][0]))
        svc = Service(name=name, **fields)
        self.apply(name, Event(Ev.CREATE), new=svc)
        self._undo_by_removing(name)
        return self.view(name) if name in self.shell else service_object(svc)

    def _definition(self, args) -> dict:
        """create-service's arguments, every one checked, as the fields of a Service (all
        but its name)."""
        path = arg(args, "path", str)
        argv_rest = arg(args, "args", list, [])
        if not all(isinstance(a, str) for a in argv_rest):
            raise CommandError("invalid-argument", "args must be a list of strings")
        if "\0" in path or any("\0" in a for a in argv_rest):
            raise CommandError("invalid-argument", "arguments may not contain NUL bytes")
        for text in (path, *argv_rest):
            _bytes_of(text)
        restart = arg(args, "restart_times", int, None)
        if restart is not None and not 0 <= restart <= MAX_RESTARTS:
            raise CommandError("invalid-argument", f"restart times must be from 0 to "
                               f"{MAX_RESTARTS} (no limit: --restart always or on-failure "
                               "without -r)", "restart_times")
        delay = number_arg(args, "delay", 0)
        sched, policy, limit = _schedule_and_policy(args, restart, delay,
                                                    self.daemon.timers.now())
        autostart = arg(args, "autostart", bool, True)
        if not autostart and (sched is not None or delay > 0):
            raise CommandError("invalid-argument", "autostart false (started by "
                               "start-service only) takes no delay, at, every or cron")
        stopped = arg(args, "create_stopped", bool, False)
        out = arg(args, "output", str, "journal")
        _bytes_of(out)
        cwd = arg(args, "cwd", str, "/")
        _bytes_of(cwd)
        if not os.path.isabs(cwd) or not os.path.isdir(cwd):
            why = "not an absolute path" if not os.path.isabs(cwd) else \
                "not a directory" if os.path.exists(cwd) else "no such directory"
            raise CommandError("invalid-argument", f"--cwd {cwd}: {why}", "cwd")
        context_fields = _context(args)
        why = process.check_executable(path, deferred=stopped)
        if why is not None:
            raise CommandError("not-executable", why)
        # last: checking an output file makes it, and a create refused leaves nothing
        why = output.check(out, self.shell.outputs.rundir)
        if why is not None:
            code = "not-writable" if why.startswith("cannot write") else "invalid-argument"
            raise CommandError(code, why, "output")
        return dict(command=(path, *argv_rest), restart_limit=policy.limit,
                    create_stopped=stopped, delay=float(delay), cwd=cwd, output=out,
                    schedule=sched, restart_mode=policy.mode,
                    restart_delay=policy.delay, restart_max_delay=policy.max_delay,
                    start_limit=limit, autostart=autostart,
                    **context_fields)

    def open(self, args) -> dict:
        pid = arg(args, "pid", int)
        if pid <= 0:
            raise CommandError("invalid-argument", f"pid must be a positive number, not {pid}")
        if pid == self.shell.outputs.relay_pid:
            raise CommandError("not-adoptable", f"pid {pid} is this instance's log relay: it "
                               "is the daemon's, not a service")
        if self.shell.supervises(pid):
            owner = self.shell.find(pid) or "?"
            raise CommandError("already-supervised", f"pid {pid} is already service {owner!r}")
        why = process.why_not_adoptable(pid)
        if why is not None:
            code = "no-such-process" if why.startswith("no process") else "not-adoptable"
            raise CommandError(code, why)
        name = self._new_name(args, process.comm(pid))
        try:
            proc = process.open_pid(pid)
        except ProcessLookupError:
            raise CommandError("no-such-process", f"no process with pid {pid}") from None
        except OSError as exc:
            raise CommandError("not-adoptable", f"cannot open pid {pid}: {exc.strerror}") \
                from None
        command = tuple(process.cmdline(pid)) or (process.comm(pid),)
        svc = Service(name=name, command=command,
                      started_at=process.start_time(pid) or time.time())
        self.apply(name, Event(Ev.OPEN, pid=pid, stopped=bool(process.is_stopped(pid))),
                   new=svc, proc=proc)
        self._undo_by_removing(name)
        return self.view(name)

    def _undo_by_removing(self, name: str) -> None:
        """If the state cannot be saved, remove the service just made (killing what it
        spawned, releasing what it opened) -- it, and not another of the same name."""
        rec = self.shell.records[name]

        def undo() -> None:
            if self.shell.records.get(name) is rec:
                self.shell.apply(name, Event(Ev.REMOVE))
        self.undo = undo

    def _simple(self, kind: Ev):
        def handler(args) -> dict:
            name = self.resolve(args.get("service"))
            self.shell.refresh(name)
            self.apply(name, Event(kind))
            return self.view(name)
        return handler

    def _verb(self, kind: Ev):
        """stop-service, start-service, restart-service: on every service named, checked
        first (all or nothing); the answer waits for the stops to end."""
        def handler(args) -> Waiting:
            return self._on_all(self.resolve_many(args), Event(kind))
        return handler

    def _on_all(self, names: list[str], event: Event) -> Waiting:
        for name in names:
            self._not_held(name)
            self.shell.refresh(name)
            try:
                self.shell.check(name, event)
            except Refused as exc:
                raise CommandError(exc.code, str(exc)) from None
        changed = set()
        started = {name: self.shell.get(name).started_at for name in names}
        for name in names:
            before = self.shell.get(name)
            if self.apply(name, event) is not before or event.kind is Ev.SIGNAL:
                changed.add(name)
        return Waiting(self, names, changed, event.kind, started)

    def signal(self, args) -> Waiting:
        """signal-service: a signal to each service's process, through its pidfd."""
        signo = parse_signal(args.get("signal"))
        return self._on_all(self.resolve_many(args), Event(Ev.SIGNAL, signal=signo))

    def show(self, args) -> dict:
        usage = arg(args, "usage", bool, True)
        return {"instance": self.daemon.instance,
                "services": [self.view(name, fresh=True, usage=usage)
                             for name in self.resolve_many(args)]}

    def remove(self, args) -> dict:
        name = self.resolve(args.get("service"))
        svc = self.shell.refresh(name)
        self.apply(name, Event(Ev.REMOVE))
        return {**service_object(svc), "removed": True}

    def cancel(self, args) -> dict:
        """A PENDING service is cancelled and removed; a recurring one that runs loses its
        schedule (the run goes on); anything else is refused."""
        name = self.resolve(args.get("service"))
        svc = self.shell.get(name)
        if svc.state is not State.PENDING and (svc.schedule is None
                                               or not svc.schedule.repeats):
            raise CommandError("bad-state", f"service {name} is {svc.status}, not PENDING: "
                               "only a pending or scheduled service can be cancelled")
        after = self.apply(name, Event(Ev.CANCEL))
        removed = name not in self.shell
        return {**service_object(svc if removed else after), "removed": removed}

    def status(self, args) -> dict:
        usage = arg(args, "usage", bool, True)
        return self.view(self.resolve(args.get("service")), fresh=True, usage=usage)

    def list(self, args) -> dict:
        usage = arg(args, "usage", bool, True)
        return {"instance": self.daemon.instance,
                "services": [self.view(n, fresh=True, usage=usage)
                             for n in list(self.shell.records)]}

    def freelist(self, args) -> dict:
        names = self.resolve_many({"services": arg(args, "services", list)})  # all or nothing
        for name in names:
            self._not_held(name)
        removed = []
        for name in names:
            svc = self.shell.refresh(name)
            self.apply(name, Event(Ev.REMOVE))
            removed.append({**service_object(svc), "removed": True})
        return {"instance": self.daemon.instance, "removed": removed}

    def apply_config(self, args):
        """apply: make the instance match its config file (see supervisor/declare.py)."""
        dry_run = arg(args, "dry_run", bool, False)
        if declare.busy(self):
            raise CommandError("bad-state", "an apply is under way (waiting for services "
                               "to stop): try again once it is done")
        out = declare.plan(self, arg(args, "prune", bool, False))
        if dry_run:
            return out.summary(self.daemon.instance, True)
        return declare.carry_out(self, out)

    def export(self, args) -> dict:
        return declare.export(self)

    def save(self, args) -> dict:
        return declare.save(self)

    def reload(self, args) -> dict:
        d = self.daemon
        d.reexec_requested = True  # after this answer is on its way
        return {"pid": os.getpid(), "instance": d.instance, "generation": d.generation}

    def shutdown(self, args) -> dict:
        d = self.daemon
        stopping = d.shutdown()
        # the longest any stop under way may take before its SIGKILL: a client waits that
        # long (and a little) for the daemon to exit
        longest = max([d.grace, *(
            stop_wait(svc, d.grace if svc.stopping == "shutdown" else None)
            for svc in self.shell.services() if svc.state is State.STOPPING)])
        return {"pid": os.getpid(), "instance": d.instance, "stopping": stopping,
                "grace": d.grace, "longest_stop": longest}


# ---- arguments ---------------------------------------------------------------------------


def _bytes_of(text: str) -> bytes:
    """``text`` as the bytes a program or a path is made of. A byte that is not UTF-8
    arrives surrogate-escaped (U+DC80-U+DCFF) and goes back as that byte; any other lone
    surrogate stands for no byte at all."""
    try:
        return os.fsencode(text)
    except UnicodeEncodeError:
        raise CommandError("invalid-argument",
                           f"{text!r:.60} holds a lone surrogate, which stands for no byte: "
                           "not a file name or an argument") from None


def arg(args: dict, key: str, types, default=...):
    """``args[key]`` of one of ``types`` (a bool is no int), or ``default`` when absent;
    missing without a default, or of another type: ``invalid-argument``."""
    value = args.get(key, default)
    if value is ...:
        raise CommandError("invalid-argument", f"missing argument {key!r}")
    if value is default:
        return value
    kinds = types if isinstance(types, tuple) else (types,)
    if (isinstance(value, bool) and bool not in kinds) or not isinstance(value, kinds):
        raise CommandError("invalid-argument", f"argument {key!r} has the wrong type")
    return value


# how users know each number argument (the CLI's options)
_SHOWN = {"delay": "--delay", "at": "--at", "every": "--every",
          "restart_delay": "--restart-delay", "restart_max_delay": "the maximum restart delay",
          "stop_timeout": "--stop-timeout"}


def number_arg(args: dict, key: str, default, *, most: float = MAX_SECONDS):
    """A number of seconds from 0 to ``most`` (100 years, or for ``at`` a time within 100
    years from now)."""
    value = arg(args, key, (int, float), default)
    if value is default:
        return value
    try:
        ok = math.isfinite(value) and 0 <= value <= most
    except OverflowError:
        ok = False
    if not ok:
        what = _SHOWN.get(key, key)
        limit = ("a time within 100 years from now" if key == "at"
                 else "a number of seconds from 0 to 100 years")
        raise CommandError("invalid-argument", f"{what} must be {limit}, not {value!r:.40}")
    return float(value)


def parse_signal(value) -> int:
    """A signal as users write it: ``TERM``, ``SIGTERM``, ``term``, ``15``, ``RTMIN+2``."""
    if isinstance(value, int) and not isinstance(value, bool):
        signo = value
    elif isinstance(value, str) and value.isascii() and value.isdigit() and len(value) < 4:
        signo = int(value)
    elif isinstance(value, str) and value.isascii():
        text = value.upper()
        text = text if text.startswith("SIG") else "SIG" + text
        rt = re.fullmatch(r"SIGRTM(IN|AX)([+-]\d{1,2})?", text)
        if rt:
            base = signal.SIGRTMIN if rt[1] == "IN" else signal.SIGRTMAX
            signo = base + int(rt[2] or 0)
        else:
            signo = getattr(signal.Signals, text, None) if text.isidentifier() else None
            if not isinstance(signo, signal.Signals):
                signo = 0
    else:
        signo = 0
    if not 0 < signo <= signal.SIGRTMAX:
        raise CommandError("invalid-argument", f"{value!r:.40} is not a signal (TERM, "
                           "SIGTERM or 15)")
    return int(signo)


def _context(args: dict) -> dict:
    """The --env, --env-file, --user, --stop-signal and --stop-timeout of a create-service,
    checked, as fields of the service."""
    env = arg(args, "env", dict, {})
    pairs = []
    for key, value in env.items():
        if not isinstance(value, str):
            raise CommandError("invalid-argument", f"--env {key}: the value must be a string")
        _bytes_of(key)
        _bytes_of(value)
        try:
            pair = context.env_pair(f"{key}={value}")
            if pair[0] != key:  # {"A=B": "c"} is no variable A=B
                raise ValueError(f"--env {key!r}: a KEY is made of letters, digits and _")
            pairs.append(pair)
        except ValueError as exc:
            raise CommandError("invalid-argument", str(exc)) from None
    env_file = arg(args, "env_file", str, None)
    if env_file is not None:
        _bytes_of(env_file)
        if not os.path.isabs(env_file):
            raise CommandError("invalid-argument", f"--env-file {env_file}: not an absolute "
                               "path")
        try:
            context.read_env_file(env_file)
        except OSError as exc:
            raise CommandError("invalid-argument", f"--env-file {env_file}: "
                               f"{exc.strerror or exc}") from None
        except ValueError as exc:
            raise CommandError("invalid-argument", f"--env-file {exc}") from None
    user = arg(args, "user", str, None)
    if user is not None:
        if os.geteuid() != 0:
            raise CommandError("permission-denied", f"--user {user}: this daemon does not "
                               "run as root, so its services run as its own user only")
        try:
            context.resolve_user(user)
        except ValueError as exc:
            raise CommandError("invalid-argument", f"--user {user or repr(user)}: {exc}") \
                from None
    stop_signal = parse_signal(args.get("stop_signal", "TERM"))
    stop_timeout = number_arg(args, "stop_timeout", None)
    return {"env": tuple(pairs), "env_file": env_file, "user": user,
            "stop_signal": stop_signal, "stop_timeout": stop_timeout}


def _schedule_and_policy(args: dict, restart: int | None, delay: float, mono: float):
    """The schedule, restart policy and start limit a create-service asks for."""
    now = time.time()
    at = number_arg(args, "at", None, most=now + MAX_SECONDS)
    every = number_arg(args, "every", None)
    cron = arg(args, "cron", str, None)
    if sum(x is not None for x in (at, every, cron)) + (delay > 0) > 1:
        raise CommandError("invalid-argument",
                           "choose one of --delay, --at, --every and --cron")
    key = next((k for k, v in (("at", at), ("every", every), ("cron", cron)) if v is not None),
               None)  # what a ValueError is about
    try:
        if at is not None:
            if at <= now:
                shown = datetime.fromtimestamp(at).isoformat(sep=" ", timespec="seconds")
                raise ValueError(f"--at time {shown} is in the past")
            sched = schedule.Schedule.once(at)
        elif every is not None:
            if every <= 0:
                raise ValueError(f"--every must be > 0 seconds, not {every}")
            sched = schedule.Schedule.every(every, mono, wall=False)
        elif cron is not None:
            sched = schedule.Schedule.cron(cron)
        else:
            sched = None
        key = None
        policy = schedule.RestartPolicy.from_options(
            arg(args, "restart", str, None), restart,
            delay=number_arg(args, "restart_delay", 0),
            max_delay=number_arg(args, "restart_max_delay", 60))
        key = "start_limit"
        text = arg(args, "start_limit", str, None)
        limit = (schedule.StartLimit.parse(text) if text is not None
                 else schedule.DEFAULT_START_LIMIT if policy.limit is None else None)
    except ValueError as exc:
        raise CommandError("invalid-argument", str(exc), key) from None
    return sched, policy, limit
