"""A model test: random sequences of put, get, delete and reads that keep
arrays alive (pinning them), on a store small enough that spilling and
fallback happen all the time, checked against a dict. After each sequence,
dropping every ref leaves no object and no spill file."""

from __future__ import annotations

import os

import numpy as np
import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from tests._child import wait_until

pytestmark = pytest.mark.timeout(300)

MiB = 1 << 20
_runtime = {}


def make_value(kind: str, size: int, seed: int):
    if kind == "numpy":
        return np.random.default_rng(seed).integers(0, 1 << 30, size // 8 + 1)
    if kind == "bytes":
        return bytes([seed % 256]) * size
    return {"seed": seed, "items": list(range(size // 64))}


def equal(a, b) -> bool:
    if isinstance(a, np.ndarray):
        return isinstance(b, np.ndarray) and np.array_equal(a, b)
    return a == b


class SpillingStore(RuleBasedStateMachine):
    def __init__(self):
        super().__init__()
        self.ray = _runtime["ray"]
        self.model: dict = {}  # ref -> value
        self.pinned: list = []  # (array from get, its expected value)

    def pick(self, data):
        """One of the refs (drawn as an index: hypothesis keeps what it
        draws, and a ref it kept would keep its object alive)."""
        refs = sorted(self.model, key=lambda r: r.hex())
        return refs[data.draw(st.integers(0, len(refs) - 1))]

    @rule(kind=st.sampled_from(["numpy", "bytes", "pickled"]),
          size=st.one_of(st.integers(1, 4096), st.integers(100_000, 3 * MiB), st.just(10 * MiB)),
          seed=st.integers(0, 1000))
    def put(self, kind, size, seed):
        value = make_value(kind, size, seed)
        self.model[self.ray.put(value)] = value

    @precondition(lambda self: self.model)
    @rule(data=st.data())
    def get(self, data):
        ref = self.pick(data)
        assert equal(self.ray.get(ref), self.model[ref])

    @precondition(lambda self: self.model)
    @rule(data=st.data())
    def get_and_keep(self, data):
        """A read whose array stays alive: the object is pinned meanwhile."""
        ref = self.pick(data)
        if isinstance(self.model[ref], np.ndarray):
            self.pinned.append((self.ray.get(ref), self.model[ref]))

    @precondition(lambda self: self.pinned)
    @rule()
    def let_go(self):
        self.pinned.pop(0)

    @precondition(lambda self: self.model)
    @rule(data=st.data())
    def delete(self, data):
        ref = self.pick(data)
        del self.model[ref]

    @precondition(lambda self: self.model)
    @rule(data=st.data())
    def read_in_a_task(self, data):
        ref = self.pick(data)
        assert self.ray.get(_runtime["digest"].remote(ref)) == digest(self.model[ref])

    @invariant()
    def pinned_arrays_are_intact(self):
        for got, expected in self.pinned:
            assert np.array_equal(got, expected)

    @invariant()
    def store_is_sound(self):
        rt = self.ray.objectref.current()
        rt.store.raw.validate()
        assert rt.store.statistics().bytes_in_use <= rt.store.statistics().capacity_bytes

    def teardown(self):
        self.model.clear()
        self.pinned.clear()
        rt = self.ray.objectref.current()

        def nothing_left() -> bool:
            # The last task's result can be read before its worker's DONE
            # arrives; until then the task's argument is still held.
            self.ray.util.memory_summary(stats_only=True)  # applies the drops and what workers said
            assert rt.spiller.settle()  # a round in progress drops what was deleted meanwhile
            return rt.store.statistics().num_spilled == 0

        wait_until(nothing_left, timeout=10, what=f"no spilled object ({rt.store.statistics()})")
        files = [n for f in rt.spill_folders.paths for n in os.listdir(f) if n != "lock"]
        assert files == []


def digest(value) -> str:
    import hashlib

    if isinstance(value, np.ndarray):
        return hashlib.sha1(value.tobytes()).hexdigest()
    return hashlib.sha1(repr(value).encode()).hexdigest()


def test_random_sequences_against_a_dict(tmp_path):
    import shoal

    shoal.init(num_cpus=2, object_store_memory=16 * MiB, object_spilling_directory=str(tmp_path),
               _system_config={"object_spilling_threshold": 0.4})
    _runtime["ray"] = shoal
    _runtime["digest"] = shoal.remote(digest)
    try:
        SpillingStore.TestCase.settings = settings(
            max_examples=25, stateful_step_count=30, deadline=None,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
        SpillingStore.TestCase().runTest()
        assert shoal.objectref.current().spiller.stats.objects_spilled > 0
    finally:
        _runtime.clear()
        shoal.shutdown()
