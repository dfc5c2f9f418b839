"""Details where shoal behaves as Ray 2.60 does: ActorPool, Queue, asyncio
edges, ObjectRef's extra methods, generators with a fixed num_returns."""

from __future__ import annotations

import asyncio
import os
import threading

import pytest

from shoal import exceptions as exc
from shoal.util import ActorPool
from shoal.util.queue import Queue
from tests._child import gate_actor, process_gone, wait_until

pytestmark = pytest.mark.timeout(120)


# -- ActorPool ---------------------------------------------------------------


def test_actor_pool_map_after_a_submit_returns_only_its_own_results(ray):
    @ray.remote(num_cpus=0, max_concurrency=2)  # a gated call leaves room for the others
    class Worker:
        def run(self, gate, x):
            ray.get(gate[0])  # the first submission waits for the gate
            return x * 10

    gate = gate_actor(ray)
    blocked = gate.wait.remote()
    pool = ActorPool([Worker.remote(), Worker.remote()])
    pool.submit(lambda a, v: a.run.remote([blocked], v), 1)
    fast = [ray.put("open")]
    assert list(pool.map(lambda a, v: a.run.remote(fast, v), [2, 3, 4])) == [20, 30, 40]
    assert sorted(pool.map_unordered(lambda a, v: a.run.remote(fast, v), [5, 6])) == [50, 60]
    assert not pool.has_next()
    ray.get(gate.open.remote(), timeout=30)


def test_actor_pool_submits_a_method_with_two_returns(ray):
    @ray.remote(num_cpus=0)
    class Pair:
        @ray.method(num_returns=2)
        def both(self, x):
            return x, -x

    pool = ActorPool([Pair.remote()])
    pool.submit(lambda a, v: a.both.remote(v), 3)
    pool.submit(lambda a, v: a.both.remote(v), 4)
    assert len(pool._pending_submits) == 1  # Ray's name for the submissions waiting for an actor
    assert pool.get_next() == [3, -3]
    assert pool.get_next_unordered() == [4, -4]
    assert list(pool.map(lambda a, v: a.both.remote(v), [5])) == [[5, -5]]


def test_actor_pool_get_next_ignoring_a_timeout_drops_that_submission(ray):
    @ray.remote(num_cpus=0)
    class Echo:
        def echo(self, x):
            return ray.get(x[0])

    gate = gate_actor(ray)
    pool = ActorPool([Echo.remote()])
    pool.submit(lambda a, v: a.echo.remote(v), [gate.wait.remote()])
    with pytest.raises(TimeoutError):
        pool.get_next(timeout=0)
    assert pool.has_next()  # kept: it was not ignored
    with pytest.raises(TimeoutError, match="dropped"):
        pool.get_next(timeout=0, ignore_if_timedout=True)
    assert not pool.has_next() and pool.has_free()
    ray.get(gate.open.remote(), timeout=30)


def test_actor_pool_leaves_out_an_actor_that_died_and_keeps_one_whose_call_raised(ray):
    @ray.remote(num_cpus=0)
    class Member:
        def __init__(self, fate):
            self.fate = fate

        def run(self, x):
            if self.fate == "exits":
                ray.actor.exit_actor()
            if self.fate == "raises" and x == 1:
                raise ValueError("this call fails, the actor lives on")
            return x

    survivor = Member.remote("raises")
    pool = ActorPool([survivor, Member.remote("exits")])  # the one that exits is taken first
    outcomes = []
    for x in range(4):
        pool.submit(lambda a, v: a.run.remote(v), x)
        try:
            outcomes.append(pool.get_next_unordered())
        except exc.ActorDiedError:
            outcomes.append("died")
        except ValueError:
            outcomes.append("raised")
    # Without leaving out the dead actor, it would take and fail every submission.
    assert outcomes == ["died", "raised", 2, 3]
    assert pool._idle_actors == [survivor]


def test_actor_pool_fetches_results_through_shoal_get(ray, monkeypatch):
    import shoal

    @ray.remote(num_cpus=0)
    class One:
        def run(self):
            return 1

    member = One.remote()
    pool = ActorPool([member])
    pool.submit(lambda a, _: a.run.remote(), None)

    def unavailable(refs, **kwargs):
        raise exc.ActorUnavailableError("restarting, try again", None)

    # Code that wraps or patches shoal.get sees the pool's gets, as with ray.get
    # in Ray; an actor that is only unavailable stays in the pool.
    monkeypatch.setattr(shoal, "get", unavailable)
    with pytest.raises(exc.ActorUnavailableError):
        pool.get_next()
    assert pool._idle_actors == [member]


# -- Queue -------------------------------------------------------------------


def test_queue_shutdown_returns_once_its_actor_is_gone(ray):
    q = Queue(actor_options={"num_cpus": 1})
    q.put(1)
    actor = q.actor
    assert ray.available_resources().get("CPU", 0) == 1
    q.shutdown()
    assert q.actor is None
    with pytest.raises(exc.RayActorError):
        ray.get(actor.qsize.remote(), timeout=30)
    assert ray.available_resources().get("CPU", 0) == 2  # at once: the process has exited
    q2 = Queue(actor_options={"num_cpus": 1})
    actor2 = q2.actor
    q2.shutdown(force=True)
    with pytest.raises(exc.RayActorError):
        ray.get(actor2.qsize.remote(), timeout=30)
    assert ray.available_resources().get("CPU", 0) == 2
    q2.shutdown()  # twice: nothing to do


def test_queue_async_methods_refuse_a_negative_timeout(ray):
    q = Queue()

    async def both():
        with pytest.raises(ValueError, match="non-negative"):
            await q.get_async(timeout=-1)
        with pytest.raises(ValueError, match="non-negative"):
            await q.put_async(1, timeout=-1)
        await q.put_async(2, timeout=1)
        return await q.get_async(timeout=10)

    assert asyncio.run(both()) == 2
    q.shutdown()


def test_queue_batches_check_their_arguments_as_ray_does(ray):
    q = Queue(3)
    with pytest.raises(TypeError, match="iterable"):
        q.put_nowait_batch(42)
    q.put_nowait_batch(x * x for x in range(3))  # any iterable, a generator too
    with pytest.raises(TypeError, match="int"):
        q.get_nowait_batch("2")
    with pytest.raises(ValueError, match=">= 0"):
        q.get_nowait_batch(-1)
    assert q.get_nowait_batch(0) == []
    assert q.get_nowait_batch(3) == [0, 1, 4]
    q.shutdown()


# -- asyncio edges and ObjectRef ---------------------------------------------------


def test_remote_refuses_an_async_function():
    import shoal

    async def f():
        return 1

    with pytest.raises(ValueError, match="'async def' should not be used for remote tasks"):
        shoal.remote(f)
    with pytest.raises(ValueError, match="async def"):
        shoal.remote(num_cpus=1)(f)


def test_sync_methods_of_an_asyncio_actor_run_on_its_event_loop_thread(ray):
    @ray.remote
    class Mixed:
        def sync(self):
            asyncio.get_running_loop()  # raises RuntimeError off the loop's thread
            return threading.get_ident()

        async def asynchronous(self):
            return threading.get_ident()

    m = Mixed.remote()
    assert ray.get(m.sync.remote(), timeout=30) == ray.get(m.asynchronous.remote(), timeout=30)


def test_object_ref_job_id_call_site_owner_address_and_on_completed(ray):
    ref = ray.put(5)
    assert ref.job_id().hex() == ray.get_runtime_context().get_job_id()
    assert ref.job_id() == ray.put(6).job_id()
    assert ref.call_site() == ""
    assert isinstance(ref.owner_address(), bytes) and ref.owner_address()

    got = []
    done = threading.Event()

    def collect(value):
        got.append(value)
        done.set()

    ref._on_completed(collect)
    assert done.wait(30) and got == [5]

    @ray.remote
    def fail():
        raise KeyError("nope")

    done.clear()
    fail.remote()._on_completed(collect)
    assert done.wait(30)
    assert isinstance(got[1], exc.RayTaskError) and isinstance(got[1], KeyError)


# -- generators with a fixed or dynamic num_returns ------------------------------


def test_a_generator_that_raises_keeps_what_it_yielded(ray):
    @ray.remote(num_returns=3)
    def once_then_fail():
        yield "first"
        raise ValueError("boom")

    first, second, third = once_then_fail.remote()
    assert ray.get(first, timeout=30) == "first"
    for ref in (second, third):
        with pytest.raises(exc.RayTaskError, match="boom") as info:
            ray.get(ref, timeout=30)
        assert isinstance(info.value, ValueError)


def test_a_generator_yielding_more_or_fewer_items_than_num_returns(ray):
    @ray.remote(num_returns=3)
    def two():
        yield 1
        yield 2

    a, b, c = two.remote()
    assert ray.get([a, b], timeout=30) == [1, 2]
    with pytest.raises(ValueError, match="Task returned 2 objects, but num_returns=3"):
        ray.get(c, timeout=30)

    @ray.remote(num_returns=2)
    def four():
        yield from range(4)

    assert ray.get(four.remote(), timeout=30) == [0, 1]  # the rest are dropped, as in Ray

    @ray.remote(num_returns=2)
    def three_in_a_list():
        return [1, 2, 3]

    for ref in three_in_a_list.remote():
        with pytest.raises(ValueError, match="Task returned 3 objects, but num_returns=2"):
            ray.get(ref, timeout=30)


def test_num_returns_dynamic_gives_a_ref_to_a_generator_of_refs(ray):
    import shoal

    @ray.remote(num_returns="dynamic")
    def count(n):
        yield from range(n)

    ref = count.remote(3)
    assert isinstance(ref, shoal.ObjectRef)
    gen = ray.get(ref, timeout=30)
    assert isinstance(gen, shoal.DynamicObjectRefGenerator) and len(gen) == 3
    assert ray.get(list(gen), timeout=30) == [0, 1, 2]
    del ref
    assert ray.get(list(gen), timeout=30) == [0, 1, 2]  # the items live as long as their refs

    @ray.remote(num_returns="dynamic", max_retries=0)
    def fail():
        yield 1
        raise KeyError("dynamic")

    # As in Ray 2.60: what it yielded, then its exception as one more item.
    first, error = ray.get(fail.remote(), timeout=30)
    assert ray.get(first, timeout=30) == 1
    with pytest.raises(KeyError):
        ray.get(error, timeout=30)

    # ... and, as in Ray 2.60, "dynamic" and "streaming" need a generator function.
    for n in ("dynamic", "streaming"):
        with pytest.raises(ValueError, match="needs a generator function"):
            ray.remote(num_returns=n)(lambda: [1, 2])

    @ray.remote
    class Source:
        @ray.method(num_returns="dynamic")
        def items(self):
            yield "a"
            yield "b"

    assert ray.get(list(ray.get(Source.remote().items.remote(), timeout=30)), timeout=30) == ["a", "b"]


def test_resources_can_be_read_from_tasks_and_actors(ray):
    @ray.remote
    def inside():
        return ray.cluster_resources()["CPU"], ray.available_resources().get("CPU", 0)

    @ray.remote(num_cpus=0)
    class Reader:
        def read(self):
            return ray.cluster_resources()["CPU"]

    assert ray.get(inside.remote(), timeout=30) == (2, 1)  # the task holds the other CPU
    assert ray.get(Reader.remote().read.remote(), timeout=30) == 2


# -- actor classes -----------------------------------------------------------------


class _Base:
    LIMIT = 3

    @staticmethod
    def double(x):
        return 2 * x


def test_an_actor_class_reads_its_class_attributes(ray):
    @ray.remote
    class Sized(_Base):
        @classmethod
        def limit(cls):
            return cls.LIMIT

        def check(self):
            # A method naming its class gets the actor class, as in Ray.
            return Sized.LIMIT, Sized.double(4), Sized.limit()

    assert (Sized.LIMIT, Sized.double(1)) == (3, 2)
    assert ray.get(Sized.remote().check.remote(), timeout=30) == (3, 8, 3)
    with pytest.raises(AttributeError, match="no attribute 'missing'"):
        Sized.missing


def test_actor_classes_refuse_subclassing_and_empty_remote_parentheses(ray):
    @ray.remote
    class Plain:
        pass

    with pytest.raises(TypeError, match="Inheriting from actor classes is not currently supported"):

        class Derived(Plain):
            pass

    with pytest.raises(TypeError, match="without parentheses"):
        ray.remote()


def test_atexit_handlers_of_an_actor_run_when_it_ends_on_purpose(ray, tmp_path):
    @ray.remote
    class Registers:
        def __init__(self, path):
            import atexit

            atexit.register(lambda: open(path, "w").write("ran"))

        def ready(self):
            return True

        def leave(self):
            ray.actor.exit_actor()

    def gone_with_handler(how):
        path = tmp_path / how
        a = Registers.remote(str(path))
        assert ray.get(a.ready.remote(), timeout=30)
        ref = a.__ray_terminate__.remote() if how == "terminate" else a.leave.remote()
        ray.wait([ref], timeout=30)
        wait_until(path.exists, 30, f"the handler of an actor ended by {how}")

    gone_with_handler("terminate")
    gone_with_handler("exit_actor")
    # Killed: nothing runs (as with SIGKILL).
    killed = tmp_path / "killed"
    a = Registers.remote(str(killed))
    assert ray.get(a.ready.remote(), timeout=30)
    pid = ray.get(a.__ray_call__.remote(lambda self: os.getpid()), timeout=30)
    ray.kill(a)
    wait_until(lambda: process_gone(pid), 30, "the killed actor gone")
    assert not killed.exists()


def test_a_method_is_called_even_where_an_instance_attribute_has_its_name(ray):
    @ray.remote
    class Flags:
        def __init__(self):
            self.called = False  # the same name as the method below, as in Ray's own tests

        def called(self):
            self.__dict__["called"] = True
            return "method"

        def state(self):
            return self.__dict__["called"]

    flags = Flags.remote()
    assert ray.get(flags.called.remote(), timeout=30) == "method"
    assert ray.get(flags.state.remote(), timeout=30) is True


def test_each_call_of_an_asyncio_actor_knows_its_own_task_id(ray):
    @ray.remote
    class Async:
        async def whoami(self, delay):
            await asyncio.sleep(delay)  # the calls interleave
            return ray.get_runtime_context().get_task_id()

    actor = Async.remote()
    refs = [actor.whoami.remote(d) for d in (0.2, 0.0, 0.1)]
    assert ray.get(refs, timeout=30) == [r.task_id().hex() for r in refs]
