"""memory_summary() and memory_objects(): each object with its kind, where
its bytes are and who holds it (the driver, a worker, an actor, a pending
task, a containing object, a reader pinning it)."""

from __future__ import annotations

import asyncio
import os

import numpy as np
import pytest

from shoal.util.memory import memory_objects

pytestmark = pytest.mark.timeout(120)

MiB = 1 << 20


@pytest.fixture
def ray_sites(tmp_path, monkeypatch):
    import shoal

    monkeypatch.setenv("SHOAL_RECORD_REF_CREATION_SITES", "1")
    shoal.init(num_cpus=2, object_store_memory=64 * MiB, object_spilling_directory=str(tmp_path))
    try:
        yield shoal
    finally:
        shoal.shutdown()


def by_id(ref) -> object:
    return next(o for o in memory_objects() if o.object_id == ref.hex())


def holders(ref) -> set:
    return set(by_id(ref).references)


def test_holders_of_every_kind(ray_sites):
    ray = ray_sites

    @ray.remote
    class Signal:
        def __init__(self):
            self.event = asyncio.Event()

        async def wait(self):
            await self.event.wait()

        async def send(self):
            self.event.set()

    @ray.remote
    class Keeper:
        def keep(self, refs):
            self.refs = refs
            return len(refs)

        def ping(self):
            return True

    @ray.remote
    def hold_while(started, release):
        mine = ray.put(np.arange(1000))  # held by this worker while it waits
        ray.get(started.send.remote())
        ray.get(release.wait.remote())
        return mine.hex()

    @ray.remote
    def consume(a, gate):
        return len(a)

    me = f"driver (pid {os.getpid()})"
    driver_ref = ray.put(np.zeros(100_000))
    assert holders(driver_ref) == {("LOCAL_REFERENCE", me)}
    assert by_id(driver_ref).kind == "numpy" and by_id(driver_ref).where == "store"

    inner = ray.put(b"x" * 5000)
    outer = ray.put([inner])
    inner_hex = inner.hex()
    del inner
    [inner_obj] = [o for o in memory_objects() if o.object_id == inner_hex]
    assert inner_obj.kind == "bytes"
    assert inner_obj.references == (("CAPTURED_IN_OBJECT", f"object {outer.hex()} (contains a ref)"),)

    started, release, gate = Signal.remote(), Signal.remote(), Signal.remote()
    running = hold_while.remote(started, release)
    ray.get(started.wait.remote())
    worker_objs = [o for o in memory_objects() if any(w.startswith("worker (pid") for _, w in o.references)]
    assert "numpy" in [o.kind for o in worker_objs]  # (it also holds the ref it waits on)

    pending = consume.remote(driver_ref, gate.wait.remote())  # waits for `gate`
    assert ("USED_BY_PENDING_TASK", "task consume (pending)") in holders(driver_ref)

    keeper = Keeper.remote()
    kept = ray.put({"a": 1})
    assert ray.get(keeper.keep.remote([kept])) == 1
    assert ray.get(keeper.ping.remote())  # the actor has told the driver what `keep` took
    kept_hex = kept.hex()
    del kept
    [kept_obj] = [o for o in memory_objects() if o.object_id == kept_hex]
    assert [w for _, w in kept_obj.references][0].startswith("actor Keeper (pid"), kept_obj.references
    assert kept_obj.kind == "pickled"

    view = ray.get(driver_ref)  # a live array: pinned by this process
    assert ("PINNED_IN_MEMORY", f"{me} reading it") in holders(driver_ref)
    assert "test_memory_summary.py" in by_id(driver_ref).call_site

    text = ray.util.memory_summary()
    for expected in (f"--- {me}", "--- task consume (pending)", "(contains a ref)", "--- actor Keeper (pid",
                     "--- worker (pid", f"{me} reading it", "PINNED_IN_MEMORY", "USED_BY_PENDING_TASK",
                     "--- Totals ---", "Store:", "Spilled:"):
        assert expected in text, expected
    del view
    ray.get(release.send.remote())
    ray.get(gate.send.remote())
    assert ray.get(pending) == 100_000
    assert len(ray.get(running)) == 40


def test_where_spilled_and_fallback_objects_live(ray_sites):
    import pyarrow as pa

    ray = ray_sites
    table = ray.put(pa.table({"x": np.arange(10)}))
    refs = [ray.put(np.full(MiB // 8 * 8, k)) for k in range(12)]  # 96 MiB through 64 MiB
    big = ray.put(np.zeros(100 * MiB // 8))  # larger than the store
    objects = {o.object_id: o for o in memory_objects()}
    assert objects[big.hex()].where == "fallback"
    assert objects[big.hex()].store_bytes == 0
    assert "spilled" in {objects[r.hex()].where for r in refs}
    assert objects[table.hex()].kind == "arrow"
    text = ray.util.memory_summary(group_by="none", sort_by="id", num_entries=3)
    assert "fallback" in text and "... and" in text
    assert "1 of them written straight to disk" in text
    stats = ray.util.memory_summary(stats_only=True)
    assert "Object ID" not in stats and "Spiller:" in stats
    by_site = ray.util.memory_summary(group_by="STACK_TRACE")
    assert "test_memory_summary.py" in by_site
    with pytest.raises(ValueError):
        ray.util.memory_summary(group_by="colour")


def test_memory_summary_needs_a_driver():
    import shoal

    with pytest.raises(RuntimeError, match="driver"):
        shoal.util.memory_summary()
