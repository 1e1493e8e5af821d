"""The wire protocol: newline-delimited JSON over a stream socket. Pure encode/decode.

Request:  ``{"v": 1, "id": <int>, "cmd": "<command>", "args": {...}}``
Response: ``{"v": 1, "id": <same>, "ok": true, "result": ...}`` or
          ``{"v": 1, "id": <same>, "ok": false, "error": {"code": "<code>", "message": "..."}}``

Requests may be pipelined; responses come back in request order. A request line is at
most :data:`MAX_REQUEST` bytes.
"""

from __future__ import annotations

import json
import math

TYPE_CHECKING = False  # typing is not imported at run time: the CLI must start fast
if TYPE_CHECKING:  # the CLI imports this module: keep typing and dataclasses out of its start
    from typing import Any

VERSION = 1
MAX_REQUEST = 1 << 20  # 1 MiB, newline included

# Every error code the daemon answers with, and what it means.
ERRORS = {
    "bad-request": "the request is not valid JSON or lacks a field",
    "bad-version": "the client speaks another protocol version",
    "unknown-command": "no such command",
    "invalid-argument": "an argument has the wrong type or value",
    "request-too-large": "the request is over 1 MiB",
    "too-busy": "the daemon holds too many large unfinished requests to take this one",
    "no-such-service": "no service has that name or pid",
    "no-such-process": "no process has that pid",
    "not-adoptable": "that process may not be opened",
    "already-supervised": "that process is already a service of this instance",
    "not-executable": "the path is not an executable file",
    "not-writable": "the output file cannot be opened for writing (save: the config file "
                    "cannot be written)",
    "name-taken": "a service of that name exists",
    "bad-state": "the service's status does not allow the command",
    "spawn-failed": "the program could not be started",
    "permission-denied": "the peer may not command this daemon",
    "not-saved": "the daemon could not write its state: the command was undone, or is in "
                 "effect but would not survive a crash of the daemon",
    "shutting-down": "the instance is shutting down",
    "invalid-config": "the instance's config file is not valid (the message names the "
                      "file, line and key): nothing was changed",
    "internal": "the daemon failed to carry out the command (a bug; see the journal)",
}

COMMANDS = frozenset({
    "ping", "info", "create-service", "open-service", "suspend-service", "resume-service",
    "close-service", "remove-service", "service-status", "list-supervisor",
    "supervisor-freelist", "supervisor-cancel", "shutdown", "reload", "stop-service",
    "start-service", "restart-service", "signal-service", "show-service", "apply", "export",
    "save",
})


class ProtocolError(Exception):
    """A request or response that cannot be taken; ``code`` is one of :data:`ERRORS`."""

    def __init__(self, code: str, message: str, req_id: Any = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.req_id = req_id


class Request:
    """One decoded request."""

    __slots__ = ("args", "cmd", "id")

    def __init__(self, req_id: Any, cmd: str, args: dict | None = None) -> None:
        self.id = req_id
        self.cmd = cmd
        self.args = {} if args is None else args

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Request) and (self.id, self.cmd, self.args) == (
            other.id, other.cmd, other.args)

    def __repr__(self) -> str:
        return f"Request(id={self.id!r}, cmd={self.cmd!r}, args={self.args!r})"


def _dumps(obj: Any) -> bytes:
    text = json.dumps(obj, separators=(",", ":"), ensure_ascii=False)
    try:
        return text.encode() + b"\n"
    except UnicodeEncodeError:
        # a lone surrogate (an argument that was not UTF-8, as Python carries it,
        # surrogate-escaped) has no UTF-8: sent as a \u escape, it comes back unchanged
        return json.dumps(obj, separators=(",", ":")).encode() + b"\n"


def encode_request(req_id: Any, cmd: str, args: dict | None = None) -> bytes:
    return _dumps({"v": VERSION, "id": req_id, "cmd": cmd, "args": args or {}})


# the arguments create-service takes (docs/reference.md): one more is a mistake, said
CREATE_ARGS = frozenset((
    "path", "args", "name", "restart_times", "delay", "autostart", "create_stopped",
    "output", "cwd", "env", "env_file", "user", "stop_signal", "stop_timeout", "restart",
    "restart_delay", "restart_max_delay", "start_limit", "at", "every", "cron"))


def _no_constant(name: str):
    raise ValueError(f"{name} is not JSON")  # Python's json takes NaN and Infinity


def _finite(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"number {text} is out of range")
    return value


def _unique(pairs: list) -> dict:
    obj = dict(pairs)
    if len(obj) != len(pairs):  # which one a reader takes differs: {"cmd": a, "cmd": b}
        seen = set()
        twice = next(k for k, _ in pairs if k in seen or seen.add(k))
        raise ValueError(f"key {twice!r} is given twice")
    return obj


def decode_request(line: bytes) -> Request:
    size = len(line) + (not line.endswith(b"\n"))  # its newline counts, taken off or not
    if size > MAX_REQUEST:
        raise ProtocolError("request-too-large", f"request of {size} bytes is over 1 MiB")
    try:
        text = line.decode()  # UTF-8 alone (json.loads would take UTF-16 and UTF-32 bytes)
    except UnicodeDecodeError as exc:
        raise ProtocolError("bad-request", f"request is not UTF-8: byte "
                            f"{line[exc.start]:#04x} at {exc.start}") from None
    try:
        obj = json.loads(text, parse_constant=_no_constant, parse_float=_finite,
                         object_pairs_hook=_unique)
    except (ValueError, RecursionError) as exc:
        raise ProtocolError("bad-request", f"request is not valid JSON: {exc}") from None
    if not isinstance(obj, dict):
        raise ProtocolError("bad-request", "request must be a JSON object")
    req_id = obj.get("id")
    version = obj.get("v")
    if type(version) is not int or version != VERSION:
        raise ProtocolError("bad-version",
                            f"protocol version {obj.get('v')!r} is not supported "
                            f"(this daemon speaks {VERSION})", req_id)
    cmd = obj.get("cmd")
    if not isinstance(cmd, str):
        raise ProtocolError("bad-request", "request lacks a \"cmd\" string", req_id)
    if cmd not in COMMANDS:
        raise ProtocolError("unknown-command", f"unknown command {cmd!r}", req_id)
    args = obj.get("args", {})
    if not isinstance(args, dict):
        raise ProtocolError("bad-request", "\"args\" must be a JSON object", req_id)
    return Request(req_id, cmd, args)


def encode_result(req_id: Any, result: Any) -> bytes:
    return _dumps({"v": VERSION, "id": req_id, "ok": True, "result": result})


MAX_MESSAGE = 2000  # characters of an error message: what a user typed may be 1 MiB


def clamp(message: str, limit: int = MAX_MESSAGE) -> str:
    """``message`` as one line of at most about ``limit`` characters: a long one keeps its
    head and its tail (which says what was wrong) around what was left out."""
    if len(message) <= limit:
        return message
    tail = limit // 4
    return f"{message[:limit - tail]}... ({len(message) - limit:,} characters left out) ..." \
           f"{message[-tail:]}"


def encode_error(req_id: Any, code: str, message: str) -> bytes:
    return _dumps({"v": VERSION, "id": req_id, "ok": False,
                   "error": {"code": code, "message": message}})


def decode_response(line: bytes) -> tuple[Any, bool, Any]:
    """(id, ok, result-or-(code, message)). Raises ProtocolError on a malformed line."""
    try:
        obj = json.loads(line)
        ok = obj["ok"]
        if ok:
            return obj.get("id"), True, obj.get("result")
        err = obj["error"]
        return obj.get("id"), False, (str(err["code"]), str(err["message"]))
    except (ValueError, KeyError, TypeError, RecursionError) as exc:
        raise ProtocolError("bad-request", f"malformed response from the daemon: {exc}") from None
