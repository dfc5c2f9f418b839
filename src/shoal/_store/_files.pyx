# cython: language_level=3, embedsignature=True
"""Read-only buffers over an object's bytes in a file: how every process
reads an object that was spilled out of the store, or never fit in it.

Reading: two ways, chosen by the caller (the policy lives in shoal.spill):

* map: the file's pages are mapped read-only. Zero copy: readers share the
  page cache, and the mapping goes away with the buffer (and every view of
  it), so it costs memory only while something reads it. The whole range
  is asked for at once (MADV_WILLNEED), for files that are on disk only.
* copy: one pread into private memory aligned to 64 bytes. For small
  objects, which would otherwise take a mapping (and a kernel VMA) each.

Writing: write_buffers() puts buffers back to back into a file, with the
GIL released; for direct I/O (O_DIRECT, which needs aligned memory, offsets
and lengths) it copies through an aligned bounce buffer and pads the end.

Glue only, like _core: no file names, no sizes to choose from.
"""

from cpython.buffer cimport (PyBUF_ANY_CONTIGUOUS, PyBUF_FORMAT, PyBUF_ND, PyBUF_STRIDES,
                             PyBUF_WRITABLE, PyBuffer_Release, PyObject_GetBuffer)
from cpython.bytes cimport PyBytes_FromStringAndSize
from libc.errno cimport EINTR, errno
from libc.stdint cimport uint8_t, uint64_t
from libc.stdlib cimport free, malloc
from libc.string cimport memcpy, memset
from posix.mman cimport MADV_WILLNEED, MAP_FAILED, MAP_SHARED, PROT_READ, madvise, mmap, munmap
from posix.stdlib cimport posix_memalign
from posix.types cimport off_t

import os

from shoal import exceptions as exc

cdef extern from "unistd.h" nogil:
    ssize_t pread(int fd, void *buf, size_t count, off_t offset)
    ssize_t pwrite(int fd, const void *buf, size_t count, off_t offset)

#: Direct I/O needs memory, offsets and lengths in multiples of the device's
#: block size: 4096 covers every common one.
DIRECT_ALIGN = 4096
cdef size_t ALIGN = 4096
cdef size_t BOUNCE = 8 << 20
SCRATCH_BYTES = BOUNCE

cdef char *FORMAT_B = "B"
cdef uint64_t PAGE = os.sysconf("SC_PAGE_SIZE")


cdef int write_all(int fd, const uint8_t *p, size_t n, uint64_t offset) nogil:
    """pwrite all n bytes; 0, or the errno."""
    cdef ssize_t got
    while n:
        got = pwrite(fd, p, n, <off_t>offset)
        if got < 0:
            if errno == EINTR:
                continue
            return errno
        p += got
        n -= <size_t>got
        offset += <uint64_t>got
    return 0


#: Buffers smaller than this are gathered in the bounce buffer and written
#: together (fewer system calls), when not writing directly anyway.
cdef size_t GATHER_BELOW = 64 << 10


def write_buffers(int fd, uint64_t offset, buffers, bint direct=False, scratch=None):
    """Write `buffers` back to back into file `fd` from `offset`, without
    the GIL; returns the bytes written. Small buffers are gathered into
    large writes. direct: fd was opened with O_DIRECT; `offset` must be a
    multiple of DIRECT_ALIGN, every byte goes through an aligned bounce
    buffer, and the end is padded with zeros to a multiple of DIRECT_ALIGN
    (counted in the result). scratch: a writable, page-aligned buffer of at
    least SCRATCH_BYTES to use as the bounce buffer (reusing one spares the
    page faults of a fresh one); None: one is allocated for the call.
    Raises OSError (a full disk: ENOSPC)."""
    cdef Py_ssize_t n = len(buffers), k
    cdef Py_buffer *views = <Py_buffer *>malloc(max(n, 1) * sizeof(Py_buffer))
    cdef Py_ssize_t held = 0
    cdef uint8_t *bounce = NULL
    cdef bint own_bounce = scratch is None
    cdef Py_buffer sview
    cdef size_t fill = 0, take, pad, left
    cdef uint64_t at = offset
    cdef const uint8_t *src
    cdef int err = 0
    if views == NULL:
        raise MemoryError()
    if not own_bounce:
        PyObject_GetBuffer(scratch, &sview, PyBUF_ANY_CONTIGUOUS | PyBUF_WRITABLE)
        bounce = <uint8_t *>sview.buf
        if <size_t>sview.len < BOUNCE or <size_t>bounce % ALIGN:
            PyBuffer_Release(&sview)
            free(views)
            raise ValueError(f"scratch must be page-aligned and hold {BOUNCE} bytes")
    if direct and offset % ALIGN:
        free(views)
        raise ValueError(f"direct writes start on a multiple of {DIRECT_ALIGN}, not {offset}")
    try:
        for k in range(n):
            PyObject_GetBuffer(buffers[k], &views[k], PyBUF_ANY_CONTIGUOUS)
            held += 1
        if own_bounce and posix_memalign(<void **>&bounce, ALIGN, BOUNCE) != 0:
            raise MemoryError(f"cannot allocate a {BOUNCE}-byte buffer for writing")
        with nogil:
            for k in range(n):
                src = <const uint8_t *>views[k].buf
                left = <size_t>views[k].len
                if not direct and left >= GATHER_BELOW:  # large: straight from the source
                    if fill:
                        err = write_all(fd, bounce, fill, at)
                        at += fill
                        fill = 0
                    if not err:
                        err = write_all(fd, src, left, at)
                        at += left
                    if err:
                        break
                    continue
                while left:
                    take = BOUNCE - fill if BOUNCE - fill < left else left
                    memcpy(bounce + fill, src, take)
                    fill += take
                    src += take
                    left -= take
                    if fill == BOUNCE:
                        err = write_all(fd, bounce, fill, at)
                        at += fill
                        fill = 0
                        if err:
                            break
                if err:
                    break
            if not err and fill:
                pad = (ALIGN - fill % ALIGN) % ALIGN if direct else 0
                memset(bounce + fill, 0, pad)
                err = write_all(fd, bounce, fill + pad, at)
                at += fill + pad
        if err:
            raise OSError(err, os.strerror(err))
        return at - offset
    finally:
        for k in range(held):
            PyBuffer_Release(&views[k])
        free(views)
        if own_bounce:
            if bounce != NULL:
                free(bounce)
        else:
            PyBuffer_Release(&sview)


def read_into(int fd, uint64_t offset, target, bint direct=False, scratch=None):
    """Fill writable buffer `target` with the file's bytes from `offset`,
    without the GIL. direct: fd was opened with O_DIRECT and `offset` is a
    multiple of DIRECT_ALIGN; whole aligned blocks are read into a bounce
    buffer (`scratch`, as in write_buffers, or one allocated for the call)
    and copied out, which spares the page cache. Raises OSError, or
    ObjectLostError if the file ends first."""
    cdef Py_buffer tview, sview
    cdef uint8_t *bounce = NULL
    cdef bint own_bounce = scratch is None
    cdef uint64_t done = 0, total
    cdef ssize_t got = 0
    cdef size_t want
    cdef int err = 0
    if direct and offset % ALIGN:
        raise ValueError(f"direct reads start on a multiple of {DIRECT_ALIGN}, not {offset}")
    PyObject_GetBuffer(target, &tview, PyBUF_ANY_CONTIGUOUS | PyBUF_WRITABLE)
    try:
        total = <uint64_t>tview.len
        if direct:
            if own_bounce:
                if posix_memalign(<void **>&bounce, ALIGN, BOUNCE) != 0:
                    raise MemoryError(f"cannot allocate a {BOUNCE}-byte buffer for reading")
            else:
                PyObject_GetBuffer(scratch, &sview, PyBUF_ANY_CONTIGUOUS | PyBUF_WRITABLE)
                bounce = <uint8_t *>sview.buf
                if <size_t>sview.len < BOUNCE or <size_t>bounce % ALIGN:
                    PyBuffer_Release(&sview)
                    own_bounce = True  # (nothing to release below)
                    bounce = NULL
                    raise ValueError(f"scratch must be page-aligned and hold {BOUNCE} bytes")
        with nogil:
            while done < total:
                if direct:
                    want = BOUNCE
                    got = pread(fd, bounce, want, <off_t>(offset + done))
                else:
                    want = <size_t>(total - done)
                    got = pread(fd, <uint8_t *>tview.buf + done, want, <off_t>(offset + done))
                if got < 0:
                    if errno == EINTR:
                        continue
                    err = errno
                    break
                if got == 0:
                    break
                if direct:
                    want = <size_t>got if <uint64_t>got < total - done else <size_t>(total - done)
                    memcpy(<uint8_t *>tview.buf + done, bounce, want)
                    done += want
                else:
                    done += <uint64_t>got
        if err:
            raise OSError(err, os.strerror(err))
        if done < total:
            raise exc.ObjectLostError(
                f"the file of a spilled object ends after {done} of its {total} bytes (at offset {offset})")
    finally:
        PyBuffer_Release(&tview)
        if direct:
            if own_bounce:
                free(bounce)
            else:
                PyBuffer_Release(&sview)


cdef class FileBuffer:
    """A read-only view of an object's data, read from a file; its metadata
    is in ``.metadata``. Behaves as the store's ObjectBuffer: the buffer
    protocol gives zero-copy views (numpy arrays keep it alive), and its
    memory goes when it and every view of it are gone."""
    cdef void *_base
    cdef size_t _length
    cdef bint _mapped
    cdef bint _held
    cdef uint8_t *_data
    cdef uint64_t _data_size
    cdef bytes _metadata
    cdef Py_ssize_t _exports
    cdef Py_ssize_t _shape[1]
    cdef Py_ssize_t _strides[1]

    @staticmethod
    def open(int fd, uint64_t offset, uint64_t data_size, uint64_t metadata_size, bint map=True):
        """The object whose data_size bytes of data, then metadata_size bytes
        of metadata, start at `offset` in file `fd` (which the caller may
        close afterwards). map: map the pages read-only; else copy."""
        cdef FileBuffer self = FileBuffer.__new__(FileBuffer)
        cdef uint64_t total = data_size + metadata_size
        cdef uint64_t delta = offset % PAGE
        cdef void *p = NULL
        cdef ssize_t got = 0
        cdef uint64_t done = 0
        cdef int err = 0
        if map and total > 0:
            with nogil:
                p = mmap(NULL, total + delta, PROT_READ, MAP_SHARED, fd, <off_t>(offset - delta))
            if p == MAP_FAILED:
                err = errno
                raise OSError(err, f"cannot map {total} bytes of a spilled object: {os.strerror(err)}")
            # Start reading it all now (a no-op where it is cached): a file
            # that went to disk then streams in large requests rather than a
            # readahead window per fault, about twice as fast here.
            with nogil:
                madvise(p, total + delta, MADV_WILLNEED)
            self._base, self._length, self._mapped = p, total + delta, True
            self._data = <uint8_t *>p + delta
        else:
            if posix_memalign(&p, 64, total if total else 1) != 0:
                raise MemoryError(f"cannot allocate {total} bytes to read a spilled object")
            self._base, self._length, self._mapped = p, total, False
            self._data = <uint8_t *>p
            with nogil:
                while done < total:
                    got = pread(fd, self._data + done, total - done, <off_t>(offset + done))
                    if got > 0:
                        done += <uint64_t>got
                    elif got < 0 and errno == EINTR:
                        continue
                    else:
                        err = errno if got < 0 else 0
                        break
            if done < total:
                free(p)
                self._base = NULL
                if err:
                    raise OSError(err, f"cannot read a spilled object: {os.strerror(err)}")
                raise exc.ObjectLostError(
                    f"the file of a spilled object ends after {done} of its {total} bytes "
                    f"(at offset {offset}): it was cut short or replaced")
        self._data_size = data_size
        self._metadata = PyBytes_FromStringAndSize(<char *>self._data + data_size, metadata_size)
        self._shape[0] = <Py_ssize_t>data_size
        self._strides[0] = 1
        self._held = True
        return self

    def __getbuffer__(self, Py_buffer *view, int flags):
        if not self._held:
            raise exc.ObjectStateError("the buffer was released")
        if flags & PyBUF_WRITABLE:
            raise BufferError("a stored object is read-only")
        view.buf = self._data
        view.len = <Py_ssize_t>self._data_size
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
        return self._data_size

    @property
    def metadata(self):
        """The object's metadata (bytes)."""
        return self._metadata

    @property
    def mapped(self):
        """True if the bytes are mapped from the file, False if copied."""
        return self._mapped

    @property
    def address(self):
        """Address of the data in this process (for diagnostics and tests)."""
        return <size_t>self._data

    @property
    def released(self):
        return not self._held

    def release(self):
        """Let the memory go now. Raises BufferError while views are alive."""
        if self._exports:
            raise BufferError(f"{self._exports} views of the object are still alive")
        self._release()

    cdef void _release(self):
        if not self._held:
            return
        self._held = False
        if self._base != NULL:
            if self._mapped:
                munmap(self._base, self._length)
            else:
                free(self._base)
            self._base = NULL

    def __dealloc__(self):
        self._release()
