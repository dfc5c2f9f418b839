"""Processes SIGKILLed at every step of the store's life: inside the lock
(at each crash point of each mutation), holding pins, between create and
seal, and while waiting. The store must stay consistent and lose nothing
that was sealed."""

from __future__ import annotations

import os
import signal
import textwrap
import threading

import numpy as np
import pytest

from shoal import exceptions as exc
from shoal._store._core import CRASH_POINTS

from ._child import Child, shm_entries

pytestmark = [pytest.mark.timeout(60), pytest.mark.crash]

ATTACH = """
import numpy as np
from shoal.store import ObjectStore
from shoal._store._core import _debug_set_crash_point, CRASH_POINTS
store = ObjectStore.attach({fd})
"""


def child(store, body: str) -> Child:
    return Child(ATTACH.format(fd=store.fd) + textwrap.dedent(body), fds=(store.fd,))


def assert_killed(c: Child) -> None:
    assert c.wait() == -signal.SIGKILL, c.stderr()


def survivors_intact(store, kept: dict) -> None:
    for i, k in kept.items():
        assert store.get(i)[0] == k


def test_killed_while_holding_the_lock(store):
    kept = {store.put(np.full(1000, k)): k for k in range(5)}
    c = child(store, 'store.raw._debug_lock_and_hold(); say("locked"); hear()')
    assert c.expect() == "locked"
    c.kill()
    st = store.statistics()  # takes the lock: recovers it
    assert st.num_recoveries == 1 and st.num_clients == 1
    store.raw.validate()
    survivors_intact(store, kept)


@pytest.mark.parametrize("point", sorted(CRASH_POINTS))
def test_killed_at_each_crash_point(store, point):
    kept = {store.put(np.full(5000, k)): k for k in range(5)}
    victim = store.put(np.full(5000, 99))  # the object the child deletes or reads
    vbuf = store.raw.get(victim, 0)
    sizes = (vbuf.nbytes, len(vbuf.metadata))
    if point.startswith("restore"):  # the child brings it back from a (pretend) file
        assert store.raw.mark_spilled(vbuf, 4242)
    del vbuf
    baseline = store.statistics()
    c = child(
        store,
        f"""
        victim = bytes.fromhex("{victim.hex()}")
        _debug_set_crash_point(CRASH_POINTS["{point}"])
        if "{point}".startswith("free"):
            store.delete(victim)
        elif "{point}" == "pin_mid_update":
            store.get(victim)
        elif "{point}".startswith("spill"):
            store.raw.mark_spilled(store.raw.get(victim, 0), 12345)
        elif "{point}".startswith("restore"):
            from shoal import ids
            copy = store.raw.create(ids.restore_copy_id(victim), {sizes[0]}, b"P" * {sizes[1]})
            store.raw.restore_commit(victim, copy)
        else:
            store.put(np.zeros(100_000))
        say("survived")
        """,
    )
    assert_killed(c)
    st = store.statistics()
    assert st.num_recoveries == 1
    store.raw.validate()
    survivors_intact(store, kept)
    # Whatever the child was doing either happened or did not; it left no
    # pin, no unsealed object and no lost block behind.
    assert st.bytes_pinned == 0 and st.num_created == 0 and st.num_clients == 1
    if point.startswith("free"):
        assert not store.contains(victim)
        assert st.bytes_in_use < baseline.bytes_in_use
    elif point.startswith("spill"):  # it moved out: still visible, its block free
        assert store.contains(victim) and st.num_spilled == 1
        assert st.bytes_in_use < baseline.bytes_in_use
        assert store.raw.delete(victim) == 12345
    elif point.startswith("restore"):  # it stays spilled; the copy's block is free again
        assert store.contains(victim) and st.num_spilled == 1
        assert st.bytes_in_use == baseline.bytes_in_use
        assert store.raw.delete(victim) == 4242
    else:
        assert store.get(victim)[0] == 99
        assert st.bytes_in_use in (baseline.bytes_in_use, baseline.bytes_in_use + store_block(100_000 * 8))
    # The store still works normally.
    i = store.put(np.arange(10))
    assert store.get(i)[9] == 9
    store.raw.validate()


def store_block(nbytes: int) -> int:
    """Block size of a serialized array of nbytes (header + payload), for
    the check above: a sealed put by the dead child may survive."""
    from shoal import serialization

    s = serialization.serialize(np.zeros(nbytes // 8))
    return 64 + (s.size + 1 + 63) // 64 * 64


def test_seal_crash_wakes_waiters(store):
    i = os.urandom(20)
    got = []
    waiter = threading.Thread(target=lambda: got.append(store.get(i, timeout=30)))
    waiter.start()
    c = child(
        store,
        f"""
        _debug_set_crash_point(CRASH_POINTS["seal_before_wake"])
        store.put("sealed before death", bytes.fromhex("{i.hex()}"))
        """,
    )
    assert_killed(c)
    # Nobody else touches the store: the waiter itself must notice the dead
    # lock holder (its wait is sliced) and recover.
    waiter.join(timeout=20)
    assert not waiter.is_alive()
    assert got == ["sealed before death"]
    assert store.statistics().num_recoveries == 1
    store.raw.validate()


def test_killed_holding_pins(store):
    i = store.put(np.zeros(1 << 20))
    c = child(
        store,
        f"""
        a = store.get(bytes.fromhex("{i.hex()}"))
        b = store.get(bytes.fromhex("{i.hex()}"))
        say("pinned")
        hear()
        """,
    )
    assert c.expect() == "pinned"
    c.kill()
    assert store.statistics().bytes_pinned > 0  # not noticed yet
    store.delete(i)  # deferred: the dead child still pins it
    assert store.statistics().num_deleted_pinned == 1
    assert store.raw.reap_dead_clients() == 1
    st = store.statistics()
    assert st.bytes_pinned == 0 and st.num_deleted_pinned == 0 and st.bytes_in_use == 0
    store.raw.validate()


def test_killed_between_create_and_seal(store):
    i = os.urandom(20)
    c = child(
        store,
        f"""
        w = store.create(bytes.fromhex("{i.hex()}"), 1 << 20)
        w.write(0, b"half written")
        say("created")
        hear()
        """,
    )
    assert c.expect() == "created"
    c.kill()
    with pytest.raises(exc.GetTimeoutError, match="still being written"):
        store.get(i)
    assert store.raw.reap_dead_clients() == 1
    with pytest.raises(exc.ObjectNotFoundError):
        store.get(i)
    assert store.statistics().bytes_in_use == 0
    store.put("the id is free again", i)
    store.raw.validate()


def test_full_store_reaps_dead_clients_by_itself(store):
    big = store.put(np.zeros(40 << 20, dtype=np.uint8))
    c = child(
        store,
        f"""
        a = store.get(bytes.fromhex("{big.hex()}"))
        say("pinned")
        hear()
        """,
    )
    assert c.expect() == "pinned"
    c.kill()
    store.delete(big)
    # Only fits once the dead child's pin on `big` is dropped.
    i = store.put(np.ones(40 << 20, dtype=np.uint8))
    assert store.get(i)[0] == 1
    store.raw.validate()


def test_zombie_client_counts_as_dead(store):
    i = store.put(np.zeros(1000))
    c = child(store, f'a = store.get(bytes.fromhex("{i.hex()}")); say("pinned"); hear()')
    assert c.expect() == "pinned"
    os.kill(c.pid, signal.SIGKILL)
    os.waitid(os.P_PID, c.pid, os.WEXITED | os.WNOWAIT)  # dead, not yet reaped: a zombie
    assert store.raw.reap_dead_clients() == 1
    c.wait()
    assert store.statistics().bytes_pinned == 0


def test_killed_while_waiting(store):
    i = os.urandom(20)
    c = child(
        store,
        f"""
        say("waiting")
        store.get(bytes.fromhex("{i.hex()}"), timeout=None)
        """,
    )
    assert c.expect() == "waiting"
    c.kill()
    assert store.raw.reap_dead_clients() == 1
    store.put("late", i)
    assert store.get(i) == "late"
    store.raw.validate()


def test_every_process_killed_leaves_nothing(tmp_path):
    """A store whose every process is SIGKILLed leaves no /dev/shm entry:
    the segment is a memfd, freed by the kernel with its last holder."""
    before = shm_entries()
    c = Child(
        """
        import numpy as np
        from shoal.store import ObjectStore
        store = ObjectStore.open(256 << 20)
        store.put(np.ones(32 << 20, dtype=np.uint8))
        say(os.readlink(f"/proc/self/fd/{store.fd}"))
        hear()
        """
    )
    assert c.expect().startswith("/memfd:shoal-store")
    c.kill()
    assert shm_entries() == before
