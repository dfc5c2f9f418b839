"""Object lifetime: an object lives while a ref to it exists anywhere (the
driver, workers, other stored objects, arguments of pending tasks) and is
freed after; memory stays flat in put-and-drop loops."""

from __future__ import annotations

import gc
import time

import numpy as np
import pytest

from shoal import objectref

from ._child import wait_until

pytestmark = pytest.mark.timeout(90)

MB = 1 << 20


def stats():
    return objectref.current().store.statistics()


def live_objects() -> int:
    rt = objectref.current()
    rt.shell.flush_refs()
    return stats().num_sealed


def test_put_object_freed_when_last_ref_dropped(ray):
    base = live_objects()
    ref = ray.put(np.zeros(MB))
    copy = ref  # two refs, one object
    assert live_objects() == base + 1
    del ref
    assert live_objects() == base + 1
    del copy
    gc.collect()
    wait_until(lambda: live_objects() == base, what="the object to be freed")


def test_task_results_freed_after_use(ray):
    @ray.remote
    def make():
        return np.ones(MB)

    base = live_objects()
    for _ in range(20):
        assert ray.get(make.remote(), timeout=30).sum() == MB
    wait_until(lambda: live_objects() <= base + 1, what="results to be freed")


def test_memory_stays_flat_putting_and_dropping(ray):
    # 100 x 16 MiB through a 256 MiB store: only possible if each is freed.
    for i in range(100):
        ref = ray.put(np.full(2 * MB, i, dtype=np.float64))
        assert ray.get(ref)[0] == i
        del ref
    assert stats().bytes_in_use < 64 * MB


def test_nested_ref_keeps_object_alive(ray):
    inner = ray.put("inner value")
    outer = ray.put([inner])
    inner_id = inner.binary()
    del inner
    gc.collect()
    assert objectref.current().store.contains(inner_id)
    (got,) = ray.get(outer)
    assert ray.get(got) == "inner value"
    del got, outer
    gc.collect()
    wait_until(lambda: (live_objects(), not objectref.current().store.contains(inner_id))[1],
               what="the inner object to be freed with its container")


def test_pending_task_argument_keeps_object_alive(ray, tmp_path):
    gate = tmp_path / "gate"

    @ray.remote
    def wait_then_sum(container):
        while not gate.exists():
            time.sleep(0.01)
        return float(ray.get(container[0]).sum())

    arr = ray.put(np.ones(MB))
    arr_id = arr.binary()
    result = wait_then_sum.remote([arr])
    del arr
    gc.collect()
    objectref.current().shell.flush_refs()
    assert objectref.current().store.contains(arr_id)  # the task still needs it
    gate.write_text("go")
    assert ray.get(result, timeout=30) == MB
    del result
    gc.collect()
    wait_until(lambda: (live_objects(), not objectref.current().store.contains(arr_id))[1],
               what="the argument to be freed after the task")


def test_ref_returned_from_task_keeps_object_alive(ray):
    @ray.remote
    def make_ref():
        return [ray.put(np.arange(10))]

    (ref,) = ray.get(make_ref.remote(), timeout=30)
    gc.collect()
    time.sleep(0)  # let the worker's release (after its task) arrive: checked below
    wait_until(lambda: objectref.current().shell.refs.count.get(ref.binary()) == 1,
               what="only the driver to hold the object")
    assert ray.get(ref, timeout=30)[9] == 9


def test_result_dropped_before_the_task_ends_is_freed(ray, tmp_path):
    gate = tmp_path / "gate"

    @ray.remote
    def later():
        while not gate.exists():
            time.sleep(0.01)
        return np.ones(MB)

    ref = later.remote()
    rid = ref.binary()
    del ref
    gc.collect()
    objectref.current().shell.flush_refs()
    gate.write_text("go")
    shell = objectref.current().shell
    def ended():
        with shell.lock:  # the task's end and the drop happen in one step under it
            return not shell.by_task_id

    wait_until(ended, what="the task to end")
    assert not objectref.current().store.contains(rid)  # dropped as soon as it was sealed
    assert not shell.drop_when_sealed
