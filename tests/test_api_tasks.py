"""Tasks beyond the basics: nested tasks and blocking, resources, streaming
generators, worker output."""

from __future__ import annotations

import os
import time

import pytest

import shoal
from shoal import exceptions as exc

pytestmark = pytest.mark.timeout(90)


def test_nested_tasks(ray):
    @ray.remote
    def leaf(i):
        return i * i

    @ray.remote
    def parent(n):
        return sum(ray.get([leaf.remote(i) for i in range(n)]))

    assert ray.get(parent.remote(10), timeout=30) == sum(i * i for i in range(10))


def test_blocked_parents_give_back_their_cpu(ray):
    """Every CPU runs a parent that waits for children: without giving the
    CPU back while blocked in get(), this would deadlock."""

    @ray.remote
    def child(i):
        return i

    @ray.remote
    def parent(i):
        return ray.get(child.remote(i)) + 100

    refs = [parent.remote(i) for i in range(6)]
    assert ray.get(refs, timeout=60) == [100 + i for i in range(6)]


def test_pool_shrinks_back_after_blocked_parents_finish(ray):
    """Blocked parents make the pool grow to run their children; once they
    are done, the extra workers exit."""
    from tests._child import wait_until

    shell = shoal.objectref.current().shell
    base = int(ray.cluster_resources()["CPU"])  # the pool's target size

    @ray.remote
    def child(i):
        return i

    @ray.remote
    def parent(i):
        return sum(ray.get([child.remote(j) for j in range(4)])) + i

    assert ray.get([parent.remote(i) for i in range(8)], timeout=60) == [6 + i for i in range(8)]
    wait_until(lambda: len(shell.worker_pids()) <= base, what="pool back to its size")
    assert ray.get(child.remote(5), timeout=30) == 5  # and it still works


def test_tasks_run_in_the_order_their_worker_was_sent_them(tmp_path):
    """A task that ends makes both its worker's next queued tasks and a
    dependent ready; the dispatches must reach the worker in the order the
    scheduler queued them, or the worker's DONE no longer matches and
    dependents hang. One CPU, so that everything queues on one worker."""
    gate = tmp_path / "gate"
    shoal.init(num_cpus=1, object_store_memory=64 << 20)
    try:
        @shoal.remote
        def slow(release):
            while release and not gate.exists():
                time.sleep(0.001)
            return "s"

        @shoal.remote
        def short():
            t = time.perf_counter()
            while time.perf_counter() - t < 0.0003:  # ~0.3 ms: a prefetch window of a few
                pass
            return "p"

        @shoal.remote
        def after(x):
            return "h"

        for _ in range(30):  # the scheduler learns that all three are short
            shoal.get([slow.remote(False), short.remote(), after.remote(1)], timeout=30)
        ctx = shoal.objectref.current()
        with ctx.shell.lock:  # how many `short` calls one worker takes at once
            window = ctx.shell.sched._prefetch_limit(short._function_id(ctx))
        head = slow.remote(True)
        # window - 1 of them queue behind head on the worker, one stays ready:
        # when head ends, the worker takes that one, and head's dependent
        # becomes ready at the same moment and queues behind it.
        many = [short.remote() for _ in range(window)]
        dependent = after.remote(head)
        later = [after.remote(dependent), after.remote(many[-1])]
        gate.touch()
        assert shoal.get([dependent, *later], timeout=30) == ["h", "h", "h"]
        assert shoal.get(many, timeout=30) == ["p"] * window
    finally:
        shoal.shutdown()


def test_max_calls_recycles_the_worker(ray):
    @ray.remote(max_calls=1)
    def once():
        return os.getpid()

    @ray.remote(max_calls=2)
    def twice():
        return os.getpid()

    pids = [ray.get(once.remote(), timeout=30) for _ in range(4)]
    assert len(set(pids)) == 4  # a fresh process each time
    pairs = [ray.get(twice.remote(), timeout=30) for _ in range(4)]
    assert len(set(pairs)) >= 2 and all(pairs.count(p) <= 2 for p in pairs)
    many = ray.get([once.remote() for _ in range(6)], timeout=60)  # queued ones are not lost
    assert len(set(many)) == 6


def test_max_calls_worker_does_not_eat_a_retry(ray, tmp_path):
    runs = tmp_path / "runs"

    @ray.remote(max_calls=1, max_retries=1, retry_exceptions=True)
    def flaky():
        n = len(runs.read_text()) if runs.exists() else 0
        runs.write_text("x" * (n + 1))
        if n == 0:
            raise ValueError("first run fails")
        return n + 1

    assert ray.get(flaky.remote(), timeout=30) == 2  # one retry, not a crash
    assert runs.read_text() == "xx"


def test_recursive_tasks(ray):
    @ray.remote
    def fib(n):
        if n < 2:
            return n
        return sum(ray.get([fib.remote(n - 1), fib.remote(n - 2)]))

    assert ray.get(fib.remote(7), timeout=90) == 13


def test_wait_inside_a_task(ray):
    @ray.remote
    def slow(s):
        time.sleep(s)
        return s

    @ray.remote
    def waiter():
        refs = [slow.remote(0.01), slow.remote(20)]
        ready, not_ready = ray.wait(refs, num_returns=1, timeout=20)
        ray.cancel  # the API is importable in workers
        return len(ready), len(not_ready)

    assert ray.get(waiter.remote(), timeout=60) == (1, 1)


def test_put_and_get_inside_a_task(ray):
    @ray.remote
    def inner():
        ref = ray.put({"made": "in a worker"})
        return [ref], ray.get(ref)

    refs, value = ray.get(inner.remote(), timeout=30)
    assert value == {"made": "in a worker"}
    assert ray.get(refs[0], timeout=30) == value


def test_custom_resources_admission():
    shoal.init(num_cpus=4, resources={"slot": 1}, object_store_memory=64 << 20)
    try:
        @shoal.remote(resources={"slot": 1})
        def exclusive(path):
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)  # fails if another holds it
            time.sleep(0.2)
            os.close(fd)
            os.unlink(path)
            return True

        path = f"/tmp/shoal-slot-{os.getpid()}"
        assert all(shoal.get([exclusive.remote(path) for _ in range(4)], timeout=60))
        assert shoal.cluster_resources()["slot"] == 1
    finally:
        shoal.shutdown()


def test_task_that_can_never_fit_waits_with_a_warning(ray):
    """The warning at .remote() names the user's line and shows memory in
    GiB; a later get() that times out says the task is infeasible, with
    what it needs and what exists."""
    @ray.remote(num_gpus=4, memory=3 * 2**40)
    def needs_gpus():
        return "ran"

    with pytest.warns(RuntimeWarning, match=r"4 GPU, 3\.00 TiB memory but this machine has") as warned:
        ref = needs_gpus.remote()
    assert warned[0].filename == __file__
    with pytest.raises(exc.GetTimeoutError, match=r"its task needs_gpus needs 1 CPU, 4 GPU, 3\.00 TiB "
                                                  r"memory but this machine has 2 CPU, .* GiB memory in "
                                                  r"total: it is infeasible and never runs"):
        ray.get(ref, timeout=0.5)
    with pytest.raises(exc.GetTimeoutError, match="infeasible"):
        ray.get([ray.put(1), ref], timeout=0)
    ray.cancel(ref)


def test_calls_to_an_actor_that_can_never_start_say_so(ray):
    @ray.remote(num_gpus=2)
    class OnTwoGpus:
        def ping(self):
            return "pong"

    with pytest.warns(RuntimeWarning, match="2 GPU"):
        actor = OnTwoGpus.remote()
    with pytest.raises(exc.GetTimeoutError, match=r"its actor OnTwoGpus .* needs 1 CPU, 2 GPU but .* "
                                                  r"infeasible, never starts"):
        ray.get(actor.ping.remote(), timeout=0.2)
    ray.kill(actor)


def test_fractional_cpus(ray):
    @ray.remote(num_cpus=0.5)
    def half():
        time.sleep(0.3)
        return os.getpid()

    t = time.monotonic()
    pids = ray.get([half.remote() for _ in range(4)], timeout=60)
    assert len(pids) == 4
    assert time.monotonic() - t < 5


def test_streaming_generator(ray):
    @ray.remote
    def produce(n):
        for i in range(n):
            yield i * 10

    gen = produce.remote(4)
    assert isinstance(gen, shoal.ObjectRefGenerator)
    assert [ray.get(r, timeout=30) for r in gen] == [0, 10, 20, 30]
    assert ray.get(gen.completed(), timeout=30) == 4

    @ray.remote(num_returns="streaming")
    def fails_midway():
        yield 1
        raise ValueError("midway")

    refs = list(fails_midway.remote())
    assert ray.get(refs[0], timeout=30) == 1
    with pytest.raises(ValueError, match="midway"):
        ray.get(refs[1], timeout=30)


def test_cancel_a_streaming_generator(ray, tmp_path):
    started = tmp_path / "started"

    @ray.remote
    def endless():
        started.touch()
        i = 0
        while True:
            yield i
            i += 1
            time.sleep(0.01)

    gen = endless.remote()
    assert ray.get(next(gen), timeout=30) == 0
    ray.cancel(gen)
    with pytest.raises(exc.TaskCancelledError):
        for ref in gen:  # items already made may come first
            ray.get(ref, timeout=30)


def test_generator_with_a_fixed_num_returns(ray):
    @ray.remote
    def gen(n):
        yield from range(n)

    assert ray.get(gen.options(num_returns=3).remote(3), timeout=30) == [0, 1, 2]


def test_generator_items_arrive_before_the_end(ray, tmp_path):
    gate = tmp_path / "gate"

    @ray.remote
    def produce():
        yield "first"
        while not gate.exists():
            time.sleep(0.01)
        yield "second"

    gen = produce.remote()
    first = next(gen)
    assert ray.get(first, timeout=30) == "first"  # while the task still runs
    gate.write_text("go")
    assert ray.get(next(gen), timeout=30) == "second"
    with pytest.raises(StopIteration):
        next(gen)


def test_worker_output_reaches_the_driver_with_a_prefix(ray, capfd):
    @ray.remote
    def chatty(i):
        print(f"hello from task {i}")
        os.write(1, b"native write\n")
        import sys

        print("to stderr", file=sys.stderr)
        return os.getpid()

    pid = ray.get(chatty.remote(3), timeout=30)
    deadline = time.monotonic() + 10
    out = err = ""
    while time.monotonic() < deadline and ("native write" not in out or "to stderr" not in err):
        o, e = capfd.readouterr()
        out, err = out + o, err + e
        time.sleep(0.01)
    assert f"(chatty pid={pid}) hello from task 3" in out
    assert f"(chatty pid={pid}) native write" in out
    assert f"(chatty pid={pid}) to stderr" in err


def test_log_to_driver_false_silences_workers(capfd):
    shoal.init(num_cpus=1, object_store_memory=64 << 20, log_to_driver=False)
    try:
        @shoal.remote
        def chatty():
            print("should not appear")
            return 1

        assert shoal.get(chatty.remote(), timeout=30) == 1
    finally:
        shoal.shutdown()
    out, _ = capfd.readouterr()
    assert "should not appear" not in out


def test_threads_of_a_task_wait_at_once(ray):
    import threading

    @ray.remote
    def child(i):
        time.sleep(0.01)
        return i

    @ray.remote
    def parent():
        out = [None] * 4

        def work(k):
            out[k] = ray.get(child.remote(k), timeout=30)

        threads = [threading.Thread(target=work, args=(k,)) for k in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        return out

    assert ray.get(parent.remote(), timeout=60) == [0, 1, 2, 3]


def test_parents_waiting_for_short_children_do_not_deadlock(ray):
    """Children of a known-short function may be queued ahead of time on a
    busy worker; if that worker's task then waits for them, they must move
    to another worker."""

    @ray.remote
    def short(i):
        return i

    @ray.remote
    def parent(i):
        return sum(ray.get([short.remote(i * 10 + k) for k in range(5)], timeout=30))

    ray.get([short.remote(i) for i in range(50)], timeout=30)  # now known to be short
    for _ in range(5):
        refs = [parent.remote(i) for i in range(4)]
        assert ray.get(refs, timeout=60) == [sum(i * 10 + k for k in range(5)) for i in range(4)]


def test_a_function_that_captures_something_huge_warns_once(ray, monkeypatch):
    """It still runs (Ray refuses it, then hangs on the next call), with
    one warning naming the function and the size and suggesting put()."""
    import warnings

    import numpy as np

    from shoal import remote_function

    big = np.ones(remote_function.LARGE_DEFINITION_BYTES // 8 + 4096)  # just over the threshold

    @ray.remote
    def uses_big(i):
        return float(big[i]) + i

    with pytest.warns(UserWarning, match=r"remote function .*uses_big pickles to 100\.\d\d MiB: it "
                                         r"captures a large object.*put\(\) the object") as warned:
        ref = uses_big.remote(0)
    assert len(warned) == 1 and warned[0].filename == __file__
    assert ray.get(ref, timeout=60) == 1.0
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert ray.get(uses_big.remote(1), timeout=60) == 2.0  # once only
    del big, uses_big

    monkeypatch.setattr(remote_function, "LARGE_DEFINITION_BYTES", 1 << 20)
    table = bytes(2 << 20)

    @ray.remote
    class Lookup:
        def size(self):
            return len(table)

    with pytest.warns(UserWarning, match=r"actor class .*Lookup pickles to 2\.\d\d MiB"):
        actor = Lookup.remote()
    assert ray.get(actor.size.remote(), timeout=60) == 2 << 20
