"""Children start clean: no blocked or ignored signals, no fd of the daemon's, a session of
their own, no private environment of the daemon's; their whole group goes with them."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from conftest import alive, state, wait_until

# Signals 32 and 33 are glibc's internal ones (SIGCANCEL, SIGSETXID): not in
# signal.valid_signals(), not settable by a program, and inherited from this machine's init.
_GLIBC_INTERNAL = (1 << 31) | (1 << 32)


def _status_field(pid: int, field: str) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1], 16)
    raise AssertionError(f"{field} missing")


def _environ(pid: int) -> dict[str, str]:
    with open(f"/proc/{pid}/environ", "rb") as f:
        pairs = [p.split(b"=", 1) for p in f.read().split(b"\0") if b"=" in p]
    return {k.decode(): v.decode(errors="replace") for k, v in pairs}


@pytest.fixture(params=["spawned", "created-stopped"])
def child(request, sup):
    stopped = request.param == "created-stopped"
    pid = sup.create("/bin/sleep", ["120"], name="kid", create_stopped=stopped)["pid"]
    if stopped:
        sup.ok("resume-service", "kid")
        wait_until(lambda: os.readlink(f"/proc/{pid}/exe").endswith("sleep"),
                   what="the exec")
    return pid


def test_clean_signal_mask_and_dispositions(child, sup):
    daemon = sup.pid
    assert _status_field(daemon, "SigBlk") != 0  # the daemon blocks what it reads...
    assert _status_field(child, "SigBlk") == 0  # ...its children do not inherit that
    ignored = _status_field(child, "SigIgn") & ~_GLIBC_INTERNAL
    assert ignored == 0, f"ignored signals leaked into the child: {ignored:#x}"  # SIGPIPE!


def test_no_daemon_fd_is_inherited(child, sup):
    fds = sorted(int(fd) for fd in os.listdir(f"/proc/{child}/fd"))
    assert fds == [0, 1, 2]
    assert os.readlink(f"/proc/{child}/fd/0") == "/dev/null"
    assert len(os.listdir(f"/proc/{sup.pid}/fd")) > 3  # the daemon has more to leak


def test_own_session_and_clean_environment(child, sup):
    with open(f"/proc/{child}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    pgid, sid = int(fields[2]), int(fields[3])
    assert pgid == child and sid == child
    assert "NOTIFY_SOCKET" in _environ(sup.pid)  # `init` waited on it
    env = _environ(child)
    for private in ("NOTIFY_SOCKET", "LISTEN_FDS", "LISTEN_PID"):
        assert private not in env
    assert env.get("SUPERVISOR_RUNTIME_DIR") == sup.rundir  # the rest is passed on


def test_closing_a_service_ends_its_process_group(sup, tmp_path):
    pids = tmp_path / "pids"
    sup.create("/bin/sh", ["-c", f"sleep 120 & echo $! >> {pids}; sleep 120 & echo $! >> {pids};"
                                 " wait"], name="tree")
    wait_until(lambda: pids.exists() and len(pids.read_text().split()) == 2,
               what="the grandchildren")
    grandchildren = [int(p) for p in pids.read_text().split()]
    assert all(alive(p) for p in grandchildren)
    sup.ok("close-service", "tree")
    wait_until(lambda: not any(alive(p) for p in grandchildren), what="the whole group to die")


def test_suspend_stops_the_whole_group(sup, tmp_path):
    pids = tmp_path / "pids"
    sup.create("/bin/sh", ["-c", f"sleep 120 & echo $! > {pids}; wait"], name="tree")
    wait_until(lambda: pids.exists() and pids.read_text().strip(), what="the grandchild")
    grandchild = int(pids.read_text())
    sup.ok("suspend-service", "tree")
    wait_until(lambda: state(grandchild) == "T", what="the grandchild to stop")
    sup.ok("resume-service", "tree")
    wait_until(lambda: state(grandchild) == "S", what="the grandchild to continue")
    sup.ok("remove-service", "tree")
    wait_until(lambda: not alive(grandchild), what="removal to end the group")


def test_stray_fds_of_whoever_started_the_daemon_do_not_reach_services(rundir):
    from conftest import Supervisor

    s = Supervisor(rundir, 11)
    r, w = os.pipe()  # a stray fd, as a shell or job runner may leave open
    try:
        subprocess.run([sys.executable, "-m", "supervisor", "init", "-i", "11"], env=s.env,
                       pass_fds=[r, w], check=True, capture_output=True, timeout=30)
    finally:
        os.close(r)
        os.close(w)
    try:
        pid = s.create("/bin/sleep", ["60"], output="null")["pid"]
        assert sorted(int(fd) for fd in os.listdir(f"/proc/{pid}/fd")) == [0, 1, 2]
    finally:
        s.ok("close", "-i", "11")


def _tree(tmp_path):
    """A service whose grandchildren include one that double-forked into its own session
    (out of the service's process group: only its cgroup still holds it)."""
    pids = tmp_path / "pids"
    script = (f"sleep 600 & echo $! >> {pids}; "
              f"setsid sh -c 'sleep 601 & echo $! >> {pids}' & "
              "wait")
    return pids, script


def test_close_service_ends_a_double_forked_escapee(sup, tmp_path):
    pids, script = _tree(tmp_path)
    svc = sup.create("/bin/sh", ["-c", script], name="tree", output="null")
    wait_until(lambda: pids.exists() and len(pids.read_text().split()) == 2,
               what="the grandchildren")
    grandchildren = [int(p) for p in pids.read_text().split()]
    escapee = grandchildren[1]
    with open(f"/proc/{escapee}/stat") as f:
        assert int(f.read().rsplit(")", 1)[1].split()[3]) != svc["pid"]  # another session
    sup.ok("close-service", "tree")
    wait_until(lambda: not any(alive(p) for p in grandchildren), what="the whole tree to die")


def test_when_the_main_process_ends_what_it_left_goes_too(sup, tmp_path):
    pids, script = _tree(tmp_path)
    # the main process exits once both grandchildren have written their pids
    script = script.replace("wait", f"until [ $(wc -l < {pids}) -ge 2 ]; do sleep 0.01; done")
    sup.create("/bin/sh", ["-c", script], name="leaver", output="null")
    wait_until(lambda: pids.exists() and len(pids.read_text().split()) == 2,
               what="the grandchildren")
    sup.wait_status("leaver", "EXITED")
    grandchildren = [int(p) for p in pids.read_text().split()]
    wait_until(lambda: not any(alive(p) for p in grandchildren), what="the leftovers to die")


def test_close_instance_ends_every_tree(rundir, tmp_path):
    from conftest import Supervisor

    s = Supervisor(rundir, 12)
    s.ok("init", "-i", "12")
    pids, script = _tree(tmp_path)
    s.create("/bin/sh", ["-c", script], name="tree", output="null")
    wait_until(lambda: pids.exists() and len(pids.read_text().split()) == 2,
               what="the grandchildren")
    s.ok("close", "-i", "12")
    grandchildren = [int(p) for p in pids.read_text().split()]
    wait_until(lambda: not any(alive(p) for p in grandchildren), what="no orphan left")


@pytest.mark.parametrize("where", ["/", "tmp"])
def test_a_service_runs_in_the_directory_it_was_created_from(sup, tmp_path, where):
    cwd = "/" if where == "/" else str(tmp_path)
    svc = sup.create("/bin/sleep", ["60"], cwd=cwd)
    assert os.readlink(f"/proc/{svc['pid']}/cwd") == cwd
    assert os.readlink(f"/proc/{sup.pid}/cwd") == "/"  # the daemon stepped back


def test_cgroups_do_not_pile_up(sup):
    """A day of churn in a minute: services made and removed, services that end. Each
    service's cgroup is removed once it is empty, so the tree holds one cgroup per service
    that has processes, whatever came before."""
    keep = sup.create("/bin/sleep", ["600"], name="keep", output="null")
    with open(f"/proc/{keep['pid']}/cgroup") as f:
        own = next(line.strip()[3:] for line in f if line.startswith("0::"))
    assert own.rsplit("/", 1)[-1] == "svc-keep", own  # root here: services get cgroups
    with open("/proc/self/mountinfo") as f:
        mount = next(line.split()[4] for line in f if " - cgroup2 " in line)
    tree = os.path.dirname(mount + own)
    with sup.client() as c:
        for i in range(100):
            a = c.create_service("/bin/sleep", ["600"], output="null")  # a new name each
            b = c.create_service("/bin/sh", ["-c", "sleep 600 & exit 0"], name=f"leaver{i}",
                                 output="null")  # ends at once, leaving a child behind
            c.supervisor_freelist([a["name"], b["name"]])
    wait_until(lambda: sorted(e for e in os.listdir(tree) if e.startswith("svc-"))
               == [os.path.basename(own)], what="only keep's cgroup to be left")
