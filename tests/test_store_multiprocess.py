"""The store across processes: zero-copy reads in another process, waits
woken by another process's seal, fork safety, and concurrent clients."""

from __future__ import annotations

import os
import textwrap

import numpy as np
import pytest

from shoal import exceptions as exc
from shoal.store import ObjectStore

from ._child import Child

pytestmark = pytest.mark.timeout(60)

ATTACH = """
import numpy as np
from shoal.store import ObjectStore
store = ObjectStore.attach(int(sys.argv[1]) if len(sys.argv) > 1 else {fd})
"""


def child(store, body: str) -> Child:
    return Child(ATTACH.format(fd=store.fd) + textwrap.dedent(body), fds=(store.fd,))


def test_child_reads_what_parent_wrote_zero_copy(store):
    i = store.put(np.arange(1_000_000, dtype=np.int64))
    c = child(
        store,
        f"""
        a = store.get(bytes.fromhex("{i.hex()}"))
        b = store.get(bytes.fromhex("{i.hex()}"))
        base, length = store.raw.mapping
        inside = base <= a.ctypes.data < base + length
        say(int(a.sum()), a.flags.writeable, np.shares_memory(a, b), inside)
        """,
    )
    total, writeable, shared, inside = c.expect().split()
    assert int(total) == sum(range(1_000_000))
    assert (writeable, shared, inside) == ("False", "True", "True")
    assert c.wait() == 0


def test_parent_get_is_woken_by_child_seal(store):
    i = os.urandom(20)
    c = child(
        store,
        f"""
        say("ready")
        hear()
        store.put({{"from": "child"}}, bytes.fromhex("{i.hex()}"))
        say("done")
        """,
    )
    assert c.expect() == "ready"
    with pytest.raises(exc.GetTimeoutError):
        store.get(i, timeout=0.05)
    c.send("go")
    assert store.get(i, timeout=20) == {"from": "child"}
    assert c.expect() == "done"
    assert c.wait() == 0


def test_pins_of_other_processes_count(store):
    i = store.put(np.zeros(1 << 20))
    c = child(
        store,
        f"""
        a = store.get(bytes.fromhex("{i.hex()}"))
        say("pinned")
        hear()
        del a
        say("released")
        hear()
        """,
    )
    assert c.expect() == "pinned"
    store.delete(i)  # deferred: the child still reads it
    assert store.statistics().num_deleted_pinned == 1
    c.send("release")
    assert c.expect() == "released"
    assert store.statistics().num_deleted_pinned == 0
    c.send("exit")
    assert c.wait() == 0
    assert store.statistics().num_clients == 1


def test_forked_child_must_attach_again(store):
    i = store.put("parent value")
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: report through the pipe, never return into pytest
        code = 1
        try:
            try:
                store.get(i)
            except exc.StoreForkedError:
                fresh = ObjectStore.attach(store.fd)
                code = 0 if fresh.get(i) == "parent value" else 2
                fresh.close()
        finally:
            os.write(w, bytes([code]))
            os._exit(0)
    os.close(w)
    try:
        assert os.read(r, 1) == b"\x00"
    finally:
        os.close(r)
        os.waitpid(pid, 0)
    assert store.get(i) == "parent value"  # the parent's handle is unharmed


def test_concurrent_clients_keep_the_store_consistent(store):
    n = 1500
    body = """
    import os, random
    rng = random.Random(int(sys.argv[2]))
    mine = []
    for k in range(N):
        op = rng.random()
        if op < 0.6 or not mine:
            mine.append(store.put(os.urandom(rng.randrange(1, 20000))))
        elif op < 0.8:
            store.delete(mine.pop(rng.randrange(len(mine))))
        else:
            store.get(rng.choice(mine))
    say(len(mine))
    """.replace("N", str(n))
    kids = [Child(ATTACH.format(fd=store.fd) + textwrap.dedent(body), fds=(store.fd,), args=(store.fd, seed)) for seed in (1, 2)]
    counts = [int(k.expect(timeout=50)) for k in kids]
    assert [k.wait() for k in kids] == [0, 0]
    store.raw.validate()
    st = store.statistics()
    assert st.num_sealed == sum(counts)
    assert st.bytes_pinned == 0 and st.num_clients == 1
