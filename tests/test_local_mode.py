"""init(local_mode=True): tasks run in the driver process, in order."""

from __future__ import annotations

import os

import pytest

import shoal
from shoal import exceptions as exc

pytestmark = pytest.mark.timeout(30)


@pytest.fixture
def local():
    shoal.init(local_mode=True)
    try:
        yield shoal
    finally:
        shoal.shutdown()


def test_tasks_run_in_this_process_in_order(local):
    order = []

    @local.remote
    def f(i):
        order.append(i)  # visible: same process, same memory
        return os.getpid()

    pids = local.get([f.remote(i) for i in range(5)])
    assert set(pids) == {os.getpid()} and order == [0, 1, 2, 3, 4]


def test_refs_errors_and_nesting(local):
    @local.remote
    def add(a, b):
        return a + b

    @local.remote
    def fails():
        raise KeyError("k")

    assert local.get(add.remote(add.remote(1, 2), local.put(3))) == 6
    with pytest.raises(KeyError) as e:
        local.get(fails.remote())
    assert isinstance(e.value, exc.RayTaskError)
    ready, not_ready = local.wait([local.put(1), local.put(2)], num_returns=1)
    assert len(ready) == 1 and len(not_ready) == 1


def test_num_returns_and_generators(local):
    @local.remote(num_returns=2)
    def two():
        return 1, 2

    @local.remote
    def gen(n):
        yield from range(n)

    assert local.get(two.remote()) == [1, 2]
    assert [local.get(r) for r in gen.remote(3)] == [0, 1, 2]
