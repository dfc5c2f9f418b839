"""Serialization: pickle 5 with out-of-band buffers, zero copy on read,
cloudpickle for code, and the hook that records nested objects."""

from __future__ import annotations

import pickle

import numpy as np
import pyarrow as pa
import pytest

from shoal import serialization
from shoal.serialization import deserialize, serialize

pytestmark = pytest.mark.timeout(60)

DTYPES = [
    np.bool_, np.int8, np.uint8, np.int16, np.uint16, np.int32, np.uint32, np.int64, np.uint64,
    np.float16, np.float32, np.float64, np.longdouble, np.complex64, np.complex128,
    np.clongdouble, "datetime64[ns]", "timedelta64[s]", "S7", "U5", "V8",
    [("x", np.int32), ("y", np.float64)],
]


def roundtrip_through_store(store, value):
    return store.get(store.put(value))


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_numpy_every_dtype_zero_copy(store, dtype):
    a = np.zeros(1000, dtype=dtype)
    a.view(np.uint8)[:] = np.arange(a.nbytes, dtype=np.uint64).astype(np.uint8)
    s = serialize(a)
    assert len(s.parts) == 2, "the array's data must travel out of band"
    back = roundtrip_through_store(store, a)
    assert back.dtype == a.dtype and back.shape == a.shape
    assert back.tobytes() == a.tobytes()
    assert not back.flags.writeable
    buf = store.get_buffer(store.put(a))
    assert np.shares_memory(deserialize(buf, buf.metadata), np.frombuffer(buf, np.uint8))


def test_out_of_band_buffers_are_64_byte_aligned(store):
    value = [np.arange(n, dtype=np.uint8) for n in (1, 3, 100, 1000)]
    for arr in roundtrip_through_store(store, value):
        assert arr.ctypes.data % 64 == 0


def test_recarray_and_zero_dim(store):
    rec = np.rec.array([(1, 2.0), (3, 4.0)], dtype=[("a", "i4"), ("b", "f8")])
    back = roundtrip_through_store(store, rec)
    assert isinstance(back, np.recarray) and back.a[1] == 3
    scalar = np.array(7.5)
    assert roundtrip_through_store(store, scalar) == 7.5


def test_multidimensional_and_fortran_order(store):
    c = np.arange(24.0).reshape(2, 3, 4)
    f = np.asfortranarray(c)
    back_c, back_f = roundtrip_through_store(store, (c, f))
    assert (back_c == c).all() and (back_f == f).all()
    assert back_f.flags.f_contiguous and not back_f.flags.writeable


def test_non_contiguous_array_is_copied_in_band(store):
    a = np.arange(100)[::3]
    assert len(serialize(a).parts) == 1
    assert (roundtrip_through_store(store, a) == a).all()


def test_object_dtype_falls_back_to_in_band(store):
    a = np.array([1, "two", {"three": 3}, None], dtype=object)
    assert len(serialize(a).parts) == 1
    back = roundtrip_through_store(store, a)
    assert list(back) == list(a)


def test_pyarrow_zero_copy(store):
    table = pa.table({"a": np.arange(10_000), "b": [str(i) for i in range(10_000)]})
    buf = store.get_buffer(store.put(table))
    back = deserialize(buf, buf.metadata)
    assert back.equals(table)
    base, length = store.raw.mapping
    data_address = back.column("a").chunks[0].buffers()[1].address
    assert base <= data_address < base + length  # a view of the store, no copy
    arr = pa.array(np.arange(100.0))
    assert roundtrip_through_store(store, arr).equals(arr)
    raw = pa.py_buffer(b"x" * 10_000)
    assert roundtrip_through_store(store, raw).to_pybytes() == raw.to_pybytes()


def test_bytes_and_pickle_buffer(store):
    data = b"\x00\x01" * 50_000
    assert roundtrip_through_store(store, data) == data
    pb = pickle.PickleBuffer(bytearray(b"abc" * 1000))
    back = roundtrip_through_store(store, pb)
    assert bytes(back) == b"abc" * 1000


def test_functions_closures_lambdas_and_main_classes(store):
    k = 10

    def closure(x):
        return x + k

    class Local:
        def __init__(self, v):
            self.v = v

    f, g, obj = roundtrip_through_store(store, (closure, lambda y: y * 2, Local(5)))
    assert f(1) == 11 and g(4) == 8 and obj.v == 5


def test_scalars_and_containers(store):
    values = [0, -1, 2**100, 1.5, "text", "", None, True, 3 + 4j, (1, (2, [3])), {"k": {1, 2}}, frozenset()]
    for v in values:
        assert roundtrip_through_store(store, v) == v


def test_nested_hook_records_objects():
    class Tracked:
        def __init__(self, name):
            self.name = name

        def __reduce__(self):
            serialization.record_nested(self)
            return (Tracked, (self.name,))

    a, b = Tracked("a"), Tracked("b")
    s = serialize({"x": [a, {"y": b}], "z": 1})
    assert [t.name for t in s.nested] == ["a", "b"]
    assert serialize([1, 2]).nested == []
    serialization.record_nested(a)  # outside serialize: ignored


def test_nested_hook_is_per_call_when_nested():
    class Inner:
        def __reduce__(self):
            serialization.record_nested(self)
            return (Inner, ())

    class Outer:
        def __reduce__(self):
            inner = serialize(Inner())  # a serialize inside a reducer
            assert len(inner.nested) == 1
            serialization.record_nested(self)
            return (Outer, ())

    assert len(serialize(Outer()).nested) == 1


def test_dumps_matches_store_layout():
    value = {"arr": np.arange(10), "s": "x"}
    blob = serialization.dumps(value)
    back = deserialize(blob)
    assert (back["arr"] == value["arr"]).all() and back["s"] == "x"


def test_bad_header_is_rejected():
    with pytest.raises(ValueError, match="bad header"):
        deserialize(b"\0" * 32)
