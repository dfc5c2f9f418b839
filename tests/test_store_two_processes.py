"""The store's Python API driven from two processes at once against a model,
by hypothesis: create, seal, abort, get, release and delete in either
process, and the second process killed at random (between operations or in
the middle of a seal). After each step the store's invariants hold and the
model agrees with what both processes see; a kill loses nothing sealed and
leaves nothing pinned or half-written once the dead client is reaped."""

from __future__ import annotations

import hashlib
import os
import random

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from shoal import exceptions as exc
from shoal.store import ObjectStore
from tests._child import Child

CAPACITY = 4 << 20
MAX_OBJECTS = 256
SIZES = [0, 1, 64, 100, 4096, 20_000, 100_000]

PEER = """
import hashlib, random
from shoal import exceptions as exc
from shoal.store import ObjectStore
store = ObjectStore.attach(int(sys.argv[1]))
writers, pins = {}, []
def data_of(size, seed):
    return random.Random(seed).randbytes(size)
say("ready")
while True:
    words = hear().split()
    if not words or words[0] == "bye":
        break
    cmd, args = words[0], words[1:]
    try:
        if cmd == "create":
            oid = bytes.fromhex(args[0])
            w = store.create(oid, int(args[1]))
            w.write(0, data_of(int(args[1]), int(args[2])))
            writers[oid] = w
            say("ok")
        elif cmd == "seal":
            w = writers.pop(bytes.fromhex(args[0]))
            w.seal()
            w.release()
            say("ok")
        elif cmd == "abort":
            writers.pop(bytes.fromhex(args[0])).abort()
            say("ok")
        elif cmd == "get":
            buf = store.get_buffer(bytes.fromhex(args[0]))
            pins.append(buf)
            say("ok", hashlib.sha1(bytes(buf)).hexdigest())
        elif cmd == "release":
            buf = pins.pop(int(args[0]))
            digest = hashlib.sha1(bytes(buf)).hexdigest()
            buf.release()
            say("ok", digest)
        elif cmd == "delete":
            store.delete(bytes.fromhex(args[0]))
            say("ok")
        else:
            say("err", "unknown")
    except exc.RayError as e:
        say("err", type(e).__name__)
"""


def data_of(size: int, seed: int) -> bytes:
    return random.Random(seed).randbytes(size)


def digest(data: bytes) -> str:
    return hashlib.sha1(data).hexdigest()


class Peer:
    """The second process: a store client driven line by line."""

    def __init__(self, store: ObjectStore):
        self.child = Child(PEER, fds=(store.fd,), args=(store.fd,))
        assert self.child.expect(60) == "ready"

    def ask(self, *words) -> list[str]:
        self.child.send(" ".join(map(str, words)))
        return self.child.expect(30).split()

    def close(self) -> None:
        self.child.send("bye")
        assert self.child.wait(30) == 0

    def kill(self) -> None:
        self.child.kill()


class TwoProcessStore(RuleBasedStateMachine):
    def __init__(self):
        super().__init__()
        self.store = ObjectStore.open(CAPACITY, max_objects=MAX_OBJECTS)
        self.peer = Peer(self.store)
        self.rng = random.Random(0)
        #: oid -> {"state": created|sealed, "owner": "A"|"B", "digest", "writer" (A's)}
        self.objects: dict[bytes, dict] = {}
        self.pins = {"A": [], "B": []}  # (oid, digest) per pin, in order; A's with its buffer
        self.kills = 0

    def teardown(self):
        for _, _, buf in self.pins["A"]:
            buf.release()
        for o in self.objects.values():
            if o.get("writer") is not None:
                o["writer"].release()
        try:
            self.peer.close()
        finally:
            self.store.close()

    # -- helpers -------------------------------------------------------------------

    def ids(self, state=None, owner=None) -> list[bytes]:
        return sorted(oid for oid, o in self.objects.items()
                      if (state is None or o["state"] == state) and (owner is None or o["owner"] == owner))

    # -- rules ---------------------------------------------------------------------

    @rule(who=st.sampled_from("AB"), size=st.sampled_from(SIZES), seed=st.integers(0, 1000))
    def create(self, who, size, seed):
        oid = self.rng.randbytes(20)
        data = data_of(size, seed)
        if who == "A":
            try:
                w = self.store.create(oid, size)
            except exc.StoreFullError:
                return
            w.write(0, data)
            writer = w
        else:
            answer = self.peer.ask("create", oid.hex(), size, seed)
            if answer[0] == "err":
                assert answer[1] in ("StoreFullError", "ObjectTableFullError")
                return
            writer = None
        self.objects[oid] = {"state": "created", "owner": who, "digest": digest(data), "writer": writer}

    @precondition(lambda self: self.ids("created"))
    @rule(data=st.data(), abort=st.booleans())
    def finish(self, data, abort):
        oid = data.draw(st.sampled_from(self.ids("created")))
        o = self.objects[oid]
        if o["owner"] == "A":
            w, o["writer"] = o["writer"], None
            if abort:
                w.abort()
            else:
                w.seal()
                w.release()
        else:
            assert self.peer.ask("abort" if abort else "seal", oid.hex()) == ["ok"]
        if abort:
            del self.objects[oid]
            assert not self.store.contains(oid)
        else:
            o["state"] = "sealed"

    @precondition(lambda self: self.objects)
    @rule(who=st.sampled_from("AB"), data=st.data())
    def get(self, who, data):
        oid = data.draw(st.sampled_from(self.ids()))
        o = self.objects[oid]
        if who == "A":
            try:
                buf = self.store.get_buffer(oid)
            except exc.GetTimeoutError:
                assert o["state"] == "created"
                return
            assert o["state"] == "sealed" and digest(bytes(buf)) == o["digest"]
            self.pins["A"].append((oid, o["digest"], buf))
        else:
            answer = self.peer.ask("get", oid.hex())
            if o["state"] == "created":
                assert answer == ["err", "GetTimeoutError"]
                return
            assert answer == ["ok", o["digest"]]
            self.pins["B"].append((oid, o["digest"]))

    @precondition(lambda self: self.pins["A"] or self.pins["B"])
    @rule(data=st.data())
    def release(self, data):
        who = data.draw(st.sampled_from([w for w in "AB" if self.pins[w]]))
        k = data.draw(st.integers(0, len(self.pins[who]) - 1))
        if who == "A":
            _, want, buf = self.pins["A"].pop(k)
            assert digest(bytes(buf)) == want  # intact while pinned, deleted or not
            buf.release()
        else:
            _, want = self.pins["B"].pop(k)
            assert self.peer.ask("release", k) == ["ok", want]

    @precondition(lambda self: self.objects)
    @rule(who=st.sampled_from("AB"), data=st.data())
    def delete(self, who, data):
        oid = data.draw(st.sampled_from(self.ids()))
        o = self.objects[oid]
        if who == "A":
            try:
                self.store.delete(oid)
                answer = ["ok"]
            except exc.ObjectStateError:
                answer = ["err", "ObjectStateError"]
        else:
            answer = self.peer.ask("delete", oid.hex())
        if o["state"] == "created":
            assert answer == ["err", "ObjectStateError"]
            return
        assert answer == ["ok"]
        del self.objects[oid]
        assert not self.store.contains(oid)

    def _after_peer_death(self) -> None:
        """The peer is dead: reap it. Its unsealed objects are aborted and
        its pins dropped; every sealed object stays."""
        self.kills += 1
        self.store.raw.reap_dead_clients()
        for oid in self.ids("created", "B"):
            del self.objects[oid]
            assert not self.store.contains(oid)
        self.pins["B"].clear()
        self.peer = Peer(self.store)

    @rule()
    def kill_peer(self):
        self.peer.kill()
        self._after_peer_death()

    @precondition(lambda self: self.ids("created", "B"))
    @rule(data=st.data())
    def kill_peer_while_it_seals(self, data):
        oid = data.draw(st.sampled_from(self.ids("created", "B")))
        self.peer.child.send(f"seal {oid.hex()}")  # and kill it at once: sealed or not, never half
        self.peer.kill()
        sealed = self.store.contains(oid)
        self.objects[oid]["state"] = "sealed" if sealed else "created"
        self._after_peer_death()
        if sealed:
            buf = self.store.get_buffer(oid)
            assert digest(bytes(buf)) == self.objects[oid]["digest"]
            buf.release()

    # -- invariants ---------------------------------------------------------------

    @invariant()
    def agrees_with_the_model(self):
        self.store.raw.validate()
        stats = self.store.statistics()
        sealed = self.ids("sealed")
        assert stats.num_sealed == len(sealed)
        assert stats.num_created == len(self.objects) - len(sealed)
        for oid, o in self.objects.items():
            assert self.store.contains(oid) == (o["state"] == "sealed")
        if not self.pins["A"] and not self.pins["B"] and stats.num_created == 0:
            assert stats.bytes_pinned == 0


TestTwoProcessStore = TwoProcessStore.TestCase
TestTwoProcessStore.settings = settings(
    max_examples=int(os.environ.get("SHOAL_STATEFUL_EXAMPLES", 10)),
    stateful_step_count=35,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
TestTwoProcessStore = pytest.mark.timeout(600)(TestTwoProcessStore)
