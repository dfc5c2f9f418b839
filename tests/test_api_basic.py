"""The core API through `import shoal as ray`: init and shutdown, remote
functions and their options, get/put/wait semantics, ObjectRef."""

from __future__ import annotations

import asyncio
import pickle
import time

import numpy as np
import pytest

import shoal
from shoal import exceptions as exc

from ._child import wait_until

pytestmark = pytest.mark.timeout(60)


def test_init_shutdown_and_reinit():
    assert not shoal.is_initialized()
    ctx = shoal.init(num_cpus=1, object_store_memory=64 << 20)
    try:
        assert shoal.is_initialized()
        assert ctx["node_ip_address"] == "127.0.0.1"
        with pytest.raises(RuntimeError, match="ignore_reinit_error"):
            shoal.init()
        shoal.init(ignore_reinit_error=True)
    finally:
        shoal.shutdown()
    assert not shoal.is_initialized()
    shoal.shutdown()  # idempotent


def test_context_manager_shuts_down():
    with shoal.init(num_cpus=1, object_store_memory=64 << 20):
        assert shoal.is_initialized()
    assert not shoal.is_initialized()


def test_auto_init_on_first_use():
    @shoal.remote
    def f():
        return 7

    try:
        assert shoal.get(f.remote(), timeout=30) == 7
        assert shoal.is_initialized()
    finally:
        shoal.shutdown()


def test_ray_only_init_keywords_warn_once():
    with pytest.warns(UserWarning, match="job_config"):
        shoal.init(num_cpus=1, object_store_memory=64 << 20, job_config=object())
    shoal.shutdown()
    with pytest.raises(TypeError, match="no_such_option"):
        shoal.init(no_such_option=1)
    assert not shoal.is_initialized()


def test_remote_forms_and_direct_call(ray):
    @ray.remote
    def a(x):
        return x + 1

    @ray.remote(num_cpus=1, max_retries=0)
    def b(x):
        return x + 2

    def plain(x):
        return x + 3

    c = ray.remote(plain)
    assert ray.get([a.remote(1), b.remote(1), c.remote(1)], timeout=30) == [2, 3, 4]
    with pytest.raises(TypeError, match=r"try '.*a\.remote\(\)'"):
        a(1)
    assert ray.get(a.options(name="renamed").remote(5), timeout=30) == 6


def test_closures_and_lambdas(ray):
    k = 10
    f = ray.remote(lambda x: x * k)

    def make(n):
        @ray.remote
        def inner():
            return n * 2

        return inner

    assert ray.get([f.remote(3), make(21).remote()], timeout=30) == [30, 42]


def test_option_validation(ray):
    @ray.remote
    def f():
        return 1

    with pytest.raises(ValueError, match="invalid option"):
        f.options(bogus=1)
    with pytest.raises(ValueError, match="num_cpus"):
        f.options(num_cpus=-1)
    with pytest.raises(ValueError, match="num_returns"):
        f.options(num_returns="many")
    with pytest.raises(ValueError, match="max_retries"):
        f.options(max_retries=-2)
    with pytest.raises(ValueError, match="num_cpus"):
        ray.remote(resources={"CPU": 1})(lambda: 1)
    with pytest.raises(ValueError, match="max_calls"):
        f.options(max_calls=-1)


def test_num_returns(ray):
    @ray.remote(num_returns=3)
    def three():
        return 1, "two", [3]

    @ray.remote(num_returns=2)
    def wrong():
        return 1

    refs = three.remote()
    assert isinstance(refs, list) and len(refs) == 3
    assert ray.get(refs, timeout=30) == [1, "two", [3]]
    with pytest.raises(ValueError, match="num_returns=2"):
        ray.get(wrong.remote(), timeout=30)


def test_put_get_roundtrip_and_order(ray):
    values = [1, "x", None, {"k": [1, 2]}, np.arange(10)]
    refs = [ray.put(v) for v in values]
    got = ray.get(refs, timeout=30)
    assert got[:4] == values[:4] and (got[4] == values[4]).all()
    assert ray.get(refs[1]) == "x"
    with pytest.raises(ValueError, match="must either be an ObjectRef or a list"):
        ray.get(tuple(refs[:2]))  # as Ray: a list, not any sequence


def test_get_rejects_non_refs(ray):
    for bad in (1, "x", None, {ray.put(1)}):
        with pytest.raises(ValueError, match="Invalid type of object refs"):
            ray.get(bad)
    with pytest.raises(TypeError):
        ray.get([1, 2])
    with pytest.raises(TypeError, match="expected a list"):
        ray.wait((ray.put(1),))
    with pytest.raises(TypeError, match="put\\(\\) of an ObjectRef"):
        ray.put(ray.put(1))


def test_get_timeout(ray):
    @ray.remote
    def slow():
        time.sleep(5)

    ref = slow.remote()
    t = time.monotonic()
    with pytest.raises(exc.GetTimeoutError) as e:
        ray.get(ref, timeout=0.2)
    assert isinstance(e.value, TimeoutError)
    assert time.monotonic() - t < 3
    with pytest.raises(exc.GetTimeoutError):
        ray.get([ray.put(1), ref], timeout=0)
    ray.cancel(ref, force=True)


def test_get_with_a_negative_or_infinite_timeout_waits_without_limit(ray):
    """As Ray, for one ref and for a list alike (and wait() refuses a
    negative timeout, as Ray's does)."""
    @ray.remote
    def slow(x):
        time.sleep(0.5)  # not done when get() starts waiting
        return x

    assert ray.get(slow.remote(1), timeout=-1) == 1
    assert ray.get([slow.remote(2), slow.remote(3)], timeout=-1) == [2, 3]
    assert ray.get(slow.remote(4), timeout=float("inf")) == 4
    for bad in ("1", float("nan"), True):
        with pytest.raises(ValueError, match="timeout"):
            ray.get(ray.put(1), timeout=bad)
        with pytest.raises(ValueError, match="timeout"):
            ray.get([ray.put(1)], timeout=bad)
    with pytest.raises(ValueError, match="timeout"):
        ray.wait([ray.put(1)], timeout=-1)


def test_wait_semantics(ray):
    @ray.remote
    def sleeper(s):
        time.sleep(s)
        return s

    fast = [ray.put(i) for i in range(3)]
    slow = sleeper.remote(10)
    refs = [slow, *fast]
    ready, not_ready = ray.wait(refs, num_returns=2, timeout=10)
    assert ready == fast[:2] and not_ready == [slow, fast[2]]  # input order kept
    ready, not_ready = ray.wait(refs, num_returns=4, timeout=0.2)
    assert ready == fast and not_ready == [slow]
    ready, _ = ray.wait([sleeper.remote(0.05)], timeout=10)
    assert len(ready) == 1
    with pytest.raises(ValueError, match="unique"):
        ray.wait([fast[0], fast[0]])
    with pytest.raises(ValueError, match="num_returns"):
        ray.wait(fast, num_returns=5)
    with pytest.raises(TypeError):
        ray.wait(fast[0])
    ray.cancel(slow, force=True)


def test_object_ref_identity_and_pickle(ray):
    a = ray.put(1)
    b = shoal.ObjectRef(a.binary(), None)
    assert a == b and hash(a) == hash(b) and len({a, b}) == 1
    assert len(a.binary()) == 20 and a.hex() == a.binary().hex()
    c = pickle.loads(pickle.dumps(a))
    assert c == a and ray.get(c) == 1
    assert "ObjectRef(" in repr(a)


def test_future_and_await(ray):
    @ray.remote
    def f(x):
        time.sleep(0.05)
        return x * 2

    assert f.remote(4).future().result(timeout=30) == 8

    async def main():
        return await f.remote(5), await asyncio.gather(f.remote(1), f.remote(2))

    assert asyncio.run(main()) == (10, [2, 4])


def test_dag_of_refs(ray):
    @ray.remote
    def add(a, b):
        return a + b

    x = add.remote(1, 2)
    y = add.remote(x, 10)
    z = add.remote(x, y)
    assert ray.get(z, timeout=30) == 16


def test_nested_refs_stay_refs(ray):
    @ray.remote
    def inspect_arg(container):
        inner = container["ref"]
        return type(inner).__name__, ray.get(inner)

    ref = ray.put("payload")
    assert ray.get(inspect_arg.remote({"ref": ref}), timeout=30) == ("ObjectRef", "payload")


def test_large_arguments_travel_through_the_store(ray):
    @ray.remote
    def total(a):
        return float(a.sum()), a.flags.writeable

    big = np.ones(1 << 20)  # 8 MiB: far above the inline limit
    assert ray.get(total.remote(big), timeout=30) == (float(1 << 20), False)


def test_resources_drop_while_tasks_hold_them(ray):
    @ray.remote(num_cpus=1)
    def hold(s):
        time.sleep(s)

    assert ray.cluster_resources()["CPU"] == 2
    assert ray.available_resources()["CPU"] == 2
    ref = hold.remote(2)
    wait_until(lambda: ray.available_resources().get("CPU", 0) == 1, what="the task to hold a CPU")
    ray.get(ref, timeout=30)
    # The result is sealed before the worker reports the end: the CPU comes
    # back a moment after get() returns.
    wait_until(lambda: ray.available_resources().get("CPU", 0) == 2, what="the CPU to come back")
