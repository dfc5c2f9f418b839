"""Reference counting of objects, for the whole runtime (pure; no I/O).

An object lives while anything keeps it alive:
  * a process holding at least one ObjectRef to it (each process counts
    its own refs and reports only its first and last, so a process is one
    holder however many refs it has);
  * a task that takes it as an argument, until the task ends;
  * a stored object that contains a ref to it, until that object goes.

When nothing does, the object becomes a deletion *candidate*. The shell
deletes candidates only after reading every message already sent by every
process: a process that received a ref from another one reports it before
it reports anything that could lead to the sender's release (causal order
through shared memory), so this check never deletes an object in use.
"""

from __future__ import annotations

from collections.abc import Iterable

DRIVER = 0  #: the holder id of the driver process; workers are 1, 2, ...


class ReferenceTable:
    def __init__(self) -> None:
        self.count: dict[bytes, int] = {}
        self.held_by: dict[int, set[bytes]] = {}
        self.contains: dict[bytes, list[bytes]] = {}
        self.task_args: dict[int, list[bytes]] = {}
        self.candidates: set[bytes] = set()

    def __len__(self) -> int:
        return len(self.count)

    def _inc(self, oid: bytes) -> None:
        self.count[oid] = self.count.get(oid, 0) + 1
        self.candidates.discard(oid)

    def _dec(self, oid: bytes) -> None:
        n = self.count.get(oid, 0) - 1
        if n > 0:
            self.count[oid] = n
        else:
            self.count[oid] = 0
            self.candidates.add(oid)

    # -- holders -------------------------------------------------------------

    def add_holder(self, holder: int, oid: bytes) -> None:
        """Process `holder` took its first ref to `oid`."""
        held = self.held_by.get(holder)
        if held is None:
            held = self.held_by[holder] = set()
        if oid not in held:
            held.add(oid)
            self._inc(oid)

    def remove_holder(self, holder: int, oid: bytes) -> None:
        """Process `holder` dropped its last ref to `oid`."""
        held = self.held_by.get(holder)
        if held is not None and oid in held:
            held.remove(oid)
            self._dec(oid)

    def holder_gone(self, holder: int) -> None:
        """A process died or left: everything it held is released."""
        for oid in self.held_by.pop(holder, ()):
            self._dec(oid)

    def holds(self, holder: int, oid: bytes) -> bool:
        return oid in self.held_by.get(holder, ())

    # -- tasks and containers ------------------------------------------------

    def hold_for_task(self, seq: int, oids: Iterable[bytes]) -> None:
        """Task seq uses these objects (arguments) until release_task."""
        oids = list(oids)
        if oids:
            self.task_args[seq] = oids
            for oid in oids:
                self._inc(oid)

    def release_task(self, seq: int) -> None:
        for oid in self.task_args.pop(seq, ()):
            self._dec(oid)

    def add_contained(self, container: bytes, oids: Iterable[bytes]) -> None:
        """Stored object `container` holds refs to `oids`."""
        oids = list(oids)
        if oids:
            self.contains.setdefault(container, []).extend(oids)
            for oid in oids:
                self._inc(oid)

    # -- collection ----------------------------------------------------------

    def take_candidates(self) -> set[bytes]:
        """Objects that nothing keeps alive now (the caller confirms with
        collect() after reading every message in flight)."""
        out, self.candidates = self.candidates, set()
        return out

    def collect(self, oid: bytes) -> bool:
        """Forget `oid` if still unreferenced; its contained objects lose a
        reference (and may become candidates). True if it was collected."""
        if self.count.get(oid, 1) != 0:
            return False
        del self.count[oid]
        for inner in self.contains.pop(oid, ()):
            self._dec(inner)
        return True

    def check(self) -> None:
        """Assert that every count equals the holds it is made of."""
        expect: dict[bytes, int] = {}
        for held in self.held_by.values():
            for oid in held:
                expect[oid] = expect.get(oid, 0) + 1
        for oids in list(self.task_args.values()) + list(self.contains.values()):
            for oid in oids:
                expect[oid] = expect.get(oid, 0) + 1
        for oid, n in self.count.items():
            assert n == expect.get(oid, 0), (oid.hex(), n, expect.get(oid, 0))
        for oid, n in expect.items():
            assert self.count.get(oid) == n, (oid.hex(), self.count.get(oid), n)
