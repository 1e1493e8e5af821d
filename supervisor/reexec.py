"""Live re-exec (``supervisor reload``, SIGHUP): the daemon executes its program afresh in
its own process, and the new program takes over where the old one stood.

Same pid, so created services stay our children. Carried across ``exec`` (their CLOEXEC
flag cleared): the instance lock, the listening socket, every pidfd, every client
connection with what it had buffered, the log relay's socket. The rest (services,
timers, what those fds are) goes in a memfd, in the state document's format
(``supervisor/state.py``), whose fd the new program is given (``--reexec-fd``).
:func:`hand_over` is the old program's half, called by the loop at the end of a turn;
:func:`read` and :func:`take_over` are the new one's, called by ``supervisor/startup.py``.
Each function is given the :class:`~supervisor.daemon.Daemon`, ``d``.
"""

from __future__ import annotations

import os
import socket
import sys

from supervisor import process, recovery, state
from supervisor.process import Proc


def hand_over(d) -> None:
    """Execute the daemon's program afresh with what it carries; when ``exec`` fails, the
    old program carries on as if nothing happened (journaled)."""
    if d.held_reloads:  # the answers of the reloads go out now, just before the exec
        for reply, conn in d.held_reloads:
            reply.data = reply.held
            d.server.pending.add(conn)
        d.held_reloads.clear()
        d.server.flush_pending()
    head = d.state_head()
    procs = d.shell.carried_procs()
    for c in d.server.connections:
        c.move_ready()
    head.update(
        generation=d.generation + 1, lock_fd=d.lock.file_fd,
        name_lock_fd=d.lock.name_sock.fileno() if d.lock.name_sock else None,
        listener_fd=d.server.listener.fileno(), socket_path=d.socket_path,
        owns_socket=d.owns_socket, child_nofile=process.CHILD_NOFILE,
        procs=[{"fd": p.pidfd, "pid": p.pid, "child": p.child, "cgroup": p.cgroup,
                "service": name} for p, name in procs],
        connections=[{"fd": c.sock.fileno(), "rbuf": bytes(c.rbuf).hex(),
                      "wbuf": bytes(c.wbuf).hex(), "closing": c.closing}
                     for c in d.server.connections if c.discard < 0],
        relay=d.shell.outputs.carry())
    fds = [*d.lock.fds(), head["listener_fd"], *(p["fd"] for p in head["procs"]),
           *(c["fd"] for c in head["connections"]),
           *d.shell.outputs.carried_fds(head["relay"])]
    memfd = os.memfd_create("supervisor-state", 0)
    os.write(memfd, d.shell.encode(head))
    os.lseek(memfd, 0, os.SEEK_SET)
    for fd in (*fds, memfd):
        os.set_inheritable(fd, True)
    d.journal.send(f"re-executing (generation {head['generation']}, "
                   f"{len(d.shell)} services)", 5, SUPERVISOR_EVENT="reexec")
    d.journal.flush()
    argv = [sys.executable, "-m", "supervisor.daemon", "--instance", str(d.instance),
            "--grace", repr(d.grace), "--reexec-fd", str(memfd)]
    try:
        os.execv(sys.executable, argv)
    except OSError as exc:  # still the old program: carry on as if nothing happened
        for fd in fds:
            os.set_inheritable(fd, False)
        os.close(memfd)
        d.journal.send(f"re-exec failed: {exc.strerror}; still serving", 3,
                       SUPERVISOR_EVENT="reexec")


def read(fd: int) -> tuple[dict, list[state.Stored]]:
    """What the old program handed over in the memfd ``fd`` (closed): (head, services).
    ``OSError`` or :class:`state.StateError` when it cannot be read."""
    with os.fdopen(fd, "rb") as f:
        return state.decode(f.read())


def take_over(d, head: dict, services: list[state.Stored]) -> None:
    """The new program's half: the services, their processes, the clients and the log
    relay, as :func:`hand_over` left them (the lock and the listening socket were taken
    already, by start-up)."""
    d.generation = head["generation"]
    d.started_at = head["started_at"]
    recovery.adopt_tree(d, head)
    carried, orphans = {}, []
    for entry in head["procs"]:
        os.set_inheritable(entry["fd"], False)
        proc = Proc(entry["pid"], entry["fd"], entry["child"])
        cgroup = entry["cgroup"]  # an older version carried the service's name
        proc.cgroup = cgroup if cgroup is None or cgroup.startswith("svc-") \
            else f"svc-{cgroup}"
        if entry["service"] is None:
            orphans.append(proc)
        else:
            carried[entry["service"]] = proc
    d.shell.take_back(services, carried, orphans)
    for c in head["connections"]:
        os.set_inheritable(c["fd"], False)
        d.server.adopt(socket.socket(fileno=c["fd"]), bytes.fromhex(c["rbuf"]),
                       bytes.fromhex(c["wbuf"]), c["closing"])
    d.shell.outputs.restore(head["relay"])
    d.journal.send(f"re-executed (generation {d.generation}): {len(d.shell)} "
                   "services carried over", 5, SUPERVISOR_EVENT="reexec")
