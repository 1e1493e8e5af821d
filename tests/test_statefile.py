"""The state file and its log (``supervisor/state.py``: ``StateFile``, ``replay``), without
a daemon: what a save leaves on disk is what the next daemon reads back, whatever was
rewritten or appended, cut short or replaced."""

from __future__ import annotations

import json
import os

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from supervisor import state
from supervisor.machine import Service, State

HEAD = {"instance": 0, "started_at": 1.0e9, "boot_id": "b", "cgroups": None}


def entry(name: str, restarts: int = 0, pids: list[int] = (), kept: int | None = None) -> str:
    """Its whole entry, or (``kept``) a line of the log's: its pids after the first kept."""
    svc = Service(name=name, command=("/bin/sleep", "1"), state=State.EXITED,
                  restarts=restarts, cwd="/", output="null", pid=pids[-1] if pids else None)
    return state.encode_service(svc, None, None, list(pids), kept)


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


def read_back(dir_fd: int, *, pids: bool = False) -> tuple[dict, str | None]:
    """{name: restarts} (``pids``: {name: (restarts, pids)}) as the next daemon reads the
    directory, and what is wrong with the log."""
    doc = state.parse(state.load("0.state.json", dir_fd))
    log = state.load("0.state.json.log", dir_fd) or b""
    _applied, trouble = state.replay(doc, log)
    _head, services = state.decode_doc(doc, 0)
    return {s.svc.name: (s.svc.restarts, s.pids) if pids else s.svc.restarts
            for s in services}, trouble


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


def test_a_line_writes_only_the_pids_a_service_had_since(sfile, dir_fd):
    """A service restarted 10,000 times has a history of ~70 KB: a restart's line holds
    the new pid, and says how many of those before it keeps."""
    history = list(range(100, 10_100))
    sfile.rewrite(HEAD, {"a": entry("a", 0, history)}, dir_fd, durable=False)
    history.append(20_000)
    sfile.append({"a": entry("a", 1, history, kept=10_000)}, dir_fd, durable=False)
    assert sfile.log_size < 1000
    history.append(20_001)
    sfile.append({"a": entry("a", 2, history, kept=10_001)}, dir_fd, durable=False)
    assert read_back(dir_fd, pids=True) == ({"a": (2, tuple(history))}, None)


def test_a_service_made_anew_under_an_old_name_keeps_none_of_its_pids(sfile, dir_fd):
    sfile.rewrite(HEAD, {"a": entry("a", 3, [10, 11, 12])}, dir_fd, durable=False)
    sfile.append({"a": entry("a", 0, [20], kept=0)}, dir_fd, durable=False)
    sfile.append({"b": entry("b", 0, [30], kept=0)}, dir_fd, durable=False)
    assert read_back(dir_fd, pids=True) == ({"a": (0, (20,)), "b": (0, (30,))}, None)


@pytest.mark.parametrize("kept", [5, -1, True, "2", 1.0])
def test_a_line_that_keeps_pids_its_entry_never_had_is_wrong(sfile, dir_fd, kept):
    sfile.rewrite(HEAD, {"a": entry("a", 0, [10, 11, 12]), "b": entry("b")}, dir_fd,
                  durable=False)
    sfile.append({"b": entry("b", 1), "a": entry("a", 1, [10, 11, 12, 13], kept=3)},
                 dir_fd, durable=False)
    line = json.loads(entry("a", 2, [10, 11, 12, 13, 14], kept=4))
    line["pids_kept"] = kept
    os.write(sfile.log_fd, json.dumps({"log_id": sfile.log_id, "set": [
        json.loads(entry("b", 2)), line], "drop": []}).encode() + b"\n")
    services, trouble = read_back(dir_fd, pids=True)
    # the line before it applies; none of this one does, not even b's part of it
    assert services == {"a": (1, (10, 11, 12, 13)), "b": (1, ())}
    assert "'pids_kept'" in trouble


NAMES = st.sampled_from(["a", "b", "c", "d"])
SAVES = st.lists(st.one_of(
    st.tuples(st.just("rewrite")),
    # name -> gone (None), or (restarts, new pids, made anew under that name)
    st.tuples(st.just("change"), st.dictionaries(NAMES, st.one_of(
        st.none(), st.tuples(st.integers(0, 3), st.integers(0, 3), st.booleans())),
        max_size=4))), max_size=30)


@settings(max_examples=150, deadline=None)
@given(SAVES)
def test_whatever_was_saved_is_what_is_read_back(tmp_path_factory, saves):
    """The services a daemon had at its last save, with every pid each had, whatever came
    before (rewrites, appends of changes, of nothing, of services gone and come again),
    written as the daemon's shell writes them: a line holds the pids since the save
    before."""
    fd = os.open(tmp_path_factory.mktemp("sf"), os.O_RDONLY | os.O_DIRECTORY)
    sfile = state.StateFile("0.state.json")
    pid = iter(range(100, 1 << 20))
    try:
        now: dict[str, tuple[int, list[int]]] = {}
        saved: dict[str, int] = {}  # how many of its pids are on disk
        sfile.rewrite(HEAD, {}, fd, durable=False)
        for save in saves:
            if save[0] == "rewrite":
                sfile.rewrite(HEAD, {n: entry(n, r, p) for n, (r, p) in now.items()}, fd,
                              durable=False)
                saved = {n: len(p) for n, (_, p) in now.items()}
                continue
            changes = {}
            for name, change in save[1].items():
                if change is None:
                    now.pop(name, None)
                    saved.pop(name, None)
                    changes[name] = None
                    continue
                restarts, new, anew = change
                if anew or name not in now:
                    now[name], saved[name] = (restarts, []), 0
                pids = now[name][1] + [next(pid) for _ in range(new)]
                now[name] = (restarts, pids)
                changes[name] = entry(name, restarts, pids, kept=saved[name])
                saved[name] = len(pids)
            sfile.append(changes, fd, durable=False)
        assert read_back(fd, pids=True) == (
            {n: (r, tuple(p)) for n, (r, p) in now.items()}, None)
    finally:
        sfile.close()
        os.close(fd)


def test_a_document_of_an_older_version_reads_with_its_log_left_alone():
    doc = {"version": state.VERSION, **HEAD, "services": [json.loads(entry("a"))]}
    line = b'{"log_id":"x","set":[],"drop":["a"]}\n'
    assert state.replay(doc, line) == (0, None)  # no log_id: it kept no log
    assert [e["name"] for e in doc["services"]] == ["a"]


def test_a_pid_the_service_had_twice_stays_where_it_came_last(sfile, dir_fd):
    """The kernel gave a service a pid of its history again (after another service had
    it): its current pid is still its history's last."""
    sfile.rewrite(HEAD, {"a": entry("a", 2, [10, 11, 10])}, dir_fd, durable=False)
    assert read_back(dir_fd, pids=True) == ({"a": (2, (10, 11, 10))}, None)


JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-3, 1 << 70) | st.floats(allow_nan=False)
    | st.text(max_size=5),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=5), inner,
                                                                 max_size=4),
    max_leaves=12)
# what a line of the log may hold: near its own shape (entries of the two names, their
# pids and pids_kept with any value), or anything at all
ENTRY = st.fixed_dictionaries({"name": st.sampled_from(["a", "b", "c"])}, optional={
    "pids_kept": JSON | st.integers(-1, 5), "pids": JSON | st.lists(st.integers(0, 9)),
    "pid": JSON, "restarts": JSON})
SHAPED = st.fixed_dictionaries({"log_id": st.just("L"), "set": st.lists(ENTRY, max_size=3),
                                "drop": st.lists(st.sampled_from(["a", "b", "c"]), max_size=2)})
LINE = SHAPED | SHAPED | st.fixed_dictionaries({"log_id": st.just("L") | JSON}, optional={
    "set": st.lists(ENTRY | JSON, max_size=3) | JSON,
    "drop": st.lists(st.sampled_from(["a", "b", "c"]) | JSON, max_size=3) | JSON}) | JSON


@settings(max_examples=300, deadline=None)
@given(st.lists(LINE, max_size=6), st.booleans())
@example([{"log_id": "L", "set": [{"name": "a", "pids": "xy"}], "drop": []},  # not a list:
          {"log_id": "L", "set": [{"name": "a", "pids_kept": 1, "pids": [3]}], "drop": []}],
         False)  # ... which the next line keeps the first pid of
def test_a_log_of_anything_is_read_back_without_an_error_of_its_own(lines, cut):
    """Whatever a log holds, reading it back raises nothing but StateError: a line that is
    wrong stops the replay and says why, and the entries are checked after."""
    doc = {"version": state.VERSION, **HEAD, "log_id": "L", "services": [
        json.loads(entry("a", 1, [10, 11])), json.loads(entry("b", 0, [12]))]}
    log = b"".join(json.dumps(line).encode() + b"\n" for line in lines)
    applied, trouble = state.replay(doc, log[:-1] if cut else log)
    assert 0 <= applied <= len(lines) and (trouble is None or isinstance(trouble, str))
    bad: list[str] = []
    try:
        state.decode_doc(doc, 0, bad)
    except state.StateError:
        pass
