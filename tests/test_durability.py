"""What a client is told is on disk (docs/reference.md, "Wire protocol").

A command that changes services is answered OK only once the state that reports it has
been written durably; when it cannot be written (a full file system, a state path made a
directory) the command fails with ``not-saved`` and what it spawned is undone, while reads
go on being answered. Real file systems: a 64 KiB tmpfs mounted for the test.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import subprocess
import tempfile

import pytest
from conftest import (
    Supervisor,
    kill_daemon,
    make_a_directory_at,
    marked,
    read_state,
    wait_until,
)
from timeouts import TIMEOUT

from supervisor import state
from supervisor.client import RemoteError

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="mounts a tmpfs: needs root")


def on_disk(rundir: str) -> set[str]:
    _head, services = state.decode_doc(read_state(rundir))
    return {stored.svc.name for stored in services}


@pytest.fixture
def tiny_rundir():
    path = tempfile.mkdtemp(prefix="sv-full-", dir="/tmp")
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k,mode=0700", "tmpfs", path],
                   check=True, timeout=TIMEOUT)
    try:
        yield path
    finally:
        s = Supervisor(path)
        with contextlib.suppress(Exception):
            s.run("close", "-i", "0")
        subprocess.run(["umount", "-l", path], check=False, timeout=TIMEOUT)
        shutil.rmtree(path, ignore_errors=True)


def test_on_a_full_disk_what_was_acknowledged_is_what_is_on_disk(tiny_rundir):
    s = Supervisor(tiny_rundir)
    s.ok("init", "-i", "0")
    token = str(10**11 + secrets.randbelow(10**11))  # in each service's command line
    acked, refused = set(), []
    with s.client() as c:
        for i in range(400):  # one by one, as a script would: the disk fills up on the way
            try:
                acked.add(c.create_service("/bin/sleep", ["3600", f"0.{token}"],
                                           name=f"s{i}", output="null")["name"])
            except RemoteError as exc:
                refused.append(exc)
        listing = c.list_supervisor()["services"]  # reads go on
    print(f"\n64 KiB tmpfs: {len(acked)} creates acknowledged, {len(refused)} refused "
          f"(not-saved), {len(on_disk(tiny_rundir))} services on disk")
    assert acked and refused  # the disk filled up on the way
    assert {e.code for e in refused} == {"not-saved"}
    assert all("No space left on device" in e.message for e in refused)
    assert on_disk(tiny_rundir) == acked
    assert {svc["name"] for svc in listing} == acked
    # what was refused was undone: only the acknowledged services' processes run
    wait_until(lambda: len(marked(token)) == len(acked),
               what=f"the undone ones to die (running: {marked(token)})")
    # a crash now: the next daemon takes back exactly what was acknowledged
    kill_daemon(s.pid)
    s.ok("init", "-i", "0")
    back = s.json("list-supervisor")["services"]
    assert {svc["name"] for svc in back} == acked
    assert {svc["status"] for svc in back} == {"RUNNING"}
    assert len(marked(token)) == len(acked)
    s.ok("close", "-i", "0")
    wait_until(lambda: not marked(token), what="close to end every service")


def test_a_state_path_made_a_directory_fails_commands_but_not_reads(sup):
    sup.create("/bin/sleep", ["600"], name="first", output="null")
    path = os.path.join(sup.rundir, "0.state.json")
    make_a_directory_at(path, "its state file")
    try:
        bad = sup.run("create-service", "-n", "second", "-o", "null", "/bin/sleep", "600")
        assert bad.rc == 1 and bad.out == "" and len(bad.err.splitlines()) == 1, bad
        assert "could not save the state" in bad.err and "undone" in bad.err
        assert [svc["name"] for svc in sup.json("list-supervisor")["services"]] == ["first"]
        suspend = sup.run("suspend-service", "first")
        assert suspend.rc == 1 and "would not survive a crash" in suspend.err, suspend
    finally:
        os.rmdir(path)
    sup.ok("create-service", "-n", "third", "-o", "null", "/bin/sleep", "600")
    assert on_disk(sup.rundir) == {"first", "third"}
