"""The object store in one process: lifecycle, pins, deletion, eviction,
fragmentation, statistics and every bad input's typed error."""

from __future__ import annotations

import gc
import os
import pickle

import numpy as np
import pytest

from shoal import exceptions as exc
from shoal.store import ID_SIZE, ObjectStore

pytestmark = pytest.mark.timeout(60)


def oid() -> bytes:
    return os.urandom(ID_SIZE)


def test_create_seal_get_roundtrip(store):
    i = oid()
    w = store.create(i, 11, b"meta")
    memoryview(w)[:] = b"hello world"
    w.seal()
    w.release()
    b = store.get_buffer(i)
    assert bytes(b) == b"hello world"
    assert b.metadata == b"meta"
    assert b.nbytes == 11
    assert store.contains(i)


def test_put_get_value(store):
    value = {"a": [1, 2.5, "x"], "b": (None, True), "c": b"bytes"}
    assert store.get(store.put(value)) == value


def test_payload_is_64_byte_aligned(store):
    for n in (1, 63, 64, 65, 1000, 4097):
        i = oid()
        w = store.create(i, n)
        w.seal()
        w.release()
        assert store.get_buffer(i).address % 64 == 0


def test_get_pins_until_released(store):
    i = oid()
    store.raw.put_parts(i, 4096, [(0, b"x" * 4096)])
    assert store.statistics().bytes_pinned == 0
    b = store.get_buffer(i)
    assert store.statistics().bytes_pinned > 0
    b.release()
    assert store.statistics().bytes_pinned == 0


def test_numpy_view_keeps_pin_until_collected(store):
    i = store.put(np.arange(100_000))
    arr = store.get(i)
    assert not arr.flags.writeable
    assert store.statistics().bytes_pinned > 0
    view = arr[10:20]
    del arr
    gc.collect()
    assert store.statistics().bytes_pinned > 0  # the slice still needs the memory
    assert view[0] == 10
    del view
    gc.collect()
    assert store.statistics().bytes_pinned == 0


def test_explicit_release_refused_while_views_live(store):
    i = store.put(np.arange(1000))
    b = store.get_buffer(i)
    mv = memoryview(b)
    with pytest.raises(BufferError, match="still alive"):
        b.release()
    mv.release()
    b.release()
    assert b.released


def test_delete_unpinned_frees_memory(store):
    i = store.put(np.zeros(100_000))
    used = store.statistics().bytes_in_use
    store.delete(i)
    assert not store.contains(i)
    assert store.statistics().bytes_in_use < used - 700_000
    with pytest.raises(exc.ObjectNotFoundError):
        store.get(i)


def test_delete_while_pinned_defers_the_free(store):
    i = store.put(np.arange(100_000))
    arr = store.get(i)
    store.delete(i)
    assert not store.contains(i)
    st = store.statistics()
    assert st.num_deleted_pinned == 1 and st.num_sealed == 0
    # The memory under the live view is intact and not reused by new objects.
    for _ in range(5):
        store.put(np.full(100_000, -1))
    assert arr[12345] == 12345
    del arr
    gc.collect()
    assert store.statistics().num_deleted_pinned == 0
    store.raw.validate()


def test_same_id_can_be_reused_after_delete_while_old_is_pinned(store):
    i = oid()
    store.put(b"first", i)
    old = store.get_buffer(i)
    store.delete(i)
    store.put(b"second", i)
    assert store.get(i) == b"second"
    old.release()
    assert store.get(i) == b"second"
    store.raw.validate()


def test_get_waits_for_seal_with_timeout(store):
    i = oid()
    w = store.create(i, 8)
    with pytest.raises(exc.GetTimeoutError, match="still being written") as e:
        store.get_buffer(i, timeout=0.05)
    assert isinstance(e.value, TimeoutError)
    w.seal()
    assert store.get_buffer(i, timeout=0.05).nbytes == 8


def test_get_missing_object(store):
    with pytest.raises(exc.ObjectNotFoundError) as e:
        store.get(oid())
    assert isinstance(e.value, LookupError)
    with pytest.raises(exc.GetTimeoutError, match="no such object"):
        store.get(oid(), timeout=0.02)


def test_abort_and_get_of_aborted_object(store):
    i = oid()
    w = store.create(i, 100)
    w.abort()
    with pytest.raises(exc.ObjectNotFoundError):
        store.get(i)
    assert store.statistics().bytes_in_use == 0


def test_dropping_unsealed_buffer_aborts(store):
    i = oid()
    w = store.create(i, 100)
    del w
    gc.collect()
    assert store.statistics().num_created == 0
    assert store.statistics().bytes_in_use == 0


def test_double_seal_is_a_state_error(store):
    i = oid()
    w = store.create(i, 10)
    w.seal()
    with pytest.raises(exc.ObjectStateError, match="wrong state"):
        w.seal()
    with pytest.raises(exc.ObjectStateError):
        store.seal(i)


def test_write_after_seal_is_a_state_error(store):
    i = oid()
    w = store.create(i, 10)
    w.write(0, b"0123456789")
    store.seal(i)  # sealed by ID: the buffer notices too
    with pytest.raises(exc.ObjectStateError, match="no longer writable"):
        w.write(0, b"x")
    with pytest.raises(exc.ObjectStateError):
        memoryview(w)
    assert bytes(store.get_buffer(i)) == b"0123456789"


def test_abort_and_release_refused_while_writable_views_live(store):
    i = oid()
    w = store.create(i, 4096)
    arr = np.frombuffer(w, dtype=np.uint8)  # a writable view into the object
    for attempt in (w.abort, w.release, lambda: store.abort(i)):
        with pytest.raises(exc.ObjectStateError, match="still alive"):
            attempt()
    assert store.statistics().num_created == 1  # nothing was freed under the view
    arr[:] = 7
    del arr
    w.abort()  # no views left
    assert store.statistics().bytes_in_use == 0
    assert not store.contains(i)


def test_sealed_buffer_is_read_only(store):
    i = store.put(b"abc")
    b = store.get_buffer(i)
    arr = np.frombuffer(b, dtype=np.uint8)
    assert not arr.flags.writeable
    with pytest.raises(ValueError):
        arr.setflags(write=True)
    with pytest.raises((BufferError, TypeError)):
        memoryview(b)[0] = 1


def test_abort_after_seal_and_delete_unsealed(store):
    i = oid()
    w = store.create(i, 10)
    with pytest.raises(exc.ObjectStateError):
        store.delete(i)
    w.seal()
    with pytest.raises(exc.ObjectStateError):
        store.abort(i)


def test_create_existing_id(store):
    i = store.put(1)
    with pytest.raises(exc.ObjectExistsError):
        store.create(i, 10)
    assert store.get(i) == 1


@pytest.mark.parametrize("bad", [b"short", "a" * 20, 12345, None, bytearray(20)])
def test_bad_ids(store, bad):
    with pytest.raises((TypeError, ValueError)):
        store.get(bad)
    with pytest.raises((TypeError, ValueError)):
        store.create(bad, 10)


def test_negative_and_huge_sizes(store):
    with pytest.raises((ValueError, OverflowError)):
        store.create(oid(), -1)
    with pytest.raises(exc.ObjectTooLargeError, match="can never fit") as e:
        store.create(oid(), 1 << 40)
    assert isinstance(e.value, exc.StoreFullError)
    assert e.value.requested == 1 << 40
    with pytest.raises((ValueError, OverflowError)):
        store.raw.create(oid(), 1 << 70)


def test_write_out_of_bounds(store):
    w = store.create(oid(), 10)
    with pytest.raises(ValueError, match="overruns"):
        w.write(5, b"0123456789")


def test_get_with_spin_sees_a_seal_and_still_times_out(store):
    import threading

    store.raw.set_wait_spin(0.002)
    with pytest.raises(exc.GetTimeoutError):
        store.get(oid(), timeout=0.01)  # nothing comes: spin, then sleep, then time out
    i = oid()
    w = store.create(i, 3)
    w.write(0, b"abc")
    sealer = threading.Timer(0.001, w.seal)  # sealed while the getter spins (or sleeps)
    sealer.start()
    assert bytes(store.get_buffer(i, timeout=5)) == b"abc"
    sealer.join()
    store.raw.set_wait_spin(0.0)


def test_bad_timeouts(store):
    for t in (-1, float("nan")):
        with pytest.raises(ValueError):
            store.get(oid(), timeout=t)


def test_store_full_raises_and_harms_nothing(store):
    kept = [store.put(np.full(1 << 20, k, dtype=np.uint8)) for k in range(40)]
    with pytest.raises(exc.StoreFullError) as e:
        store.put(np.zeros(30 << 20, dtype=np.uint8))
    err = e.value
    assert err.requested >= 30 << 20 and err.capacity == 64 << 20
    assert "/dev/shm" in str(err) and "--shm-size" in str(err)
    for k, i in enumerate(kept):
        assert store.get(i)[100] == k
    store.raw.validate()


def test_evictable_objects_make_room_lru_first(store):
    first = [store.put(np.zeros(8 << 20, dtype=np.uint8), evictable=True) for _ in range(6)]
    store.get(first[0])  # touch: now the most recently used
    pinned = store.get(first[1])  # pinned: never evicted
    store.put(np.ones(16 << 20, dtype=np.uint8))
    st = store.statistics()
    assert st.num_evictions >= 1
    assert store.contains(first[0]) or st.num_evictions >= 5
    assert store.contains(first[1]) and pinned[0] == 0
    assert not store.contains(first[2])  # least recently used went first
    store.raw.validate()


def test_not_evictable_by_default(store):
    store.put(np.zeros(40 << 20, dtype=np.uint8))
    with pytest.raises(exc.StoreFullError):
        store.put(np.zeros(40 << 20, dtype=np.uint8))


def test_explicit_evict(store):
    ids = [store.put(np.zeros(1 << 20), evictable=True) for _ in range(3)]
    freed = store.evict(1)
    assert freed >= 8 << 20
    assert not store.contains(ids[0]) and store.contains(ids[2])


def test_free_blocks_coalesce(store):
    ids = [store.put(np.zeros(1 << 20, dtype=np.uint8)) for _ in range(50)]
    for i in ids[::2]:
        store.delete(i)
    # Fragmented: no room for 30 MiB in one piece although ~25 MiB are free.
    with pytest.raises(exc.StoreFullError):
        store.put(np.zeros(30 << 20, dtype=np.uint8))
    for i in ids[1::2]:
        store.delete(i)
    assert store.statistics().largest_free_block >= (64 << 20) - 4096
    store.put(np.zeros(60 << 20, dtype=np.uint8))
    store.raw.validate()


def test_fitting_block_deep_in_its_size_class_is_found():
    """40 free blocks of one size class, only the oldest big enough, and no
    larger free block anywhere: the allocation must still succeed."""
    with ObjectStore.open(1 << 20) as store:
        def make(n):
            w = store.create(oid(), n)
            w.seal()
            w.release()
            return w.object_id

        wide = make(20000)
        store.put(b"x")  # a separator keeps the freed blocks from coalescing
        narrow = []
        for _ in range(40):
            narrow.append(make(16384))
            store.put(b"x")
        left = store.statistics().largest_free_block
        while True:  # fill the rest, so no bigger free block exists
            try:
                make(left)
                break
            except exc.StoreFullError:
                left -= 64
        for i in [wide, *narrow]:  # the wide block is freed first: deepest in its list
            store.delete(i)
        assert store.statistics().largest_free_block < 20096
        make(19000)
        store.raw.validate()


def test_freed_memory_is_reused_first(store):
    a = store.put(np.zeros(4 << 20, dtype=np.uint8))
    addr = store.get_buffer(a).address
    store.delete(a)
    b = store.put(np.zeros(4 << 20, dtype=np.uint8))
    assert store.get_buffer(b).address == addr


def test_object_table_full():
    with ObjectStore.open(1 << 20, max_objects=16) as s:
        for _ in range(16):
            s.put(0)
        with pytest.raises(exc.ObjectTableFullError, match="16 entries"):
            s.put(0)


def test_statistics_fields(store):
    st = store.statistics()
    assert st.capacity_bytes == 64 << 20
    assert st.num_clients == 1 and st.max_objects == 4096
    i = store.put(np.zeros(1000))
    st = store.statistics()
    assert st.num_sealed == 1 and st.num_objects == 1 and st.bytes_in_use > 8000


def test_closed_store(store):
    i = store.put(1)
    store.close()
    store.close()  # idempotent
    for op in (lambda: store.get(i), lambda: store.put(2), lambda: store.contains(i)):
        with pytest.raises(exc.StoreClosedError):
            op()


def test_close_waits_for_live_buffers():
    s = ObjectStore.open(1 << 24)
    arr = s.get(s.put(np.arange(1000)))
    s.close()
    assert arr[999] == 999  # still mapped: the view keeps the segment
    del arr
    gc.collect()


def test_wrong_capacity():
    with pytest.raises(ValueError):
        ObjectStore.open(0)
    with pytest.raises(ValueError):
        ObjectStore.open(-5)


def test_attach_to_a_non_store_fd(tmp_path):
    p = tmp_path / "f"
    p.write_bytes(b"\0" * 100_000)
    with open(p, "rb+") as f:
        with pytest.raises(exc.InvalidSegmentError):
            ObjectStore.attach(f.fileno())


def test_unpicklable_value(store):
    import threading

    from shoal.serialization import SerializationError

    with pytest.raises(SerializationError, match="lock"):
        store.put({"lock": threading.Lock()})
    assert store.statistics().num_objects == 0


def test_sealed_mask_and_seal_sequence(store):
    a, b = store.put(1), oid()
    w = store.create(b, 1)
    assert store.raw.sealed_mask([a, b]) == b"\x01\x00"
    seq = store.raw.seal_sequence()
    assert store.raw.wait_seal_after(seq, timeout=0.01) is False
    w.seal()
    assert store.raw.wait_seal_after(seq, timeout=1) is True
    assert store.raw.sealed_mask([a, b]) == b"\x01\x01"


def test_every_store_exception_pickles():
    errors = [
        exc.ObjectExistsError("x"),
        exc.ObjectNotFoundError("x"),
        exc.ObjectStateError("x"),
        exc.StoreFullError(1, 2, 3, 4, "d"),
        exc.ObjectTooLargeError(5, 2, 0, 0),
        exc.ObjectTableFullError(1, 2, 3, 4, "16"),
        exc.TooManyClientsError("x"),
        exc.StoreClosedError("x"),
        exc.StoreForkedError("x"),
        exc.InvalidSegmentError("x"),
        exc.GetTimeoutError("x"),
    ]
    for e in errors:
        back = pickle.loads(pickle.dumps(e))
        assert type(back) is type(e) and str(back) == str(e)
