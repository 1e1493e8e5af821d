"""Unit tests of the NDJSON wire protocol (supervisor/protocol.py): pure encode/decode."""

from __future__ import annotations

import json
import os

import hypothesis.strategies as st
import pytest
from hypothesis import given, settings

from supervisor import protocol
from supervisor.protocol import (
    COMMANDS,
    ERRORS,
    MAX_REQUEST,
    VERSION,
    ProtocolError,
    Request,
    decode_request,
    decode_response,
    encode_error,
    encode_request,
    encode_result,
)

json_scalars = st.none() | st.booleans() | st.integers() | st.text() | st.floats(
    allow_nan=False, allow_infinity=False)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=12,
)
json_args = st.dictionaries(st.text(), json_values, max_size=5)
req_ids = st.none() | st.integers() | st.text()


def raw(obj) -> bytes:
    return json.dumps(obj).encode() + b"\n"


def decode_error(line: bytes) -> ProtocolError:
    with pytest.raises(ProtocolError) as info:
        decode_request(line)
    assert info.value.code in ERRORS
    assert isinstance(info.value.code, str)
    assert info.value.message
    return info.value


# ---- round trips -----------------------------------------------------------------------------


def test_encoded_lines_are_single_ndjson_lines():
    for line in (encode_request(1, "ping"), encode_result(1, {"a": "x\ny"}),
                 encode_error(1, "internal", "multi\nline")):
        assert line.endswith(b"\n")
        assert line.count(b"\n") == 1
        assert json.loads(line)["v"] == VERSION


def test_request_round_trip_simple():
    req = decode_request(encode_request(7, "service-status", {"service": "web"}))
    assert req == Request(7, "service-status", {"service": "web"})


def test_request_without_args_has_empty_args():
    assert decode_request(encode_request(1, "ping")).args == {}
    assert decode_request(raw({"v": 1, "id": 2, "cmd": "ping"})).args == {}


def test_request_without_trailing_newline_decodes():
    assert decode_request(encode_request(3, "info").rstrip(b"\n")).cmd == "info"


@pytest.mark.parametrize("cmd", sorted(COMMANDS))
def test_every_command_round_trips(cmd):
    assert decode_request(encode_request(1, cmd, {"x": 1})) == Request(1, cmd, {"x": 1})


@given(req_id=req_ids, cmd=st.sampled_from(sorted(COMMANDS)), args=json_args)
def test_request_round_trip_property(req_id, cmd, args):
    line = encode_request(req_id, cmd, args)
    assert line.count(b"\n") == 1 and line.endswith(b"\n")
    assert decode_request(line) == Request(req_id, cmd, args)


@given(req_id=req_ids, result=json_values)
def test_result_round_trip(req_id, result):
    assert decode_response(encode_result(req_id, result)) == (req_id, True, result)


@given(req_id=req_ids, code=st.sampled_from(sorted(ERRORS)), message=st.text())
def test_error_round_trip(req_id, code, message):
    assert decode_response(encode_error(req_id, code, message)) == (req_id, False,
                                                                    (code, message))


def test_non_ascii_is_utf8_on_the_wire():
    line = encode_request(1, "service-status", {"service": "café ☕"})
    assert "café ☕".encode() in line
    assert decode_request(line).args == {"service": "café ☕"}


# ---- decode_request errors -----------------------------------------------------------------


@pytest.mark.parametrize("line", [b"", b"\n", b"not json\n", b"{\"v\": 1,\n", b"\xff\xfe\xfd\n",
                                  b"{'v': 1}\n", b"NaNx\n"])
def test_non_json_is_bad_request(line):
    assert decode_error(line).code == "bad-request"


@pytest.mark.parametrize("value", [[], [1, 2], "ping", 1, 1.5, None, True])
def test_non_object_is_bad_request(value):
    assert decode_error(raw(value)).code == "bad-request"


@pytest.mark.parametrize("version", [0, 2, "1", None, [1], {"v": 1}])
def test_wrong_version_is_bad_version(version):
    err = decode_error(raw({"v": version, "id": 5, "cmd": "ping"}))
    assert err.code == "bad-version"
    assert err.req_id == 5


def test_missing_version_is_bad_version():
    err = decode_error(raw({"id": 6, "cmd": "ping"}))
    assert err.code == "bad-version"
    assert err.req_id == 6


@pytest.mark.parametrize("cmd", ["<missing>", None, 1, ["ping"], {"x": 1}])
def test_missing_or_non_string_cmd_is_bad_request(cmd):
    obj = {"v": 1, "id": 8}
    if cmd != "<missing>":
        obj["cmd"] = cmd
    err = decode_error(raw(obj))
    assert err.code == "bad-request"
    assert err.req_id == 8


@pytest.mark.parametrize("cmd", ["", "pong", "PING", "create_service", "list-supervisors"])
def test_unknown_command(cmd):
    err = decode_error(raw({"v": 1, "id": 9, "cmd": cmd}))
    assert err.code == "unknown-command"
    assert err.req_id == 9


@pytest.mark.parametrize("args", [[], ["a"], "x", 3, None, True])
def test_args_not_an_object_is_bad_request(args):
    err = decode_error(raw({"v": 1, "id": 10, "cmd": "ping", "args": args}))
    assert err.code == "bad-request"
    assert err.req_id == 10


def _padded(size: int) -> bytes:
    """A valid ping request of exactly ``size`` bytes, newline included."""
    head = b'{"v":1,"id":1,"cmd":"ping","args":{"pad":"'
    tail = b'"}}\n'
    return head + b"x" * (size - len(head) - len(tail)) + tail


def test_request_of_max_size_is_accepted():
    line = _padded(MAX_REQUEST)
    assert len(line) == MAX_REQUEST
    assert decode_request(line).cmd == "ping"


def test_request_over_max_size_is_refused():
    line = _padded(MAX_REQUEST + 1)
    assert decode_error(line).code == "request-too-large"
    assert decode_error(b"x" * (MAX_REQUEST * 2)).code == "request-too-large"


def test_deeply_nested_json_is_bad_request():
    # Well under MAX_REQUEST, so the daemon does decode it. It must come back as a
    # ProtocolError, not as RecursionError (which the daemon's request handler does not
    # catch: the whole daemon would go down on one malformed request).
    for line in (b"[" * 100_000 + b"\n",
                 b'{"v":1,"cmd":"ping","args":{"a":' + b"[" * 100_000 + b"]" * 100_000 + b"}}\n"):
        assert len(line) <= MAX_REQUEST
        assert decode_error(line).code == "bad-request"


def test_huge_integer_is_bad_request():
    assert decode_error(b'{"v":1,"id":' + b"9" * 5000 + b',"cmd":"ping"}\n').code == "bad-request"


# ---- error codes ---------------------------------------------------------------------------


def test_error_codes_are_strings_with_descriptions():
    assert ERRORS
    for code, meaning in ERRORS.items():
        assert isinstance(code, str) and code == code.strip().lower() and " " not in code
        assert isinstance(meaning, str) and meaning


def test_machine_refusal_code_is_a_protocol_error_code():
    from supervisor.machine import Refused

    assert Refused.code in ERRORS


def test_protocol_error_carries_code_message_and_id():
    exc = ProtocolError("bad-request", "nope", 42)
    assert (exc.code, exc.message, exc.req_id, str(exc)) == ("bad-request", "nope", 42, "nope")


# ---- decode_response ---------------------------------------------------------------------------


@pytest.mark.parametrize("line", [b"", b"garbage\n", b"[]\n", b"3\n", b'{"v":1}\n',
                                  b'{"ok":false}\n', b'{"ok":false,"error":"x"}\n',
                                  b'{"ok":false,"error":{"code":"x"}}\n'])
def test_malformed_response_is_protocol_error(line):
    with pytest.raises(ProtocolError) as info:
        decode_response(line)
    assert info.value.code in ERRORS


# ---- fuzz ------------------------------------------------------------------------------


def _check_decode(line: bytes) -> None:
    try:
        req = decode_request(line)
    except ProtocolError as exc:
        assert exc.code in ERRORS
        return
    assert isinstance(req, Request)
    assert req.cmd in COMMANDS
    assert isinstance(req.args, dict)


@settings(max_examples=500)
@given(st.binary(max_size=200))
def test_decode_request_on_arbitrary_bytes(line):
    _check_decode(line)


@settings(max_examples=500)
@given(st.one_of(
    json_values.map(lambda v: json.dumps(v).encode()),
    st.dictionaries(st.sampled_from(["v", "id", "cmd", "args"]),
                    json_values | st.sampled_from([1, *sorted(COMMANDS)]))
    .map(lambda d: json.dumps(d).encode()),
))
def test_decode_request_on_arbitrary_json(line):
    _check_decode(line)


def test_module_is_pure():
    # no sockets, no os: protocol.py is encode/decode only
    assert not {"os", "socket", "selectors"} & set(vars(protocol))


def test_every_protocol_command_has_a_handler_and_no_other():
    # commands.py's table is what users can ask; protocol.COMMANDS is what decodes
    from supervisor.commands import Commands

    class FakeDaemon:
        shell = None

    assert set(Commands(FakeDaemon()).table) == set(COMMANDS)


def test_a_lone_surrogate_goes_across_and_back():
    # what Python makes of an argument that is not UTF-8 (os.fsdecode): it must survive
    # the wire both ways, so that the program gets the bytes the user typed
    arg = os.fsdecode(b"caf\xe9")
    line = encode_request(1, "create-service", {"path": "/bin/echo", "args": [arg]})
    assert decode_request(line).args["args"] == [arg]
    assert os.fsencode(decode_request(line).args["args"][0]) == b"caf\xe9"
    _rid, ok, result = protocol.decode_response(protocol.encode_result(1, {"command": [arg]}))
    assert ok and result == {"command": [arg]}


def test_a_long_error_message_keeps_its_head_and_tail_in_bounds():
    from supervisor.protocol import MAX_MESSAGE, clamp

    assert clamp("short") == "short"
    long = "no service '" + "x" * 100_000 + "' in instance 0"
    out = clamp(long)
    assert len(out) < MAX_MESSAGE + 60
    assert out.startswith("no service 'xxx") and out.endswith("xxx' in instance 0")
    assert f"({len(long) - MAX_MESSAGE:,} characters left out)" in out


@pytest.mark.parametrize("line", [
    b'{"v":1,"id":1,"cmd":"ping","cmd":"shutdown"}',  # which one counts differs by reader
    b'{"v":1,"id":1,"cmd":"ping","args":{"a":1,"a":2}}',
    '{"v":1,"id":1,"cmd":"ping"}'.encode("utf-16"),  # json.loads alone takes it
    '{"v":1,"id":1,"cmd":"ping"}'.encode("utf-32"),
    b'\xff\xfe{"v":1}',
])
def test_a_key_given_twice_or_a_request_not_in_utf8_is_refused(line):
    with pytest.raises(protocol.ProtocolError) as info:
        protocol.decode_request(line)
    assert info.value.code == "bad-request"
    assert "twice" in info.value.message or "not UTF-8" in info.value.message
