"""Model-based tests: long random sequences of store operations checked
against a plain Python model, with the C invariants validated as they go.

The model knows every object's state, bytes and pins. Eviction is the one
thing it cannot predict, so it checks its rules instead: only sealed,
unpinned, evictable objects may disappear, and a create fails for lack of
room only when nothing evictable is left and no free block is big enough.
"""

from __future__ import annotations

import random

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from shoal import exceptions as exc
from shoal.store import ObjectStore

CAPACITY = 1 << 20
MAX_OBJECTS = 64


class Model:
    """The store as a dict, driven by the same operations."""

    def __init__(self, store: ObjectStore, rng: random.Random):
        self.store = store
        self.rng = rng
        self.objects: dict[bytes, dict] = {}  # id -> state, data, evictable, writer
        self.pins: list[tuple[bytes, object]] = []  # (id, buffer) held now
        self.deleted_pinned: dict[int, bytes] = {}  # id(buffer) -> data

    def new_id(self) -> bytes:
        return self.rng.randbytes(20)

    def pinned(self, oid: bytes) -> bool:
        return any(i == oid for i, _ in self.pins)

    def create(self, size: int, evictable: bool) -> None:
        oid = self.new_id()
        data = self.rng.randbytes(size)
        try:
            w = self.store.create(oid, size, evictable=evictable)
        except (exc.StoreFullError,) as e:
            stats = self.store.statistics()
            if isinstance(e, exc.ObjectTableFullError):
                assert stats.num_objects + stats.num_deleted_pinned == MAX_OBJECTS
            elif not isinstance(e, exc.ObjectTooLargeError):
                assert stats.bytes_evictable == 0, "failed while evictable objects remained"
                need = (max(size, 1) + 63) // 64 * 64  # payloads take whole 64-byte units
                assert stats.largest_free_block < need
            self.forget_evicted()
            return
        w.write(0, data)
        self.objects[oid] = {"state": "created", "data": data, "evictable": evictable, "writer": w}
        self.forget_evicted()

    def seal(self, oid: bytes) -> None:
        o = self.objects[oid]
        o["writer"].seal()
        o["writer"].release()
        o["writer"] = None
        o["state"] = "sealed"

    def abort(self, oid: bytes) -> None:
        self.objects.pop(oid)["writer"].abort()
        with pytest.raises(exc.ObjectNotFoundError):
            self.store.get_buffer(oid)

    def get(self, oid: bytes) -> None:
        o = self.objects[oid]
        if o["state"] == "created":
            with pytest.raises(exc.GetTimeoutError):
                self.store.get_buffer(oid)
            return
        buf = self.store.get_buffer(oid)
        assert bytes(buf) == o["data"]
        self.pins.append((oid, buf))

    def release(self, k: int) -> None:
        oid, buf = self.pins.pop(k)
        data = self.deleted_pinned.pop(id(buf), None)
        if data is not None:
            assert bytes(buf) == data  # a deleted object's memory is intact while pinned
        buf.release()

    def delete(self, oid: bytes) -> None:
        o = self.objects[oid]
        if o["state"] == "created":
            with pytest.raises(exc.ObjectStateError):
                self.store.delete(oid)
            return
        self.store.delete(oid)
        for i, buf in self.pins:
            if i == oid:
                self.deleted_pinned[id(buf)] = o["data"]
        del self.objects[oid]
        assert not self.store.contains(oid)

    def evict(self, nbytes: int) -> None:
        self.store.evict(nbytes)
        self.forget_evicted()

    def forget_evicted(self) -> None:
        for oid, o in list(self.objects.items()):
            if o["state"] == "sealed" and not self.store.contains(oid):
                assert o["evictable"] and not self.pinned(oid), "a protected object disappeared"
                del self.objects[oid]

    def check(self) -> None:
        self.store.raw.validate()
        stats = self.store.statistics()
        sealed = [o for o in self.objects.values() if o["state"] == "sealed"]
        assert stats.num_sealed == len(sealed)
        assert stats.num_created == len(self.objects) - len(sealed)
        for oid, o in self.objects.items():
            assert self.store.contains(oid) == (o["state"] == "sealed")
        if not self.pins and stats.num_created == 0:
            assert stats.bytes_pinned == 0

    def close(self) -> None:
        for _, buf in self.pins:
            buf.release()
        for oid, o in list(self.objects.items()):
            if o["writer"] is not None:
                o["writer"].release()  # unsealed: aborted
                del self.objects[oid]
        self.pins.clear()


SIZES = [0, 1, 63, 64, 65, 200, 1000, 4096, 5000, 20_000, 100_000, 300_000]


@pytest.mark.timeout(120)
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_random_operations_against_model(seed):
    rng = random.Random(seed)
    with ObjectStore.open(CAPACITY, max_objects=MAX_OBJECTS) as store:
        m = Model(store, rng)
        for step in range(4000):
            created = [i for i, o in m.objects.items() if o["state"] == "created"]
            ids = list(m.objects)
            op = rng.random()
            if op < 0.30 or not ids:
                m.create(rng.choice(SIZES), rng.random() < 0.5)
            elif op < 0.50 and created:
                m.seal(rng.choice(created))
            elif op < 0.53 and created:
                m.abort(rng.choice(created))
            elif op < 0.70:
                m.get(rng.choice(ids))
            elif op < 0.82 and m.pins:
                m.release(rng.randrange(len(m.pins)))
            elif op < 0.97:
                m.delete(rng.choice(ids))
            else:
                m.evict(rng.choice(SIZES))
            if step % 50 == 0:
                m.check()
        m.check()
        m.close()
        m.check()


class StoreMachine(RuleBasedStateMachine):
    """The same model, driven by hypothesis so failures shrink to a minimal
    sequence."""

    def __init__(self):
        super().__init__()
        self.store = ObjectStore.open(CAPACITY, max_objects=MAX_OBJECTS)
        self.m = Model(self.store, random.Random(0))

    def teardown(self):
        self.m.close()
        self.store.close()

    @rule(size=st.sampled_from(SIZES), evictable=st.booleans())
    def create(self, size, evictable):
        self.m.create(size, evictable)

    @precondition(lambda self: any(o["state"] == "created" for o in self.m.objects.values()))
    @rule(data=st.data(), abort=st.booleans())
    def finish(self, data, abort):
        created = sorted(i for i, o in self.m.objects.items() if o["state"] == "created")
        oid = data.draw(st.sampled_from(created))
        self.m.abort(oid) if abort else self.m.seal(oid)

    @precondition(lambda self: self.m.objects)
    @rule(data=st.data())
    def get(self, data):
        self.m.get(data.draw(st.sampled_from(sorted(self.m.objects))))

    @precondition(lambda self: self.m.pins)
    @rule(data=st.data())
    def release(self, data):
        self.m.release(data.draw(st.integers(0, len(self.m.pins) - 1)))

    @precondition(lambda self: self.m.objects)
    @rule(data=st.data())
    def delete(self, data):
        self.m.delete(data.draw(st.sampled_from(sorted(self.m.objects))))

    @rule(nbytes=st.sampled_from(SIZES))
    def evict(self, nbytes):
        self.m.evict(nbytes)

    @invariant()
    def consistent(self):
        self.m.check()


TestStoreMachine = StoreMachine.TestCase
TestStoreMachine.settings = settings(
    max_examples=40,
    stateful_step_count=60,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
TestStoreMachine = pytest.mark.timeout(240)(TestStoreMachine)
