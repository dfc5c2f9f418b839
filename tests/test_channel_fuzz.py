"""Hostile bytes on the message rings: random and truncated frames, words of
the ring overwritten, pickles that are not messages. The reader must reject
each with MalformedMessageError (never read outside the ring, never crash),
and the driver must stop only the worker that sent it."""

from __future__ import annotations

import mmap
import pickle
import struct
import threading

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shoal import exceptions as exc
from shoal._channel import Ring, footprint
from shoal.scheduler import protocol as P

pytestmark = pytest.mark.timeout(300)

CAP = 4096
HEADER = 256


def ring_pair():
    mem = mmap.mmap(-1, footprint(CAP))
    producer = Ring(mem, 0, CAP, init=True)
    consumer = Ring(mem, 0)
    return mem, producer, consumer


def drain(consumer: Ring, max_message: int) -> int:
    """Read until empty or malformed; every message read lies within the
    ring's limits. Returns how many were read."""
    n = 0
    for _ in range(2 * CAP):
        try:
            msgs = consumer.recv_many()
        except exc.MalformedMessageError:
            with pytest.raises(exc.MalformedMessageError):  # it stays refused
                consumer.recv()
            return n
        if not msgs:
            return n
        for m in msgs:
            assert len(m) <= max_message
        n += len(msgs)
    raise AssertionError("the ring never ran dry")


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    messages=st.lists(st.binary(max_size=600), max_size=12),
    writes=st.lists(st.tuples(st.integers(0, footprint(CAP) - 8), st.binary(min_size=1, max_size=8)), max_size=6),
    words=st.lists(st.tuples(st.sampled_from([0, 64, 196]), st.integers(0, 2**64 - 1)), max_size=3),
)
def test_a_ring_with_overwritten_bytes_is_read_safely_or_refused(messages, writes, words):
    mem, producer, consumer = ring_pair()
    for m in messages:
        producer.send(m)
    for offset, data in writes:  # garbage anywhere: lengths, data, header
        mem[offset:offset + len(data)] = data
    for offset, value in words:  # the tail, the head, the capacity word
        size = 4 if offset == 196 else 8
        mem[offset:offset + size] = struct.pack("<Q", value)[:size]
    drain(consumer, CAP // 2 - 8)
    del producer, consumer
    mem.close()


@pytest.mark.parametrize("length", [CAP // 2, CAP, 2**31, 0xFFFFFFF0])
def test_a_frame_longer_than_the_ring_is_refused(length):
    mem, producer, consumer = ring_pair()
    producer.send(b"hello")
    mem[HEADER:HEADER + 4] = struct.pack("<I", length)
    with pytest.raises(exc.MalformedMessageError, match="malformed frame"):
        consumer.recv()
    del producer, consumer
    mem.close()


def test_a_tail_behind_the_head_or_past_the_ring_is_refused():
    mem, producer, consumer = ring_pair()
    producer.send(b"x" * 100)
    assert consumer.recv() == b"x" * 100
    mem[0:8] = struct.pack("<Q", 8)  # tail behind the head
    with pytest.raises(exc.MalformedMessageError):
        consumer.recv()
    mem[0:8] = struct.pack("<Q", 10 * CAP)  # more queued than the ring holds
    with pytest.raises(exc.MalformedMessageError):
        consumer.recv()
    del producer, consumer
    mem.close()


def test_an_overwritten_capacity_is_not_trusted():
    mem, producer, consumer = ring_pair()
    mem[196:200] = struct.pack("<I", 1 << 30)
    producer.send(b"still fine")
    assert consumer.recv() == b"still fine"  # each side kept the capacity it read first
    with pytest.raises(ValueError, match="claims a capacity"):
        Ring(mem, 0)  # a newcomer refuses it
    del producer, consumer
    mem.close()


# -- the protocol's decoder --------------------------------------------------------------


def good_messages():
    return [
        (P.DONE, 1, P.OK, 0.1, {}, (0.0, 0, 0, None)),
        (P.REFS, [b"a" * 20], []),
        (P.READY, 1234),
        (P.UNBLOCKED,),
        (P.BLOCKED, [3, 4]),
        (P.EXITING, "why"),
    ]


@pytest.mark.parametrize("msg", good_messages())
def test_every_truncation_of_a_message_is_refused(msg):
    data = P.encode(msg)
    assert P.decode_from_worker(data) == msg
    for cut in range(len(data)):
        with pytest.raises(exc.MalformedMessageError):
            P.decode_from_worker(data[:cut])


@pytest.mark.parametrize("obj", [None, 5, "DONE", [P.DONE, 1], (), ("x", 1), (999, 1), (P.DONE, 1, 2),
                                 (P.UNBLOCKED, 1), (True,)])
def test_pickles_that_are_not_messages_are_refused(obj):
    with pytest.raises(exc.MalformedMessageError):
        P.decode_from_worker(pickle.dumps(obj, 5))


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=200))
def test_random_bytes_decode_or_are_refused(data):
    try:
        msg = P.decode_from_worker(data)
    except exc.MalformedMessageError:
        return
    assert type(msg) is tuple and len(msg) in P.FROM_WORKER_ARITY[msg[0]]


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(good_messages()), st.lists(st.tuples(st.integers(0, 200), st.integers(0, 255)), min_size=1,
                                                   max_size=4))
def test_flipped_bytes_decode_or_are_refused(msg, flips):
    data = bytearray(P.encode(msg))
    for pos, value in flips:
        data[pos % len(data)] = value
    try:
        out = P.decode_from_worker(bytes(data))
    except exc.MalformedMessageError:
        return
    assert type(out) is tuple and len(out) in P.FROM_WORKER_ARITY[out[0]]


def test_the_error_pickles():
    e = exc.MalformedMessageError("bad")
    assert isinstance(pickle.loads(pickle.dumps(e)), ValueError)


# -- end to end: a worker that sends garbage -------------------------------------------------


FORGERIES = {
    "random bytes": b"\x13\x37" * 50,
    "truncated pickle": P.encode((P.DONE, 1, P.OK, 0.1, {}, (0.0, 0, 0, None)))[:-7],
    "unknown kind": P.encode((99, "x")),
    "wrong arity": P.encode((P.DONE, 1)),
    "not a tuple": P.encode({"kind": P.DONE}),
}


@pytest.mark.parametrize("how", FORGERIES)
def test_a_worker_sending_a_malformed_message_is_stopped_and_the_driver_goes_on(ray, capfd, how):
    @ray.remote(max_retries=0)
    def forge(data):
        from shoal import objectref

        ctx = objectref.current()
        with ctx._send_lock:
            ctx._send_locked(data)
        threading.Event().wait(100)  # stopped long before

    ref = forge.remote(FORGERIES[how])
    with pytest.raises(exc.WorkerCrashedError, match="malformed message"):
        ray.get(ref, timeout=60)
    assert "sent a malformed message" in capfd.readouterr().err
    assert ray.get([ray.remote(lambda i: i * 2).remote(i) for i in range(10)], timeout=60) == list(range(0, 20, 2))


def test_a_frame_overwritten_in_a_workers_ring_stops_that_worker_only(ray, capfd, tmp_path):
    from shoal import objectref
    from shoal.scheduler.pool import RING_CAPACITY
    from tests._child import wait_until

    started = tmp_path / "pid"

    @ray.remote(max_retries=0)
    def victim(path):
        import os

        with open(path + ".tmp", "w") as f:
            f.write(str(os.getpid()))
        os.rename(path + ".tmp", path)
        threading.Event().wait(100)

    ref = victim.remote(str(started))
    wait_until(started.exists, 60, "the task running")
    shell = objectref.current().shell
    pid = int(started.read_text())
    with shell.lock:  # what a stray write in the worker would do: a length word past the ring, published
        h = next(h for h in shell.workers.values() if h.pid == pid)
        off = h.ring_offset
        tail = int.from_bytes(h.mem[off:off + 8], "little")
        at = off + HEADER + tail % RING_CAPACITY
        h.mem[at:at + 4] = (0xFFFFFF00).to_bytes(4, "little")
        h.mem[off:off + 8] = (tail + 16).to_bytes(8, "little")
    shell.wake()
    with pytest.raises(exc.WorkerCrashedError, match="malformed"):
        ray.get(ref, timeout=60)
    assert "malformed frame" in capfd.readouterr().err
    assert ray.get([ray.remote(lambda i: i + 1).remote(i) for i in range(10)], timeout=60) == list(range(1, 11))
