# cython: language_level=3, embedsignature=True
"""Binding of csrc/channel.h: message rings in shared memory between two
processes, with eventfd doorbells. Glue only; the runtime's protocol is in
shoal.scheduler.protocol."""

from cpython.buffer cimport PyBUF_WRITABLE, PyBuffer_Release, PyObject_GetBuffer
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from cpython.exc cimport PyErr_CheckSignals
import os

from libc.errno cimport EAGAIN, EBADMSG, EINTR, EMSGSIZE, ETIMEDOUT

from shoal.exceptions import MalformedMessageError
from libc.stdint cimport int64_t, uint8_t, uint32_t, uint64_t


cdef extern from "channel.h" nogil:
    ctypedef struct ring_t:
        pass
    unsigned RING_HEADER_BYTES
    uint64_t ring_footprint(uint32_t capacity)
    int ring_init(void *mem, uint32_t capacity)
    uint32_t ring_capacity(const void *mem)
    uint32_t ring_max_message(uint32_t cap)
    int ring_send(ring_t *r, uint32_t cap, const void *msg, uint32_t len, int wake_fd)
    int ring_peek(ring_t *r, uint32_t cap, const uint8_t **msg, uint32_t *len)
    void ring_consume(ring_t *r, uint32_t len, int wake_fd)
    int ring_wait_readable(ring_t *r, int own_fd, int64_t spin_ns, int64_t timeout_ns)
    int ring_wait_writable(ring_t *r, uint32_t cap, uint32_t len, int own_fd, int64_t timeout_ns)
    int ring_prepare_sleep(ring_t *r)
    void ring_end_sleep(ring_t *r)
    uint64_t ring_used(const ring_t *r)
    void ring_set_user_word(ring_t *r, uint64_t value)
    uint64_t ring_user_word(const ring_t *r)
    int proc_set_parent_death_signal(int sig)
    int proc_die_with(int keeper, int sig)
    int proc_set_child_subreaper(int on)
    int proc_child_subreaper()


def footprint(uint32_t capacity):
    """Bytes of shared memory a ring of `capacity` bytes takes."""
    return ring_footprint(capacity)


def set_parent_death_signal(int sig):
    """Ask the kernel to send `sig` to this process when its parent dies."""
    cdef int rc = proc_set_parent_death_signal(sig)
    if rc:
        raise OSError(rc, "prctl(PR_SET_PDEATHSIG) failed")


def die_with(int keeper, int sig):
    """Die (SIGKILL) when the parent dies, unless the process that adopts
    this one is `keeper` (a pid); then die when the keeper dies. `sig` is
    the signal the kernel sends at a parent's death (its handler is C)."""
    cdef int rc = proc_die_with(keeper, sig)
    if rc:
        raise OSError(rc, "sigaction or prctl(PR_SET_PDEATHSIG) failed")


def set_child_subreaper(bint on):
    """Make orphaned descendants of this process its children (on) or
    init's (off)."""
    cdef int rc = proc_set_child_subreaper(on)
    if rc:
        raise OSError(rc, "prctl(PR_SET_CHILD_SUBREAPER) failed")


def child_subreaper():
    """Whether this process adopts its orphaned descendants."""
    cdef int rc = proc_child_subreaper()
    if rc < 0:
        raise OSError(-rc, "prctl(PR_GET_CHILD_SUBREAPER) failed")
    return bool(rc)


cdef int64_t to_ns(object seconds) except? -2:
    if seconds is None:
        return -1
    cdef double s = seconds
    if s != s:
        raise ValueError("timeout must be a number of seconds, not NaN")
    if s < 0:
        return 0
    if s > 1e9:  # about 31 years: forever (and no int64 overflow)
        return -1
    return <int64_t>(s * 1e9)


cdef class Ring:
    """One direction of a channel, over shared memory that the caller maps
    (a buffer of ring_footprint(capacity) bytes at `offset`)."""
    cdef ring_t *_r
    cdef uint32_t _cap  # read once: the copy in shared memory is the other process's to spoil
    cdef Py_buffer _view
    cdef bint _has_view

    def __cinit__(self, memory, Py_ssize_t offset, uint32_t capacity=0, bint init=False):
        PyObject_GetBuffer(memory, &self._view, PyBUF_WRITABLE)
        self._has_view = True
        if offset < 0 or offset % 64:
            raise ValueError(f"ring offset must be a non-negative multiple of 64, not {offset}")
        if <uint64_t>offset + RING_HEADER_BYTES > <uint64_t>self._view.len:
            raise ValueError("the buffer is too small for a ring at this offset")
        cdef uint8_t *base = <uint8_t *>self._view.buf + offset
        if init:
            if <uint64_t>offset + ring_footprint(capacity) > <uint64_t>self._view.len:
                raise ValueError("the buffer is too small for a ring of this capacity")
            if ring_init(base, capacity):
                raise ValueError(f"ring capacity must be a power of two >= 4096, not {capacity}")
        else:
            capacity = ring_capacity(base)
            if capacity == 0:
                raise ValueError("no ring at this offset")
            if capacity < 4096 or capacity & (capacity - 1) or \
                    <uint64_t>offset + ring_footprint(capacity) > <uint64_t>self._view.len:
                raise ValueError(f"the ring at this offset claims a capacity of {capacity} bytes, "
                                 f"which the buffer cannot hold")
        self._cap = capacity
        self._r = <ring_t *>base

    def __dealloc__(self):
        if self._has_view:
            PyBuffer_Release(&self._view)

    @property
    def max_message(self):
        """Largest message in bytes."""
        return ring_max_message(self._cap)

    @property
    def used(self):
        """Bytes queued (messages and framing)."""
        return ring_used(self._r)

    @property
    def user_word(self):
        return ring_user_word(self._r)

    @user_word.setter
    def user_word(self, uint64_t value):
        ring_set_user_word(self._r, value)

    def send(self, bytes msg, int wake_fd=-1):
        """Append `msg`; False if the ring has no room now. Wakes the
        consumer through wake_fd if it sleeps."""
        cdef int rc = ring_send(self._r, self._cap, PyBytes_AS_STRING(msg), PyBytes_GET_SIZE(msg), wake_fd)
        if rc == 0:
            return True
        if rc == EAGAIN:
            return False
        raise ValueError(f"a {len(msg)}-byte message exceeds the ring's limit of "
                         f"{ring_max_message(self._cap)} bytes")

    def send_wait(self, bytes msg, int wake_fd, int own_fd, timeout=None):
        """Append `msg`, sleeping on own_fd while the ring is full. Returns
        False if `timeout` seconds (None: forever) pass first."""
        cdef int64_t ns = to_ns(timeout)
        cdef uint32_t n = PyBytes_GET_SIZE(msg)
        cdef int rc
        while not self.send(msg, wake_fd):
            with nogil:
                rc = ring_wait_writable(self._r, self._cap, n, own_fd, ns)
            if rc == EINTR:
                PyErr_CheckSignals()
            elif rc == ETIMEDOUT:
                return False
            elif rc != 0:
                raise OSError(rc, f"waiting for room in a ring: {os.strerror(rc)}")
        return True

    def recv(self, int wake_fd=-1):
        """The next message as bytes, or None if the ring is empty.

        Raises:
            MalformedMessageError: the ring holds a frame that cannot be
                (the producer wrote over its framing); nothing more can
                be read from this ring.
        """
        cdef const uint8_t *p
        cdef uint32_t n
        cdef int rc = ring_peek(self._r, self._cap, &p, &n)
        if rc == EBADMSG:
            self._corrupt()
        if rc:
            return None
        out = PyBytes_FromStringAndSize(<const char *>p, n)
        ring_consume(self._r, n, wake_fd)
        return out

    def recv_many(self, int wake_fd=-1, Py_ssize_t limit=1 << 30):
        """Every message queued now (up to `limit`), oldest first. The
        messages before a malformed frame are returned; the next call
        raises MalformedMessageError (as recv)."""
        cdef const uint8_t *p
        cdef uint32_t n
        cdef int rc = 0
        out = []
        while len(out) < limit:
            rc = ring_peek(self._r, self._cap, &p, &n)
            if rc:
                break
            out.append(PyBytes_FromStringAndSize(<const char *>p, n))
            ring_consume(self._r, n, wake_fd)
        if rc == EBADMSG and not out:
            self._corrupt()
        return out

    cdef _corrupt(self):
        raise MalformedMessageError(
            f"a message ring holds a malformed frame ({ring_used(self._r)} bytes claimed queued in a "
            f"{self._cap}-byte ring): the process writing to it wrote over the ring's framing "
            f"(a stray write from native code, or a forged frame); nothing more is read from it")

    def wait_readable(self, int own_fd, double spin=0.0, timeout=None):
        """Block until a message is queued: spin up to `spin` seconds, then
        sleep on own_fd. False if `timeout` seconds (None: forever) pass."""
        cdef int64_t ns = to_ns(timeout)
        cdef int64_t spin_ns = <int64_t>(spin * 1e9)
        cdef int rc
        while True:
            with nogil:
                rc = ring_wait_readable(self._r, own_fd, spin_ns, ns)
            if rc == EINTR:
                PyErr_CheckSignals()
                continue
            if rc != 0 and rc != ETIMEDOUT:
                raise OSError(rc, f"waiting for a message: {os.strerror(rc)}")
            return rc == 0

    def prepare_sleep(self):
        """Announce that the consumer is about to sleep in its own poll loop;
        True if a message is already there (then do not sleep)."""
        return bool(ring_prepare_sleep(self._r))

    def end_sleep(self):
        ring_end_sleep(self._r)
