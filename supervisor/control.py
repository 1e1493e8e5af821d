"""The control socket: accepting clients, per-connection buffers, peer credentials, and
its path kept (:class:`SocketKeeper`: made again when it is removed).

Everything is non-blocking and served from the daemon's selector: a slow or stuck client
(half a request, or not reading its answers) holds nobody else up.

Answers go out in request order. A handler answers with bytes, or with a :class:`Reply`
whose bytes may still change before the end of the loop's turn (the daemon turns it into
an error when it cannot save the state it reports) or come later (a command that waits for
something to happen); answers behind it wait their turn.
"""

from __future__ import annotations

import collections
import errno
import functools
import os
import selectors
import socket
import stat
import struct
from collections.abc import Callable

from supervisor.native import Inotify
from supervisor.protocol import MAX_REQUEST

_RECV = 64 * 1024
# Unfinished requests (a request may be up to 1 MiB) of all clients together: above this, a
# client whose unfinished request is over _FAIR_INPUT is refused (too-busy) and hung up on.
_TOTAL_INPUT = 32 * 1024 * 1024
_FAIR_INPUT = 64 * 1024
# Backpressure: a client whose answers not yet sent exceed _CONN_BACKLOG is neither read
# nor served until it reads them; and while all clients' together exceed _TOTAL_BACKLOG,
# only a client with no answer waiting to be sent is (one turn's requests at a time): those
# that do not read hold only themselves up. One answer may be larger (a list of 10,000
# services is ~3 MB); the daemon's memory stays bounded however many clients pipeline
# without reading.
_CONN_BACKLOG = 1024 * 1024
_TOTAL_BACKLOG = 16 * 1024 * 1024
_MAX_DISCARD = 64 * 1024 * 1024  # dropped after an oversized request before hanging up


class Reply:
    """An answer whose bytes may change or come later (``data`` None: not yet)."""

    __slots__ = ("data", "held")

    def __init__(self, data: bytes | None = None) -> None:
        self.data = data
        self.held: bytes | None = None  # bytes to send later (a reload's, at the re-exec)


class Peer:
    __slots__ = ("gid", "pid", "uid")

    def __init__(self, pid: int, uid: int, gid: int) -> None:
        self.pid, self.uid, self.gid = pid, uid, gid


def bind_listener(path: str, dir_fd: int | None = None) -> socket.socket:
    """A listening stream socket at ``path``, mode 0600 from the start (no chmod race).
    ``dir_fd``: the directory it goes in, held open and checked already: the socket is
    made in that very directory, even if another was put at its path meanwhile."""
    name = path if dir_fd is None else os.path.basename(path)
    try:
        os.unlink(name, dir_fd=dir_fd)  # we hold the instance lock: whatever is here is stale
    except FileNotFoundError:
        pass
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
    old = os.umask(0o177)
    try:
        sock.bind(path if dir_fd is None else f"/proc/self/fd/{dir_fd}/{name}")
    except OSError:
        sock.close()
        raise
    finally:
        os.umask(old)
    sock.listen(1024)
    return sock


class Connection:
    """One client. The server's ``handle(line, conn)`` turns a request line into a response.

    Lifecycle: serving -> (EOF, or a request over 1 MiB) closing: answers still queued are
    flushed, then the connection closes. After an oversized request the write side is shut
    down and what the client still sends is read and dropped (up to a bound), so that it
    gets the error instead of a reset.
    """

    def __init__(self, server: Server, sock: socket.socket) -> None:
        self.server = server
        self.sock = sock
        self.rbuf = bytearray()
        self.wbuf = bytearray()  # answers on their way out
        self.out: collections.deque[bytes | Reply] = collections.deque()  # not flushed yet
        self.queued = 0  # bytes in self.out
        self.closing = False  # no more requests: close once wbuf is flushed
        self.discard = -1  # >= 0: bytes still to drop after an oversized request
        self.events = selectors.EVENT_READ
        pid, uid, gid = struct.unpack("3i", sock.getsockopt(
            socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i")))
        self.peer = Peer(pid, uid, gid)

    def on_event(self, mask: int) -> None:
        """Read and serve; the answers go out at the end of the loop's turn, once the
        daemon has saved the state they report (see :meth:`Server.flush_pending`)."""
        if mask & selectors.EVENT_READ:
            self._on_readable()
        if self.sock.fileno() >= 0:
            self.server.pending.add(self)

    def flush(self) -> None:
        """Send what is queued; serve requests held back by backpressure once it is gone
        (their answers wait for the next flush)."""
        if self.sock.fileno() >= 0 and self._flush():
            before = len(self.rbuf)
            self._serve_lines()
            self.server.inbuf += len(self.rbuf) - before
            if self.wbuf or self.out or self.closing:
                self.server.pending.add(self)

    def _on_readable(self) -> None:
        try:
            data = self.sock.recv(_RECV)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            self.close()
            return
        if self.discard >= 0:
            self.discard -= len(data)
            if not data or self.discard < 0:
                self.close()
            return
        before = len(self.rbuf)
        if not data:
            self.closing = True
        else:
            self.rbuf += data
        self._serve_lines()
        self.server.inbuf += len(self.rbuf) - before
        if self.server.inbuf > _TOTAL_INPUT and self.discard < 0 \
                and len(self.rbuf) - (self.rbuf.rfind(b"\n") + 1) > _FAIR_INPUT:
            # too many large requests at once: this one is not taken (memory stays bounded)
            self.server.inbuf -= len(self.rbuf)
            self._refuse(self.server.refuse(len(self.rbuf), "too-busy"))

    def _serve_lines(self) -> None:
        start = 0
        over = 0  # the size of a whole line over MAX_REQUEST: refused as one still coming
        handle = self.server.handle
        try:
            while self._may_serve():
                end = self.rbuf.find(b"\n", start)
                if end < 0:
                    break
                if end + 1 - start > MAX_REQUEST:  # however the bytes came in
                    over = end + 1 - start
                    break
                line = bytes(self.rbuf[start:end])
                start = end + 1  # consumed, whatever handling it does
                if line.strip():
                    self._answer(handle(line, self))
        finally:
            del self.rbuf[:start]
        if over:
            self._refuse(self.server.refuse(over, "request-too-large"))
            return
        if b"\n" in self.rbuf and self.server.backlog > _TOTAL_BACKLOG:
            self.server.held.add(self)  # served again once the others have read theirs
        # only the unterminated tail is one request; whole lines held back by
        # backpressure are many small ones
        # (its newline still to come counts: a tail of MAX_REQUEST bytes is over already)
        if len(self.rbuf) - (self.rbuf.rfind(b"\n") + 1) >= MAX_REQUEST:
            self._refuse(self.server.refuse(len(self.rbuf), "request-too-large"))
        elif self.closing and self.discard < 0 and self.rbuf.strip() \
                and b"\n" not in self.rbuf:
            # the peer closed after an unterminated request: answer it all the same
            line, self.rbuf = bytes(self.rbuf), bytearray()
            self._answer(handle(line, self))

    def _refuse(self, answer: bytes) -> None:
        """Answer with an error, take no more requests, drop what the client still sends
        (up to a bound) so that it reads the error rather than a reset, then hang up."""
        self._answer(answer)
        self.rbuf.clear()
        self.closing = True
        self.discard = _MAX_DISCARD

    def _answer(self, answer: bytes | Reply) -> None:
        self.out.append(answer)
        if isinstance(answer, bytes):
            self.queued += len(answer)
            self.server.backlog += len(answer)

    def backlog(self) -> int:
        """Bytes of answers not sent yet (those of replies that wait not counted)."""
        return len(self.wbuf) + self.queued

    def _may_serve(self) -> bool:
        mine = self.backlog()
        return mine <= _CONN_BACKLOG and (self.server.backlog <= _TOTAL_BACKLOG or mine == 0)

    def move_ready(self) -> None:
        """Move the answers that are ready, in order, to the bytes to send."""
        out = self.out
        while out:
            head = out[0]
            data = head if isinstance(head, bytes) else head.data
            if data is None:
                return
            out.popleft()
            self.wbuf += data
            if head is data:
                self.queued -= len(data)
            else:
                self.server.backlog += len(data)

    def _flush(self) -> bool:
        """Send what is queued and set the events wanted. True when requests held back by
        backpressure may now be served."""
        self.move_ready()
        if self.wbuf:
            try:
                sent = self.sock.send(self.wbuf)
                del self.wbuf[:sent]
                self.server.backlog -= sent
            except (BlockingIOError, InterruptedError):
                pass
            except OSError:
                self.close()
                return False
        if not self.wbuf and self.closing and not self.out:
            if self.discard < 0:
                self.close()
                return False
            self.sock.shutdown(socket.SHUT_WR)  # answered; now drop what still comes
        want = selectors.EVENT_WRITE if self.wbuf else 0
        if self.discard >= 0 or (not self.closing and self._may_serve()):
            want |= selectors.EVENT_READ
        if want != self.events:
            self.events = want
            self.server.sel.modify(self.sock, want, self.on_event)
        return (not self.wbuf and not self.out and not self.closing and b"\n" in self.rbuf)

    def close(self) -> None:
        if self.sock.fileno() >= 0:
            self.server.sel.unregister(self.sock)
            self.server.connections.discard(self)
            self.server.pending.discard(self)
            self.server.held.discard(self)
            self.server.backlog -= self.backlog()
            self.server.inbuf -= len(self.rbuf)
            self.sock.close()


class Server:
    """Accepts clients on ``listener`` and serves them through ``handle``."""

    def __init__(self, sel: selectors.BaseSelector, listener: socket.socket,
                 handle: Callable[[bytes, Connection], bytes],
                 refuse: Callable[[int, str], bytes]) -> None:
        self.sel = sel
        self.listener = listener
        self.handle = handle
        self.refuse = refuse  # refuse(bytes received, error code): the error answer
        self.connections: set[Connection] = set()
        self.pending: set[Connection] = set()  # answers to send at the end of the turn
        self.backlog = 0  # bytes of answers not sent yet, all clients together
        self.inbuf = 0  # bytes of requests received and not served yet, all clients
        self.held: set[Connection] = set()  # not served while that is over _TOTAL_BACKLOG
        self.refused = 0  # clients hung up on for want of fds
        self._reserve = os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)
        listener.setblocking(False)
        sel.register(listener, selectors.EVENT_READ, self._on_accept)

    def adopt(self, sock: socket.socket, rbuf: bytes = b"", wbuf: bytes = b"",
              closing: bool = False) -> Connection:
        """Serve a connection carried over a re-exec, with what it had buffered."""
        sock.setblocking(False)
        conn = Connection(self, sock)
        conn.rbuf += rbuf
        conn.wbuf += wbuf
        self.backlog += len(wbuf)
        self.inbuf += len(rbuf)
        conn.closing = closing
        self.connections.add(conn)
        self.sel.register(sock, selectors.EVENT_READ, conn.on_event)
        self.pending.add(conn)  # flush what waited, serve complete requests that waited
        if b"\n" in conn.rbuf:
            conn._serve_lines()
        return conn

    def _on_accept(self, mask: int) -> None:
        for _ in range(256):  # bounded, so clients cannot starve the rest of the loop
            try:
                sock, _addr = self.listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                if exc.errno in (errno.EMFILE, errno.ENFILE) and self._reserve >= 0:
                    self._shed_one()  # else the listener stays readable: a busy loop
                    continue
                return
            sock.setblocking(False)
            try:
                conn = Connection(self, sock)
            except OSError:
                sock.close()
                continue
            self.connections.add(conn)
            self.sel.register(sock, selectors.EVENT_READ, conn.on_event)

    def replace_listener(self, listener: socket.socket) -> None:
        """Listen on ``listener`` from now on (the old one's path was removed): whoever
        connected through the old one before is accepted first."""
        self._on_accept(selectors.EVENT_READ)
        self.sel.unregister(self.listener)
        self.listener.close()
        self.listener = listener
        listener.setblocking(False)
        self.sel.register(listener, selectors.EVENT_READ, self._on_accept)

    def flush_pending(self) -> None:
        pending, self.pending = self.pending, set()
        for conn in pending:
            conn.flush()
        if self.held and self.backlog <= _TOTAL_BACKLOG:  # room again: serve them next
            self.pending |= self.held
            self.held.clear()

    def _shed_one(self) -> None:
        """Out of fds: use the reserve fd to accept one client and hang up on it at once, so
        it learns at once (instead of hanging) and the listener is drained."""
        os.close(self._reserve)
        self._reserve = -1
        try:
            sock, _addr = self.listener.accept()
            sock.close()
            self.refused += 1
        except OSError:
            pass
        finally:
            try:
                self._reserve = os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)
            except OSError:
                self._reserve = -1

    def close(self) -> None:
        if self._reserve >= 0:
            os.close(self._reserve)
            self._reserve = -1
        for conn in list(self.connections):
            conn.close()
        self.sel.unregister(self.listener)
        self.listener.close()


class SocketKeeper:
    """The control socket's path, kept where the daemon made the socket itself (not under
    socket activation): if the socket is removed, moved away or replaced (a clean-up of
    the runtime directory, an ``rm`` by hand), the server listens there again at once,
    instead of running on unreachable. Told by inotify on the socket file itself (its
    links, a move): nothing else in the directory, which other instances share, wakes
    the daemon. Where the socket cannot be made there (something else took its name), the
    directory is watched for the name to be free again.

    ``restore()``, where given: the daemon's other files in the directory are kept too.
    The directory is watched for files removed (not moved or saved: other instances'
    saves never wake it) and for its own removal; before the socket is looked at again,
    ``restore()`` makes again what is gone (the directory first, checked as at start)
    and returns the directory's fd, which the socket is made in (not whatever directory
    is at the path by then), or None where the directory cannot be had safely: then
    nothing is made there. The directory is watched before it is looked at the last time
    (an ``rm -rf`` may still be going on: what it removes after that look is told by the
    watch; the watch until then is kept till the new one is in place, and what it told
    meanwhile is looked at too), and the watch is on the very directory held, not
    whatever is at its path.
    While the socket cannot be made, it is tried again every
    ``RETRY`` seconds (``call_later(seconds, fn)``), besides the watches.
    ``log(message, priority)``."""

    TRIES = 10  # makings of the socket in a row, while it keeps being removed
    RETRY = 1.0

    def __init__(self, server: Server, path: str, log: Callable[[str, int], None],
                 restore: Callable[[set[str]], int | None] | None = None,
                 call_later: Callable[[float, Callable[[], None]], object] | None = None
                 ) -> None:
        self.server, self.path, self.log = server, path, log
        self.restore = restore
        self.call_later = call_later
        self.retry = None  # a retry is armed
        self.dir = os.path.dirname(path)
        self.prefix = os.path.basename(path).split(".")[0] + "."  # "<N>.": our files
        self.watch: Inotify | None = None
        self.dir_watch: Inotify | None = None
        self.ident: tuple[int, int] | None = None  # (st_dev, st_ino) of our socket
        self.trouble: str | None = None  # why it cannot listen at its path, while so

    def keep(self, names: frozenset[str] = frozenset()) -> None:
        """Watch the socket at the path, made again first where it is not ours (and the
        directory's files first, with ``restore``; ``names``: those seen removed)."""
        try:
            self._keep(names)
        except Exception:  # a bug: never left with nothing to wake it (the loop says it)
            self._again_later()
            raise

    def _keep(self, names: frozenset[str]) -> None:
        before, self.dir_watch = self.dir_watch, None  # told of removals till the next
        self.close()
        dir_fd = None
        if self.restore is not None:
            dir_fd = self._restore(names, before)
            if dir_fd is None:
                self._again_later()
                return
        at = self._in(dir_fd)
        for _ in range(self.TRIES):  # it may be removed again while we make it
            watch = st = None
            try:
                watch = Inotify(at, "itself")  # the file at the path now
                st = os.lstat(at)
            except OSError:
                pass
            if st is not None and stat.S_ISSOCK(st.st_mode) and (
                    self.ident is None or (st.st_dev, st.st_ino) == self.ident):
                self.ident = (st.st_dev, st.st_ino)
                self._watch(watch, self._on_gone)
                return
            if watch is not None:
                watch.close()
            if not self._listen_again(dir_fd):
                break
        else:
            self._trouble(f"{self.path} keeps being removed")
        try:  # for its name to be free
            self._watch(Inotify(self.dir, "removed"), self._on_name_free)
        except OSError as exc:
            self._trouble(f"cannot watch {self.dir} ({exc.strerror or exc})")
        self._again_later()

    def close(self) -> None:
        for watch in (self.watch, self.dir_watch):
            if watch is not None:
                self._unwatch(watch)
        self.watch = self.dir_watch = None

    def _again_later(self) -> None:
        if self.call_later is not None and self.retry is None:
            self.retry = self.call_later(self.RETRY, self._retry)

    def _retry(self) -> None:
        self.retry = None
        self.keep()

    def _restore(self, names: frozenset[str], before: Inotify | None) -> int | None:
        """``restore()``, with the directory it returns watched before it is looked at
        the last time: a file removed in between (an ``rm -rf`` still going on) is made
        again by that look, or told by the watch. ``before``: the watch until now, kept
        till the new one is in place; what it told meanwhile is looked at too."""
        try:
            dir_fd = self.restore(set(names))
            for _ in range(self.TRIES):  # the directory may be replaced while watched
                if dir_fd is None:
                    return None
                held = os.fstat(dir_fd)
                watch = self._dir_watch(dir_fd)
                late = set()
                if before is not None:
                    late = before.drain()
                    self._unwatch(before)
                before = watch
                dir_fd = self.restore(late)
                if dir_fd is None or watch is None \
                        or os.path.samestat(os.fstat(dir_fd), held):
                    break
            else:  # replaced again and again: looked at once more in a while
                self._again_later()
            if before is not None:
                self.server.sel.register(before, selectors.EVENT_READ,
                                         functools.partial(self._on_unlinked, before))
                self.dir_watch, before = before, None
            return dir_fd
        finally:
            if before is not None:
                self._unwatch(before)

    def _dir_watch(self, dir_fd: int) -> Inotify | None:
        """A watch on the very directory held as ``dir_fd`` (not whatever is at its
        path); None where it cannot be had (tried again in a while)."""
        try:
            return Inotify(f"/proc/self/fd/{dir_fd}", "unlinked")
        except OSError as exc:
            self.log(f"cannot watch {self.dir} ({exc.strerror or exc}): files of the daemon "
                     "removed from it are not made again until it can", 4)
            self._again_later()
            return None

    def _unwatch(self, watch: Inotify) -> None:
        """Closed, and out of the selector where it was in it."""
        try:
            self.server.sel.unregister(watch)
        except KeyError:
            pass
        watch.close()

    def _in(self, dir_fd: int | None) -> str:
        """The socket's path through the directory held (``dir_fd``), not whatever is at
        the directory's path now; its path where none is held."""
        if dir_fd is None:
            return self.path
        return f"/proc/self/fd/{dir_fd}/{os.path.basename(self.path)}"

    def _listen_again(self, dir_fd: int | None) -> bool:
        """A new listener at the path (whatever is there removed, as at start)."""
        listener = None
        try:
            listener = bind_listener(self.path, dir_fd)
            st = os.lstat(self._in(dir_fd))
        except OSError as exc:
            if listener is not None:
                listener.close()
            self._trouble(f"{self.path} cannot be made again ({exc.strerror or exc})")
            return False
        self.ident = (st.st_dev, st.st_ino)
        self.server.replace_listener(listener)
        self.trouble = None
        self.log(f"{self.path} was removed or replaced: listening there again", 4)
        return True

    def _trouble(self, why: str) -> None:
        if why != self.trouble:  # once, while it lasts
            self.trouble = why
            self.log(f"{why}: clients cannot reach the daemon until it can listen there "
                     "again", 3)

    def _watch(self, watch: Inotify, handler: Callable[[Inotify, int], None]) -> None:
        self.watch = watch
        self.server.sel.register(watch, selectors.EVENT_READ,
                                 functools.partial(handler, watch))

    # each handler is given its own watch: one closed by an earlier handler of the same
    # batch of events (keep() makes new ones) has nothing more to say

    def _on_gone(self, watch: Inotify, mask: int) -> None:
        if watch is self.watch:
            watch.drain()
            self.keep()  # still ours (a chmod, a link made elsewhere), or made again

    def _on_name_free(self, watch: Inotify, mask: int) -> None:
        if watch is self.watch and (os.path.basename(self.path) in watch.drain()
                                    or not os.path.lexists(self.dir)):
            self.keep()

    def _on_unlinked(self, watch: Inotify, mask: int) -> None:
        if watch is not self.dir_watch:
            return
        names = watch.drain()
        if "" in names or any(name.startswith(self.prefix) for name in names) \
                or not os.path.lexists(self.dir):
            self.keep(frozenset(names))  # other instances' files: nothing to do
