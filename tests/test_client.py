"""The Python client (supervisor/client.py) as a program uses it: one Client kept for a
long time, shared by threads, across a fork, across a timeout and across daemons that
come and go; arguments it refuses before anything is sent."""

from __future__ import annotations

import os
import signal
import threading

import pytest
from conftest import alive, wait_until
from timeouts import TIMEOUT

from supervisor.client import Client, InvalidArgument, NotAnswering, RemoteError


def test_a_timed_out_call_leaves_the_next_calls_in_step(sup):
    """A call that timed out drops its connection: its answer, when it comes, is never
    taken for another call's (before, every later call failed, or got the old error)."""
    sup.create("/bin/sleep", ["600"], name="here", output="null")
    daemon = sup.pid
    c = Client(sup.instance, runtime_dir=sup.rundir, timeout=0.3)
    try:
        os.kill(daemon, signal.SIGSTOP)
        try:
            with pytest.raises(NotAnswering):
                c.service_status("nosuch")
        finally:
            os.kill(daemon, signal.SIGCONT)
        c.timeout = TIMEOUT
        c.close()  # (the timeout of the next connection)
        assert c.ping()["pid"] == daemon
        assert c.service_status("here")["name"] == "here"
        with pytest.raises(RemoteError) as info:
            c.service_status("nosuch")
        assert info.value.code == "no-such-service"
    finally:
        c.close()


def test_a_kept_client_follows_the_daemon_across_close_init_and_a_crash(sup):
    with sup.client() as c:
        first = c.ping()["pid"]
        sup.ok("close", "-i", "0")
        sup.ok("init", "-i", "0")
        second = c.ping()["pid"]  # a new connection, made for this call
        assert second != first
        os.kill(second, signal.SIGKILL)
        wait_until(lambda: not alive(second), what="the daemon to die")
        sup.ok("init", "-i", "0")
        assert c.ping()["pid"] not in (first, second)


def test_one_client_shared_by_threads_and_across_a_fork(sup):
    sup.create("/bin/sleep", ["600"], name="a", output="null")
    sup.create("/bin/sleep", ["600"], name="b", output="null")
    wrong = []
    with sup.client() as c:
        c.ping()

        def ask(name: str) -> None:
            for _ in range(100):
                if c.service_status(name, usage=False)["name"] != name:
                    wrong.append(name)
        threads = [threading.Thread(target=ask, args=("ab"[i % 2],)) for i in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(TIMEOUT)
        assert wrong == [] and not any(t.is_alive() for t in threads)
        child = os.fork()
        if child == 0:  # the child's calls go on a connection of its own
            ok = all(c.service_status("a", usage=False)["name"] == "a" for _ in range(50))
            os._exit(0 if ok else 1)
        parent_ok = all(c.service_status("b", usage=False)["name"] == "b" for _ in range(50))
        _, status = os.waitpid(child, 0)
        assert parent_ok and os.waitstatus_to_exitcode(status) == 0


@pytest.mark.parametrize("call", [
    lambda c: c.create_service("/bin/sleep", "300"),  # not sleep 3 0 0
    lambda c: c.create_service("/bin/sleep", ["300"], evry=60),  # a misspelt option
    lambda c: c.supervisor_freelist("ab"),  # not the services a and b
    lambda c: c.call("service-status", service=b"x"),
    lambda c: c.pipeline([("ping",)]),
    lambda c: c.pipeline([("create-service", {"path": "/bin/sleep", "args": ["1"]})] * 600
                         + [("ping", {"x": {1, 2}})]),
])
def test_arguments_the_client_refuses_before_anything_is_sent(sup, call):
    with sup.client() as c:
        with pytest.raises(InvalidArgument) as info:
            call(c)
        assert info.value.exit_code == 2 and isinstance(info.value, TypeError)
        assert c.list_supervisor()["services"] == []  # nothing of it went out
        assert c.ping()["instance"] == sup.instance  # and the client is in step


@pytest.mark.parametrize("kw", [{"timeout": 0}, {"timeout": -1}, {"timeout": float("nan")},
                                {"instance": 70.9}, {"instance": True}, {"instance": -1}])
def test_a_client_of_no_instance_or_no_timeout_is_refused(kw):
    with pytest.raises(InvalidArgument):
        Client(**kw)


def test_the_daemon_refuses_an_unknown_create_argument(sup):
    with sup.client() as c:
        with pytest.raises(RemoteError) as info:
            c.call("create-service", path="/bin/sleep", args=["600"], cwd="/", evry=60)
        assert info.value.code == "invalid-argument" and "'evry'" in info.value.message
        with pytest.raises(RemoteError) as info:
            c.call("create-service", path="/bin/sleep", args=["600"], cwd="/etc/passwd")
        assert "not a directory" in info.value.message
        assert c.list_supervisor()["services"] == []
