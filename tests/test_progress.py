"""Results as they come (as_completed, map_unordered), with tqdm; and
progress bars from tasks drawn by the driver (tqdm_ray)."""

from __future__ import annotations

import io
import re
import threading

import pytest

tqdm_mod = pytest.importorskip("tqdm")  # in the test extra
from tqdm import tqdm  # noqa: E402

pytestmark = pytest.mark.timeout(60)


def test_as_completed_yields_the_first_finished_first(ray, tmp_path):
    gate = tmp_path / "gate"

    @ray.remote
    def value(x, wait_for_gate):
        import time

        while wait_for_gate and not gate.exists():
            time.sleep(0.005)
        return x

    slow = value.remote("slow", True)
    fast = [value.remote(i, False) for i in range(3)]
    it = ray.util.as_completed([slow, *fast], chunk_size=1)
    assert sorted(next(it) for _ in range(3)) == [0, 1, 2]  # the slow one still runs
    gate.touch()
    assert list(it) == ["slow"]
    refs = [value.remote(i, False) for i in range(5)]
    got = list(ray.util.as_completed(refs, chunk_size=2, yield_obj_refs=True, timeout=30))
    assert sorted(got, key=lambda r: r.hex()) == sorted(refs, key=lambda r: r.hex())
    with pytest.raises(ValueError, match="chunk_size"):
        list(ray.util.as_completed(refs, chunk_size=0))
    with pytest.raises(ValueError, match="num_returns"):
        list(ray.util.as_completed(refs, num_returns=2))


def test_map_unordered_keeps_backpressure_size_in_flight(ray):
    @ray.remote
    def double(x):
        return 2 * x

    read = []

    def items():
        for i in range(10):
            read.append(i)
            yield i

    it = ray.util.map_unordered(double, items(), backpressure_size=3, chunk_size=1)
    first = next(it)
    assert len(read) == 3  # three submitted, then it waited for one before reading more
    assert sorted([first, *it]) == [2 * i for i in range(10)]
    assert sorted(ray.util.map_unordered(double, range(5), backpressure_size=None)) == [0, 2, 4, 6, 8]
    with pytest.raises(ValueError, match="backpressure_size"):
        list(ray.util.map_unordered(double, range(3), backpressure_size=0))


def test_helpers_and_pool_imap_compose_with_tqdm(ray):
    @ray.remote
    def inc(x):
        return x + 1

    out = io.StringIO()
    values = list(tqdm(ray.util.map_unordered(inc, range(20)), total=20, file=out, mininterval=0))
    assert sorted(values) == list(range(1, 21)) and "20/20" in out.getvalue()
    out = io.StringIO()
    refs = [inc.remote(i) for i in range(7)]
    assert sorted(tqdm(ray.util.as_completed(refs), total=7, file=out, mininterval=0)) == list(range(1, 8))
    assert "7/7" in out.getvalue()
    from shoal.util.multiprocessing import Pool

    with Pool(2) as pool:
        out = io.StringIO()
        squares = list(tqdm(pool.imap(abs, range(-5, 5)), total=10, file=out, mininterval=0))
        assert squares == [abs(i) for i in range(-5, 5)] and "10/10" in out.getvalue()


def test_bars_from_tasks_are_drawn_by_the_driver(ray, capfd):
    from shoal.experimental import tqdm_ray

    @ray.remote
    def counted(n, label):
        print(f"starting {label}")
        for _ in tqdm_ray.tqdm(range(n), desc=label, flush_interval_s=0):
            pass
        return n

    from shoal.experimental.tqdm_ray import manager

    closed = threading.Event()
    seen: list[dict] = []
    real_update = manager().update

    def spy(state):
        seen.append(state)
        real_update(state)
        if sum(1 for s in seen if s["closed"]) == 2:
            closed.set()

    manager().update = spy  # type: ignore[method-assign]
    try:
        assert ray.get([counted.remote(30, "alpha"), counted.remote(40, "beta")], timeout=30) == [30, 40]
        assert closed.wait(30), f"the bars' last states did not arrive: {seen}"
    finally:
        del manager().update
    out, err = capfd.readouterr()
    assert re.search(r"alpha: 100%.*30/30", err) and re.search(r"beta: 100%.*40/40", err), err
    assert "shoal-progress" not in out + err  # the state lines are never shown
    assert re.search(r"^\(counted pid=\d+\) starting alpha$", out, re.M), out  # printed intact, on its own line
    assert not manager().active()


def test_a_bar_in_the_driver_draws_directly(ray, capfd):
    from shoal.experimental import tqdm_ray

    assert sum(tqdm_ray.tqdm(range(5), desc="local", flush_interval_s=0)) == 10
    tqdm_ray.safe_print("after the bar")
    out, err = capfd.readouterr()
    assert re.search(r"local: 100%.*5/5", err) and "after the bar" in out
