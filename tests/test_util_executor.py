"""shoal.util.Executor against concurrent.futures' own contract: the
standard library's wait() and as_completed() take its futures, map()
orders and times out as Executor.map does, cancel() and shutdown() follow
ProcessPoolExecutor."""

from __future__ import annotations

import concurrent.futures as cf
import os
import select

import numpy as np
import pytest

pytestmark = pytest.mark.timeout(120)


def inc(x):
    return x + 1


def pid_of(_):
    return os.getpid()


def fail(x):
    raise ValueError(f"bad {x}")


def span(_):
    """(start, end) of a call on CLOCK_MONOTONIC, one clock for all processes."""
    import time

    start = time.monotonic()
    total = 0
    for i in range(200_000):
        total += i
    return start, time.monotonic()


def wait_on_fifo(path):
    """Says it started (a line on path + ".started"), then blocks until the
    test writes a line to the FIFO at path: a gate without sleeps."""
    with open(path + ".started", "w") as f:
        f.write("started\n")
    with open(path) as f:
        return f.readline().strip()


def read_global():
    import builtins

    return getattr(builtins, "_executor_test_value", None)


def set_global(value):
    import builtins

    builtins._executor_test_value = value


def broken_init():
    raise OSError("no such device")


class Gate:
    """FIFOs for wait_on_fifo: tasks block until the test releases them.
    Opened read-write here, so that no open or write blocks, whether a task
    reads them already, later, or never (its call was cancelled)."""

    def __init__(self, tmp_path, name="gate"):
        self.path = str(tmp_path / name)
        os.mkfifo(self.path)
        os.mkfifo(self.path + ".started")
        self.fd = os.open(self.path, os.O_RDWR)
        self.started_fd = os.open(self.path + ".started", os.O_RDWR)

    def wait_started(self, timeout=30):
        """Block until a task has started (it wrote its line)."""
        ready, _, _ = select.select([self.started_fd], [], [], timeout)
        assert ready, f"no task started within {timeout} s"
        os.read(self.started_fd, len("started\n"))

    def release(self, text="go", readers=1):
        os.write(self.fd, (text + "\n").encode() * readers)

    def close(self):
        os.close(self.fd)
        os.close(self.started_fd)


@pytest.fixture
def gate(tmp_path):
    g = Gate(tmp_path)
    try:
        yield g
    finally:
        g.release(readers=8)  # nothing stays blocked, whatever failed
        g.close()


def test_submit_result_and_errors(ray):
    with ray.util.Executor() as ex:
        assert isinstance(ex, cf.Executor)
        fut = ex.submit(inc, 1)
        assert isinstance(fut, cf.Future)
        assert fut.result(timeout=30) == 2
        bad = ex.submit(fail, 3)
        with pytest.raises(ValueError, match="bad 3"):
            bad.result(timeout=30)
        assert isinstance(bad.exception(timeout=30), ValueError)
        assert ex.submit(lambda a, *, b: a * b, 6, b=7).result(timeout=30) == 42


def test_stdlib_wait_and_as_completed(ray):
    with ray.util.Executor() as ex:
        futures = [ex.submit(inc, i) for i in range(200)]
        done, not_done = cf.wait(futures, timeout=60)
        assert len(done) == 200 and not not_done
        assert sorted(f.result() for f in done) == list(range(1, 201))
        futures = [ex.submit(inc, i) for i in range(100)]
        seen = [f.result() for f in cf.as_completed(futures, timeout=60)]
        assert sorted(seen) == list(range(1, 101))
        mixed = [ex.submit(inc, 1), ex.submit(fail, 2)]
        done, _ = cf.wait(mixed, timeout=60, return_when=cf.FIRST_EXCEPTION)
        assert any(f.exception() is not None for f in done)


def test_as_completed_times_out_with_the_stdlib_error(ray, gate):
    with ray.util.Executor() as ex:
        blocked = ex.submit(wait_on_fifo, gate.path)
        gate.wait_started()
        with pytest.raises(cf.TimeoutError):
            for _ in cf.as_completed([blocked], timeout=0.2):
                pass
        gate.release("done")
        assert blocked.result(timeout=30) == "done"


def test_map_orders_results_in_chunks_and_raises_at_the_failed_item(ray):
    with ray.util.Executor() as ex:
        assert list(ex.map(inc, range(50))) == list(range(1, 51))
        assert list(ex.map(inc, range(50), chunksize=7)) == list(range(1, 51))
        assert list(ex.map(pow, [2, 3], [5, 2], chunksize=2)) == [32, 9]
        results = ex.map(fail, [1, 2], chunksize=1)
        with pytest.raises(ValueError, match="bad 1"):
            next(results)
        with pytest.raises(ValueError):
            ex.map(inc, [1], chunksize=0)


def test_map_timeout_is_measured_from_the_call(ray, gate):
    with ray.util.Executor() as ex:
        results = ex.map(wait_on_fifo, [gate.path], timeout=0.2)
        with pytest.raises(cf.TimeoutError):
            next(results)
        gate.release()


def test_cancel_takes_back_only_calls_no_worker_has(ray, gate):
    ex = ray.util.Executor(max_workers=1)
    try:
        running = ex.submit(wait_on_fifo, gate.path)
        gate.wait_started()
        queued = [ex.submit(inc, i) for i in range(5)]
        # The first call holds both CPUs (max_workers=1): the others wait in
        # the scheduler, so they can be taken back.
        assert all(f.cancel() for f in queued)
        assert all(f.cancelled() and f.done() for f in queued)
        with pytest.raises(cf.CancelledError):
            queued[0].result(timeout=1)
        done, _ = cf.wait(queued, timeout=10)
        assert len(done) == 5  # cancelled futures count as done for the stdlib
        gate.release()
        assert running.result(timeout=30) == "go"
        assert not running.cancel()  # finished: cannot be cancelled
    finally:
        ex.shutdown(wait=False)


def test_shutdown_cancel_futures_and_submit_after_shutdown(ray, gate):
    ex = ray.util.Executor(max_workers=1)
    running = ex.submit(wait_on_fifo, gate.path)
    gate.wait_started()
    queued = [ex.submit(inc, i) for i in range(5)]
    ex.shutdown(wait=False, cancel_futures=True)
    # The running call holds both CPUs: no worker had the others.
    assert all(f.cancelled() for f in queued)
    gate.release()
    ex.shutdown(wait=True)  # returns once the running call finished
    assert running.done() and running.result() == "go"
    with pytest.raises(RuntimeError, match="after shutdown"):
        ex.submit(inc, 1)


def test_max_workers_bounds_calls_running_at_once(ray):
    with ray.util.Executor(max_workers=1) as ex:
        spans = sorted(ex.map(span, range(6)))
    for (_, end), (start, _) in zip(spans, spans[1:]):
        assert end <= start, f"two calls overlapped: {spans}"
    with pytest.raises(ValueError, match="greater than 0"):
        ray.util.Executor(max_workers=0)


def test_initializer_runs_once_per_worker_and_failure_breaks_the_executor(ray):
    with ray.util.Executor(initializer=set_global, initargs=("ready",)) as ex:
        assert set(ex.map(lambda _: read_global(), range(8))) == {"ready"}
    ex = ray.util.Executor(initializer=broken_init)
    with pytest.raises(cf.BrokenExecutor, match="no such device"):
        ex.submit(inc, 1).result(timeout=30)
    with pytest.raises(cf.BrokenExecutor):
        ex.submit(inc, 1)
    with pytest.raises(TypeError):
        ray.util.Executor(initializer=3)


def test_max_tasks_per_child_recycles_processes(ray):
    with ray.util.Executor(max_workers=1, max_tasks_per_child=1) as ex:
        pids = [ex.submit(pid_of, i).result(timeout=30) for i in range(3)]
    assert len(set(pids)) == 3, pids


def test_large_arrays_arrive_zero_copy_and_results_come_back(ray):
    arrays = [np.full(2_000_000, i, dtype=np.float64) for i in range(4)]
    with ray.util.Executor() as ex:
        sums = list(ex.map(np.sum, arrays))
        assert sums == [a.sum() for a in arrays]
        # Arguments are read-only views of the store, as in Ray.
        assert ex.submit(lambda a: a.flags.writeable, arrays[0]).result(timeout=30) is False
        doubled = ex.submit(lambda a: a * 2, arrays[1]).result(timeout=30)
        assert np.array_equal(doubled, arrays[1] * 2)
