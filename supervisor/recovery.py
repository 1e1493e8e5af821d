"""Crash recovery at start: the services of an earlier daemon of this instance that did not
close (it crashed, or was killed) taken back from the state file and its log
(``supervisor/state.py``), and from the cgroups they run in where the file cannot tell
(``supervisor/found.py``); what is left in our cgroups that no service claims is killed.

Nothing read back is trusted: a file that cannot be is set aside with a journal entry,
never used; one of another boot is dropped. Called once, by ``supervisor/startup.py``,
with the :class:`~supervisor.daemon.Daemon` made and its loop not yet running; a live
re-exec takes its services over instead (``supervisor/reexec.py``), and shares
:func:`adopt_tree` with this. Each function is given the daemon, ``d``.
"""

from __future__ import annotations

import contextlib
import os
import time

from supervisor import declare, found, state
from supervisor.cgroups import Cgroups
from supervisor.commands import CommandError


def recover(d, stored: dict[int, int] | None = None) -> None:
    """At start: take back the services of an earlier daemon of this instance that did
    not close (it crashed; see :meth:`Shell.take_back`), then kill whatever is left in
    our cgroups that no service claims. A state file that cannot be trusted is set
    aside with a journal entry, never used; one of another boot is dropped. ``stored``:
    the pidfds the manager's fd store kept, by pid."""
    path, name = d.state_path, d.state_file.path
    bad: list[str] = []  # entries of services that cannot be trusted: left out
    log_trouble = None  # what is wrong with the state file's log
    try:
        data = state.load(name, d.dir_fd)
        if data is None:
            state.remove(d.state_file.log_path, d.dir_fd)  # no file: stale
        else:
            doc = state.parse(data)
            log_trouble = _replay_log(d, doc)
            head, services = state.decode_doc(doc, d.instance, bad)
            foreign = _foreign(d, head)
            if foreign is not None:
                raise state.StateError(foreign)
            if head.get("boot_id") is None:  # every file we write has one
                raise state.StateError("it names no boot (boot_id): its pids may be "
                                       "another boot's")
            if head["boot_id"] != d.boot_id:
                d.state_file.remove(d.dir_fd)
                d.journal.send(f"state file {path} is from before the machine last "
                               "booted: dropped", 5, SUPERVISOR_EVENT="state-error")
                data = None
    except state.StateError as exc:
        aside = _set_aside(d, name, "ignored (it could not be set aside: {})") \
            or "gone already"
        log_aside = _set_aside(d, d.state_file.log_path,
                               "ignored (it could not be set aside: {})")
        d.journal.send(f"state file {path} cannot be trusted ({exc}): {aside}"
                       + (f"; its log {log_aside}" if log_aside else ""), 3,
                       SUPERVISOR_EVENT="state-error")
        data = None
    if data is not None and log_trouble:  # what came before the wrong line is used
        log_aside = _set_aside(d, d.state_file.log_path, "not set aside ({})")
        d.journal.send(f"state file {path}: its log cannot be trusted {log_trouble}: "
                       f"the state as it was before that is used; the log is {log_aside}", 3,
                       SUPERVISOR_EVENT="state-error")
    if data is not None and bad:  # the file as it was, for a look; the rest is used
        aside = _set_aside(d, name, "not set aside ({})") or "gone already"
        log_aside = _set_aside(d, d.state_file.log_path, "not set aside ({})")
        shown = "; ".join(bad[:3]) + (f"; and {len(bad) - 3} more" if len(bad) > 3 else "")
        d.journal.send(f"state file {path}: {len(bad)} of {len(bad) + len(services)} "
                       f"services cannot be trusted and are left out ({shown}); the "
                       f"file is {aside}"
                       + (f", its log {log_aside}" if log_aside else ""), 3,
                       SUPERVISOR_EVENT="state-error")
    if data is not None:
        adopt_tree(d, head)
        adopted, ended = d.shell.take_back(services, stored=stored)
        stored = None
        d.journal.send(f"recovered {len(services)} services ({adopted} re-adopted, "
                       f"{ended} ended meanwhile)", 5, SUPERVISOR_EVENT="recovered")
        if bad or log_trouble:  # what was taken back is on disk at once, whole
            d.save_state()
    if (data is None or bad or log_trouble) and _take_back_found(d, stored):
        stored = None  # (what was not theirs, closed)
    for pid, fd in (stored or {}).items():  # no state to match them with
        os.close(fd)
        d.notifier.stored.add(pid)
        d.notifier.drop(pid)
    killed = d.shell.sweep_cgroups()
    if killed:
        d.journal.send(f"killed {killed} processes left in cgroups of ours that no "
                       "service claims", 4, SUPERVISOR_EVENT="orphans-killed")


def _replay_log(d, doc: dict) -> str | None:
    """The state file's log applied to its document (:func:`state.replay`): what is
    wrong with the log, or None. One that cannot be trusted as a file applies not at
    all."""
    try:
        log = state.load(d.state_file.log_path, d.dir_fd)
    except state.StateError as exc:
        return f"as a file ({exc})"
    applied, trouble = state.replay(doc, log or b"")
    return None if trouble is None else f"from line {applied + 1} ({trouble})"


def _set_aside(d, name: str, failed: str) -> str | None:
    """Set a file of the state aside: where it went (``set aside as ...``), None when
    there is no such file, or ``failed`` with why it could not be moved."""
    try:
        aside = state.set_aside(name, time.time(), d.dir_fd)
    except OSError as err:
        return failed.format(err.strerror or err)
    return f"set aside as {aside}" if aside else None


def _take_back_found(d, stored: dict[int, int] | None) -> bool:
    """The services found running in cgroups of ours with no record of them (see
    :mod:`supervisor.found`): taken back, as the config file declares them or opened,
    and on disk at once; through the pidfd the manager's fd store kept of a process,
    where it did (``stored``, consumed when anything was found: then True)."""
    def declared() -> dict:
        try:
            return declare.plan(d.commands, prune=False, skip_bad=True).new
        except CommandError:  # a config that cannot be read: at_start journals why
            return {}
    entries = found.entries(d.shell.cgroups, set(d.shell.records), declared,
                            time.time(), d.shell.claimed_cgroups()) \
        if d.shell.cgroups else []
    for svc, cgroup in ((e.svc, e.cgroup) for e in entries):
        how = "as the config file declares it" if svc.declared else \
            "opened: watched, never started again (how to start it was in the state)"
        d.shell.log_event(svc, "recovered", f"{svc.name} (pid {svc.pid}) found running "
                          f"in cgroup {cgroup} with no record of it: taken back {how}",
                          4)
    if entries:
        d.shell.take_back(entries, stored=stored)
        d.save_state()
    return bool(entries)


def _legacy_tree(d, old: str) -> bool:
    """Whether ``old`` is the tree an older version of this instance kept beside ours
    (named after the daemon's pid); a tree named after a runtime directory is that
    directory's daemon's, never ours to take."""
    prefix = f"supervisor.{d.instance}."
    name = os.path.basename(old)
    return os.path.dirname(old) == d.shell.cgroups.home and name.startswith(prefix) \
        and name[len(prefix):].isdigit()


def _foreign(d, head: dict) -> str | None:
    """Why a state document is not this daemon's to take back, or None: its cgroup
    tree is another runtime directory's (a file copied from there, or edited): its
    pids are that daemon's services."""
    old, ours = head.get("cgroups"), d.shell.cgroups
    if old and ours and old != ours.base and not _legacy_tree(d, old):
        return f"its cgroup tree {old} is not this instance's ({ours.base}): it is " \
               "another runtime directory's"
    return None


def adopt_tree(d, head: dict) -> None:
    """Where an earlier daemon of this instance kept its services' cgroups elsewhere
    (an older version named the tree after its pid), that tree is the one to use --
    only ever a tree of this instance's beside ours, under our own cgroup."""
    old, ours = head.get("cgroups"), d.shell.cgroups
    if old and ours and old != ours.base and _legacy_tree(d, old) \
            and os.path.isdir(old) and not os.path.islink(old):
        with contextlib.suppress(OSError):
            d.shell.cgroups = Cgroups(old, ours.mount, d.sel)
            ours.close()
