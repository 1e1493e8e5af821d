"""Declared services: ``apply`` (make the instance match its config file), ``export`` and
``save`` (docs/reference.md, "Declared services").

``apply`` plans first and changes nothing until the whole file is good (all or nothing):
a service missing is created; one whose table changed is stopped as ``stop-service``
stops it (its stop signal, SIGKILL after its stop timeout), then removed and created
again from its new table; one that left the file (with ``prune``: one made by
create-service, too) is stopped and removed; one unchanged keeps its process (one made by
create-service with the very table the file gives becomes declared, nothing else). The
answer waits for the stops, like stop-service's.

"Changed" compares canonical tables (``config.canonical``): a declared service's is the
one it was made from (kept with it), one made by create-service's is read back from its
definition (``config.table_of``), so that ``export | apply`` changes nothing.
"""

from __future__ import annotations

import json
import re
import time
import traceback

from supervisor import config
from supervisor.machine import Ev, Event, Refused, Service

CREATE, RESTART, REMOVE, DECLARE, KEEP = "create", "restart", "remove", "declare", "keep"
EXPIRED = "expired"  # a declared one-off start (at) whose time has passed: not made


def _key_of(exc) -> str | None:
    """The config key a create-service refusal is about (its option, in the message)."""
    if exc.code == "not-executable":
        return "command"
    if exc.key is not None:
        return exc.key
    for key in config.KEYS:  # --env, not the start of --env-file
        if re.search(rf"--{key.replace('_', '-')}(?![\w-])", exc.message):
            return key
    return None


def current_table(svc: Service) -> dict | None:
    """The canonical table a service stands for (None: an opened one has none)."""
    if svc.opened:
        return None
    if svc.declared and svc.definition is not None:
        return json.loads(svc.definition)
    return config.table_of(svc)


class Plan:
    """What ``apply`` does: ``changes``, a list of (action, name), in the file's order,
    then removals; ``new``, the services to create (built and checked already)."""

    def __init__(self) -> None:
        self.changes: list[tuple[str, str]] = []
        self.new: dict[str, Service] = {}
        self.definitions: dict[str, str] = {}
        self.errors: list[str] = []
        self.failed: set[str] = set()  # services it could not make: in errors instead

    def summary(self, instance: int, dry_run: bool) -> dict:
        return {"instance": instance, "dry_run": dry_run,
                "changes": [{"action": a, "service": n} for a, n in self.changes
                            if not (n in self.failed and a in (CREATE, RESTART))],
                "errors": self.errors}


def busy(commands) -> bool:
    """Whether an apply is under way (waiting for its stops)."""
    return any(isinstance(w[3], Applying) for w in commands.daemon.waiting)


def held_by_apply(commands, name: str) -> str | None:
    """What an apply under way does to service ``name`` ("making it again" from the file,
    "removing it"), or None: a command on it meanwhile would be undone by the apply."""
    for w in commands.daemon.waiting:
        applying = w[3]
        if isinstance(applying, Applying) and not applying.finished \
                and name in applying.names:
            removing = (REMOVE, name) in applying.plan.changes
            return "removing it" if removing else "making it again from the file"
    return None


def plan(commands, prune: bool, declared: dict[str, tuple[dict, str]] | None = None,
         *, skip_bad: bool = False) -> Plan:
    """The plan that makes the instance match ``declared`` (default: its config files).
    Raises CommandError ``invalid-config`` naming the file, line and key of the first thing
    wrong, before anything changes; with ``skip_bad`` (the daemon's start) a service that
    cannot be made is left out and named in ``errors`` instead."""
    from supervisor.commands import CommandError

    if declared is None:
        try:
            declared = config.load(commands.daemon.instance)
        except config.ConfigError as exc:
            raise CommandError("invalid-config", str(exc)) from None
    records = commands.shell.records
    out = Plan()
    now = time.time()
    for name, (table, where) in declared.items():
        definition = json.dumps(table)
        out.definitions[name] = definition
        rec = records.get(name)
        if rec is not None and rec.svc.opened:
            message = (f"{where}: [services.{name}] a process opened with open-service has "
                       "that name: remove it first (remove-service leaves it running)")
            if skip_bad:
                out.errors.append(message)
                continue
            raise CommandError("invalid-config", message)
        if rec is not None and current_table(rec.svc) == table:
            out.changes.append((KEEP if rec.svc.declared and rec.svc.definition == definition
                                else DECLARE, name))
            continue
        try:
            try:
                args = config.create_args(name, table, now)
            except ValueError as exc:  # "KEY: why"
                raise CommandError("invalid-argument", str(exc),
                                   str(exc).split(":")[0]) from None
            fields = commands._definition(args)
        except CommandError as exc:
            if "at" in table and "in the past" in exc.message:
                out.changes.append((EXPIRED, name))  # a one-off start gone by: not an error
                continue
            key = _key_of(exc)
            said = exc.message  # create-service's words name its option: here, the key
            if key is not None:
                said = re.sub(rf"--{key.replace('_', '-')}(?![\w-])", key, said, count=1)
            message = f"{config.where_of(where, name, key)}: [services.{name}] {said}"
            if skip_bad:
                out.errors.append(message)
                continue
            raise CommandError("invalid-config", message) from None
        out.new[name] = Service(name=name, declared=True, definition=definition, **fields)
        out.changes.append((CREATE if rec is None else RESTART, name))
    for name, rec in records.items():
        if name not in declared and not rec.svc.opened and (rec.svc.declared or prune):
            out.changes.append((REMOVE, name))
    return out


class Applying:
    """The answer to an ``apply`` whose services are being stopped: once none is stopping
    any more, those to remove are removed and those to make again are made (by the daemon,
    at the end of a turn, :meth:`ready`); then the answer goes out."""

    def __init__(self, commands, out: Plan, stopping: list[str], records: dict) -> None:
        self.commands, self.plan, self.names = commands, out, stopping
        self.records = records  # name -> the record planned for (not another of that name)
        self.finished = False

    def ready(self) -> bool:
        records = self.commands.shell.records
        from supervisor.machine import State

        if any(n in records and records[n].svc.state is State.STOPPING for n in self.names):
            return False
        if not self.finished:
            self.finished = True
            try:
                _finish(self.commands, self.plan, self.records)
            except Exception as exc:  # a bug must cost this apply, never the daemon
                self.plan.errors.append(f"internal error: {exc!r}")
                self.commands.daemon.journal.send(
                    f"internal error in apply: {exc!r}\n{traceback.format_exc()}", 2,
                    SUPERVISOR_COMMAND="apply", ERROR_CODE="internal")
        return True

    def result(self) -> dict:
        return self.plan.summary(self.commands.daemon.instance, False)


def carry_out(commands, out: Plan) -> Applying:
    """Start carrying out ``out``: declarations and creations now, stops of what is to be
    made again or removed; the rest when they have stopped (:class:`Applying`)."""
    shell = commands.shell
    stopping = []
    records = {}
    for action, name in out.changes:
        if action == DECLARE:
            shell.apply(name, Event(Ev.DECLARE, definition=out.definitions[name]))
        elif action == CREATE:
            _create(commands, out, name)
        elif action in (RESTART, REMOVE):
            records[name] = shell.records[name]
            try:
                shell.apply(name, Event(Ev.STOP))
            except Refused:  # nothing to stop in its state (it is removed all the same)
                pass
            stopping.append(name)
    return Applying(commands, out, stopping, records)


def at_start(commands) -> Applying | None:
    """The daemon's start (after recovery): make the instance match its config file, as
    ``supervisor apply`` does; recovered services that are unchanged keep their process.
    A file that cannot be applied is journaled, never fatal; a service that cannot be made
    is left out (journaled), the others are made."""
    from supervisor.commands import CommandError

    journal = commands.daemon.journal
    try:
        out = plan(commands, prune=False, skip_bad=True)
    except CommandError as exc:
        journal.send(f"config file not applied: {exc.message}", 3,
                     SUPERVISOR_EVENT="config-error")
        return None
    except Exception as exc:  # a bug must never keep the instance from starting
        journal.send(f"config file not applied: internal error {exc!r}\n"
                     f"{traceback.format_exc()}", 2, SUPERVISOR_EVENT="config-error")
        return None
    for error in out.errors:
        journal.send(f"declared service left out: {error}", 3, SUPERVISOR_EVENT="config-error")
    if not out.changes:
        return None
    done = [f"{a} {n}" for a, n in out.changes if a != KEEP]
    journal.send(f"config file applied: {', '.join(done) or 'nothing to change'}",
                 6 if done else 7, SUPERVISOR_EVENT="config-applied")
    return carry_out(commands, out)


def _finish(commands, out: Plan, records: dict) -> None:
    shell = commands.shell
    closing = commands.daemon.stopping  # the instance closes: nothing new is started
    for action, name in out.changes:
        if action not in (RESTART, REMOVE):
            continue
        now = shell.records.get(name)
        if now is None:  # removed meanwhile (remove-service): the file still rules
            if action == RESTART and not closing:
                _create(commands, out, name)
            continue
        if now is not records[name]:
            out.errors.append(f"{name}: replaced meanwhile by another service of that "
                              "name: left alone")
            continue
        shell.apply(name, Event(Ev.REMOVE))
        if action == RESTART and not closing:
            _create(commands, out, name)


def _create(commands, out: Plan, name: str) -> None:
    if name in commands.shell.records:  # made meanwhile by a create-service
        out.failed.add(name)
        out.errors.append(f"{name}: a service of that name exists already")
        return
    try:
        commands.shell.apply(name, Event(Ev.CREATE), new=out.new[name])
    except Refused as exc:
        out.failed.add(name)
        out.errors.append(f"{name}: {exc}")
        commands.daemon.journal.send(f"declared service {name} not made: {exc}", 3,
                                     SUPERVISOR_EVENT="config-error", SERVICE_NAME=name)


def export(commands) -> dict:
    """The created services of the instance as ``{name: canonical table}``; opened ones
    are left out (nothing could start them again), and named in ``skipped``."""
    tables, skipped = {}, []
    for name, rec in commands.shell.records.items():
        table = current_table(rec.svc)
        if table is None or not _is_text(table):
            skipped.append(name)  # opened, or words that are not UTF-8 (TOML is text)
        else:
            tables[name] = table
    return {"instance": commands.daemon.instance, "services": tables, "skipped": skipped}


def save(commands) -> dict:
    """Write the created services to the instance's file (``config.path_of``), all but
    those a ``<N>.d/`` file declares, and mark them all declared: they come back when the
    daemon starts again. The file is replaced atomically (and durably)."""
    import os

    from supervisor import state
    from supervisor.commands import CommandError

    instance = commands.daemon.instance
    path = config.path_of(instance)
    try:
        declared = config.load(instance)
    except config.ConfigError as exc:
        raise CommandError("invalid-config", f"{exc}; fix it before saving over it") from None
    elsewhere = {name for name, (_, where) in declared.items()
                 if not where.startswith(path + ":")}
    exported = export(commands)
    tables = {n: t for n, t in exported["services"].items() if n not in elsewhere}
    # what the file declares and this instance does not have (its create failed: a program
    # not installed yet) stays declared: a save writes what runs, it erases nothing
    kept = sorted(n for n in declared if n not in elsewhere and n not in commands.shell)
    tables.update((n, declared[n][0]) for n in kept)
    text = config.dumps(tables, f"Instance {instance}'s declared services, written by "
                                "`supervisor save`.\nEdit, then `supervisor apply`.")
    data = text.encode()
    if len(data) > config.MAX_FILE:  # it could not be read back
        raise CommandError("not-writable", f"{path} would hold {len(data):,} bytes, "
                           f"over the {config.MAX_FILE >> 20} MiB a config file may: split "
                           "the services into <N>.d/ files")
    try:
        os.makedirs(os.path.dirname(path), mode=0o755, exist_ok=True)
        state.dump(path, data)
    except OSError as exc:
        raise CommandError("not-writable", f"cannot write {path}: "
                           f"{exc.strerror or exc}") from None
    for name, table in exported["services"].items():
        commands.shell.apply(name, Event(Ev.DECLARE,
                                         definition=json.dumps(table)))
    return {**exported, "path": path, "written": sorted(tables), "kept": kept}


def _is_text(table: dict) -> bool:
    """Whether every word of ``table`` is UTF-8 text (TOML holds nothing else)."""
    try:
        json.dumps(table, ensure_ascii=False).encode()
    except UnicodeEncodeError:
        return False
    return True
