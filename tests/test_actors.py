"""Actors through the public API: the seed examples, handles, names,
concurrency, failures and restarts, resources."""

from __future__ import annotations

import asyncio
import os
import signal
import threading
import time

import psutil
import pytest

import shoal
from shoal import exceptions as exc

from ._child import gate_actor, process_gone, wait_until

pytestmark = pytest.mark.timeout(90)


def make_counter(ray):
    @ray.remote
    class Counter(object):
        def __init__(self, start=0):
            self.x = start

        def inc(self):
            self.x += 1

        def get_value(self):
            return self.x

        def pid(self):
            return os.getpid()

    return Counter


def test_counter_seed(ray):
    Counter = make_counter(ray)
    c = Counter.remote()
    assert ray.get(c.get_value.remote(), timeout=30) == 0
    c.inc.remote()
    c.inc.remote()
    assert ray.get(c.get_value.remote(), timeout=30) == 2


def test_calls_run_in_submission_order_one_at_a_time(ray):
    @ray.remote
    class Log:
        def __init__(self):
            self.items = []
            self.active = 0

        def add(self, i):
            self.active += 1
            assert self.active == 1, "two calls ran at once"
            time.sleep(0.001)
            self.items.append(i)
            self.active -= 1

        def items_(self):
            return self.items

    log = Log.remote()
    for i in range(200):
        log.add.remote(i)
    assert ray.get(log.items_.remote(), timeout=60) == list(range(200))


def test_message_actor_seed(ray):
    @ray.remote
    class MessageActor(object):
        def __init__(self):
            self.messages = []

        def add_message(self, message):
            self.messages.append(message)

        def get_and_clear_messages(self):
            messages = self.messages
            self.messages = []
            return messages

    @ray.remote
    def worker(message_actor, j):
        for i in range(5):
            time.sleep(0.01)
            message_actor.add_message.remote("Message {} from actor {}.".format(i, j))

    message_actor = MessageActor.remote()
    done = [worker.remote(message_actor, j) for j in range(3)]
    ray.get(done, timeout=60)
    seen = []
    deadline = time.monotonic() + 30
    while len(seen) < 15 and time.monotonic() < deadline:
        seen += ray.get(message_actor.get_and_clear_messages.remote(), timeout=30)
    assert sorted(seen) == sorted(f"Message {i} from actor {j}." for i in range(5) for j in range(3))
    for j in range(3):  # each sender's messages arrive in its order
        mine = [m for m in seen if m.endswith(f"actor {j}.")]
        assert mine == [f"Message {i} from actor {j}." for i in range(5)]


def test_handles_pickle_to_tasks_and_actors_and_back(ray):
    Counter = make_counter(ray)
    c = Counter.remote()

    @ray.remote
    def bump(counter, n):
        for _ in range(n):
            counter.inc.remote()
        return ray.get(counter.get_value.remote())

    @ray.remote
    class Relay:
        def __init__(self, counter):
            self.counter = counter

        def bump(self):
            return ray.get(self.counter.inc.remote())

    @ray.remote
    def make():
        return Counter.remote(100)

    assert ray.get(bump.remote(c, 3), timeout=30) == 3
    relay = Relay.remote(c)
    ray.get(relay.bump.remote(), timeout=30)
    assert ray.get(c.get_value.remote(), timeout=30) == 4
    made = ray.get(make.remote(), timeout=30)
    assert ray.get(made.get_value.remote(), timeout=30) == 100


def test_actor_ends_when_every_handle_is_gone(ray):
    Counter = make_counter(ray)
    c = Counter.remote()
    pid = ray.get(c.pid.remote(), timeout=30)
    keep = [c]
    del c
    assert psutil.pid_exists(pid)
    del keep
    shoal.objectref.current().shell.flush_refs()

    wait_until(lambda: process_gone(pid), what="the actor process to exit")


def test_dropped_actors_free_their_cpus_without_further_calls(ray):
    @ray.remote(num_cpus=1)
    class Holder:
        def ping(self):
            return 1

    for _ in range(3):
        holders = [Holder.remote() for _ in range(2)]
        assert ray.get([h.ping.remote() for h in holders], timeout=30) == [1, 1]
        assert ray.available_resources().get("CPU", 0) == 0
        del holders  # nothing else happens in the driver afterwards
        wait_until(lambda: ray.available_resources().get("CPU", 0) == 2, what="the actors' CPUs back")


def test_named_actors(ray):
    Counter = make_counter(ray)
    a = Counter.options(name="counter").remote(5)
    assert ray.get(ray.get_actor("counter").get_value.remote(), timeout=30) == 5
    with pytest.raises(ValueError, match="already taken"):
        Counter.options(name="counter").remote()
    same = Counter.options(name="counter", get_if_exists=True).remote()
    assert same == a
    with pytest.raises(ValueError, match="Failed to look up"):
        ray.get_actor("nobody")
    other = Counter.options(name="counter", namespace="other").remote(9)
    assert ray.get(ray.get_actor("counter", namespace="other").get_value.remote(), timeout=30) == 9
    assert "counter" in shoal.util.list_named_actors()

    @ray.remote
    def lookup():
        return ray.get(ray.get_actor("counter").get_value.remote())

    assert ray.get(lookup.remote(), timeout=30) == 5
    del a, same, other


def test_a_named_actor_is_collected_with_its_last_handle(ray):
    # As Ray 2.60: only lifetime="detached" keeps an actor without handles.
    Counter = make_counter(ray)
    a = Counter.options(name="short", num_cpus=1).remote(1)
    assert ray.get(a.get_value.remote(), timeout=30) == 1
    again = ray.get_actor("short")
    del a
    shoal.objectref.current().shell.flush_refs()
    assert ray.get(again.get_value.remote(), timeout=30) == 1  # the looked-up handle counts
    del again
    shoal.objectref.current().shell.flush_refs()
    with pytest.raises(ValueError, match="Failed to look up"):
        ray.get_actor("short")
    assert "short" not in shoal.util.list_named_actors()
    wait_until(lambda: ray.available_resources().get("CPU", 0) == 2, what="the actor's CPU back")
    b = Counter.options(name="short").remote(2)  # the name is free again
    assert ray.get(b.get_value.remote(), timeout=30) == 2


def test_detached_actor_outlives_its_handles(ray):
    Counter = make_counter(ray)
    with pytest.warns(UserWarning, match="detached"):
        Counter.options(name="kept", lifetime="detached").remote(3)
    shoal.objectref.current().shell.flush_refs()
    assert ray.get(ray.get_actor("kept").get_value.remote(), timeout=30) == 3


def test_kill_fails_pending_and_later_calls(ray):
    @ray.remote
    class Slow:
        def wait(self, s):
            time.sleep(s)
            return s

    a = Slow.remote()
    ray.get(a.wait.remote(0), timeout=30)
    pending = a.wait.remote(30)
    ray.kill(a)
    with pytest.raises(exc.ActorDiedError) as info:
        ray.get(pending, timeout=30)
    assert isinstance(info.value, exc.RayActorError) and "kill()" in str(info.value)
    with pytest.raises(exc.ActorDiedError):
        ray.get(a.wait.remote(0), timeout=30)
    with pytest.raises(ValueError):
        ray.kill("not an actor")


def test_ray_terminate_drains_queued_calls(ray):
    Counter = make_counter(ray)
    c = Counter.remote()
    for _ in range(5):
        c.inc.remote()
    last = c.get_value.remote()
    c.__ray_terminate__.remote()
    assert ray.get(last, timeout=30) == 5
    with pytest.raises(exc.ActorDiedError, match="terminate"):
        ray.get(c.get_value.remote(), timeout=30)


def test_method_num_returns_and_generators(ray):
    @ray.remote
    class Multi:
        @ray.method(num_returns=2)
        def pair(self):
            return "a", "b"

        def count(self, n):
            yield from range(n)

    m = Multi.remote()
    assert ray.get(m.pair.remote(), timeout=30) == ["a", "b"]
    assert [ray.get(r, timeout=30) for r in m.count.remote(3)] == [0, 1, 2]
    assert ray.get(m.pair.options(num_returns=1).remote(), timeout=30) == ("a", "b")


def test_generator_methods_of_an_async_actor_stream(ray):
    @ray.remote
    class Streams:
        def count(self, n):
            yield from range(n)

        async def acount(self, n):
            for i in range(n):
                await asyncio.sleep(0)
                yield i * 10

        async def broken(self):
            yield 1
            raise ValueError("stream broke")

    s = Streams.remote()
    assert [ray.get(r, timeout=30) for r in s.count.remote(3)] == [0, 1, 2]
    assert [ray.get(r, timeout=30) for r in s.acount.remote(3)] == [0, 10, 20]
    gen = s.broken.remote()
    assert ray.get(next(gen), timeout=30) == 1
    with pytest.raises(ValueError, match="stream broke"):
        ray.get(next(gen), timeout=30)


def test_threaded_actor_runs_calls_concurrently(ray):
    @ray.remote(max_concurrency=3)
    class Meeting:
        def __init__(self):
            self.barrier = threading.Barrier(3, timeout=20)

        def arrive(self):
            self.barrier.wait()  # only returns if 3 calls run at once
            return threading.get_ident()

    m = Meeting.remote()
    idents = ray.get([m.arrive.remote() for _ in range(3)], timeout=60)
    assert len(set(idents)) == 3


def test_async_actor_interleaves_and_awaits_refs(ray):
    @ray.remote
    def slow_value(x):
        time.sleep(0.05)
        return x * 10

    @ray.remote
    class AsyncActor:
        def __init__(self):
            self.events = asyncio.Event()

        async def wait_for_signal(self):
            await self.events.wait()
            return "released"

        async def signal(self):
            self.events.set()

        async def via_ref(self, x):
            return await slow_value.remote(x) + 1

    a = AsyncActor.remote()
    waiting = a.wait_for_signal.remote()  # would block a sequential actor forever
    assert ray.get(a.via_ref.remote(4), timeout=30) == 41
    a.signal.remote()
    assert ray.get(waiting, timeout=30) == "released"


def test_method_error_keeps_the_actor_alive(ray):
    @ray.remote
    class Fragile:
        def __init__(self):
            self.n = 0

        def fail(self):
            self.n += 1
            raise KeyError("broken method")

        def count(self):
            return self.n

    f = Fragile.remote()
    with pytest.raises(KeyError) as info:
        ray.get(f.fail.remote(), timeout=30)
    assert isinstance(info.value, exc.RayTaskError) and "broken method" in str(info.value)
    assert "Fragile" in str(info.value)
    assert ray.get(f.count.remote(), timeout=30) == 1


def test_constructor_error_fails_every_call(ray):
    @ray.remote
    class Broken:
        def __init__(self):
            raise ValueError("bad configuration 42")

        def ping(self):
            return "pong"

    b = Broken.remote()
    for _ in range(2):
        with pytest.raises(exc.ActorDiedError, match="bad configuration 42"):
            ray.get(b.ping.remote(), timeout=30)


def test_crash_without_restarts_is_reported(ray):
    @ray.remote
    class Crashy:
        def die(self):
            os._exit(7)

        def ping(self):
            return "pong"

    c = Crashy.remote()
    with pytest.raises(exc.ActorDiedError, match="exited with code 7"):
        ray.get(c.die.remote(), timeout=30)
    with pytest.raises(exc.RayActorError):
        ray.get(c.ping.remote(), timeout=30)


def test_restart_reruns_the_constructor_and_retries_calls(ray, tmp_path):
    marker = tmp_path / "crashed"

    @ray.remote(max_restarts=1, max_task_retries=1)
    class Phoenix:
        def __init__(self):
            self.births = os.getpid()
            self.value = 0

        def crash_once(self):
            if not marker.exists():
                marker.write_text("1")
                os.kill(os.getpid(), signal.SIGKILL)
            return "survived"

        def incr(self):
            self.value += 1
            return self.value

        def pid(self):
            return os.getpid()

        def reborn(self):
            return ray.get_runtime_context().was_current_actor_reconstructed

    p = Phoenix.remote()
    first = ray.get(p.pid.remote(), timeout=30)
    ray.get(p.incr.remote(), timeout=30)
    assert ray.get(p.reborn.remote(), timeout=30) is False
    assert ray.get(p.crash_once.remote(), timeout=60) == "survived"  # retried after the restart
    assert ray.get(p.pid.remote(), timeout=30) != first
    assert ray.get(p.reborn.remote(), timeout=30) is True
    assert ray.get(p.incr.remote(), timeout=30) == 1  # a new instance
    ray.kill(p, no_restart=False)  # out of restarts now: it stays dead
    with pytest.raises(exc.RayActorError):
        ray.get(p.pid.remote(), timeout=30)


def test_call_lost_in_a_restart_is_unavailable_not_dead(ray):
    @ray.remote(max_restarts=1)
    class Fragile:
        def die(self):
            os._exit(1)

        def ping(self):
            return "pong"

    f = Fragile.remote()
    with pytest.raises(exc.ActorUnavailableError):  # as in Ray: it is coming back
        ray.get(f.die.remote(), timeout=30)
    assert ray.get(f.ping.remote(), timeout=30) == "pong"
    with pytest.raises(exc.ActorDiedError):  # out of restarts
        ray.get(f.die.remote(), timeout=30)


def test_many_actors_on_two_cpus(ray):
    Counter = make_counter(ray)
    actors = [Counter.remote(i) for i in range(20)]
    assert ray.get([a.get_value.remote() for a in actors], timeout=60) == list(range(20))
    assert ray.available_resources()["CPU"] == 2  # they hold no CPU once built

    @ray.remote(num_cpus=1)
    class Hungry:
        def ping(self):
            return 1

    h = Hungry.remote()
    ray.get(h.ping.remote(), timeout=30)
    assert ray.available_resources().get("CPU", 0) == 1


def test_an_actor_being_built_leaves_its_cpu_to_tasks():
    # As in Ray: a default actor needs a free CPU to start but holds none,
    # even while its __init__ runs.
    shoal.init(num_cpus=1)
    try:

        @shoal.remote(num_cpus=0)
        class Gate:
            def __init__(self):
                self.event = asyncio.Event()

            async def wait(self):
                await self.event.wait()

            async def open(self):
                self.event.set()

        @shoal.remote
        class SlowToBuild:
            def __init__(self, gate):
                shoal.get(gate[0])

            def ping(self):
                return "pong"

        @shoal.remote
        def task():
            return "ran"

        gate = Gate.remote()
        actors = [SlowToBuild.remote([gate.wait.remote()]) for _ in range(2)]
        assert shoal.get(task.remote(), timeout=30) == "ran"  # while both are being built
        # (the task's result is sealed a moment before the driver hears it ended)
        wait_until(lambda: shoal.available_resources().get("CPU") == 1, 30, "the CPU back")
        shoal.get(gate.open.remote(), timeout=30)
        assert shoal.get([a.ping.remote() for a in actors], timeout=30) == ["pong", "pong"]
    finally:
        shoal.shutdown()


def test_a_call_waiting_for_its_argument_holds_up_only_its_callers_calls(ray):
    # As in Ray: calls from one caller keep their order, but one that waits
    # for an argument does not hold up another caller's calls.
    @ray.remote
    class Echo:
        def echo(self, x):
            return x

    @ray.remote
    def call_from_a_task(actor):
        return ray.get(actor.echo.remote("from a task"))

    gate, echo = gate_actor(ray, "slow"), Echo.remote()
    held = echo.echo.remote(gate.wait.remote())
    behind = echo.echo.remote("after it")  # the driver's next call keeps its place
    assert ray.get(call_from_a_task.remote(echo), timeout=30) == "from a task"
    assert ray.wait([held, behind], timeout=0.5, num_returns=2)[0] == []
    ray.get(gate.open.remote(), timeout=30)
    assert ray.get([held, behind], timeout=30) == ["slow", "after it"]


def test_direct_calls_and_unknown_methods(ray):
    Counter = make_counter(ray)
    with pytest.raises(TypeError, match="Counter.remote"):
        Counter()
    c = Counter.remote()
    with pytest.raises(TypeError, match="inc.remote"):
        c.inc()
    with pytest.raises(AttributeError, match="no method 'nope'"):
        c.nope.remote()


def test_dir_of_an_actor_class_and_handle_lists_what_one_can_call(ray):
    # autocompletion (IPython, editors) goes through dir(), as in Ray
    Counter = make_counter(ray)
    assert {"inc", "get_value", "remote", "options"} <= {n for n in dir(Counter) if not n.startswith("_")}
    c = Counter.remote()
    assert [n for n in dir(c) if not n.startswith("_")] == ["get_value", "inc", "pid"]
    assert {"__init__", "__ray_terminate__"} <= set(dir(c))
    assert {"remote", "options"} <= set(dir(c.inc))


def test_exit_actor(ray):
    @ray.remote
    class Quitter:
        def quit(self):
            shoal.actor.exit_actor()

        def ping(self):
            return 1

    q = Quitter.remote()
    assert ray.get(q.ping.remote(), timeout=30) == 1
    q.quit.remote()
    with pytest.raises(exc.RayActorError):
        ray.get(q.ping.remote(), timeout=30)


def test_exit_actor_is_not_restarted(ray):
    @ray.remote(max_restarts=3)
    class Quitter:
        def quit(self):
            shoal.actor.exit_actor()

        def pid(self):
            return os.getpid()

    q = Quitter.remote()
    ray.get(q.pid.remote(), timeout=30)
    with pytest.raises(exc.ActorDiedError, match="exit"):  # the exiting call too, as in Ray
        ray.get(q.quit.remote(), timeout=30)
    with pytest.raises(exc.RayActorError, match="exit"):
        ray.get(q.pid.remote(), timeout=30)


def test_calls_on_a_temporary_handle_still_run(ray):
    """The handle is dropped at once, before the actor is even placed: its
    queued calls run first, then the actor stops."""
    Counter = make_counter(ray)
    assert ray.get(Counter.remote(5).get_value.remote(), timeout=30) == 5
    refs = [Counter.remote(i).get_value.remote() for i in range(4)]
    assert ray.get(refs, timeout=60) == [0, 1, 2, 3]


def test_cancel_a_running_async_actor_call(ray, tmp_path):
    started = tmp_path / "started"

    @ray.remote
    class Sleeper:
        async def nap(self):
            started.touch()
            await asyncio.sleep(30)
            return "woke"

        async def ping(self):
            return "pong"

    s = Sleeper.remote()
    ref = s.nap.remote()
    wait_until(started.exists, timeout=30, what="the call to start")
    ray.cancel(ref)
    with pytest.raises(exc.TaskCancelledError):
        ray.get(ref, timeout=30)
    assert ray.get(s.ping.remote(), timeout=30) == "pong"  # the actor lives on


def test_max_pending_calls_raises_at_submission(ray, tmp_path):
    gate = tmp_path / "gate"

    @ray.remote
    class Busy:
        def wait_gate(self):
            while not gate.exists():
                time.sleep(0.01)
            return 1

    b = Busy.options(max_pending_calls=2).remote()
    first = [b.wait_gate.remote(), b.wait_gate.remote()]
    with pytest.raises(exc.PendingCallsLimitExceeded, match="max_pending_calls"):
        b.wait_gate.remote()
    gate.touch()
    assert ray.get(first, timeout=30) == [1, 1]
    assert ray.get(b.wait_gate.remote(), timeout=30) == 1  # room again


def test_concurrency_groups_threaded_and_async(ray):
    @ray.remote(concurrency_groups={"io": 2, "compute": 1})
    class Threads:
        def __init__(self):
            self.meet = threading.Barrier(2, timeout=20)
            self.lock = threading.Lock()
            self.running = self.peak = 0

        @ray.method(concurrency_group="io")
        def io(self):
            self.meet.wait()  # returns only if both io calls run at once
            return "met"

        @ray.method(concurrency_group="compute")
        def compute(self):
            with self.lock:
                self.running += 1
                self.peak = max(self.peak, self.running)
            x = sum(range(20000))
            with self.lock:
                self.running -= 1
            return x

        def peak_compute(self):
            return self.peak

    t = Threads.remote()
    assert ray.get([t.io.remote(), t.io.remote()], timeout=30) == ["met", "met"]
    ray.get([t.compute.remote() for _ in range(8)], timeout=30)
    assert ray.get(t.peak_compute.remote(), timeout=30) == 1

    @ray.remote(concurrency_groups={"io": 3})
    class Loop:
        def __init__(self):
            self.arrived = 0
            self.all_in = None

        async def gather(self):
            if self.all_in is None:
                self.all_in = asyncio.Event()
            self.arrived += 1
            if self.arrived == 3:
                self.all_in.set()
            await asyncio.wait_for(self.all_in.wait(), 20)
            return self.arrived

        @ray.method(concurrency_group="one")
        async def alone(self):
            self.running = getattr(self, "running", 0) + 1
            self.peak = max(getattr(self, "peak", 0), self.running)
            for _ in range(20):
                await asyncio.sleep(0)  # let any other call of the group in, if it could
            self.running -= 1
            return self.peak

    lp = Loop.options(concurrency_groups={"io": 3, "one": 1}).remote()
    refs = [lp.gather.options(concurrency_group="io").remote() for _ in range(3)]
    assert ray.get(refs, timeout=30) == [3, 3, 3]
    assert max(ray.get([lp.alone.remote() for _ in range(6)], timeout=30)) == 1

    @ray.remote
    class Undeclared:
        @ray.method(concurrency_group="io")
        def m(self):
            return 1

    with pytest.raises(ValueError, match="concurrency group"):
        Undeclared.remote()
    with pytest.raises(ValueError, match="no concurrency group 'nope'"):
        lp.gather.options(concurrency_group="nope").remote()


def test_threaded_actor_exits_and_frees_its_cpus(ray):
    @ray.remote(num_cpus=2, max_concurrency=4)
    class Busy:
        def quit(self):
            shoal.actor.exit_actor()

        def pid(self):
            return os.getpid()

    b = Busy.remote()
    pid = ray.get(b.pid.remote(), timeout=30)
    with pytest.raises(exc.ActorDiedError):
        ray.get(b.quit.remote(), timeout=30)
    wait_until(lambda: process_gone(pid), what="the actor process to exit")
    assert ray.get(ray.remote(lambda: "cpus free").options(num_cpus=2).remote(), timeout=30) == "cpus free"


def test_actor_pool(ray):
    @ray.remote
    class Doubler:
        def double(self, v):
            return 2 * v

    pool = shoal.util.ActorPool([Doubler.remote() for _ in range(3)])
    assert list(pool.map(lambda a, v: a.double.remote(v), range(10))) == [2 * v for v in range(10)]
    assert sorted(pool.map_unordered(lambda a, v: a.double.remote(v), range(10))) == [2 * v for v in range(10)]
    pool.submit(lambda a, v: a.double.remote(v), 21)
    assert pool.has_next() and pool.get_next(timeout=30) == 42
    assert not pool.has_next()
    idle = pool.pop_idle()
    assert idle is not None and not pool.has_free() or pool.has_free()
    pool.push(idle)
    with pytest.raises(ValueError):
        pool.push(idle)


def test_queue(ray):
    from shoal.util.queue import Empty, Full, Queue

    q = Queue(maxsize=2)
    q.put(1)
    q.put(2)
    assert q.full() and q.size() == 2
    with pytest.raises(Full):
        q.put(3, block=False)
    with pytest.raises(Full):
        q.put(3, timeout=0.05)
    assert [q.get(), q.get()] == [1, 2]
    with pytest.raises(Empty):
        q.get(block=False)
    with pytest.raises(Empty):
        q.get(timeout=0.05)

    @ray.remote
    def producer(queue, n):
        for i in range(n):
            queue.put(i)

    producer.remote(q, 6)
    assert [q.get(timeout=30) for _ in range(6)] == list(range(6))
    q.put_nowait_batch([7, 8])
    assert q.get_nowait_batch(2) == [7, 8]
    q.shutdown()


def test_local_mode_actors():
    shoal.init(local_mode=True)
    try:
        Counter = make_counter(shoal)
        c = Counter.remote()
        c.inc.remote()
        assert shoal.get(c.get_value.remote()) == 1
        assert shoal.get(c.pid.remote()) == os.getpid()
    finally:
        shoal.shutdown()


def test_runtime_context(ray):
    @ray.remote
    class Introspect:
        def ids(self):
            rc = ray.get_runtime_context()
            return rc.get_actor_id(), rc.get_task_id(), rc.current_actor

        def ping(self):
            return "pong"

    @ray.remote
    def task_ids():
        rc = ray.get_runtime_context()
        return rc.get_actor_id(), rc.get_task_id(), rc.get_job_id()

    a = Introspect.remote()
    actor_id, task_id, me = ray.get(a.ids.remote(), timeout=30)
    assert actor_id == a._actor_id.hex() and task_id
    assert ray.get(me.ping.remote(), timeout=30) == "pong"
    no_actor, task_id2, job = ray.get(task_ids.remote(), timeout=30)
    assert no_actor is None and task_id2 and job == ray.get_runtime_context().get_job_id()
    assert ray.get_runtime_context().get_task_id() is None  # the driver runs no task
