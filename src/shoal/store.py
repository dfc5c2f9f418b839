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

With spilling configured (``configure_spilling``, done by the runtime in
every process), a put that does not fit asks the spiller for room and
waits for its round; if the round runs dry, or the object is larger than
the store, the object is written to a file of its own instead (fallback
allocation). get() of a spilled object reads it from its file.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

from shoal import config, ids, serialization
from shoal import exceptions as exc
from shoal._store._core import ID_SIZE, MAX_CLIENTS, ObjectBuffer, Store, WritableBuffer  # noqa: F401
from shoal.spill.files import DISK_FULL, SpillFiles

#: Seconds a put waits for one spill round before it stops waiting and
#: writes its object to a file of its own (the spiller is stuck or gone).
SPILL_ROUND_WAIT_S = 60.0

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
        self._spill: SpillFiles | None = None
        #: () -> text naming what holds the memory, for a full store's error
        #: (the runtime installs one that knows the references)
        self.describe_holders: Callable[[], str] | None = None

    def configure_spilling(self, files: SpillFiles | None) -> None:
        """Read spilled objects from, and write objects that do not fit to,
        `files` (None: no spilling; a full store raises ObjectStoreFullError)."""
        self._spill = files
        self._store.set_spill_reader(self._read_spilled if files is not None else None)

    def _read_spilled(self, oid: bytes, location: int, data_size: int, metadata_size: int):
        """get() of a spilled object. A large one comes back into the store
        when there is room now: every process then reads it there, it costs
        no memory beyond the store, and spilling it again costs no write
        (its file stays). Otherwise it is read from its file: mapped
        (zero copy from the page cache) if large, copied if small."""
        if data_size + metadata_size >= self._spill.map_bytes:
            buf = self._restore(oid, location, data_size, metadata_size)
            if buf is not None:
                return buf
        return self._spill.read(oid, location, data_size, metadata_size)

    def _restore(self, oid: bytes, location: int, data_size: int, metadata_size: int) -> ObjectBuffer | None:
        """`oid` back in the store, pinned; None if one spill round cannot
        make room for it, or another reader is bringing it back. (Objects
        read back before are the first to make room: letting them go costs
        no write.)"""
        files, raw = self._spill, self._store
        metadata = bytearray(metadata_size)
        if metadata_size:
            files.read_into(location, memoryview(metadata), skip=data_size)
        copy_id = ids.restore_copy_id(oid)
        copy = None
        for attempt in range(2):
            try:
                copy = raw.create(copy_id, data_size, bytes(metadata))
                break
            except exc.ObjectExistsError:
                return None
            except exc.ObjectTooLargeError:
                return None
            except exc.StoreFullError:
                if attempt:
                    return None
                done = raw.request_space(data_size + metadata_size + 64)
                woken, exhausted = raw.wait_space(done, SPILL_ROUND_WAIT_S)
                if exhausted or not woken:
                    return None
        try:
            with memoryview(copy) as view:
                files.read_into(location, view)
        except BaseException:
            copy.abort()
            raise
        return raw.restore_commit(oid, copy)

    @property
    def spill_files(self) -> SpillFiles | None:
        return self._spill

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
        """Store an already serialized value under `object_id`. With spilling
        configured, a value that does not fit waits for the spiller to make
        room, and goes to a file of its own if it cannot."""
        try:
            self._store.put_parts(object_id, s.size, s.parts, s.metadata, evictable=evictable,
                                  threads=config.copy_threads(s.size), tag=s.kind)
        except exc.StoreFullError as full:
            if self._spill is None or isinstance(full, exc.ObjectTableFullError):
                raise self._full_error(full) from None
            self._put_spilling(object_id, s, evictable, full)

    def _put_spilling(self, object_id: bytes, s: serialization.Serialized, evictable: bool,
                      full: exc.StoreFullError) -> None:
        raw = self._store
        need = s.size + len(s.metadata) + 64  # the block header
        if not isinstance(full, exc.ObjectTooLargeError):
            while True:
                done = raw.request_space(need)
                woken, exhausted = raw.wait_space(done, SPILL_ROUND_WAIT_S)
                try:
                    raw.put_parts(object_id, s.size, s.parts, s.metadata, evictable=evictable,
                                  threads=config.copy_threads(s.size), tag=s.kind)
                    return
                except exc.ObjectTableFullError as again:
                    raise self._full_error(again) from None
                except exc.StoreFullError:
                    if exhausted or not woken:
                        break  # nothing more will be spilled: a file of its own
        self._put_fallback(object_id, s)

    def _put_fallback(self, object_id: bytes, s: serialization.Serialized) -> None:
        files = self._spill
        try:
            location = files.write_object(self._store.unique_number(), s.size, s.parts, s.metadata)
        except OSError as e:
            raise self._disk_error(object_id, s.size + len(s.metadata), e) from e
        try:
            self._store.create_spilled(object_id, s.size, len(s.metadata), location, tag=s.kind)
        except BaseException:
            files.forget(location)
            raise

    def _holders(self) -> str:
        """What holds the memory, in a sentence ("" if unknown)."""
        try:
            if self.describe_holders is not None:
                return self.describe_holders()
            return self._largest_objects()
        except Exception:  # a message must not fail for want of detail
            return ""

    def _largest_objects(self) -> str:
        """The store's own view, where no runtime knows the references (a
        worker): its three largest objects and which processes read them."""
        raw = self._store
        pids = raw.client_pids()
        objects = sorted((o for o in raw.list_objects() if o[6]), key=lambda o: -o[6])[:3]
        parts = []
        for oid, _state, _flags, _npins, _data, _meta, block, _loc, slots in objects:
            readers = ", ".join(str(pids.get(s, "?")) for s in slots)
            parts.append(f"{exc.format_bytes(block)} (object {oid.hex()}, "
                         + (f"read now by pid {readers})" if readers else "not read now: kept by references)"))
        if not parts:
            return ""
        return ("The largest objects in the store: " + "; ".join(parts)
                + ". The driver's shoal.util.memory_summary() shows who holds each.")

    def _full_error(self, full: exc.StoreFullError) -> exc.StoreFullError:
        """`full`, with what holds the memory added to its text."""
        if isinstance(full, (exc.ObjectTableFullError, exc.ObjectTooLargeError)):
            return full  # who holds memory does not matter: it can never fit
        holders = self._holders()
        if not holders:
            return full
        detail = f"{full.detail} {holders}" if full.detail else holders
        return type(full)(full.requested, full.capacity, full.in_use, full.pinned, detail)

    def _disk_error(self, object_id: bytes, nbytes: int, e: OSError) -> BaseException:
        """The error for an object that fits neither in the store nor in a
        file: OutOfDiskError when the disk is full, else ObjectStoreFullError."""
        import shutil

        gib = exc.format_bytes
        folder = self._spill.folders[0]
        st = self.statistics()
        holders = self._holders()
        if e.errno not in DISK_FULL:  # a broken spill directory, not a full one
            return exc.StoreFullError(
                nbytes, st.capacity_bytes, st.bytes_in_use, st.bytes_pinned,
                f"Writing it to a file in {folder} failed too: {e}. {holders}".strip())
        try:
            free = gib(shutil.disk_usage(folder).free)
        except OSError:
            free = "unknown"
        return exc.OutOfDiskError(
            f"object {object_id.hex()} ({gib(nbytes)}) fits neither in the object store (capacity "
            f"{gib(st.capacity_bytes)}, {gib(st.bytes_in_use)} in use, {gib(st.bytes_pinned)} of it "
            f"pinned by readers) nor on disk: writing it to {folder} failed: {e.strerror or e} (free "
            f"space: {free}; {gib(st.bytes_spilled)} spilled already, in {st.num_spilled} objects). "
            f"{holders + ' ' if holders else ''}Free objects you no longer need (drop their "
            f"references), or spill to a larger disk (init(object_spilling_directory=...)).")

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
        return serialization.deserialize(buf, buf.metadata, object_id)

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
        when its last reader releases it (a spilled object's file bytes go)."""
        location = self._store.delete(object_id)
        if location is not None and self._spill is not None:
            self._spill.forget(location)

    def evict(self, nbytes: int) -> int:
        """Evict unpinned evictable objects (least recently used first) until
        `nbytes` are freed; returns the bytes freed."""
        return self._store.evict(nbytes)

    def statistics(self) -> StoreStatistics:
        """A snapshot of the store's counters."""
        return StoreStatistics(**self._store.statistics())

