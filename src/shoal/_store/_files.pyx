# cython: language_level=3, embedsignature=True
"""Read-only buffers over an object's bytes in a file: how every process
reads an object that was spilled out of the store, or never fit in it.

Two ways, chosen by the caller (the policy lives in shoal.spill):

* map: the file's pages are mapped read-only. Zero copy: readers share the
  page cache, and the mapping goes away with the buffer (and every view of
  it), so it costs memory only while something reads it.
* copy: one pread into private memory aligned to 64 bytes. For small
  objects, which would otherwise take a mapping (and a kernel VMA) each.

Glue only, like _core: no file names, no sizes to choose from.
"""

from cpython.buffer cimport PyBUF_FORMAT, PyBUF_ND, PyBUF_STRIDES, PyBUF_WRITABLE
from cpython.bytes cimport PyBytes_FromStringAndSize
from libc.errno cimport EINTR, errno
from libc.stdint cimport uint8_t, uint64_t
from libc.stdlib cimport free
from posix.mman cimport MAP_FAILED, MAP_SHARED, PROT_READ, mmap, munmap
from posix.stdlib cimport posix_memalign
from posix.types cimport off_t

import os

from shoal import exceptions as exc

cdef extern from "unistd.h" nogil:
    ssize_t pread(int fd, void *buf, size_t count, off_t offset)

cdef char *FORMAT_B = "B"
cdef uint64_t PAGE = os.sysconf("SC_PAGE_SIZE")


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
