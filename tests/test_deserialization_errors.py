"""Objects that cannot be rebuilt where they are read (a class the reading
process cannot import, a corrupt pickle, a __setstate__ that raises) give
ObjectDeserializationError naming the object and the cause, and the
runtime goes on."""

from __future__ import annotations

import os
import pickle
import sys

import pytest

from shoal import exceptions as exc
from shoal import ids, serialization

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def driver_only_module(tmp_path):
    """A module the driver can import but its workers cannot (they were
    started before it was on sys.path)."""
    (tmp_path / "shoal_driver_only.py").write_text(
        "class Thing:\n    def __init__(self, v):\n        self.v = v\n")
    sys.path.insert(0, str(tmp_path))
    try:
        import shoal_driver_only

        yield shoal_driver_only
    finally:
        sys.path.remove(str(tmp_path))
        sys.modules.pop("shoal_driver_only", None)


class Fragile:
    def __init__(self):
        self.x = 1

    def __setstate__(self, state):
        raise RuntimeError("refusing to be rebuilt")


def _store_raw(rt, data: bytes):
    """A sealed object holding `data` as if it were a pickled value, and a ref to it."""
    from shoal.objectref import ObjectRef

    oid = ids.new_put_id()
    ref = ObjectRef(oid, rt)
    buf = rt.store.create(oid, len(data), serialization.PICKLE)
    memoryview(buf)[:] = data
    rt.store.seal(oid)
    del buf
    return ref


def _corrupt_pickle() -> bytes:
    data = bytearray(serialization.dumps({"a": list(range(50)), "b": "text" * 10}))
    data[20:40] = b"\xfe" * 20  # the pickle stream's opcodes, overwritten
    return bytes(data)


def test_an_argument_of_a_class_the_worker_cannot_import(ray, driver_only_module):
    @ray.remote
    def read(x):
        return x.v

    with pytest.raises(exc.ObjectDeserializationError) as info:
        ray.get(read.remote(driver_only_module.Thing(3)), timeout=60)
    e = info.value
    assert isinstance(e, exc.RaySystemError) and e.pid != os.getpid()  # (as Ray: a system error)
    text = str(e)
    assert "the arguments of read" in text and "No module named 'shoal_driver_only'" in text
    assert "PYTHONPATH" in text
    assert ray.get(read.remote(type("T", (), {"v": 4})()), timeout=60) == 4  # the worker goes on


def test_a_stored_object_of_a_class_the_worker_cannot_import_is_named(ray, driver_only_module):
    @ray.remote
    def read(x):
        return x.v

    ref = ray.put(driver_only_module.Thing(5))
    with pytest.raises(exc.ObjectDeserializationError, match=ref.hex()) as info:
        ray.get(read.remote(ref), timeout=60)
    assert "cannot import" in str(info.value)
    assert ray.get(ref, timeout=10).v == 5  # the driver can


def test_a_corrupt_pickle_read_by_the_driver(ray):
    from shoal import objectref

    ref = _store_raw(objectref.current(), _corrupt_pickle())
    with pytest.raises(exc.ObjectDeserializationError) as info:
        ray.get(ref, timeout=10)
    e = info.value
    assert ref.hex() in str(e) and "not a valid pickle" in str(e) and e.kind == "corrupt"
    assert isinstance(e.__cause__, Exception) and not isinstance(e.__cause__, exc.RayError)
    assert ray.get(ray.put([1, 2]), timeout=10) == [1, 2]


def test_a_corrupt_pickle_read_by_a_task_and_a_bad_header(ray):
    from shoal import objectref

    @ray.remote(max_retries=0)
    def read(x):
        return x

    rt = objectref.current()
    for data in (_corrupt_pickle(), b"NOPE" + b"\0" * 60):
        ref = _store_raw(rt, data)
        with pytest.raises(exc.ObjectDeserializationError, match=ref.hex()):
            ray.get(read.remote(ref), timeout=60)
    assert ray.get(read.remote(3), timeout=60) == 3


def test_a_value_whose_own_code_fails_to_rebuild(ray):
    @ray.remote
    def make():
        return Fragile()

    with pytest.raises(exc.ObjectDeserializationError, match="refusing to be rebuilt") as info:
        ray.get(make.remote(), timeout=60)
    assert info.value.kind == "other" and "__setstate__" in str(info.value)


def test_the_error_pickles():
    e = exc.ObjectDeserializationError("object ab", "ValueError: x", 12, "corrupt")
    back = pickle.loads(pickle.dumps(e))
    assert str(back) == str(e) and back.kind == "corrupt"
