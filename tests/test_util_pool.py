"""shoal.util.multiprocessing.Pool: multiprocessing.Pool's API on actors."""

from __future__ import annotations

import os

import numpy as np
import pytest

from shoal.util.multiprocessing import Pool, PoolTaskError

pytestmark = pytest.mark.timeout(90)


def square(x):
    return x * x


def add(a, b):
    return a + b


def fail_on_three(x):
    if x == 3:
        raise ValueError("three")
    return x


_seen = []


def remember(tag):
    _seen.append(tag)


def initialized(_):
    return list(_seen)


def test_map_starmap_apply_and_imap(ray):
    with Pool(2) as pool:
        assert pool.map(square, range(20)) == [x * x for x in range(20)]
        assert pool.map(square, range(7), chunksize=3) == [x * x for x in range(7)]
        assert pool.starmap(add, [(1, 2), (3, 4)]) == [3, 7]
        assert pool.apply(add, (2, 3)) == 5
        assert pool.apply(add, (), {"a": 1, "b": 1}) == 2
        assert list(pool.imap(square, range(10))) == [x * x for x in range(10)]
        assert sorted(pool.imap_unordered(square, range(10))) == sorted(x * x for x in range(10))
        pids = set(pool.map(lambda _: os.getpid(), range(16), chunksize=1))
        assert len(pids) == 2 and os.getpid() not in pids


def test_async_results_callbacks_and_errors(ray):
    import threading

    pool = Pool(2)
    got, failed = [], []
    done = threading.Event()

    def on_result(v):
        got.append(v)
        done.set()

    r = pool.map_async(square, range(5), callback=on_result)
    assert r.get(timeout=30) == [0, 1, 4, 9, 16]
    assert done.wait(30) and got == [[0, 1, 4, 9, 16]]
    assert r.ready() and r.successful()
    errored = threading.Event()
    bad = pool.map_async(fail_on_three, range(5),
                         error_callback=lambda e: (failed.append(e), errored.set()))
    with pytest.raises(ValueError, match="three"):
        bad.get(timeout=30)
    assert errored.wait(30) and isinstance(failed[0], ValueError)
    assert not bad.successful()
    with pytest.raises(ValueError, match="three"):
        pool.apply(fail_on_three, (3,))
    big = np.arange(1_000_000, dtype=np.float64)
    assert pool.apply(np.sum, (big,)) == big.sum()  # through the store, not a pipe
    pool.close()
    with pytest.raises(ValueError, match="not running"):
        pool.map(square, [1])
    pool.join()
    pool.terminate()


def test_initializer_runs_in_each_process(ray):
    with Pool(2, initializer=remember, initargs=("ready",)) as pool:
        assert pool.map(initialized, range(4), chunksize=1) == [["ready"]] * 4


def test_imap_reads_its_input_lazily_and_join_frees_the_cpus(ray):
    import itertools

    def endless():
        yield from itertools.count()

    pool = Pool(2)
    assert list(itertools.islice(pool.imap(square, endless()), 5)) == [0, 1, 4, 9, 16]
    assert sorted(itertools.islice(pool.imap_unordered(square, range(100)), 3)) != []
    pool.close()
    pool.join()
    from tests._child import wait_until

    wait_until(lambda: ray.available_resources().get("CPU", 0) == 2, what="the pool's CPUs back")
    assert ray.get(ray.remote(lambda: 7).remote(), timeout=30) == 7


def test_get_with_a_timeout_is_kept_when_a_callback_waits(ray, tmp_path):
    import time

    gate = tmp_path / "gate"

    def wait_gate(_):
        while not gate.exists():
            time.sleep(0.005)
        return 1

    pool = Pool(1)
    r = pool.map_async(wait_gate, [0], callback=lambda v: None)
    t = time.monotonic()
    with pytest.raises(TimeoutError):
        r.get(timeout=0.3)
    assert time.monotonic() - t < 5
    gate.touch()
    assert r.get(timeout=30) == [1]
    pool.terminate()


def test_imap_iterators_take_a_timeout_in_next(ray, tmp_path):
    import multiprocessing
    import time

    gate = tmp_path / "gate"

    def wait_gate(x):
        while not gate.exists():
            time.sleep(0.005)
        return x

    pool = Pool(2)
    it = pool.imap(square, range(4))
    assert it.next(timeout=30) == 0 and list(it) == [1, 4, 9]
    slow = pool.imap_unordered(wait_gate, [7])
    with pytest.raises(multiprocessing.TimeoutError):  # the stdlib's class, as Ray's Pool raises
        slow.next(timeout=0.05)
    gate.touch()
    assert slow.next(timeout=30) == 7
    with pytest.raises(StopIteration):
        slow.next(timeout=30)
    pool.close()
    pool.join()


def test_maxtasksperchild_replaces_processes_and_close_join_returns(ray):
    pool = Pool(2, initializer=remember, initargs=("ready",), maxtasksperchild=1)
    pids = pool.map(lambda _: os.getpid(), range(6), chunksize=1)
    assert len(set(pids)) == 6  # one task per process
    assert pool.map(initialized, range(4), chunksize=1) == [["ready"]] * 4  # each new one ran it
    assert pool.map(square, range(1000)) == [x * x for x in range(1000)]
    pool.close()
    pool.join()


def test_joinable_queue_and_timeout_error_at_rays_paths():
    import multiprocessing

    import shoal.util.multiprocessing as mp

    assert mp.TimeoutError is multiprocessing.TimeoutError
    assert mp.JoinableQueue is multiprocessing.JoinableQueue


def write_pid_file(folder):
    with open(os.path.join(folder, str(os.getpid())), "w") as f:
        f.write("initialized")


def test_every_initializer_has_run_when_the_pool_is_returned(ray, tmp_path):
    pool = Pool(2, initializer=write_pid_file, initargs=(str(tmp_path),))
    try:
        assert len(os.listdir(tmp_path)) == 2  # no task was needed for it
    finally:
        pool.terminate()


class Sealed(Exception):
    """An exception class that refuses subclasses."""

    def __init_subclass__(cls, **kwargs):
        raise TypeError("Sealed is final")


def raise_sealed(x):
    raise Sealed(f"item {x}")


def test_an_item_error_of_a_final_class_is_a_plain_pool_task_error(ray):
    with Pool(1) as pool:
        [got] = list(pool.imap(raise_sealed, [7]))
    assert type(got) is PoolTaskError and isinstance(got.underlying, Sealed)
    assert str(got) == "item 7"


def test_an_item_that_raises_fails_only_itself(ray):
    with Pool(2) as pool:
        # imap and imap_unordered hand the exception back in its item's place, as Ray does:
        # a PoolTaskError (Ray's class) whose underlying is it, and a ValueError as well.
        got = list(pool.imap(fail_on_three, range(6), chunksize=4))
        assert got[:3] == [0, 1, 2] and got[4:] == [4, 5]
        assert isinstance(got[3], ValueError) and "pool process" in "".join(got[3].__notes__)
        assert isinstance(got[3], PoolTaskError) and type(got[3].underlying) is ValueError
        assert str(got[3]) == str(got[3].underlying)
        unordered = list(pool.imap_unordered(fail_on_three, range(6), chunksize=2))
        assert sorted(v for v in unordered if isinstance(v, int)) == [0, 1, 2, 4, 5]
        errors = [v for v in unordered if not isinstance(v, int)]
        assert len(errors) == 1 and isinstance(errors[0], ValueError) and isinstance(errors[0], PoolTaskError)
        # map raises the first one (the exception itself, with where it was raised).
        with pytest.raises(ValueError, match="three") as info:
            pool.map(fail_on_three, range(6), chunksize=6)
        assert "fail_on_three" in "".join(info.value.__notes__)


def nested_pools(n):
    with Pool() as inner:  # one process per CPU of the runtime: here, one
        return inner.map(square, range(n))


def test_pool_processes_hold_no_cpu_so_pools_nest():
    import shoal

    try:
        # No runtime yet: the pool starts one with num_cpus=processes.
        with Pool(1) as outer:
            assert shoal.cluster_resources()["CPU"] == 1
            assert shoal.available_resources().get("CPU") == 1  # as in Ray: num_cpus=0
            assert outer.map(nested_pools, [2, 3]) == [[0, 1], [0, 1, 4]]
        with pytest.raises(ValueError, match="2 processes .* the runtime has 1"):
            Pool(2)
    finally:
        shoal.shutdown()
