"""Tests of tests/journald.py: entries written by another process are found."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid

import pytest
from journald import (
    ensure_journald,
    journal_mark,
    journald_running,
    read_entries,
    wait_for_entry,
)
from timeouts import TIMEOUT


@pytest.fixture(scope="module")
def journald() -> None:
    # The lead's conftest will own the session-wide fixture; this module brings
    # its own so that it also runs alone.
    with ensure_journald() as available:
        if not available:
            pytest.skip("no journald and cannot start one (not root?)")
        yield


def send_from_subprocess(**fields: str) -> int:
    """journal.send(...) in another process; returns that process's pid."""
    code = (
        "import os, sys, json\n"
        "from systemd import journal\n"
        "fields = json.loads(sys.argv[1])\n"
        "journal.send(fields.pop('MESSAGE'), **fields)\n"
        "print(os.getpid())\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code, json.dumps(fields)],
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        check=True,
    )
    return int(done.stdout)


def test_entry_from_other_process_is_found_by_structured_field(journald: None) -> None:
    tag = uuid.uuid4().hex
    pid = send_from_subprocess(
        MESSAGE="hello from a probe", SYSLOG_IDENTIFIER="probe", PROBE_TAG=tag, FOO="1"
    )
    entry = wait_for_entry(SYSLOG_IDENTIFIER="probe", PROBE_TAG=tag)
    assert entry["MESSAGE"] == "hello from a probe"
    assert entry["FOO"] == "1"
    assert entry["_PID"] == pid  # a trusted field, converted to int by the Reader
    assert journald_running()


def test_predicate_waits_for_later_entry_and_since_hides_earlier_ones(journald: None) -> None:
    tag = uuid.uuid4().hex
    send_from_subprocess(MESSAGE="before the mark", SYSLOG_IDENTIFIER="probe", PROBE_TAG=tag)
    wait_for_entry(SYSLOG_IDENTIFIER="probe", PROBE_TAG=tag)
    mark = journal_mark()

    # Start the writer first, then wait: wait_for_entry must pick the entry up
    # through Reader.wait() whether it arrives before or after the wait starts.
    code = (
        "from systemd import journal\n"
        f"for i in range(3): journal.send(f'step {{i}}', SYSLOG_IDENTIFIER='probe', "
        f"PROBE_TAG='{tag}', STEP=str(i))\n"
    )
    with subprocess.Popen([sys.executable, "-c", code]) as writer:
        entry = wait_for_entry(
            lambda e: e.get("STEP") == "2", since=mark, SYSLOG_IDENTIFIER="probe", PROBE_TAG=tag
        )
        assert writer.wait(timeout=TIMEOUT) == 0
    assert entry["MESSAGE"] == "step 2"

    after = read_entries(TIMEOUT, count=3, since=mark, PROBE_TAG=tag)
    assert [e["MESSAGE"] for e in after] == ["step 0", "step 1", "step 2"]
    everything = read_entries(TIMEOUT, count=4, PROBE_TAG=tag)
    assert everything[0]["MESSAGE"] == "before the mark"
    assert len(everything) == 4


def test_missing_entry_raises_clear_assertion(journald: None) -> None:
    tag = uuid.uuid4().hex
    send_from_subprocess(MESSAGE="not this one", SYSLOG_IDENTIFIER="probe", PROBE_TAG=tag)

    def step_is_42(entry: dict) -> bool:
        return entry.get("STEP") == "42"

    with pytest.raises(AssertionError) as failure:
        wait_for_entry(step_is_42, 0.5, SYSLOG_IDENTIFIER="probe", PROBE_TAG=tag)
    text = str(failure.value)
    assert "step_is_42" in text
    assert tag in text
    assert "not this one" in text


def test_journalctl_sees_the_entries(journald: None) -> None:
    tag = uuid.uuid4().hex
    ident = f"probe-{os.getpid()}"
    send_from_subprocess(MESSAGE=f"journalctl {tag}", SYSLOG_IDENTIFIER=ident, PROBE_TAG=tag)
    wait_for_entry(SYSLOG_IDENTIFIER=ident, PROBE_TAG=tag)
    out = subprocess.run(
        ["journalctl", "--no-pager", "-o", "cat", "-t", ident, f"PROBE_TAG={tag}"],
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        check=True,
    ).stdout
    assert f"journalctl {tag}" in out
