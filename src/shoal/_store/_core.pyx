# cython: language_level=3, embedsignature=True
"""Binding of the C object store (csrc/store.h): handles, buffers, errors.

Glue only: every status code becomes its own exception, buffers export the
object's memory through the buffer protocol (zero copy), and every C call
that can take more than a microsecond runs without the GIL. Policy (sizes,
thread counts, what to evict, serialization) lives in the Python layers.

Lifetime rules:
  * A buffer keeps its Store alive, and the Store stays mapped until the
    last buffer is gone, even after close(): memory under a live view is
    never unmapped or reused.
  * A handle belongs to the process that made it. In a forked child every
    call raises StoreForkedError; attach again with Store.attach(fd).
"""

cimport cython
from cpython.buffer cimport (PyBUF_FORMAT, PyBUF_ND, PyBUF_STRIDES, PyBUF_WRITABLE,
                             PyBUF_ANY_CONTIGUOUS, PyBuffer_Release, PyObject_GetBuffer)
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from cpython.exc cimport PyErr_CheckSignals
from libc.errno cimport errno
from libc.stdint cimport int32_t, int64_t, uint8_t, uint32_t, uint64_t
from libc.stdlib cimport free, malloc
from libc.string cimport memcpy

from shoal._store cimport _libstore as lib

import os
import time

from shoal import exceptions as exc

ID_SIZE = lib.STORE_ID_SIZE
ALIGNMENT = lib.STORE_ALIGNMENT
MAX_CLIENTS = lib.STORE_MAX_CLIENTS

cdef char *FORMAT_B = "B"

# Copies smaller than this run with the GIL held: releasing it costs more.
cdef uint64_t NOGIL_COPY_BYTES = 64 * 1024


cdef inline const uint8_t *id_ptr(object oid) except NULL:
    if type(oid) is not bytes:
        raise TypeError(f"an object ID must be bytes, not {type(oid).__name__}")
    if PyBytes_GET_SIZE(oid) != lib.STORE_ID_SIZE:
        raise ValueError(
            f"an object ID must be {lib.STORE_ID_SIZE} bytes long, not {PyBytes_GET_SIZE(oid)}")
    return <const uint8_t *>PyBytes_AS_STRING(oid)


cdef int64_t timeout_ms(object timeout) except -2:
    """Seconds (None = forever) to the C convention (-1 = forever)."""
    if timeout is None:
        return -1
    cdef double t = timeout
    if t != t or t < 0:
        raise ValueError(f"timeout must be None or >= 0 seconds, not {timeout!r}")
    if t == 0:
        return 0
    if t > 1e12:
        return -1
    cdef int64_t ms = <int64_t>(t * 1000.0)
    return ms + 1 if ms < t * 1000.0 or ms == 0 else ms


cdef object store_error(lib.store_status_t rc, Store store, object oid, uint64_t requested):
    """The exception for a status; oid and requested are for the message."""
    name = oid.hex() if isinstance(oid, bytes) else "?"
    if rc == lib.STORE_E_EXISTS:
        return exc.ObjectExistsError(f"object {name} already exists in the store")
    if rc == lib.STORE_E_NOT_FOUND:
        return exc.ObjectNotFoundError(
            f"object {name} is not in the store (never created, aborted, deleted or evicted)")
    if rc == lib.STORE_E_STATE:
        return exc.ObjectStateError(
            f"object {name} is in the wrong state for this operation (for example: sealed "
            f"twice, released or deleted before being sealed, aborted after being sealed)")
    if rc == lib.STORE_E_NOT_OWNER:
        return exc.ObjectStateError(
            f"object {name} is being created by another process: only its creator may "
            f"seal or abort it")
    if rc in (lib.STORE_E_FULL, lib.STORE_E_TOO_LARGE, lib.STORE_E_TABLE_FULL):
        stats = store.statistics() if store is not None and store._s != NULL else {}
        args = (requested, stats.get("capacity_bytes", 0), stats.get("bytes_in_use", 0),
                stats.get("bytes_pinned", 0))
        if rc == lib.STORE_E_TOO_LARGE:
            return exc.ObjectTooLargeError(*args)
        if rc == lib.STORE_E_TABLE_FULL:
            return exc.ObjectTableFullError(*args, str(stats.get("max_objects", "?")))
        return exc.StoreFullError(
            *args, f"The largest free block holds {stats.get('largest_free_block', 0)} bytes.")
    if rc == lib.STORE_E_CLIENTS_FULL:
        return exc.TooManyClientsError(
            f"all {lib.STORE_MAX_CLIENTS} client slots of the store are taken by live "
            f"processes; close stores in processes that no longer need them")
    if rc == lib.STORE_E_CLOSED:
        return exc.StoreClosedError("the store handle is closed")
    if rc == lib.STORE_E_BUSY:
        return exc.ObjectStateError(f"object {name} is being read by another buffer or process")
    if rc == lib.STORE_E_FORKED:
        return exc.StoreForkedError(
            "this store handle was made by the parent process before fork(); in the child, "
            "attach again with Store.attach(fd)")
    if rc == lib.STORE_E_BAD_SEGMENT:
        return exc.InvalidSegmentError(
            "the descriptor does not hold a shoal store segment of this version")
    if rc == lib.STORE_E_INVALID:
        return ValueError(f"invalid argument for object {name}")
    if rc == lib.STORE_E_SYS:
        err = errno
        return OSError(err, os.strerror(err))
    return exc.RaySystemError(
        f"object store: {lib.store_strerror(rc).decode()} (status {<int>rc}); this is a bug")


cdef inline int check(lib.store_status_t rc, Store store=None, object oid=None,
                      uint64_t requested=0) except -1:
    if rc != lib.STORE_OK:
        raise store_error(rc, store, oid, requested)
    return 0


cdef class Store:
    """A process's attachment to a shared-memory object store segment.

    Make a new segment with ``Store.new(capacity)``; attach to an existing
    one in another process with ``Store.attach(fd)`` (the descriptor is
    inherited across fork or received over a Unix socket). Object IDs are
    ``bytes`` of length ``ID_SIZE``.
    """
    cdef lib.store_t *_s
    cdef int _fd
    cdef Py_ssize_t _users  # live buffers and calls in flight
    cdef bint _closed
    cdef dict _exported  # oid -> WritableBuffer with live memoryviews
    cdef object _spill_reader  # see set_spill_reader
    cdef object __weakref__

    def __cinit__(self):
        self._s = NULL
        self._fd = -1
        self._exported = {}

    @staticmethod
    def new(uint64_t capacity, *, uint32_t max_objects=0):
        """Make a new segment with room for `capacity` bytes of objects and
        `max_objects` objects (0: a default from the capacity), and attach."""
        cdef int fd = -1
        cdef lib.store_status_t rc
        with nogil:
            rc = lib.store_segment_create(capacity, max_objects, &fd)
        if rc == lib.STORE_E_INVALID:
            raise ValueError(f"capacity must be between 128 bytes and 64 TiB, not {capacity}")
        check(rc)
        try:
            return Store.attach(fd)
        finally:
            os.close(fd)

    @staticmethod
    def attach(int fd):
        """Attach to the segment behind `fd` (which stays the caller's)."""
        cdef Store self = Store.__new__(Store)
        cdef int own = os.dup(fd)
        cdef lib.store_status_t rc
        with nogil:
            rc = lib.store_attach(own, &self._s)
        if rc != lib.STORE_OK:
            os.close(own)
            check(rc)
        self._fd = own
        return self

    @staticmethod
    def segment_size(uint64_t capacity, uint32_t max_objects=0):
        """Bytes of memory a segment for `capacity` and `max_objects` spans."""
        return lib.store_segment_size(capacity, max_objects)

    @property
    def fd(self):
        """This handle's descriptor of the segment (close-on-exec; pass it
        to children explicitly)."""
        self._enter()
        self._leave()
        return self._fd

    @property
    def closed(self):
        return self._closed

    @property
    def client_slot(self):
        self._enter()
        self._leave()
        return lib.store_client_slot(self._s)

    @property
    def mapping(self):
        """(address, length) of this process's mapping of the segment."""
        cdef uint8_t *base
        cdef uint64_t length
        self._enter()
        lib.store_mapping(self._s, &base, &length)
        self._leave()
        return (<size_t>base, length)

    cdef inline int _enter(self) except -1:
        if self._closed:
            raise exc.StoreClosedError("the store handle is closed")
        self._users += 1
        return 0

    cdef inline void _leave(self):
        self._users -= 1
        if self._closed and self._users == 0:
            self._detach()

    cdef void _detach(self):
        if self._s != NULL:
            with nogil:
                lib.store_detach(self._s)
            self._s = NULL
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def close(self):
        """Detach: release this process's pins and unsealed objects once the
        last buffer is gone. Idempotent."""
        if not self._closed:
            self._closed = True
            if self._users == 0:
                self._detach()

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.close()

    def __dealloc__(self):
        if self._s != NULL:
            lib.store_detach(self._s)
        if self._fd >= 0:
            os.close(self._fd)

    def create(self, oid, uint64_t data_size, metadata=b"", *, bint evictable=False, uint8_t tag=0):
        """Allocate an object of `data_size` bytes (plus `metadata`, copied
        now) and return a WritableBuffer for it. Seal it to publish it.
        `tag`: a number of the caller's (0-255) kept with the object and
        shown by list_objects."""
        cdef const uint8_t *idp = id_ptr(oid)
        cdef const uint8_t[::1] meta = metadata
        cdef uint64_t nmeta = meta.shape[0]
        cdef lib.store_object_t obj
        cdef lib.store_status_t rc
        cdef uint32_t flags = (lib.STORE_EVICTABLE if evictable else 0) | lib.STORE_TAG(tag)
        self._enter()
        try:
            with nogil:
                rc = lib.store_create(self._s, idp, data_size, nmeta, flags, &obj)
            check(rc, self, oid, data_size + nmeta)
        finally:
            self._leave()
        if nmeta:
            memcpy(obj.metadata, &meta[0], nmeta)
        return WritableBuffer._make(self, oid, obj)

    def put_parts(self, oid, uint64_t data_size, parts, metadata=b"", *,
                  bint evictable=False, int threads=1, uint8_t tag=0):
        """Create, fill, seal and release in one call: `parts` is a sequence
        of (offset, buffer) pairs copied into the object's data; buffers of
        at least a few MiB are copied by up to `threads` threads."""
        cdef const uint8_t *idp = id_ptr(oid)
        cdef const uint8_t[::1] meta = metadata
        cdef uint64_t nmeta = meta.shape[0]
        cdef lib.store_object_t obj
        cdef lib.store_status_t rc
        cdef uint32_t flags = (lib.STORE_EVICTABLE if evictable else 0) | lib.STORE_TAG(tag)
        self._enter()
        try:
            with nogil:
                rc = lib.store_create(self._s, idp, data_size, nmeta, flags, &obj)
            check(rc, self, oid, data_size + nmeta)
            try:
                if nmeta:
                    memcpy(obj.metadata, &meta[0], nmeta)
                for offset, part in parts:
                    copy_into(obj.data, data_size, offset, part, threads)
            except BaseException:
                lib.store_abort(self._s, idp)
                raise
            with nogil:
                rc = lib.store_seal_release(self._s, &obj)
            check(rc, self, oid)
        finally:
            self._leave()

    def seal(self, oid):
        """Make an object this process created immutable and visible."""
        cdef const uint8_t *idp = id_ptr(oid)
        cdef lib.store_status_t rc
        self._enter()
        try:
            with nogil:
                rc = lib.store_seal(self._s, idp)
            check(rc, self, oid)
        finally:
            self._leave()

    def abort(self, oid):
        """Drop an object this process created and has not sealed. Refused
        (ObjectStateError) while views of its WritableBuffer are alive."""
        cdef const uint8_t *idp = id_ptr(oid)
        cdef lib.store_status_t rc
        cdef WritableBuffer writer = self._exported.get(oid)
        if writer is not None:
            writer._refuse_with_views("abort")
        self._enter()
        try:
            rc = lib.store_abort(self._s, idp)
            check(rc, self, oid)
        finally:
            self._leave()

    def get(self, oid, timeout=0.0):
        """Pin a sealed object and return a read-only ObjectBuffer over it.

        timeout: seconds to wait for the object to be sealed; 0 (the default)
        does not wait, None waits forever. Raises ObjectNotFoundError when
        timeout is 0 and the object does not exist, GetTimeoutError when it
        is not sealed in time. Ctrl-C interrupts the wait.
        """
        cdef const uint8_t *idp = id_ptr(oid)
        cdef int64_t ms = timeout_ms(timeout)
        cdef lib.store_object_t obj
        cdef lib.store_status_t rc
        cdef int exists = 0
        cdef double deadline = 0
        self._enter()
        try:
            if ms == 0:
                rc = lib.store_get(self._s, idp, 0, &obj, &exists)
            else:
                if ms > 0:
                    deadline = time.monotonic() + ms / 1000.0
                while True:
                    with nogil:
                        rc = lib.store_get(self._s, idp, ms, &obj, &exists)
                    if rc != lib.STORE_E_INTERRUPTED:
                        break
                    PyErr_CheckSignals()
                    if ms > 0:
                        ms = max(1, <int64_t>((deadline - time.monotonic()) * 1000.0))
            if rc == lib.STORE_E_TIMEOUT:
                raise exc.GetTimeoutError(
                    f"object {oid.hex()} was not sealed within {timeout} s: "
                    + ("it exists but is still being written" if exists
                       else "no such object exists yet"))
            if rc == lib.STORE_SPILLED:
                return self._read_spilled(oid, &obj)
            check(rc, self, oid)
            return ObjectBuffer._make(self, obj)
        finally:
            self._leave()

    cdef object _read_spilled(self, object oid, lib.store_object_t *obj):
        reader = self._spill_reader
        if reader is None:
            raise exc.ObjectLostError(
                f"object {oid.hex()} was spilled out of the store, and this process was not told "
                f"where spilled objects are (set_spill_reader)")
        return reader(oid, obj.location, obj.data_size, obj.metadata_size)

    def set_spill_reader(self, reader):
        """get() of a spilled object returns reader(oid, location, data_size,
        metadata_size): a buffer with a ``metadata`` attribute, read from
        wherever `location` says. None: such a get raises ObjectLostError."""
        self._spill_reader = reader

    def contains(self, oid):
        """True if a sealed object with this ID is in the store."""
        cdef const uint8_t *idp = id_ptr(oid)
        cdef int out = 0
        self._enter()
        try:
            check(lib.store_contains(self._s, idp, &out), self, oid)
        finally:
            self._leave()
        return bool(out)

    def delete(self, oid):
        """Remove a sealed object from view; its memory is freed when the
        last reader releases it. Returns the location of a spilled object
        (whose bytes the caller now disposes of), else None."""
        cdef const uint8_t *idp = id_ptr(oid)
        cdef uint64_t where = lib.STORE_NO_LOCATION
        self._enter()
        try:
            check(lib.store_delete(self._s, idp, &where), self, oid)
        finally:
            self._leave()
        return None if where == lib.STORE_NO_LOCATION else where

    def sealed_mask(self, oids):
        """bytes with 1 at position i if oids[i] is sealed, else 0 (one lock
        round trip for the whole list)."""
        cdef Py_ssize_t n = len(oids), k
        cdef bytearray packed = bytearray(n * lib.STORE_ID_SIZE)
        cdef bytearray ready = bytearray(n)
        cdef uint8_t *p = packed
        cdef uint8_t *r = ready
        cdef size_t count = 0
        cdef lib.store_status_t rc
        for k in range(n):
            memcpy(p + k * lib.STORE_ID_SIZE, id_ptr(oids[k]), lib.STORE_ID_SIZE)
        self._enter()
        try:
            with nogil:
                rc = lib.store_count_sealed(self._s, p, n, r, &count)
            check(rc, self)
        finally:
            self._leave()
        return bytes(ready)

    def set_wait_spin(self, double seconds):
        """Make get() with a timeout spin up to `seconds` before sleeping, so
        that an object sealed within that time costs no wake-up (0: never).
        Only worth it with a CPU to spare for the spinning thread."""
        self._enter()
        try:
            lib.store_set_wait_spin(self._s, <int64_t>(max(0.0, seconds) * 1e9))
        finally:
            self._leave()

    def seal_sequence(self):
        """The seal counter: read it before checking objects, then pass it to
        wait_seal_after so that no seal in between is missed."""
        self._enter()
        try:
            return lib.store_seal_sequence(self._s)
        finally:
            self._leave()

    def wait_seal_after(self, uint32_t seq, timeout=None):
        """Block until some object is sealed after `seq` was read; returns
        False if `timeout` seconds (None: forever) pass first."""
        cdef int64_t ms = timeout_ms(timeout)
        cdef lib.store_status_t rc
        self._enter()
        try:
            with nogil:
                rc = lib.store_wait_seal_after(self._s, seq, ms)
            if rc == lib.STORE_E_INTERRUPTED:
                PyErr_CheckSignals()
                return True  # let the caller look again
            if rc == lib.STORE_E_TIMEOUT:
                return False
            check(rc, self)
            return True
        finally:
            self._leave()

    def evict(self, uint64_t nbytes):
        """Evict least-recently-used evictable objects until `nbytes` are
        freed or none is left; returns the bytes freed."""
        cdef uint64_t freed = 0
        self._enter()
        try:
            check(lib.store_evict(self._s, nbytes, &freed), self)
        finally:
            self._leave()
        return freed

    def reap_dead_clients(self):
        """Release what processes that died while attached still held;
        returns how many were reaped."""
        cdef uint32_t n = 0
        cdef lib.store_status_t rc
        self._enter()
        try:
            with nogil:
                rc = lib.store_reap_dead_clients(self._s, &n)
            check(rc, self)
        finally:
            self._leave()
        return n

    def statistics(self):
        """A dict of counters: capacity_bytes, bytes_in_use, bytes_pinned,
        bytes_evictable, num_created, num_sealed, num_deleted_pinned,
        num_evictions, num_recoveries, num_clients, max_objects,
        largest_free_block (all bytes or counts)."""
        cdef lib.store_stats_t st
        self._enter()
        try:
            check(lib.store_stats(self._s, &st), self)
        finally:
            self._leave()
        return st

    # Spilling (see store.h) ---------------------------------------------------

    def spill_candidates(self, uint64_t nbytes, size_t max_n=1024):
        """[(oid, block_bytes)] of sealed, unpinned, non-evictable objects,
        least recently used first, until they add up to `nbytes`."""
        cdef bytearray ids = bytearray(max_n * lib.STORE_ID_SIZE)
        cdef uint64_t *sizes = <uint64_t *>malloc(max(max_n, 1) * sizeof(uint64_t))
        cdef size_t n = 0, k
        cdef uint8_t *p = ids
        cdef lib.store_status_t rc
        if sizes == NULL:
            raise MemoryError()
        self._enter()
        try:
            with nogil:
                rc = lib.store_spill_candidates(self._s, nbytes, max_n, p, sizes, &n)
            check(rc, self)
            return [(bytes(ids[k * lib.STORE_ID_SIZE:(k + 1) * lib.STORE_ID_SIZE]), sizes[k])
                    for k in range(n)]
        finally:
            free(sizes)
            self._leave()

    def mark_spilled(self, ObjectBuffer buf, uint64_t location):
        """The object of `buf` (from get() here, its only reader anywhere)
        now lives at `location`: its memory is freed and `buf` released.
        Returns False, changing nothing, if another reader pins it or it was
        deleted meanwhile."""
        if buf._store is not self or not buf._held:
            raise exc.ObjectStateError("mark_spilled() takes a live buffer from this store's get()")
        if buf._exports:
            raise BufferError(f"{buf._exports} views of the object are still alive")
        cdef lib.store_status_t rc
        self._enter()
        try:
            with nogil:
                rc = lib.store_mark_spilled(self._s, &buf._obj, location)
            if rc == lib.STORE_E_BUSY or rc == lib.STORE_E_NOT_FOUND:
                return False
            check(rc, self)
            buf._held = False  # its pin went with its memory
            self._leave()
            return True
        finally:
            self._leave()

    def restore_commit(self, oid, WritableBuffer copy):
        """Bring spilled object `oid` back: `copy` (created here under an ID
        of its own, with the object's sizes, filled with its bytes, no
        views left) becomes the object, sealed again and keeping its copy on
        disk. Returns a pinned ObjectBuffer of it, or None if another reader
        restored it first or it was deleted (then `copy` is aborted)."""
        cdef const uint8_t *idp = id_ptr(oid)
        cdef lib.store_object_t obj
        cdef lib.store_status_t rc
        if copy._store is not self or not copy._held:
            raise exc.ObjectStateError("restore_commit() takes a live WritableBuffer of this store")
        copy._refuse_with_views("restore from")
        self._enter()
        try:
            with nogil:
                rc = lib.store_restore_commit(self._s, idp, &copy._obj, &obj)
            if rc == lib.STORE_E_STATE or rc == lib.STORE_E_NOT_FOUND:
                copy.abort()
                return None
            check(rc, self, oid)
            copy._held = False  # its block is the object's now
            self._leave()
            return ObjectBuffer._make(self, obj)
        finally:
            self._leave()

    def create_spilled(self, oid, uint64_t data_size, uint64_t metadata_size, uint64_t location, *,
                       uint8_t tag=0):
        """Publish an object whose bytes the caller wrote at `location`
        (outside the store): visible at once, and its waiters wake."""
        cdef const uint8_t *idp = id_ptr(oid)
        cdef lib.store_status_t rc
        self._enter()
        try:
            with nogil:
                rc = lib.store_create_spilled(self._s, idp, data_size, metadata_size, location,
                                              lib.STORE_TAG(tag))
            check(rc, self, oid, data_size + metadata_size)
        finally:
            self._leave()

    def set_spill_watermark(self, uint64_t nbytes):
        """A create that leaves more than `nbytes` in use wakes the spiller
        (0: never)."""
        self._enter()
        try:
            lib.store_set_spill_watermark(self._s, nbytes)
        finally:
            self._leave()

    def request_space(self, uint64_t nbytes):
        """Ask the spiller for `nbytes` of room; returns the number of the
        last finished round, for wait_space."""
        cdef uint32_t done = 0
        self._enter()
        try:
            check(lib.store_request_space(self._s, nbytes, &done), self)
        finally:
            self._leave()
        return done

    def wait_space(self, uint32_t done, timeout=None):
        """Wait for the end of a spill round after `done`; returns (True,
        exhausted) then, (False, False) after `timeout` seconds (None:
        forever). exhausted: the spiller found nothing more to spill."""
        return self._wait_signal(done, timeout, True)

    def spill_wait(self, uint32_t seq, timeout=None):
        """The spiller's sleep: returns (woken, seq, wanted_bytes) once a
        creator calls after `seq`, or after `timeout` seconds."""
        return self._wait_signal(seq, timeout, False)

    cdef object _wait_signal(self, uint32_t seq, object timeout, bint room):
        cdef int64_t ms = timeout_ms(timeout)
        cdef double deadline = time.monotonic() + ms / 1000.0 if ms > 0 else 0
        cdef lib.store_status_t rc
        cdef int exhausted = 0
        cdef uint32_t seq_out = 0
        cdef uint64_t wanted = 0
        self._enter()
        try:
            while True:
                with nogil:
                    if room:
                        rc = lib.store_wait_space(self._s, seq, ms, &exhausted)
                    else:
                        rc = lib.store_spill_wait(self._s, seq, ms, &seq_out, &wanted)
                if rc != lib.STORE_E_INTERRUPTED:
                    break
                PyErr_CheckSignals()
                if ms > 0:
                    ms = max(1, <int64_t>((deadline - time.monotonic()) * 1000.0))
            if rc != lib.STORE_E_TIMEOUT:
                check(rc, self)
            if room:
                return (rc == lib.STORE_OK, bool(exhausted))
            return (rc == lib.STORE_OK, seq_out, wanted)
        finally:
            self._leave()

    def spill_round_done(self, bint exhausted):
        """The spiller finished a round (exhausted: nothing more to spill);
        wakes the creators waiting for room."""
        self._enter()
        try:
            check(lib.store_spill_round_done(self._s, exhausted), self)
        finally:
            self._leave()

    def unique_number(self):
        """A number never returned before for this store (1, 2, ...)."""
        self._enter()
        try:
            return lib.store_unique_number(self._s)
        finally:
            self._leave()

    def list_objects(self):
        """Every object but free ones, as tuples (oid, state, flags, npins,
        data_size, metadata_size, block_size, location, pin_slots); state is
        "created", "sealed", "deleted" or "spilled", flags holds
        STORE_EVICTABLE (1), fallback (4) and the tag << 8. The table is
        read in batches, so a listing is not one instant's snapshot."""
        cdef lib.store_object_info_t *infos = <lib.store_object_info_t *>malloc(
            1024 * sizeof(lib.store_object_info_t))
        cdef uint32_t cursor = 0
        cdef size_t n = 0, k
        cdef lib.store_status_t rc
        cdef lib.store_object_info_t *o
        if infos == NULL:
            raise MemoryError()
        out = []
        names = (None, "created", "sealed", "deleted", "spilled")
        self._enter()
        try:
            while True:
                with nogil:
                    rc = lib.store_list_objects(self._s, &cursor, infos, 1024, &n)
                check(rc, self)
                for k in range(n):
                    o = &infos[k]
                    slots = [w * 64 + b for w in range(lib.STORE_MAX_CLIENTS // 64) for b in range(64)
                             if (o.pins[w] >> b) & 1] if o.npins else []
                    out.append((PyBytes_FromStringAndSize(<char *>o.id, lib.STORE_ID_SIZE),
                                names[o.state] if o.state < 5 else "?", o.flags, o.npins,
                                o.data_size, o.metadata_size, o.block_size,
                                None if o.location == lib.STORE_NO_LOCATION else o.location, slots))
                if cursor == 0:
                    return out
        finally:
            free(infos)
            self._leave()

    def client_pids(self):
        """{client slot: pid} of every process attached now."""
        cdef int32_t pids[lib.STORE_MAX_CLIENTS]
        self._enter()
        try:
            check(lib.store_client_pids(self._s, pids), self)
        finally:
            self._leave()
        return {k: pids[k] for k in range(lib.STORE_MAX_CLIENTS) if pids[k]}

    def validate(self):
        """Check every invariant of the segment (slow; for tests). Raises
        RaySystemError describing the first broken one."""
        cdef char msg[256]
        self._enter()
        try:
            rc = lib.store_validate(self._s, msg, sizeof(msg))
        finally:
            self._leave()
        if rc == lib.STORE_E_INTERNAL:
            raise exc.RaySystemError("object store invariant broken: " + msg.decode())
        check(rc, self)

    def _debug_lock_and_hold(self):
        """Take the segment lock and never release it (crash tests only)."""
        self._enter()
        try:
            check(lib.store_debug_lock_and_hold(self._s), self)
        finally:
            self._leave()


cdef int copy_into(uint8_t *base, uint64_t size, uint64_t offset, object part,
                   int threads) except -1:
    cdef Py_buffer view
    PyObject_GetBuffer(part, &view, PyBUF_ANY_CONTIGUOUS)
    try:
        if offset > size or <uint64_t>view.len > size - offset:
            raise ValueError(
                f"writing {view.len} bytes at offset {offset} overruns the object's "
                f"{size} bytes")
        if <uint64_t>view.len < NOGIL_COPY_BYTES:
            memcpy(base + offset, view.buf, view.len)
        else:
            with nogil:
                lib.store_parallel_copy(base + offset, view.buf, view.len, threads)
    finally:
        PyBuffer_Release(&view)
    return 0


def parallel_copy(dst, src, int threads=1):
    """Copy the bytes of buffer `src` into writable buffer `dst` (same size),
    with up to `threads` threads and without the GIL (for benchmarks)."""
    cdef Py_buffer d
    PyObject_GetBuffer(dst, &d, PyBUF_ANY_CONTIGUOUS | PyBUF_WRITABLE)
    try:
        copy_into(<uint8_t *>d.buf, d.len, 0, src, threads)
    finally:
        PyBuffer_Release(&d)


@cython.no_gc_clear
cdef class ObjectBuffer:
    """Read-only, zero-copy view of a sealed object; pins it until released
    (explicitly, or when this buffer and every view of it are gone)."""
    cdef Store _store
    cdef lib.store_object_t _obj
    cdef bint _held
    cdef Py_ssize_t _exports
    cdef Py_ssize_t _shape[1]
    cdef Py_ssize_t _strides[1]

    @staticmethod
    cdef ObjectBuffer _make(Store store, lib.store_object_t obj):
        cdef ObjectBuffer self = ObjectBuffer.__new__(ObjectBuffer)
        self._store = store
        self._obj = obj
        self._held = True
        self._shape[0] = <Py_ssize_t>obj.data_size
        self._strides[0] = 1
        store._users += 1
        return self

    def __getbuffer__(self, Py_buffer *view, int flags):
        if not self._held:
            raise exc.ObjectStateError("the buffer was released")
        if flags & PyBUF_WRITABLE:
            raise BufferError("a sealed object is read-only")
        view.buf = self._obj.data
        view.len = <Py_ssize_t>self._obj.data_size
        view.readonly = 1
        view.itemsize = 1
        view.format = FORMAT_B if flags & PyBUF_FORMAT else NULL
        view.ndim = 1
        view.shape = self._shape if flags & PyBUF_ND else NULL
        view.strides = self._strides if flags & PyBUF_STRIDES else NULL
        view.suboffsets = NULL
        view.internal = NULL
        view.obj = self
        self._exports += 1

    def __releasebuffer__(self, Py_buffer *view):
        self._exports -= 1

    @property
    def nbytes(self):
        """Size of the object's data in bytes."""
        return self._obj.data_size

    @property
    def metadata(self):
        """The object's metadata (a copy, as bytes)."""
        if not self._held:
            raise exc.ObjectStateError("the buffer was released")
        return PyBytes_FromStringAndSize(<char *>self._obj.metadata, self._obj.metadata_size)

    @property
    def address(self):
        """Address of the data in this process (for diagnostics and tests)."""
        return <size_t>self._obj.data

    @property
    def location(self):
        """Where a copy of its bytes is on disk (an object restored after a
        spill), or None."""
        return None if self._obj.location == lib.STORE_NO_LOCATION else self._obj.location

    @property
    def released(self):
        return not self._held

    def release(self):
        """Unpin now. Raises BufferError while views of it are alive."""
        if self._exports:
            raise BufferError(f"{self._exports} views of the object are still alive")
        self._release()

    cdef void _release(self):
        if not self._held:
            return
        self._held = False
        if self._store._s != NULL:
            lib.store_release(self._store._s, &self._obj)
        self._store._leave()

    def __dealloc__(self):
        if self._store is not None:
            self._release()


@cython.no_gc_clear
cdef class WritableBuffer:
    """The memory of an object being created: write into it (buffer protocol
    or write()), then seal() to publish it or abort() to drop it. Dropping
    an unsealed WritableBuffer aborts the object."""
    cdef Store _store
    cdef object _oid
    cdef lib.store_object_t _obj
    cdef bint _held
    cdef Py_ssize_t _exports  # live views from __getbuffer__
    cdef Py_ssize_t _shape[1]
    cdef Py_ssize_t _strides[1]

    @staticmethod
    cdef WritableBuffer _make(Store store, object oid, lib.store_object_t obj):
        cdef WritableBuffer self = WritableBuffer.__new__(WritableBuffer)
        self._store = store
        self._oid = oid
        self._obj = obj
        self._held = True
        self._shape[0] = <Py_ssize_t>obj.data_size
        self._strides[0] = 1
        store._users += 1
        return self

    cdef int _check_writable(self) except -1:
        if not self._held or self._store._s == NULL or not lib.store_is_writable(
                self._store._s, &self._obj):
            raise exc.ObjectStateError(
                f"object {self._oid.hex()} is no longer writable: it was sealed, aborted "
                f"or released")
        return 0

    def __getbuffer__(self, Py_buffer *view, int flags):
        self._check_writable()
        view.buf = self._obj.data
        view.len = <Py_ssize_t>self._obj.data_size
        view.readonly = 0
        view.itemsize = 1
        view.format = FORMAT_B if flags & PyBUF_FORMAT else NULL
        view.ndim = 1
        view.shape = self._shape if flags & PyBUF_ND else NULL
        view.strides = self._strides if flags & PyBUF_STRIDES else NULL
        view.suboffsets = NULL
        view.internal = NULL
        view.obj = self
        self._exports += 1
        if self._exports == 1:
            self._store._exported[self._oid] = self

    def __releasebuffer__(self, Py_buffer *view):
        self._exports -= 1
        if self._exports == 0:
            self._store._exported.pop(self._oid, None)

    cdef int _refuse_with_views(self, str what) except -1:
        # Freeing the memory under a live writable view would let it
        # scribble over other objects later.
        if self._exports:
            raise exc.ObjectStateError(
                f"cannot {what} object {self._oid.hex()}: {self._exports} memoryview(s) or "
                f"numpy array(s) of its buffer are still alive; release them first "
                f"(view.release(), or del the arrays)")
        return 0

    @property
    def object_id(self):
        return self._oid

    @property
    def nbytes(self):
        return self._obj.data_size

    def write(self, uint64_t offset, data, int threads=1):
        """Copy the bytes of `data` into the object at `offset`, with up to
        `threads` threads for large copies."""
        self._check_writable()
        copy_into(self._obj.data, self._obj.data_size, offset, data, threads)

    def seal(self):
        """Publish the object (immutable from now on). The buffer keeps its
        pin until released or garbage-collected, so views taken before the
        seal stay valid memory; writing through them afterwards is a bug
        the store cannot see (new views are refused)."""
        if not self._held:
            raise exc.ObjectStateError(f"object {self._oid.hex()} was released")
        self._store.seal(self._oid)

    def abort(self):
        """Drop the unsealed object. Refused (ObjectStateError) while views
        of this buffer are alive."""
        if not self._held:
            raise exc.ObjectStateError(f"object {self._oid.hex()} was released")
        self._refuse_with_views("abort")
        self._store.abort(self._oid)
        self._held = False
        self._store._leave()

    def release(self):
        """Drop this buffer's pin; an object not yet sealed is aborted.
        Refused (ObjectStateError) while views of this buffer are alive."""
        if self._held:
            self._refuse_with_views("release")
        self._release()

    cdef void _release(self):
        if not self._held:
            return
        self._held = False
        cdef lib.store_status_t rc
        if self._store._s != NULL:
            rc = lib.store_release(self._store._s, &self._obj)
            if rc == lib.STORE_E_STATE:  # still unsealed: roll it back
                lib.store_abort(self._store._s, <const uint8_t *>PyBytes_AS_STRING(self._oid))
        self._store._leave()

    def __dealloc__(self):
        if self._store is not None:
            self._release()


def _debug_set_crash_point(int point):
    """Make this process SIGKILL itself at C crash point `point` (store.h
    STORE_CRASH_*; 0 disables). For crash tests only."""
    lib.store_debug_set_crash_point(point)


CRASH_POINTS = {
    "create_after_alloc": 1,
    "create_before_index": 2,
    "free_after_state": 3,
    "free_mid_coalesce": 4,
    "seal_before_wake": 5,
    "pin_mid_update": 6,
    "spill_after_state": 7,
    "restore_mid_move": 8,
}
