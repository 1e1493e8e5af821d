"""The control socket: accepting clients, per-connection buffers, peer credentials.

Everything is non-blocking and served from the daemon's selector: a slow or stuck client
(half a request, or not reading its answers) holds nobody else up.
"""

from __future__ import annotations

import os
import selectors
import socket
import struct
from collections.abc import Callable

from supervisor.protocol import MAX_REQUEST

_RECV = 256 * 1024
_MAX_PENDING_OUT = 16 * 1024 * 1024  # stop reading a client that does not read its answers


class Peer:
    __slots__ = ("gid", "pid", "uid")

    def __init__(self, pid: int, uid: int, gid: int) -> None:
        self.pid, self.uid, self.gid = pid, uid, gid


def bind_listener(path: str) -> socket.socket:
    """A listening stream socket at ``path``, mode 0600 from the start (no chmod race)."""
    try:
        os.unlink(path)  # the caller holds the instance lock: whatever is here is stale
    except FileNotFoundError:
        pass
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
    old = os.umask(0o177)
    try:
        sock.bind(path)
    except OSError:
        sock.close()
        raise
    finally:
        os.umask(old)
    sock.listen(1024)
    return sock


class Connection:
    """One client. ``handle(line, conn)`` turns a request line into a response line."""

    def __init__(self, server: Server, sock: socket.socket) -> None:
        self.server = server
        self.sock = sock
        self.rbuf = bytearray()
        self.wbuf = bytearray()
        self.closing = False  # close once wbuf is flushed
        self.events = selectors.EVENT_READ
        pid, uid, gid = struct.unpack("3i", sock.getsockopt(
            socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i")))
        self.peer = Peer(pid, uid, gid)

    def on_event(self, mask: int) -> None:
        if mask & selectors.EVENT_READ:
            self._on_readable()
        if self.sock.fileno() >= 0 and (mask & selectors.EVENT_WRITE or self.wbuf):
            self._flush()

    def _on_readable(self) -> None:
        try:
            data = self.sock.recv(_RECV)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            self.close()
            return
        if not data:
            self.closing = True
            self._serve_lines()
            return
        self.rbuf += data
        self._serve_lines()

    def _serve_lines(self) -> None:
        start = 0
        handle = self.server.handle
        while True:
            end = self.rbuf.find(b"\n", start)
            if end < 0:
                break
            line = bytes(self.rbuf[start:end])
            start = end + 1
            if line.strip():
                self.wbuf += handle(line, self)
            if len(self.wbuf) > _MAX_PENDING_OUT:
                break
        del self.rbuf[:start]
        if len(self.rbuf) > MAX_REQUEST:
            self.wbuf += self.server.too_large(len(self.rbuf))
            self.rbuf.clear()
            self.closing = True
        elif self.closing and self.rbuf.strip():
            # the peer closed after an unterminated request: answer it all the same
            line, self.rbuf = bytes(self.rbuf), bytearray()
            self.wbuf += handle(line, self)

    def _flush(self) -> None:
        if self.wbuf:
            try:
                sent = self.sock.send(self.wbuf)
                del self.wbuf[:sent]
            except (BlockingIOError, InterruptedError):
                pass
            except OSError:
                self.close()
                return
        if not self.wbuf and self.closing:
            self.close()
            return
        want = selectors.EVENT_WRITE if self.wbuf else 0
        if len(self.wbuf) <= _MAX_PENDING_OUT and not self.closing:
            want |= selectors.EVENT_READ
        if want != self.events:
            self.events = want
            self.server.sel.modify(self.sock, want, self.on_event)
            if not self.wbuf and self.rbuf:
                self._serve_lines()  # backpressure released: serve what waited

    def close(self) -> None:
        if self.sock.fileno() >= 0:
            self.server.sel.unregister(self.sock)
            self.server.connections.discard(self)
            self.sock.close()


class Server:
    """Accepts clients on ``listener`` and serves them through ``handle``."""

    def __init__(self, sel: selectors.BaseSelector, listener: socket.socket,
                 handle: Callable[[bytes, Connection], bytes],
                 too_large: Callable[[int], bytes]) -> None:
        self.sel = sel
        self.listener = listener
        self.handle = handle
        self.too_large = too_large
        self.connections: set[Connection] = set()
        listener.setblocking(False)
        sel.register(listener, selectors.EVENT_READ, self._on_accept)

    def _on_accept(self, mask: int) -> None:
        for _ in range(256):  # bounded, so clients cannot starve the rest of the loop
            try:
                sock, _addr = self.listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError:  # EMFILE and friends: try again on the next event
                return
            sock.setblocking(False)
            try:
                conn = Connection(self, sock)
            except OSError:
                sock.close()
                continue
            self.connections.add(conn)
            self.sel.register(sock, selectors.EVENT_READ, conn.on_event)

    def close(self) -> None:
        for conn in list(self.connections):
            conn.close()
        self.sel.unregister(self.listener)
        self.listener.close()
