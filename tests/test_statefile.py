"""The state file and its log (``supervisor/state.py``: ``StateFile``, ``replay``), without
a daemon: what a save leaves on disk is what the next daemon reads back, whatever was
rewritten or appended, cut short or replaced."""

from __future__ import annotations

import json
import os

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from supervisor import state
from supervisor.machine import Service, State

HEAD = {"instance": 0, "started_at": 1.0e9, "boot_id": "b", "cgroups": None}


def entry(name: str, restarts: int = 0) -> str:
    svc = Service(name=name, command=("/bin/sleep", "1"), state=State.EXITED,
                  restarts=restarts, cwd="/", output="null")
    return state.encode_service(svc, None, None)


@pytest.fixture
def dir_fd(tmp_path):
    fd = os.open(tmp_path, os.O_RDONLY | os.O_DIRECTORY)
    yield fd
    os.close(fd)


@pytest.fixture
def sfile(dir_fd):
    f = state.StateFile("0.state.json")
    yield f
    f.close()


def read_back(dir_fd: int) -> tuple[dict[str, int], str | None]:
    """{name: restarts} as the next daemon reads the directory, and what is wrong with
    the log."""
    doc = state.parse(state.load("0.state.json", dir_fd))
    log = state.load("0.state.json.log", dir_fd) or b""
    _applied, trouble = state.replay(doc, log)
    _head, services = state.decode_doc(doc, 0)
    return {svc.name: svc.restarts for svc, _, _ in services}, trouble


def test_appends_are_read_back_over_the_document(sfile, dir_fd):
    sfile.rewrite(HEAD, {"a": entry("a"), "b": entry("b")}, dir_fd, durable=False)
    assert not sfile.synced  # no client waited: the document was not fsync'd
    sfile.append({"a": entry("a", 1), "c": entry("c")}, dir_fd, durable=True)
    assert sfile.synced  # one did: the line, and the document under it, are
    sfile.append({"b": None}, dir_fd, durable=False)
    assert read_back(dir_fd) == ({"a": 1, "c": 0}, None)
    with open(f"/proc/self/fd/{dir_fd}/0.state.json.log", "rb") as f:
        assert len(f.read().splitlines()) == 2  # a line a save
    sfile.rewrite(HEAD, {"a": entry("a", 2)}, dir_fd, durable=True)
    assert sfile.synced and read_back(dir_fd) == ({"a": 2}, None)


def test_an_unchanged_entry_writes_nothing(sfile, dir_fd):
    sfile.rewrite(HEAD, {"a": entry("a")}, dir_fd, durable=False)
    sfile.append({"a": entry("a"), "gone-before": None}, dir_fd, durable=False)
    assert sfile.log_size == 0
    assert os.stat("0.state.json.log", dir_fd=dir_fd).st_size == 0


def test_a_last_line_cut_short_is_left_out_without_blame(sfile, dir_fd):
    sfile.rewrite(HEAD, {"a": entry("a")}, dir_fd, durable=False)
    sfile.append({"a": entry("a", 1)}, dir_fd, durable=False)
    sfile.append({"a": entry("a", 2)}, dir_fd, durable=False)
    size = os.stat("0.state.json.log", dir_fd=dir_fd).st_size
    fd = os.open("0.state.json.log", os.O_WRONLY, dir_fd=dir_fd)
    os.truncate(fd, size - 10)  # the daemon died while writing it: never answered
    os.close(fd)
    assert read_back(dir_fd) == ({"a": 1}, None)


def test_a_wrong_line_stops_the_log_there_and_says_so(sfile, dir_fd):
    sfile.rewrite(HEAD, {"a": entry("a")}, dir_fd, durable=False)
    sfile.append({"a": entry("a", 1)}, dir_fd, durable=False)
    os.write(sfile.log_fd, b'{"log_id": "' + sfile.log_id.encode() + b'", "set": 3}\n')
    sfile.append({"a": entry("a", 2)}, dir_fd, durable=False)
    services, trouble = read_back(dir_fd)
    assert services == {"a": 1}
    assert "'set' or 'drop'" in trouble
    doc = state.parse(state.load("0.state.json", dir_fd))
    assert state.replay(doc, state.load("0.state.json.log", dir_fd))[0] == 1


@pytest.mark.parametrize("line", [b"garbage\n", b"[1, 2]\n", b'{"set": [], "drop": []}\n'])
def test_a_log_that_is_not_this_documents_at_its_start_is_wrong(sfile, dir_fd, line):
    sfile.rewrite(HEAD, {"a": entry("a")}, dir_fd, durable=False)
    os.write(sfile.log_fd, line)
    assert read_back(dir_fd)[1] is not None


def test_the_log_of_an_older_document_applies_not_at_all(sfile, dir_fd):
    """The daemon died between writing a new document and beginning its log: the old log,
    of another log_id, is older than the document and says nothing of it."""
    sfile.rewrite(HEAD, {"a": entry("a")}, dir_fd, durable=False)
    sfile.append({"a": entry("a", 5)}, dir_fd, durable=False)
    with open(f"/proc/self/fd/{dir_fd}/0.state.json.log", "rb") as f:
        old_log = f.read()
    sfile.rewrite(HEAD, {"a": entry("a", 7)}, dir_fd, durable=False)
    with open(f"/proc/self/fd/{dir_fd}/0.state.json.log", "wb") as f:
        f.write(old_log)
    assert read_back(dir_fd) == ({"a": 7}, None)


def test_the_document_is_rewritten_once_the_log_outgrows_it(sfile, dir_fd):
    sfile.rewrite(HEAD, {"a": entry("a")}, dir_fd, durable=False)
    restarts = 0
    while not sfile.whole(HEAD, dir_fd):
        restarts += 1
        sfile.append({"a": entry("a", restarts)}, dir_fd, durable=False)
    assert sfile.log_size > state.LOG_MIN
    first = sfile.log_id
    sfile.rewrite(HEAD, {"a": entry("a", restarts)}, dir_fd, durable=False)
    assert sfile.log_id != first and sfile.log_size == 0
    assert os.stat("0.state.json.log", dir_fd=dir_fd).st_size == 0
    assert read_back(dir_fd) == ({"a": restarts}, None)


def test_a_document_replaced_or_a_log_removed_asks_for_a_rewrite(sfile, dir_fd):
    sfile.rewrite(HEAD, {"a": entry("a")}, dir_fd, durable=False)
    assert not sfile.whole(HEAD, dir_fd)
    assert sfile.whole({**HEAD, "cgroups": "/elsewhere"}, dir_fd)  # the head changed
    os.rename("0.state.json", "moved", src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
    os.mkdir("0.state.json", dir_fd=dir_fd)
    assert sfile.whole(HEAD, dir_fd)
    os.rmdir("0.state.json", dir_fd=dir_fd)
    os.rename("moved", "0.state.json", src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
    assert not sfile.whole(HEAD, dir_fd)
    os.unlink("0.state.json.log", dir_fd=dir_fd)
    assert sfile.whole(HEAD, dir_fd)


def test_a_failed_append_leaves_the_next_save_whole(sfile, dir_fd):
    sfile.rewrite(HEAD, {"a": entry("a")}, dir_fd, durable=False)
    os.close(sfile.log_fd)  # what a full disk or an I/O error looks like from here on
    sfile.log_fd = os.open("/dev/null", os.O_RDONLY)
    with pytest.raises(OSError):
        sfile.append({"a": entry("a", 1)}, dir_fd, durable=False)
    assert sfile.log_fd is None and sfile.whole(HEAD, dir_fd)


def test_removed_on_purpose_both_go(sfile, dir_fd):
    sfile.rewrite(HEAD, {"a": entry("a")}, dir_fd, durable=False)
    sfile.remove(dir_fd)
    assert sfile.log_fd is None
    assert os.listdir(f"/proc/self/fd/{dir_fd}") == []


NAMES = st.sampled_from(["a", "b", "c", "d"])
SAVES = st.lists(st.one_of(
    st.tuples(st.just("rewrite")),
    st.tuples(st.just("change"), st.dictionaries(NAMES, st.one_of(
        st.none(), st.integers(0, 3)), max_size=4))), max_size=30)


@settings(max_examples=150, deadline=None)
@given(SAVES)
def test_whatever_was_saved_is_what_is_read_back(tmp_path_factory, saves):
    """The services a daemon had at its last save, whatever came before (rewrites,
    appends of changes, of nothing, of services gone and come again)."""
    fd = os.open(tmp_path_factory.mktemp("sf"), os.O_RDONLY | os.O_DIRECTORY)
    sfile = state.StateFile("0.state.json")
    try:
        now: dict[str, int] = {}
        sfile.rewrite(HEAD, {}, fd, durable=False)
        for save in saves:
            if save[0] == "rewrite":
                sfile.rewrite(HEAD, {n: entry(n, r) for n, r in now.items()}, fd,
                              durable=False)
                continue
            for name, restarts in save[1].items():
                if restarts is None:
                    now.pop(name, None)
                else:
                    now[name] = restarts
            sfile.append({n: None if r is None else entry(n, r) for n, r in save[1].items()},
                         fd, durable=False)
        assert read_back(fd) == (now, None)
    finally:
        sfile.close()
        os.close(fd)


def test_a_document_of_an_older_version_reads_with_its_log_left_alone():
    doc = {"version": state.VERSION, **HEAD, "services": [json.loads(entry("a"))]}
    line = b'{"log_id":"x","set":[],"drop":["a"]}\n'
    assert state.replay(doc, line) == (0, None)  # no log_id: it kept no log
    assert [e["name"] for e in doc["services"]] == ["a"]
