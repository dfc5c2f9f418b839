"""The object store client: Python values in and out of shared memory.

Usable on its own, without the runtime::

    from shoal.store import ObjectStore
    store = ObjectStore.open(1 << 30)          # a new 1 GiB store
    oid = store.put(np.arange(10**6))          # one copy into shared memory
    arr = store.get(oid)                       # zero copy, read-only
    # in a child process that inherited or received store.fd:
    other = ObjectStore.attach(fd)

Every process of a store maps the same segment; create, seal, get and
release are calls into the C core (microseconds, no messages). Raw access
is there too: ``create`` returns a writable buffer to fill and seal;
``get_buffer`` returns a read-only buffer that pins the object until it
(and every view of it) is released.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from shoal import config, ids, serialization
from shoal import exceptions as exc
from shoal._store._core import ID_SIZE, ObjectBuffer, Store, WritableBuffer

__all__ = ["ID_SIZE", "ObjectBuffer", "ObjectStore", "StoreStatistics", "WritableBuffer"]


@dataclasses.dataclass(frozen=True)
class StoreStatistics:
    """A snapshot of a store's counters (sizes in bytes)."""

    capacity_bytes: int
    bytes_in_use: int  #: allocated blocks, headers included
    bytes_pinned: int  #: objects some process reads or writes now
    bytes_evictable: int  #: sealed, unpinned objects that may be evicted
    num_created: int  #: objects being written
    num_sealed: int  #: objects visible by ID
    num_deleted_pinned: int  #: deleted objects kept alive by readers
    num_evictions: int
    num_recoveries: int  #: crashes inside the store's lock recovered from
    num_clients: int  #: processes attached
    max_objects: int
    largest_free_block: int  #: biggest object that fits without eviction
    bytes_spillable: int = 0  #: sealed, unpinned objects that may be spilled
    num_spilled: int = 0  #: objects whose bytes are in files (fallback ones too)
    bytes_spilled: int = 0  #: their size
    num_fallback: int = 0  #: objects written to a file because they did not fit
    spill_watermark: int = 0  #: creates beyond this many bytes in use wake the spiller

    @property
    def num_objects(self) -> int:
        return self.num_created + self.num_sealed


class ObjectStore:
    """A process's handle on a shared-memory object store.

    Make one with ``ObjectStore.open(capacity_bytes)`` (a new store) or
    ``ObjectStore.attach(fd)`` (another process's store). Object IDs are
    bytes of length ``ID_SIZE``. Close with ``close()`` or a ``with`` block:
    this process's pins and unsealed objects are then released; sealed
    objects stay for the other processes.
    """

    def __init__(self, store: Store) -> None:
        self._store = store

    @classmethod
    def open(cls, capacity_bytes: int | None = None, *, max_objects: int | None = None) -> "ObjectStore":
        """Make a new store of `capacity_bytes` (None: 30% of memory, at most
        what /dev/shm has free) holding up to `max_objects` objects (None: a
        default from the capacity)."""
        if capacity_bytes is None:
            capacity_bytes = config.default_store_bytes()
        if not isinstance(capacity_bytes, int) or capacity_bytes <= 0:
            raise ValueError(f"capacity_bytes must be a positive int, not {capacity_bytes!r}")
        return cls(Store.new(capacity_bytes, max_objects=max_objects or 0))

    @classmethod
    def attach(cls, fd: int) -> "ObjectStore":
        """Attach to the store behind descriptor `fd` (inherited or received
        from the process that opened it); the caller keeps `fd`."""
        return cls(Store.attach(fd))

    @property
    def fd(self) -> int:
        """The descriptor to hand to other processes (close-on-exec: pass it
        explicitly, e.g. ``subprocess.Popen(..., pass_fds=[store.fd])``)."""
        return self._store.fd

    @property
    def raw(self) -> Store:
        """The underlying binding handle."""
        return self._store

    @property
    def closed(self) -> bool:
        return self._store.closed

    def close(self) -> None:
        """Release this process's pins and unsealed objects (once the last
        buffer it handed out is gone). Idempotent."""
        self._store.close()

    def __enter__(self) -> "ObjectStore":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # Values ------------------------------------------------------------

    def put(self, value: Any, object_id: bytes | None = None, *, evictable: bool = False) -> bytes:
        """Store `value` and return its ID (a fresh one if None). Large
        buffers are copied once, by several threads when big; `evictable`
        objects may be evicted (LRU) when space runs out and nobody reads
        them. Raises SerializationError for values that cannot be pickled,
        StoreFullError when there is no room; nothing stored is harmed."""
        if object_id is None:
            object_id = ids.new_put_id()
        s = serialization.serialize(value)
        self.put_serialized(object_id, s, evictable=evictable)
        return object_id

    def put_serialized(self, object_id: bytes, s: serialization.Serialized, *, evictable: bool = False) -> None:
        """Store an already serialized value under `object_id`."""
        self._store.put_parts(
            object_id, s.size, s.parts, s.metadata, evictable=evictable, threads=config.copy_threads(s.size)
        )

    def get(self, object_id: bytes, timeout: float | None = 0.0) -> Any:
        """The value stored under `object_id`, zero copy: arrays are read-only
        views of shared memory, kept pinned while they live.

        timeout: seconds to wait for the object to be sealed (0: do not wait,
        None: forever). Raises ObjectNotFoundError (timeout 0, no such object)
        or GetTimeoutError. A stored exception (ERROR object) is returned,
        not raised; see get_buffer and serialization.ERROR.
        """
        buf = self._store.get(object_id, timeout)
        # Views in the value keep the buffer (and its pin) alive; without
        # any, dropping our reference releases the pin now.
        return serialization.deserialize(buf, buf.metadata)

    def put_error(self, object_ids: list[bytes], error: BaseException) -> None:
        """Seal `error` as the value of each object that does not exist yet
        (readers of an ERROR object get the exception)."""
        s = serialization.serialize(error, serialization.ERROR)
        for oid in object_ids:
            try:
                self.put_serialized(oid, s)
            except (exc.ObjectExistsError, exc.StoreClosedError):
                pass
            except exc.StoreFullError as full:
                # Nothing else can report it: whoever waits for oid learns
                # of it only through a timeout.
                import warnings

                warnings.warn(f"could not store the error for object {oid.hex()} ({type(error).__name__}: "
                              f"{error}): {full}", RuntimeWarning, stacklevel=2)

    # Raw objects ---------------------------------------------------------

    def create(self, object_id: bytes, nbytes: int, metadata: bytes = b"", *, evictable: bool = False) -> WritableBuffer:
        """Allocate `nbytes` for a new object and return its writable buffer:
        fill it, then ``seal()``; dropping it unsealed aborts the object."""
        if nbytes < 0:
            raise ValueError(f"nbytes must be >= 0, not {nbytes}")
        return self._store.create(object_id, nbytes, metadata, evictable=evictable)

    def seal(self, object_id: bytes) -> None:
        """Publish an object this process created (immutable from now on)."""
        self._store.seal(object_id)

    def abort(self, object_id: bytes) -> None:
        """Drop an object this process created and has not sealed."""
        self._store.abort(object_id)

    def get_buffer(self, object_id: bytes, timeout: float | None = 0.0) -> ObjectBuffer:
        """A read-only buffer over a sealed object's data, pinning it until
        released (``.release()`` or garbage collection of it and its views).
        timeout as in get()."""
        return self._store.get(object_id, timeout)

    def contains(self, object_id: bytes) -> bool:
        """True if a sealed object with this ID is in the store."""
        return self._store.contains(object_id)

    def delete(self, object_id: bytes) -> None:
        """Remove a sealed object from view; its memory is freed at once, or
        when its last reader releases it."""
        self._store.delete(object_id)

    def evict(self, nbytes: int) -> int:
        """Evict unpinned evictable objects (least recently used first) until
        `nbytes` are freed; returns the bytes freed."""
        return self._store.evict(nbytes)

    def statistics(self) -> StoreStatistics:
        """A snapshot of the store's counters."""
        return StoreStatistics(**self._store.statistics())

