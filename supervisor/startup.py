"""Start-up of one instance: the runtime dir, the instance lock, the listening socket (bound,
socket-activated or carried over a re-exec), the fd limit, then a `Daemon` that recovers
(or restores what a re-exec carried) and runs until the instance is closed."""

from __future__ import annotations

import contextlib
import os
import resource
import socket
import sys

from supervisor import paths, process, recovery, reexec, state
from supervisor.control import bind_listener
from supervisor.daemon import HANDLED_SIGNALS, Daemon
from supervisor.lock import Held, InstanceLock
from supervisor.native import SignalFd
from supervisor.process import seal_inherited_fds
from supervisor.sdnotify import activated_fds


def _raise_nofile() -> None:
    """The daemon holds fds for every service: its soft limit up to the hard one. Its
    children get the limit back that it was started with (``process.CHILD_NOFILE``)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    process.CHILD_NOFILE = soft
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def serve(instance: int, grace: float = 5.0, reexec_fd: int | None = None) -> int:
    """Run instance ``instance`` until it is closed. Returns the exit code."""
    # Block the signals we read from the signalfd before anything else (no thread exists).
    SignalFd.block(HANDLED_SIGNALS)
    seal_inherited_fds()
    process.prepare_spawns()
    try:
        base = paths.ensure_runtime_dir()
    except paths.UnsafeDir as exc:
        print(f"supervisor-daemon: {exc}; refusing to run", file=sys.stderr)
        return 1
    # relative directories are where the daemon was started, not "/" where it goes next:
    # made absolute for whatever reads them later (a live re-exec reads them again)
    os.environ["SUPERVISOR_RUNTIME_DIR"] = base
    if os.environ.get("SUPERVISOR_CONFIG_DIR"):
        os.environ["SUPERVISOR_CONFIG_DIR"] = os.path.abspath(
            os.environ["SUPERVISOR_CONFIG_DIR"])
    carried = None
    if reexec_fd is not None:  # we are a live re-exec: take over from our former self
        try:
            carried = reexec.read(reexec_fd)
        except (OSError, state.StateError) as exc:  # the state file on disk still holds them
            print(f"supervisor-daemon: cannot take over after re-exec: {exc}", file=sys.stderr)
            return 1
        head = carried[0]
        sock_path, owned = head["socket_path"], head["owns_socket"]
        lock = InstanceLock.carried(base, instance, paths.lock_path(instance, base),
                                    head["lock_fd"], head.get("name_lock_fd"))
        process.CHILD_NOFILE = head.get("child_nofile")
        os.set_inheritable(head["listener_fd"], False)
        listener = socket.socket(fileno=head["listener_fd"])
    else:
        try:
            lock = InstanceLock.take(base, instance, paths.lock_path(instance, base))
        except Held:
            print(f"supervisor-daemon: instance {instance} is already running",
                  file=sys.stderr)
            return 1
        except OSError as exc:
            print(f"supervisor-daemon: cannot lock instance {instance} "
                  f"({exc.filename or 'its lock'}): {exc.strerror}", file=sys.stderr)
            return 1
        try:
            listener, stored = activated_fds()  # socket activation, and the fd store
        except OSError as exc:
            lock.close()
            print(f"supervisor-daemon: {exc}", file=sys.stderr)
            return 1
        owned = listener is None
        if owned:
            sock_path = paths.socket_path(instance, base)
            try:
                listener = bind_listener(sock_path)
            except OSError as exc:
                lock.close()
                print(f"supervisor-daemon: cannot listen on {sock_path}: {exc.strerror}",
                      file=sys.stderr)
                return 1
        else:
            sock_path = listener.getsockname() or paths.socket_path(instance, base)
        os.chdir("/")
        _raise_nofile()
    daemon = Daemon(instance, listener, socket_path=sock_path, rundir=base, grace=grace)
    daemon.lock, daemon.owns_socket = lock, owned
    try:
        if carried is not None:
            reexec.take_over(daemon, *carried)
        else:
            recovery.recover(daemon, stored)
            daemon.apply_config()
        daemon.run()
        # closed on purpose: nothing to recover
        daemon.state_file.remove(daemon.dir_fd)
    finally:
        daemon.close()
        if owned:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(sock_path)
        daemon.journal.send(f"instance {instance} closed", 5, SUPERVISOR_EVENT="daemon-closed")
        daemon.journal.flush()
        lock.close()
    return 0
