"""Shared-memory rings: framing, wrap-around, full rings, sleeping and
waking across processes."""

from __future__ import annotations

import mmap
import os
import threading

import pytest

from shoal._channel import Ring, footprint

pytestmark = pytest.mark.timeout(30)

CAP = 4096


@pytest.fixture
def ring():
    mem = mmap.mmap(-1, footprint(CAP))  # freed with the ring
    return Ring(mem, 0, CAP, init=True)


def test_messages_in_order_with_wraparound(ring):
    sent = []
    for i in range(2000):
        msg = os.urandom(i % 700)
        while not ring.send(msg):
            got = ring.recv()
            assert got == sent.pop(0)
        sent.append(msg)
    assert ring.recv_many() == sent
    assert ring.recv() is None and ring.used == 0


def test_limits(ring):
    assert ring.max_message == CAP // 2 - 8
    with pytest.raises(ValueError, match="exceeds"):
        ring.send(b"x" * (CAP // 2))
    assert ring.send(b"x" * ring.max_message)
    with pytest.raises(ValueError):
        Ring(bytearray(footprint(CAP)), 0, 1000, init=True)  # not a power of two
    with pytest.raises(ValueError, match="no ring"):
        Ring(bytearray(footprint(CAP)), 0)


def test_full_ring_returns_false(ring):
    n = 0
    while ring.send(b"y" * 100):
        n += 1
    assert 30 < n < 40
    assert ring.recv() == b"y" * 100
    assert ring.send(b"y" * 100)


def test_sleep_and_wake_across_processes():
    mem = mmap.mmap(-1, 2 * footprint(CAP))
    to_child, to_parent = Ring(mem, 0, CAP, init=True), Ring(mem, footprint(CAP), CAP, init=True)
    child_fd = os.eventfd(0, os.EFD_NONBLOCK)
    parent_fd = os.eventfd(0, os.EFD_NONBLOCK)
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            for _ in range(200):
                assert to_child.wait_readable(child_fd, 0.0, timeout=10)  # sleeps: no spin
                to_parent.send(to_child.recv()[::-1], parent_fd)
            code = 0
        finally:
            os._exit(code)
    try:
        for i in range(200):
            msg = f"message {i}".encode()
            to_child.send(msg, child_fd)
            assert to_parent.wait_readable(parent_fd, 20e-6, timeout=10)
            assert to_parent.recv() == msg[::-1]
    finally:
        _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert not to_parent.wait_readable(parent_fd, 0.0, timeout=0.05)  # times out


def test_blocked_producer_wakes_when_consumer_reads(ring):
    own = os.eventfd(0, os.EFD_NONBLOCK)
    for size in (200, 1):  # fill it to the last frame
        while ring.send(b"z" * size):
            pass
    done = threading.Event()

    def producer():
        assert ring.send_wait(b"last", -1, own, timeout=10)
        done.set()

    t = threading.Thread(target=producer)
    t.start()
    assert not done.wait(0.05)
    ring.recv(own)  # consuming wakes the producer through its eventfd
    t.join(10)
    assert done.is_set()


def test_waiting_on_a_closed_descriptor_raises_instead_of_spinning(ring):
    fd = os.eventfd(0, os.EFD_NONBLOCK)
    os.close(fd)  # poll reports POLLNVAL at once, every time
    with pytest.raises(OSError):
        ring.wait_readable(fd, timeout=5.0)
    while ring.send(b"z" * 100):
        pass
    with pytest.raises(OSError):
        ring.send_wait(b"z" * 100, -1, fd, timeout=5.0)


def test_huge_timeout_waits_rather_than_expiring(ring):
    fd = os.eventfd(0, os.EFD_NONBLOCK)
    try:
        ring.send(b"m")
        assert ring.wait_readable(fd, timeout=1e12)  # a message is there: True at once
        assert ring.recv() == b"m"
    finally:
        os.close(fd)
