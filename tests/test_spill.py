"""Spilling through the public API, on a small store: objects that do not
fit go to files and come back the same, in every process; small ones share
files; an object larger than the store is written to a file of its own;
deleting objects deletes their bytes."""

from __future__ import annotations

import os
import threading

import numpy as np
import pytest

pytestmark = pytest.mark.timeout(120)

MiB = 1 << 20


def spill_files(shoal) -> list[str]:
    """The object files in the runtime's spill folders."""
    rt = shoal.objectref.current()
    return [name for folder in rt.spill_folders.paths for name in os.listdir(folder) if name != "lock"]


def stats(shoal):
    return shoal.objectref.current().store.statistics()


def settle(shoal) -> None:
    """Apply the driver's dropped refs and let a spill round in progress end
    (it drops what was deleted meanwhile)."""
    shoal.util.memory_summary(stats_only=True)
    assert shoal.objectref.current().spiller.settle()


@pytest.fixture
def spilling(tmp_path):
    """A runtime with a 32 MiB store that spills into tmp_path; nothing of
    it may be left there afterwards."""
    import shoal

    os.environ["SHOAL_VALIDATE"] = "1"
    try:
        shoal.init(num_cpus=2, object_store_memory=32 * MiB, object_spilling_directory=str(tmp_path))
    finally:
        os.environ.pop("SHOAL_VALIDATE", None)
    try:
        yield shoal
    finally:
        shoal.shutdown()
        assert os.listdir(tmp_path) == [], "spill folders left behind"


def test_numpy_arrow_and_pickled_values_survive_spilling(spilling):
    import pyarrow as pa

    ray = spilling
    arrays = [np.random.default_rng(i).random(MiB // 8 * 2) for i in range(40)]  # 2 MiB each: 80 MiB
    table = pa.table({"x": np.arange(300_000), "y": np.arange(300_000) * 0.5})
    pickled = {"words": ["spill"] * 200_000, "n": 7}
    refs = [ray.put(a) for a in arrays]
    t_ref, p_ref = ray.put(table), ray.put(pickled)
    refs += [ray.put(np.full(MiB // 8, k)) for k in range(20)]  # more pressure: the first ones go
    st = stats(ray)
    assert st.num_spilled >= 20 and st.bytes_in_use <= 32 * MiB
    for a, r in zip(arrays, refs):
        got = ray.get(r)
        assert np.array_equal(got, a) and not got.flags.writeable
    assert ray.get(t_ref).equals(table)
    assert ray.get(p_ref) == pickled


def test_spilled_objects_are_read_in_workers_too(spilling):
    ray = spilling

    @ray.remote
    def checksum(*arrays):
        return [float(a.sum()) for a in arrays]

    arrays = [np.full(MiB // 8 * 3, float(k)) for k in range(25)]  # 75 MiB
    refs = [ray.put(a) for a in arrays]
    assert stats(ray).num_spilled > 0
    assert ray.get(checksum.remote(*refs)) == [float(a.sum()) for a in arrays]

    @ray.remote
    def make(k):  # results that spill, made in workers
        return np.full(MiB // 8 * 4, float(k))

    made = [make.remote(k) for k in range(20)]  # 80 MiB
    assert [ray.get(r)[0] for r in made] == [float(k) for k in range(20)]


def test_ten_thousand_small_objects_share_a_few_files(tmp_path):
    import shoal as ray

    ray.init(num_cpus=1, object_store_memory=8 * MiB, object_spilling_directory=str(tmp_path),
             _system_config={"object_spilling_threshold": 0.5})
    try:
        refs = [ray.put(bytes([k % 256]) * 1000) for k in range(10_000)]
        st = stats(ray)
        assert st.num_spilled >= 3000, st
        files = spill_files(ray)
        assert 1 <= len(files) <= 50, len(files)
        assert all(name.endswith(".fused") for name in files)
        got = ray.get(refs)
        assert all(v == bytes([k % 256]) * 1000 for k, v in enumerate(got))
        del refs, got
        settle(ray)
        assert stats(ray).num_spilled == 0
        assert spill_files(ray) == []  # each fused file went with its last object
    finally:
        ray.shutdown()


def test_an_object_larger_than_the_store_goes_to_a_file(spilling):
    ray = spilling
    big = np.arange(80 * MiB // 8, dtype=np.int64)  # 2.5 times the store
    ref = ray.put(big)
    st = stats(ray)
    assert st.num_fallback == 1 and st.bytes_in_use < 32 * MiB
    assert np.array_equal(ray.get(ref), big)

    @ray.remote
    def last(a):
        return int(a[-1])

    @ray.remote
    def huge(n):  # a worker's result that cannot fit either
        return np.ones(n, dtype=np.uint8)

    assert ray.get(last.remote(ref)) == big[-1]
    assert int(ray.get(huge.remote(50 * MiB)).sum()) == 50 * MiB
    assert stats(ray).num_fallback == 2
    del ref
    settle(ray)
    assert stats(ray).num_fallback <= 1


def test_deleting_spilled_objects_deletes_their_files(spilling):
    ray = spilling
    refs = [ray.put(np.full(MiB // 8 * 10, k)) for k in range(8)]  # 10 MiB each: large, own files
    assert stats(ray).num_spilled >= 4
    assert len(spill_files(ray)) >= 4
    del refs
    settle(ray)
    assert stats(ray).num_spilled == 0
    assert spill_files(ray) == []


def test_readers_while_objects_spill(spilling):
    """Tasks read objects over and over while the driver's puts force
    spilling: every read gets the right bytes; a pinned object is never
    spilled from under its reader."""
    ray = spilling

    @ray.remote
    def read_all(refs, rounds):
        bad = 0
        for _ in range(rounds):
            for k, r in enumerate(ray.get(refs)):
                bad += int(r[0] != k or r[-1] != k)
        return bad

    refs = [ray.put(np.full(MiB // 8, k)) for k in range(16)]
    readers = [read_all.remote(refs, 20) for _ in range(3)]
    pressure = [ray.put(np.full(MiB // 8 * 2, -1.0)) for _ in range(40)]  # 80 MiB
    assert ray.get(readers, timeout=60) == [0, 0, 0]
    assert stats(ray).num_spilled > 0
    del pressure
    view = ray.get(refs[0])  # pinned by this process
    more = [ray.put(np.zeros(MiB // 8 * 2)) for _ in range(30)]
    assert view[0] == 0 and view[-1] == 0
    del more


def test_concurrent_putters_all_fit(spilling):
    """Several threads putting at once: every put completes and reads back."""
    ray = spilling
    results: dict[int, list] = {}

    def putter(t):
        results[t] = [(k, ray.put(np.full(MiB // 8, t * 100 + k))) for k in range(30)]

    threads = [threading.Thread(target=putter, args=(t,)) for t in range(3)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(60)
    assert len(results) == 3
    for t, pairs in results.items():
        for k, r in pairs:
            assert ray.get(r)[0] == t * 100 + k


def test_a_spilled_object_read_back_returns_to_the_store(spilling):
    """A large spilled object that is read comes back into the store when
    there is room: then every process reads it there, and spilling it
    again costs no write (its file stays until it is deleted)."""
    from shoal.util.memory import memory_objects

    ray = spilling
    refs = [ray.put(np.full(MiB // 8 * 4, k)) for k in range(12)]  # 48 MiB through 32 MiB
    settle(ray)
    where = {o.object_id: o.where for o in memory_objects()}
    first = next(r for r in refs if where[r.hex()] == "spilled")
    del refs[refs.index(first) + 1:]  # room again
    settle(ray)
    rt = ray.objectref.current()
    assert ray.get(first)[0] == refs.index(first)
    assert {o.object_id: o.where for o in memory_objects()}[first.hex()] == "restored"

    @ray.remote
    def first_item(a):
        return int(a[0])

    assert ray.get(first_item.remote(first)) == refs.index(first)

    def location():
        return next(o[7] for o in rt.store.raw.list_objects() if o[0] == first.binary())

    before = location()
    more = [ray.put(np.full(MiB // 8 * 4, -1)) for _ in range(6)]  # pressure: it goes again
    settle(ray)
    assert {o.object_id: o.where for o in memory_objects()}[first.hex()] == "spilled"
    assert location() == before  # back to the same file: not written again
    assert ray.get(first)[-1] == refs.index(first)
    del more


def test_a_read_back_object_keeps_its_file_when_a_reader_pins_it_during_a_spill(spilling):
    """A spill round that picked an object read back before (its file is
    kept) and found it pinned by a reader when marking it spilled leaves
    its file alone: the object still owns it, and reads it back later."""
    from shoal.util.memory import memory_objects

    ray = spilling
    refs = [ray.put(np.full(MiB // 8 * 4, k)) for k in range(12)]
    settle(ray)
    where = {o.object_id: o.where for o in memory_objects()}
    first = next(r for r in refs if where[r.hex()] == "spilled")
    del refs[refs.index(first) + 1:]
    settle(ray)
    assert ray.get(first)[0] == refs.index(first)  # read back
    rt = ray.objectref.current()
    picked = rt.store.raw.get(first.binary(), 0)  # as the spiller pins what it chose
    path = rt.store.spill_files.path_of(picked.location)
    reader = ray.get(first)  # a reader comes first: the round must keep it in memory
    assert rt.spiller._commit([(first.binary(), picked, picked.nbytes)], [picked.location]) == 0
    assert os.path.exists(path)
    del reader
    more = [ray.put(np.full(MiB // 8 * 4, -1)) for _ in range(6)]  # it goes again, to the same file
    settle(ray)
    assert {o.object_id: o.where for o in memory_objects()}[first.hex()] == "spilled"
    assert ray.get(first)[-1] == refs.index(first)
    del more
