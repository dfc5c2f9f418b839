"""The fork server's death is survived: whatever signal ends it, the
runtime starts another; running workers and actors go on untouched, their
results arrive, and spawns it had not carried out are asked of the next."""

from __future__ import annotations

import os
import signal

import psutil
import pytest

from shoal import objectref

from ._child import Child, process_gone, shm_entries, wait_until

pytestmark = pytest.mark.timeout(120)

SIGNALS = [signal.SIGKILL, signal.SIGSEGV, signal.SIGTERM]


def server_pid() -> int:
    """The current fork server's pid, once it said it is ready."""
    shell = objectref.current().shell
    wait_until(lambda: shell.pool.server_pid is not None, timeout=30, what="the fork server to be ready")
    return shell.pool.server_pid


def kill_server(sig: int) -> int:
    """Send sig to the fork server; return once another one is ready."""
    pid = server_pid()
    os.kill(pid, sig)
    wait_until(lambda: objectref.current().shell.pool.server_pid not in (None, pid), timeout=30,
               what="another fork server")
    return pid


def define(ray):
    @ray.remote
    def wait_on(path):
        with open(path) as f:  # opens once the driver opens the other end
            return os.getpid(), f.read()

    @ray.remote
    def inc(x):
        return x + 1

    @ray.remote
    class Counter:
        def __init__(self):
            self.n = 0

        def inc(self):
            self.n += 1
            return self.n

        def pid(self):
            return os.getpid()

    @ray.remote(max_concurrency=2)
    class Threaded:
        def pid(self):
            return os.getpid()

    return wait_on, inc, Counter, Threaded


@pytest.mark.parametrize("sig", SIGNALS, ids=lambda s: signal.Signals(s).name)
def test_death_while_tasks_run(ray, tmp_path, sig):
    wait_on, inc, Counter, Threaded = define(ray)
    c = Counter.remote()
    assert ray.get(c.inc.remote(), timeout=30) == 1
    actor_pid = ray.get(c.pid.remote(), timeout=30)
    fifo = tmp_path / "gate"
    os.mkfifo(fifo)
    running = wait_on.remote(str(fifo))
    with open(fifo, "w") as gate:  # the task is running once this opens
        dead = kill_server(sig)
        gate.write("through")
    pid, text = ray.get(running, timeout=30)
    assert text == "through" and pid != dead
    # The actor is the same process, with its state.
    assert ray.get(c.pid.remote(), timeout=30) == actor_pid
    assert ray.get(c.inc.remote(), timeout=30) == 2
    # New workers and actors start through the new fork server.
    assert ray.get([inc.remote(i) for i in range(20)], timeout=30) == list(range(1, 21))
    t = Threaded.remote()
    assert ray.get(t.pid.remote(), timeout=30) not in (actor_pid, dead)
    assert ray.get(Counter.remote().inc.remote(), timeout=30) == 1


@pytest.mark.parametrize("sig", SIGNALS, ids=lambda s: signal.Signals(s).name)
def test_death_between_tasks(ray, sig):
    _, inc, Counter, _ = define(ray)
    assert ray.get([inc.remote(i) for i in range(4)], timeout=30) == [1, 2, 3, 4]
    for _ in range(2):  # twice: the second fork server dies as well as the first
        kill_server(sig)
        assert ray.get([inc.remote(i) for i in range(8)], timeout=30) == list(range(1, 9))
        assert ray.get(Counter.remote().inc.remote(), timeout=30) == 1


def test_stop_and_continue(ray):
    """A stopped fork server only delays new workers; nothing fails."""
    _, inc, Counter, _ = define(ray)
    assert ray.get(inc.remote(1), timeout=30) == 2
    pid = server_pid()
    os.kill(pid, signal.SIGSTOP)
    try:
        c = Counter.remote()  # its process is asked of the stopped fork server
        ref = c.inc.remote()
        ready, _ = ray.wait([ref], timeout=0)
        assert not ready
    finally:
        os.kill(pid, signal.SIGCONT)
    assert ray.get(ref, timeout=30) == 1
    assert objectref.current().shell.pool.server_pid == pid


def test_spawns_it_never_made_are_asked_again(ray):
    """An actor whose process the fork server had not started when it
    died starts through the next one: it does not die, nor use a restart."""
    _, inc, Counter, _ = define(ray)
    assert ray.get(inc.remote(1), timeout=30) == 2
    pid = server_pid()
    os.kill(pid, signal.SIGSTOP)
    c = Counter.remote()
    ref = c.inc.remote()
    os.kill(pid, signal.SIGKILL)  # dies stopped, with the spawn unread
    assert ray.get(ref, timeout=30) == 1
    assert ray.get(c.inc.remote(), timeout=30) == 2


def test_adopted_workers_exit_at_shutdown(tmp_path):
    import shoal as ray

    ray.init(num_cpus=2, object_store_memory=64 << 20)
    try:
        _, inc, Counter, _ = define(ray)
        c = Counter.remote()
        actor_pid = ray.get(c.pid.remote(), timeout=30)
        kill_server(signal.SIGKILL)
        assert psutil.Process(actor_pid).ppid() == os.getpid()  # adopted by the driver
    finally:
        ray.shutdown()
    assert process_gone(actor_pid)
    assert not psutil.Process().children(recursive=True)


DRIVER = """
import os, signal
import shoal as ray
from shoal import objectref
ray.init(num_cpus=2, object_store_memory=64 << 20)

@ray.remote
class A:
    def pid(self):
        return os.getpid()

a = A.remote()
old = ray.get(a.pid.remote())
shell = objectref.current().shell
dead = shell.pool.server_pid
os.kill(dead, signal.SIGKILL)
b = A.remote()
new = ray.get(b.pid.remote())
say("pids", old, new, shell.pool.server_pid)
hear()
"""


def test_driver_death_after_a_fork_server_death_leaves_nothing():
    """Workers adopted by the driver die with it too."""
    before = shm_entries()
    c = Child(DRIVER)
    words = c.expect(timeout=60).split()
    assert words[0] == "pids"
    pids = [int(w) for w in words[1:]]
    assert psutil.Process(pids[0]).ppid() == c.pid
    c.kill()
    wait_until(lambda: all(process_gone(p) for p in pids), timeout=20, what="every process of the runtime to exit")
    assert shm_entries() == before


def test_a_hung_fork_server_is_replaced(ray, monkeypatch):
    """A fork server that leaves a spawn unreported too long (here stopped
    for good) is killed and replaced; the actor it was asked for starts."""
    from shoal.scheduler import pool

    monkeypatch.setattr(pool, "SPAWN_TIMEOUT_S", 1.0)
    _, inc, Counter, _ = define(ray)
    assert ray.get(inc.remote(1), timeout=30) == 2
    pid = server_pid()
    os.kill(pid, signal.SIGSTOP)  # and never continued
    c = Counter.remote()
    assert ray.get(c.inc.remote(), timeout=60) == 1
    assert objectref.current().shell.pool.server_pid != pid


def test_a_worker_dead_before_it_is_released_does_not_stop_the_fork_server():
    """A worker killed as soon as the driver learnt its pid may be gone
    before the fork server lets it run: the fork server goes on (it once
    took the broken pipe for the driver's death and removed its files)."""
    from shoal.worker.forkserver import release

    r, w = os.pipe()
    os.close(r)
    try:
        release(w)  # no BrokenPipeError
    finally:
        os.close(w)


def test_a_failure_inside_the_fork_server_leaves_the_workers_running(ray, capfd):
    """A message the fork server cannot handle ends it with a traceback
    (a bug there), but not its workers: the driver adopts them and starts
    another fork server."""
    from shoal.scheduler import protocol

    _, inc, Counter, _ = define(ray)
    c = Counter.remote()
    actor_pid = ray.get(c.pid.remote(), timeout=30)
    shell = objectref.current().shell
    dead = server_pid()
    protocol.send_with_fds(shell.pool.sock, ("spawn", {}))  # no descriptors: it fails
    wait_until(lambda: shell.pool.server_pid not in (None, dead), timeout=30, what="another fork server")
    assert ray.get(c.pid.remote(), timeout=30) == actor_pid
    assert ray.get(c.inc.remote(), timeout=30) == 1
    assert ray.get(inc.remote(1), timeout=30) == 2
    assert "the fork server died (it exited with code 1)" in capfd.readouterr().err


def test_what_a_dead_workers_task_left_running_goes_at_shutdown():
    """A process a task started and left behind when its worker died is
    adopted by the driver (a subreaper): shutdown kills and reaps it."""
    import shoal as ray

    ray.init(num_cpus=1, object_store_memory=64 << 20)
    try:
        @ray.remote(max_retries=0)
        def leave_one_behind():
            import subprocess

            p = subprocess.Popen(["sleep", "1000"])
            print(p.pid, flush=True)
            return p.pid

        @ray.remote(max_retries=0)
        def die():
            os.kill(os.getpid(), signal.SIGKILL)

        left = ray.get(leave_one_behind.remote(), timeout=60)
        with pytest.raises(ray.exceptions.WorkerCrashedError):
            ray.get(die.remote(), timeout=60)  # (the worker that started it)
        wait_until(lambda: psutil.Process(left).ppid() == os.getpid(), timeout=30, what="the driver to adopt it")
    finally:
        ray.shutdown()
    assert process_gone(left)
    assert not psutil.Process().children(recursive=True)


def test_shutdown_with_a_stopped_fork_server_leaves_nothing():
    """shutdown() kills a fork server that does not answer its goodbye
    (stopped): its workers, adopted by the driver then, go too."""
    import shoal as ray

    ray.init(num_cpus=2, object_store_memory=64 << 20)
    try:
        _, inc, Counter, _ = define(ray)
        c = Counter.remote()
        actor_pid = ray.get(c.pid.remote(), timeout=30)
        assert ray.get(inc.remote(1), timeout=30) == 2
        os.kill(server_pid(), signal.SIGSTOP)
    finally:
        ray.shutdown()
    assert process_gone(actor_pid)
    assert not psutil.Process().children(recursive=True)
