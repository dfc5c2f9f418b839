"""Python values <-> the byte layout of a stored object.

Pickle protocol 5 with cloudpickle (functions, lambdas, closures and classes
defined in ``__main__`` travel by value). Large contiguous buffers (numpy
arrays of any non-object dtype, pyarrow buffers, arrays and tables,
PickleBuffer) are taken out of band and written straight into the object:
one copy on put, none on get. Layout of an object's data::

    offset 0   header: magic b"SHL1", buffer count n (u32), in-band size (u64)
    16         n x (offset u64, size u64) of each out-of-band buffer
    16 + 16n   the in-band pickle stream
    ...        each buffer, starting on a 64-byte boundary

This layer never touches shared memory: it turns a value into
(metadata, size, parts to copy) and a buffer back into a value. Values
rebuilt from a read-only buffer are read-only views of it (numpy:
``flags.writeable`` is False) and keep the buffer alive.

Hook for the runtime: reducers of objects that must be tracked (ObjectRef)
call ``record_nested(obj)``; ``serialize`` returns what was recorded in
``Serialized.nested``.
"""

from __future__ import annotations

import io
import pickle
import struct
import sys
import threading
import types
from typing import Any, NamedTuple

import cloudpickle

from shoal import exceptions as exc
from shoal.words import a_type

#: Metadata tags (the store keeps them beside the data).
PICKLE = b"P"  # a pickled value
ERROR = b"E"  # a pickled exception, raised by whoever reads the object

#: What a stored value is, as the store's tag records it (memory_summary
#: shows it; nothing reads it to rebuild the value).
KIND_PICKLED, KIND_NUMPY, KIND_ARROW, KIND_BYTES, KIND_ERROR, KIND_DEFINITION = 1, 2, 3, 4, 5, 6
KIND_NAMES = {0: "raw", KIND_PICKLED: "pickled", KIND_NUMPY: "numpy", KIND_ARROW: "arrow",
              KIND_BYTES: "bytes", KIND_ERROR: "error", KIND_DEFINITION: "function"}

ALIGNMENT = 64
MAGIC = b"SHL1"
_header = struct.Struct("<4sIQ")
_entry = struct.Struct("<QQ")

# Exact types whose pickle can hold no function, class or buffer: the C
# pickler handles them without cloudpickle's per-call setup.
_PLAIN = frozenset({int, float, str, bool, type(None), complex})
_DYNAMIC = "<dynamic-code>"


class Serialized(NamedTuple):
    """A value ready to be written: total data size, (offset, buffer) parts
    to copy in, metadata tag, the objects recorded by record_nested, and
    what the value is (a KIND_* number)."""

    size: int
    parts: list
    metadata: bytes
    nested: list
    kind: int = KIND_PICKLED


def kind_of(value: Any, metadata: bytes = PICKLE) -> int:
    """The KIND_* of a value (by its top-level type)."""
    if metadata == ERROR:
        return KIND_ERROR
    cls = type(value)
    if cls is bytes or cls is bytearray or cls is memoryview:
        return KIND_BYTES
    module = cls.__module__
    if module.startswith("numpy") and sys.modules.get("numpy") and isinstance(value, sys.modules["numpy"].ndarray):
        return KIND_NUMPY
    if module.startswith("pyarrow"):
        return KIND_ARROW
    return KIND_PICKLED


class SerializationError(TypeError):
    """A value could not be pickled (its message names the value's type)."""


#: What to do about a value that does not pickle (the end of every such message).
UNPICKLABLE_HINT = (
    "Objects holding locks, sockets, open files or C resources cannot be sent to other "
    "processes; create them inside the task or actor instead, or register a serializer "
    "for their class (shoal.util.register_serializer).")


_local = threading.local()


def record_nested(obj: Any) -> None:
    """Called by a reducer: note `obj` as nested in the value being
    serialized in this thread (no-op outside serialize)."""
    stack = getattr(_local, "stack", None)
    if stack:
        stack[-1].append(obj)


def _align(n: int) -> int:
    return (n + ALIGNMENT - 1) & ~(ALIGNMENT - 1)


def _rebuild_ndarray(buf: Any, dtype: Any, shape: tuple, order: str, cls: type | None) -> Any:
    import numpy as np

    arr = np.frombuffer(buf, dtype=dtype).reshape(shape, order=order)
    return arr if cls is None else arr.view(cls)


def _reduce_ndarray(np: Any, arr: Any) -> Any:
    """Out-of-band reduction for numpy arrays of any dtype but object
    (numpy's own keeps datetime64 and timedelta64 arrays in band)."""
    cls = type(arr)
    if cls is not np.ndarray and cls is not np.recarray and cls is not np.memmap:
        return NotImplemented
    dtype = arr.dtype
    if dtype.hasobject or dtype.itemsize == 0:
        return NotImplemented
    if arr.flags.c_contiguous:
        order = "C"
    elif arr.flags.f_contiguous:
        order = "F"
    else:
        return NotImplemented  # a strided view: numpy copies it in band
    flat = arr.view(np.ndarray).ravel(order="K").view(np.uint8)
    keep = np.recarray if cls is np.recarray else None
    return _rebuild_ndarray, (pickle.PickleBuffer(flat), dtype, arr.shape, order, keep)


def _restore_filename(code: types.CodeType, filename: str) -> types.CodeType:
    return code.replace(co_filename=filename)




#: type -> (serializer, deserializer) registered by register_serializer.
_custom: dict[type, tuple[Any, Any]] = {}


def register_serializer(cls: type, *, serializer: Any, deserializer: Any) -> None:
    """Serialize instances of exactly `cls` as ``serializer(obj)`` (any
    picklable value) and rebuild them with ``deserializer(value)``, in this
    process (as Ray's ray.util.register_serializer). The deserializer
    travels with each value, so the reading process needs no registration.
    Useful for classes that do not pickle (they hold a lock, a C handle)."""
    if not isinstance(cls, type):
        raise TypeError(f"register_serializer() takes a class, not {cls!r}")
    if not callable(serializer) or not callable(deserializer):
        raise TypeError("serializer and deserializer must be callables")
    _custom[cls] = (serializer, deserializer)


def deregister_serializer(cls: type) -> None:
    """Undo register_serializer(cls) (no error if none was registered)."""
    _custom.pop(cls, None)


def _rebuild_custom(deserializer: Any, state: Any) -> Any:
    return deserializer(state)


class _Pickler(cloudpickle.Pickler):
    def reducer_override(self, obj: Any) -> Any:
        if _custom:
            entry = _custom.get(type(obj))
            if entry is not None:
                return _rebuild_custom, (entry[1], entry[0](obj))
        np = sys.modules.get("numpy")  # no array can exist before numpy is imported
        if np is not None and isinstance(obj, np.ndarray):
            reduced = _reduce_ndarray(np, obj)
            if reduced is not NotImplemented:
                return reduced
        elif isinstance(obj, BaseException):
            cls = type(obj)
            if cls.__reduce__ is BaseException.__reduce__ and cls.__module__ != "builtins":
                # Default exception pickling calls cls(*args), which fails for
                # classes whose __init__ takes other arguments; rebuild the
                # instance without calling __init__, attributes included.
                return exc.rebuild_exception, (cls, obj.args, obj.__dict__ or None)
        elif type(obj) is types.CodeType and obj.co_filename != _DYNAMIC:
            # cloudpickle blanks the file name of code it ships; keep it, so
            # that tracebacks from workers name the user's file and line.
            return _restore_filename, (obj.replace(co_filename=_DYNAMIC), obj.co_filename)
        return super().reducer_override(obj)


def _pickle(value: Any, buffers: list) -> bytes:
    if type(value) in _PLAIN:
        return pickle.dumps(value, protocol=5)
    f = io.BytesIO()
    _Pickler(f, protocol=5, buffer_callback=buffers.append).dump(value)
    return f.getvalue()


def serialize(value: Any, metadata: bytes = PICKLE) -> Serialized:
    """Lay out `value` for the store. Raises SerializationError (a TypeError)
    if it cannot be pickled."""
    buffers: list = []
    nested: list = []
    stack = getattr(_local, "stack", None)
    if stack is None:
        stack = _local.stack = []
    stack.append(nested)
    try:
        inband = _pickle(value, buffers)
    except Exception as e:
        raise SerializationError(f"cannot serialize {a_type(value)}: {e}. {UNPICKLABLE_HINT}") from e
    finally:
        stack.pop()
    kind = KIND_PICKLED if type(value) in _PLAIN else kind_of(value, metadata)
    if not buffers:
        head = _header.pack(MAGIC, 0, len(inband))
        return Serialized(len(head) + len(inband), [(0, head + inband)], metadata, nested, kind)
    raws = []
    for b in buffers:
        try:
            raws.append(b.raw())
        except BufferError:  # not contiguous: copy it into a contiguous one
            raws.append(memoryview(bytes(b)))
    table_end = _header.size + _entry.size * len(raws)
    offset = _align(table_end + len(inband))
    head = bytearray(_header.pack(MAGIC, len(raws), len(inband)))
    parts = []
    for raw in raws:
        head += _entry.pack(offset, raw.nbytes)
        parts.append((offset, raw))
        offset = _align(offset + raw.nbytes)
    head += inband
    parts.insert(0, (0, head))
    return Serialized(offset, parts, metadata, nested, kind)


def deserialize(data: Any, metadata: bytes = PICKLE, what: Any = None) -> Any:
    """Rebuild a value from an object's data (any buffer; zero copy: the
    value's arrays are views of `data`). An ERROR object comes back as the
    exception instance; raising it is the caller's choice.

    what: names the object, for errors: its ID (bytes), a description
    (str), or a function giving one (made only on failure, off the hot
    path). When given, any failure raises ObjectDeserializationError
    naming it and the cause (None: the failure itself is raised)."""
    if what is None:
        return _deserialize(data)
    try:
        return _deserialize(data)
    except Exception as e:
        raise _deserialization_error(what, e) from e


_MISSING = (ImportError, AttributeError)  # a class or function the reader cannot find
_CORRUPT = (pickle.UnpicklingError, EOFError, ValueError, IndexError, KeyError, struct.error, OverflowError,
            UnicodeDecodeError, MemoryError)


def _deserialization_error(what: Any, e: Exception) -> exc.ObjectDeserializationError:
    import os

    if isinstance(what, bytes):
        what = f"object {what.hex()}"
    elif callable(what):
        what = what()

    kind = "missing" if isinstance(e, _MISSING) else "corrupt" if isinstance(e, _CORRUPT) else "other"
    return exc.ObjectDeserializationError(what, f"{type(e).__name__}: {e}", os.getpid(), kind)


def _deserialize(data: Any) -> Any:
    view = memoryview(data)
    if view.format != "B" or view.ndim != 1:
        view = view.cast("B")
    magic, nbuf, inband_size = _header.unpack_from(view, 0)
    if magic != MAGIC:
        raise ValueError("not a shoal object: bad header")
    start = _header.size + _entry.size * nbuf
    inband = view[start : start + inband_size]
    if nbuf == 0:
        return pickle.loads(inband)
    buffers = []
    for k in range(nbuf):
        off, size = _entry.unpack_from(view, _header.size + _entry.size * k)
        buffers.append(view[off : off + size])
    return pickle.loads(inband, buffers=buffers)


def dumps(value: Any) -> bytes:
    """The object layout of `value` as one bytes string (for inline
    transport of small values)."""
    s = serialize(value)
    if len(s.parts) == 1:
        return bytes(s.parts[0][1])
    out = bytearray(s.size)
    for off, part in s.parts:
        mv = memoryview(part).cast("B")
        out[off : off + mv.nbytes] = mv
    return bytes(out)
