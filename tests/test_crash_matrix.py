"""The crash matrix (docs/crash-matrix.md): each process x how it dies x
what it was doing, and what the user sees. Worker and actor cells are
generated here; the fork server's are in test_fork_server.py; the driver's
run a child driver that dies at the chosen point (bench/chaos.py).

Deaths: exit (os._exit(3)), exception (raise), SIGKILL, SIGSEGV, OOM (what
the kernel's OOM killer does: SIGKILL; the memory monitor's own
OutOfMemoryError is tests/test_memory_monitor.py), hang (never returns).
Moments: idle, running (user code), in_get (deserializing a value it
gets), in_put (serializing a value it puts), holding_lock (inside the
object store's lock).
"""

from __future__ import annotations

import os
import signal
import threading

import pytest

from shoal import exceptions as E
from shoal import objectref
from shoal.util.state import list_workers

from ._child import wait_until

pytestmark = pytest.mark.timeout(120)

DEATHS = ["exit", "exception", "SIGKILL", "SIGSEGV", "OOM", "hang"]
MOMENTS = ["idle", "running", "in_get", "in_put", "holding_lock"]


def die(how: str):
    """Die `how`, in this process (a worker or an actor)."""
    if how == "exit":
        os._exit(3)
    if how == "exception":
        raise ValueError("boom from the crash matrix")
    if how == "hang":
        threading.Event().wait()
    sig = {"SIGKILL": signal.SIGKILL, "OOM": signal.SIGKILL, "SIGSEGV": signal.SIGSEGV}[how]
    os.kill(os.getpid(), sig)
    threading.Event().wait()  # (the signal is on its way)


class Trap:
    """Dies when unpickled (a value got: in_get) ..."""

    def __init__(self, how: str):
        self.how = how

    def __reduce__(self):
        return die, (self.how,)


class Bomb:
    """... or when pickled (a value put: in_put)."""

    def __init__(self, how: str):
        self.how = how

    def __reduce__(self):
        die(self.how)


def act(moment: str, how: str, trap=None):
    """In the worker or actor: do `moment`'s thing and die `how` there."""
    import shoal

    if moment == "running":
        die(how)
    elif moment == "in_get":
        shoal.get(trap[0])
    elif moment == "in_put":
        shoal.put(Bomb(how))
    elif moment == "holding_lock":
        objectref.current().store.raw._debug_lock_and_hold()
        die(how)
    return "lived"


def cells():
    """Every (death, moment) a worker or an actor can meet; the others are
    impossible (user code never runs inside the store's lock, so it cannot
    raise or hang there; an idle process runs no code of the user's)."""
    for moment in MOMENTS:
        for how in DEATHS:
            if moment == "idle" and how not in ("SIGKILL", "SIGSEGV", "OOM"):
                continue
            if moment == "holding_lock" and how in ("exception", "hang"):
                continue
            yield pytest.param(how, moment, id=f"{how}-{moment}")


def still_works(ray):
    @ray.remote
    def ping(x):
        return x + 1

    assert ray.get([ping.remote(i) for i in range(4)], timeout=60) == [1, 2, 3, 4]


def pool_worker_pid(ray) -> int:
    @ray.remote
    def pid():
        return os.getpid()

    p = ray.get(pid.remote(), timeout=60)
    shell = objectref.current().shell
    wait_until(lambda: any(w["pid"] == p and w["state"] == "IDLE" for w in list_workers()),
               timeout=30, what="the worker to be idle")
    assert p in shell.worker_pids()
    return p


@pytest.mark.parametrize("how, moment", list(cells()))
def test_worker(ray, how, moment):
    if moment == "idle":
        pid = pool_worker_pid(ray)
        os.kill(pid, signal.SIGSEGV if how == "SIGSEGV" else signal.SIGKILL)
        wait_until(lambda: pid not in objectref.current().shell.worker_pids(), timeout=30,
                   what="the driver to see the worker's death")
        still_works(ray)  # the user sees nothing: the pool starts another worker
        return

    @ray.remote(max_retries=0)
    def task(moment, how, trap):
        return act(moment, how, trap)

    trap = [ray.put(Trap(how))] if moment == "in_get" else None
    ref = task.remote(moment, how, trap)
    if how == "hang":
        with pytest.raises(E.GetTimeoutError):
            ray.get(ref, timeout=0.5)
        ray.cancel(ref, force=True)
        with pytest.raises(E.TaskCancelledError):
            ray.get(ref, timeout=60)
    elif how == "exception":
        with pytest.raises(E.RayTaskError) as info:
            ray.get(ref, timeout=60)
        assert "boom from the crash matrix" in str(info.value)
    else:
        with pytest.raises(E.WorkerCrashedError) as info:
            ray.get(ref, timeout=60)
        text = str(info.value)
        assert {"exit": "exited with code 3", "SIGKILL": "SIGKILL", "OOM": "out-of-memory killer",
                "SIGSEGV": "SIGSEGV"}[how] in text, text
    still_works(ray)


@pytest.mark.parametrize("how, moment", list(cells()))
def test_actor(ray, how, moment):
    @ray.remote(max_restarts=0)
    class Victim:
        def pid(self):
            return os.getpid()

        def act(self, moment, how, trap):
            return act(moment, how, trap)

    v = Victim.remote()
    pid = ray.get(v.pid.remote(), timeout=60)
    if moment == "idle":
        os.kill(pid, signal.SIGSEGV if how == "SIGSEGV" else signal.SIGKILL)
        with pytest.raises(E.ActorDiedError):
            ray.get(v.pid.remote(), timeout=60)
        still_works(ray)
        return
    trap = [ray.put(Trap(how))] if moment == "in_get" else None
    ref = v.act.remote(moment, how, trap)
    if how == "hang":
        with pytest.raises(E.GetTimeoutError):
            ray.get(ref, timeout=0.5)
        ray.kill(v)
        with pytest.raises(E.ActorDiedError):
            ray.get(ref, timeout=60)
    elif how == "exception":
        with pytest.raises(E.RayTaskError) as info:
            ray.get(ref, timeout=60)
        assert "boom from the crash matrix" in str(info.value)
        assert ray.get(v.pid.remote(), timeout=60) == pid  # the actor lives on
    else:
        with pytest.raises(E.ActorDiedError) as info:
            ray.get(ref, timeout=60)
        text = str(info.value)
        assert {"exit": "code 3", "SIGKILL": "SIGKILL", "OOM": "SIGKILL", "SIGSEGV": "SIGSEGV"}[how] in text, text
        with pytest.raises(E.ActorDiedError):
            ray.get(v.pid.remote(), timeout=60)
    still_works(ray)


# -- the driver ------------------------------------------------------------------------------

DRIVER_POINTS = {"idle": "idle", "running": "submit", "in_get": "get", "in_put": "put", "holding_lock": "lock"}


def driver_cells():
    """SIGKILL inside put, get and submit is tests/test_chaos.py's, and
    idle deaths are tests/test_api_lifecycle.py's too."""
    for moment, point in DRIVER_POINTS.items():
        for how in ("SIGKILL", "SIGSEGV", "exit", "exception"):
            if how == "SIGKILL" and point in ("submit", "get", "put"):
                continue  # test_chaos.py::test_driver_killed_inside
            if how == "exception" and point == "lock":
                continue  # user code never runs inside the lock
            yield pytest.param(how, point, id=f"{how}-{moment}")


@pytest.mark.parametrize("how, point", list(driver_cells()))
def test_driver(how, point):
    from tests.test_chaos import load_chaos

    r = load_chaos().kill_driver(point, seed=5, size=1 << 20, timeout=100, how=how)
    assert r["reached"], f"the workload never reached {point}"
    assert r["left"] == [], r  # no process, spill file or /dev/shm entry of its runtime
