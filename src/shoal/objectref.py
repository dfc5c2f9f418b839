"""ObjectRef, the process's runtime context, and per-process ref counting.

Every process of a runtime (the driver and each worker) has one *context*:
the object that submits tasks, puts and gets objects, and counts this
process's ObjectRefs. ``ObjectRef`` talks to the context of the runtime it
was made in, so refs that outlive a runtime are inert.

Reference counting is two-level: each process counts its own refs
(LocalRefs) and tells the runtime only when it takes its first ref to an
object and when it drops its last (see scheduler/refs.py). ``__del__`` may
run in any thread at any time, so it only queues the drop; the context
applies queued drops at its next synchronisation point.
"""

from __future__ import annotations

import abc
import collections
import contextlib
import itertools
import threading
import time
from typing import TYPE_CHECKING, Any

from shoal import exceptions as exc
from shoal import ids, serialization

if TYPE_CHECKING:  # imported lazily: asyncio alone costs ~20 ms at start-up
    import asyncio
    import concurrent.futures

_current: "Context | None" = None

#: Seconds, at least, between two scans of a get()'s list for errors.
FAIL_FAST_SCAN_S = 0.002

#: Waits in the store return to Python at least this often (seconds). A
#: signal that lands just before the store's futex sleep (during its spin,
#: or while it takes the lock) does not interrupt that sleep, and its Python
#: handler runs only once the wait returns: a cancel's KeyboardInterrupt in
#: a worker, Ctrl-C in the driver. This bounds how late either can be.
WAIT_SLICE_S = 0.25


#: sealed_mask() bytes inverted (1 <-> 0) by bytes.translate.
_NOT = bytes([1, 0]) + bytes(254)


def _slice(wait: float | None) -> float:
    return WAIT_SLICE_S if wait is None else min(wait, WAIT_SLICE_S)


@contextlib.contextmanager
def waiting():
    """Around a wait that is not a get() or wait() (a Future's result, a
    nested joblib call): in a task, give back its CPU for the time of the
    wait, as get() does, so that the tasks it waits for can run."""
    ctx = _current
    blocked = ctx is not None and ctx.before_wait([])
    try:
        yield
    finally:
        if blocked:
            ctx.after_wait()


def current() -> "Context | None":
    """This process's context, or None outside a runtime."""
    return _current


def context_of(ref: Any) -> "Context | None":
    """The runtime of `ref`: its own for shoal's refs; the current one for
    Ray's (on a Ray cluster)."""
    return ref._ctx if type(ref) is ObjectRef else _current


def set_current(ctx: "Context | None") -> None:
    global _current
    _current = ctx


class LocalRefs:
    """This process's count of ObjectRefs per object."""

    def __init__(self) -> None:
        self.counts: dict[bytes, int] = {}
        self.lock = threading.Lock()
        self.firsts: list[bytes] = []
        self.dropped: collections.deque[bytes] = collections.deque()

    def incref(self, oid: bytes) -> None:
        with self.lock:
            n = self.counts.get(oid)
            if n:
                self.counts[oid] = n + 1
            else:
                self.counts[oid] = 1
                self.firsts.append(oid)

    def decref(self, oid: bytes) -> None:
        self.dropped.append(oid)  # atomic: safe in __del__, from any thread

    def drain(self) -> tuple[list[bytes], list[bytes]]:
        """Objects this process started to hold, and stopped holding, since
        the last drain (firsts apply before lasts)."""
        with self.lock:
            firsts, self.firsts = self.firsts, []
            lasts = []
            dropped, counts = self.dropped, self.counts
            while dropped:
                oid = dropped.popleft()
                n = counts.get(oid, 0) - 1
                if n > 0:
                    counts[oid] = n
                else:
                    counts.pop(oid, None)
                    lasts.append(oid)
        return firsts, lasts

    def pending(self) -> bool:
        return bool(self.firsts or self.dropped)


class RecordingLocalRefs(LocalRefs):
    """LocalRefs that also note where this process made its first ref to
    each object (Ray's RAY_record_ref_creation_sites). Used only when asked
    for, so that counting refs costs nothing more otherwise."""

    def __init__(self) -> None:
        super().__init__()
        self.sites: dict[bytes, str] = {}

    def incref(self, oid: bytes) -> None:
        if oid not in self.counts:
            self.sites.setdefault(oid, call_site())
        super().incref(oid)

    def drain(self) -> tuple[list[bytes], list[bytes]]:
        firsts, lasts = super().drain()
        for oid in lasts:
            self.sites.pop(oid, None)
        return firsts, lasts


def call_site() -> str:
    """'file:line in function' of the innermost caller outside shoal."""
    import sys

    frame = sys._getframe(1)
    here = __file__.rsplit("/", 1)[0]
    while frame is not None and frame.f_code.co_filename.startswith(here):
        frame = frame.f_back
    if frame is None:
        return "(inside shoal)"
    return f"{frame.f_code.co_filename}:{frame.f_lineno} in {frame.f_code.co_name}"


def _is_ray(cls: type, *names: str) -> bool:
    """Whether `cls` is (or derives from) one of Ray's classes `names`
    (checked by name: Ray is not imported for it)."""
    return any(c.__name__ in names and c.__module__.split(".")[0] == "ray" for c in cls.__mro__)


class ObjectRef(metaclass=abc.ABCMeta):
    """A reference to an object in the store: the future result of a task,
    or a value that was put. Hashable and compared by ID; pickles by ID
    (the receiving process then holds the object too); ``await ref`` and
    ``ref.future()`` wait for the value.

    On a Ray cluster (init(address=...)) refs are Ray's own, and count as
    instances of this class too."""

    __slots__ = ("_id", "_ctx", "__weakref__")

    def __init__(self, object_id: bytes, ctx: "Context | None" = None):
        if type(object_id) is not bytes or len(object_id) != ids.ID_SIZE:
            self._ctx = None  # (for __del__, which runs even so)
            raise ValueError(f"an object ID is {ids.ID_SIZE} bytes, not {object_id!r}")
        self._id = object_id
        self._ctx = ctx
        if ctx is not None:
            ctx.refs.incref(object_id)

    @classmethod
    def __subclasshook__(cls, other: type):
        if cls is ObjectRef and _is_ray(other, "ObjectRef", "ClientObjectRef"):
            return True
        return NotImplemented

    def __del__(self) -> None:
        ctx = self._ctx
        if ctx is not None:
            ctx.refs.decref(self._id)

    def binary(self) -> bytes:
        return self._id

    def hex(self) -> str:
        return self._id.hex()

    def task_id(self) -> bytes | None:
        """The task that returns this object (None for put objects)."""
        return ids.task_of(self._id)

    def job_id(self) -> "JobID":
        """The job (runtime session) the object belongs to."""
        return JobID(bytes.fromhex(getattr(self._ctx, "session", "") or "00000000"))

    def call_site(self) -> str:
        """Where the ref was made: "" (as Ray without
        RAY_record_ref_creation_sites)."""
        return ""

    def owner_address(self) -> bytes:
        """An opaque name of the object's owner (Ray: a serialized
        address). In shoal the driver's runtime owns every object."""
        return f"shoal:{getattr(self._ctx, 'session', '')}".encode()

    def _on_completed(self, callback) -> None:
        """Call callback(value) once the object is ready, from another
        thread; for a failed task the value is its exception, as in Ray."""
        def done(fut) -> None:
            error = fut.exception()
            callback(error if error is not None else fut.result())

        self.future().add_done_callback(done)

    @classmethod
    def from_binary(cls, object_id: bytes) -> "ObjectRef":
        return cls(object_id, _current)

    @classmethod
    def from_hex(cls, text: str) -> "ObjectRef":
        return cls(bytes.fromhex(text), _current)

    @classmethod
    def nil(cls) -> "ObjectRef":
        return cls(ids.nil_id(), None)

    def is_nil(self) -> bool:
        return self._id == ids.nil_id()

    def __hash__(self) -> int:
        return hash(self._id)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ObjectRef) and other._id == self._id

    def __repr__(self) -> str:
        return f"ObjectRef({self._id.hex()})"

    def __reduce__(self):
        serialization.record_nested(self)
        return (_rebuild_ref, (self._id,))

    # Futures ----------------------------------------------------------------

    def future(self) -> "concurrent.futures.Future":
        """A concurrent.futures.Future that resolves to the value (or the
        task's exception)."""
        ctx = self._require_ctx()
        return ctx.future_for(self)

    def as_future(self) -> "asyncio.Future":
        """An asyncio future for the value, bound to the running loop."""
        import asyncio

        return asyncio.wrap_future(self.future())

    def __await__(self):
        return self.as_future().__await__()

    def _require_ctx(self) -> "Context":
        ctx = self._ctx
        if ctx is None or ctx.closed:
            raise _stale_error(self)
        return ctx


class JobID:
    """The ID of a job (Ray's JobID): one runtime session in shoal."""

    __slots__ = ("_id",)

    def __init__(self, binary: bytes):
        self._id = binary

    def binary(self) -> bytes:
        return self._id

    def hex(self) -> str:
        return self._id.hex()

    def __eq__(self, other: object) -> bool:
        return isinstance(other, JobID) and other._id == self._id

    def __hash__(self) -> int:
        return hash(self._id)

    def __repr__(self) -> str:
        return f"JobID({self._id.hex()})"


def _stale_error(ref: ObjectRef) -> exc.StaleObjectRefError:
    return exc.StaleObjectRefError(
        f"{ref!r} belongs to a runtime that was shut down; its value is gone. Refs do not "
        f"outlive shutdown(): recompute or put() the value again in the current runtime")


def _check_stale(ctx: "Context", refs: list) -> None:
    """Raise StaleObjectRefError for a ref of a runtime that was shut down
    (its object can never appear: waiting for it would hang)."""
    for ref in refs:
        owner = ref._ctx
        if owner is not ctx and owner is not None and owner.closed:
            raise _stale_error(ref)


def _rebuild_ref(object_id: bytes) -> ObjectRef:
    return ObjectRef(object_id, _current)


class ObjectRefGenerator(metaclass=abc.ABCMeta):
    """The refs a generator task yields, each as soon as the worker seals it
    (``num_returns="streaming"``, the default for generator functions).
    Iterate it (``for ref in gen``, or ``async for``); ``completed()`` is a
    ref that resolves when the generator has finished (or raises its
    error). On a Ray cluster, Ray's generators count as instances."""

    @classmethod
    def __subclasshook__(cls, other: type):
        if cls is ObjectRefGenerator and _is_ray(other, "ObjectRefGenerator"):
            return True
        return NotImplemented

    def __init__(self, task_id: bytes, ctx: "Context"):
        self._task_id = task_id
        self._ctx = ctx
        self._index = 1
        self._end = ObjectRef(ids.return_id(task_id, 0), ctx)
        self._done = False

    def __iter__(self) -> "ObjectRefGenerator":
        return self

    def __next__(self) -> ObjectRef:
        return self._next(None)

    def next(self, timeout: float | None = None) -> ObjectRef:
        return self._next(timeout)

    def _next(self, timeout: float | None) -> ObjectRef:
        if self._done:
            raise StopIteration
        ctx = self._ctx
        ctx.check_open()
        store = ctx.store.raw
        item = ids.return_id(self._task_id, self._index)
        end = self._end._id
        deadline = None if timeout is None else time.monotonic() + timeout
        blocked = False
        try:
            while True:
                seq = store.seal_sequence()
                have_item, have_end = store.sealed_mask([item, end])
                if have_item:
                    self._index += 1
                    return ObjectRef(item, ctx)
                if have_end:
                    self._done = True
                    buf = store.get(end, 0)
                    if buf.metadata == serialization.ERROR:
                        return ObjectRef(end, ctx)  # get() of it raises the generator's error
                    raise StopIteration
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    raise exc.GetTimeoutError(f"no item of the generator within {timeout} s")
                if not blocked:
                    blocked = ctx.before_wait([item, end])
                store.wait_seal_after(seq, _slice(left))
                ctx.check_cancelled()
        finally:
            if blocked:
                ctx.after_wait()

    def __aiter__(self) -> "ObjectRefGenerator":
        return self

    async def __anext__(self) -> ObjectRef:
        import asyncio

        # The end travels as None: a StopIteration cannot be set on an
        # asyncio future (the await would never complete).
        ref = await asyncio.get_running_loop().run_in_executor(None, self._next_or_none)
        if ref is None:
            raise StopAsyncIteration
        return ref

    def _next_or_none(self) -> ObjectRef | None:
        try:
            return self._next(None)
        except StopIteration:
            return None

    def completed(self) -> ObjectRef:
        """A ref that resolves (to the number of items) when the generator ends."""
        return self._end

    def is_finished(self) -> bool:
        return self._done or self._ctx.store.raw.contains(self._end._id)

    def __repr__(self) -> str:
        return f"ObjectRefGenerator({self._task_id.hex()})"


class DynamicObjectRefGenerator:
    """What a task with num_returns="dynamic" (deprecated in Ray, still
    accepted) returns once it has run: the refs of the items its generator
    yielded, to iterate."""

    def __init__(self, refs: list):
        self._refs = list(refs)

    def __iter__(self):
        return iter(self._refs)

    def __len__(self) -> int:
        return len(self._refs)

    def __repr__(self) -> str:
        return f"DynamicObjectRefGenerator({len(self._refs)} refs)"


class _ErrorScan:
    """The refs of a get()'s list that it has not reached and not seen
    sealed yet, scanned for errors while get() waits.

    A scan costs time in proportion to len(oids), and a get() may wait
    once per ref: scans are spaced to take at most ~1/20 of the time
    (FAIL_FAST_SCAN_S apart at least), and none runs when nothing was
    sealed since the last. Objects found sealed without an error leave
    `oids` (they stay so)."""

    __slots__ = ("oids", "seq", "next_at")

    def __init__(self, oids: list[bytes]) -> None:
        self.oids = oids
        self.seq: int | None = None  # the store's seal sequence at the last scan
        self.next_at = 0.0  # time.monotonic() after which the next may run

    def run(self, ctx: "Context", seq: int, started: float) -> None:
        """Raise the error of the first object sealed as an error."""
        store = ctx.store.raw
        mask = store.sealed_mask(self.oids)
        if 1 in mask:
            pending = []
            for oid, sealed in zip(self.oids, mask):
                if not sealed:
                    pending.append(oid)
                    continue
                try:
                    buf = store.get(oid, 0.0)
                except exc.ObjectNotFoundError:  # deleted since: nothing to report
                    continue
                if buf.metadata == serialization.ERROR:
                    ctx._value(buf, oid)  # raises the object's error
                buf.release()
            self.oids = pending
        self.seq = seq
        end = time.monotonic()
        self.next_at = end + max(FAIL_FAST_SCAN_S, 20 * (end - started))


class Context:
    """What every process of a runtime can do. Subclasses (the driver's
    runtime, the worker's context) provide submission and the hooks that
    tell the runtime about blocking and references."""

    #: the holder id of this process in the runtime's reference table
    holder: int = 0
    #: serialized arguments up to this size travel in the task message
    inline_limit: int = 100 * 1024

    def __init__(self, store) -> None:
        self.store = store
        self.refs = LocalRefs()
        self.closed = False
        self._futures: dict[bytes, list] = {}
        self._futures_new: list[bytes] = []  # objects of _futures the resolver has not seen yet
        self._future_thread: threading.Thread | None = None
        self._futures_lock = threading.Lock()

    # Hooks -------------------------------------------------------------------

    def before_wait(self, object_ids: list[bytes]) -> bool:
        """Called before blocking on unsealed objects; returns True if
        after_wait must be called (a worker gives back its CPU)."""
        return False

    def after_wait(self) -> None:
        pass

    def why_pending(self, object_id: bytes) -> str | None:
        """Why the task making object_id can never run, if the runtime
        knows it cannot (the driver knows; None elsewhere)."""
        return None

    def check_cancelled(self) -> None:
        """Called between slices of a wait: a worker raises the running
        task's cancel here if its interrupt was missed."""

    def check_open(self) -> None:
        if self.closed:
            raise exc.RuntimeClosedError("the runtime was shut down; call init() again")

    # Objects -----------------------------------------------------------------

    def get(self, refs: list, timeout: float | None) -> list:
        """Values of refs, in order (see api.get). Fails fast: while it
        waits for one ref, an error sealed for any later ref of the list is
        raised at once, as Ray does."""
        self.check_open()
        store = self.store.raw
        values = []
        blocked = False
        scan = None  # made when a ref is not ready (the rare path)
        deadline = None if timeout is None else time.monotonic() + timeout
        try:
            for ref in refs:
                try:
                    buf = store.get(ref._id, 0.0)
                except (exc.ObjectNotFoundError, exc.GetTimeoutError):
                    buf = None
                if buf is None:  # wait outside the except: a Ctrl-C then has no internal context
                    if scan is None:
                        _check_stale(self, refs)
                        scan = _ErrorScan([r._id for r in refs[len(values) + 1:]])
                        if timeout != 0:
                            blocked = self.before_wait([r._id for r in refs])
                    buf = self._wait_get(ref, scan, deadline, timeout)
                values.append(self._value(buf, ref._id))
        finally:
            if blocked:
                self.after_wait()
        return values

    def _wait_get(self, ref: ObjectRef, scan: "_ErrorScan", deadline: float | None,
                  timeout: float | None):
        """The buffer of `ref` once it is sealed; meanwhile, the error of
        any object of `scan` sealed as an error is raised.

        Woken by each seal in the store while `scan` has objects; see
        _ErrorScan for what a scan costs.
        """
        store = self.store.raw
        oid = ref._id
        while True:
            seq = store.seal_sequence()
            now = time.monotonic()
            wait = None if deadline is None else max(0.0, deadline - now)
            if not scan.oids:  # nothing left to fail fast on: the store waits for us
                try:
                    return store.get(oid, _slice(wait))
                except (exc.ObjectNotFoundError, exc.GetTimeoutError):
                    if wait is not None and wait <= WAIT_SLICE_S:
                        raise self._get_timeout(ref, timeout) from None
                    self.check_cancelled()
                    continue  # a slice ended: signal handlers run, then wait on
            try:
                return store.get(oid, 0.0)
            except (exc.ObjectNotFoundError, exc.GetTimeoutError):
                pass
            if seq != scan.seq and now >= scan.next_at:
                scan.run(self, seq, now)
                continue  # look again: `ref` may have been sealed meanwhile
            if wait == 0:
                raise self._get_timeout(ref, timeout)
            if seq != scan.seq:  # seals not scanned yet: come back for them
                gap = max(0.0, scan.next_at - now)
                wait = gap if wait is None else min(wait, gap)
            store.wait_seal_after(seq, _slice(wait))
            self.check_cancelled()

    def _get_timeout(self, ref: ObjectRef, timeout: float | None) -> exc.GetTimeoutError:
        why = self.why_pending(ref._id)
        if why is not None:
            return exc.GetTimeoutError(
                f"get timed out after {timeout} s: {ref!r} is not ready: {why}. Cancel it, or start "
                f"shoal with the resources it needs (init(num_cpus=..., num_gpus=..., resources=...))")
        return exc.GetTimeoutError(
            f"get timed out after {timeout} s: {ref!r} is not ready (its task is still queued "
            f"or running)")

    def _value(self, buf, oid: bytes) -> Any:
        value = serialization.deserialize(buf, buf.metadata, oid)
        if buf.metadata == serialization.ERROR:
            if isinstance(value, exc.RayTaskError):
                raise value.as_instanceof_cause()
            raise value
        return value

    def wait(self, refs: list, num_returns: int, timeout: float | None) -> tuple[list, list]:
        """(ready, not_ready) in input order (see api.wait). A generator in
        `refs` is ready when its next item (or its end) is."""
        self.check_open()
        if any(type(r) is ObjectRefGenerator for r in refs):
            return self._wait_generators(refs, num_returns, timeout)
        mask = self._wait_sealed([r._id for r in refs], lambda m: m.count(1) >= num_returns, refs, timeout)
        ready, not_ready = [], []
        for ref, flag in zip(refs, mask):
            (ready if flag and len(ready) < num_returns else not_ready).append(ref)
        return ready, not_ready

    def _wait_generators(self, refs: list, num_returns: int, timeout: float | None) -> tuple[list, list]:
        # Two objects per generator (its next item and its end), one per ref.
        oids, owners = [], []
        for i, r in enumerate(refs):
            if type(r) is ObjectRefGenerator:
                oids += [ids.return_id(r._task_id, r._index), r._end._id]
                owners += [i, i]
            else:
                oids.append(r._id)
                owners.append(i)

        def ready_refs(mask) -> list[int]:
            return sorted({owners[j] for j, sealed in enumerate(mask) if sealed})

        mask = self._wait_sealed(oids, lambda m: len(ready_refs(m)) >= num_returns,
                                 [r if type(r) is ObjectRef else r._end for r in refs], timeout)
        chosen = set(ready_refs(mask)[:num_returns])
        return [refs[i] for i in sorted(chosen)], [r for i, r in enumerate(refs) if i not in chosen]

    def _wait_sealed(self, oids: list[bytes], enough, refs: list, timeout: float | None) -> bytes:
        """Wait until enough(sealed mask of oids) or `timeout` seconds pass
        (None: no limit); returns the last mask. `refs` are checked for a
        shut-down runtime before the first wait."""
        store = self.store.raw
        deadline = None if timeout is None else time.monotonic() + timeout
        blocked = waited = False
        try:
            while True:
                seq = store.seal_sequence()
                mask = store.sealed_mask(oids)
                if enough(mask):
                    return mask
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    return mask
                if not waited:
                    waited = True
                    _check_stale(self, refs)
                    blocked = self.before_wait(oids)
                store.wait_seal_after(seq, _slice(left))
                self.check_cancelled()
        finally:
            if blocked:
                self.after_wait()

    def put(self, value: Any) -> ObjectRef:
        """Store value and return a ref this process holds."""
        self.check_open()
        if isinstance(value, ObjectRef):
            raise TypeError(
                "put() of an ObjectRef is not allowed: pass the ref itself, or put a list "
                "containing it")
        oid = ids.new_put_id()
        s = serialization.serialize(value)
        ref = ObjectRef(oid, self)
        self.store.put_serialized(oid, s)
        self.on_put(oid, s.nested)
        return ref

    def handle_dropped(self) -> None:
        """An actor handle was dropped in this process (the driver's
        runtime wakes its I/O thread to apply it; others do nothing)."""

    def on_put(self, oid: bytes, nested: list) -> None:
        """The process stored `oid`, which contains refs `nested`."""

    # Futures -------------------------------------------------------------------

    def future_for(self, ref: ObjectRef, fut: "concurrent.futures.Future | None" = None
                   ) -> "concurrent.futures.Future":
        """A Future (`fut`, or a new one) completed with the value of `ref`
        (or its error) once the object is sealed."""
        import concurrent.futures

        if fut is None:
            fut = concurrent.futures.Future()
        if self.store.raw.contains(ref._id):
            self._complete(fut, ref)
            return fut
        fut._shoal_ref = ref  # keeps the object alive until the future resolves
        with self._futures_lock:
            futs = self._futures.get(ref._id)
            if futs is None:
                self._futures[ref._id] = [fut]
                self._futures_new.append(ref._id)
            else:
                futs.append(fut)
            if self._future_thread is None:
                self._future_thread = threading.Thread(
                    target=self._resolve_futures, name="shoal-futures", daemon=True)
                self._future_thread.start()
        return fut

    def _complete(self, fut: "concurrent.futures.Future", ref: ObjectRef) -> None:
        import concurrent.futures

        if fut.done():  # cancelled by its waiter (an await that was cancelled itself)
            return
        try:
            value = self.get([ref], None)[0]
        except BaseException as e:  # the task's error, delivered to the future
            deliver, outcome = fut.set_exception, e
        else:
            deliver, outcome = fut.set_result, value
        try:
            deliver(outcome)
        except concurrent.futures.InvalidStateError:
            pass  # cancelled meanwhile: nobody waits for it (and this thread must go on)

    def _resolve_futures(self) -> None:
        """Thread: completes futures as their objects are sealed.

        Each round costs one sealed_mask() of the pending objects and C-speed
        list filtering (itertools.compress), so that thousands of pending
        futures (an Executor's) take little of the GIL from the thread that
        submits them."""
        store = self.store.raw
        pending: list[bytes] = []
        while not self.closed:
            seq = store.seal_sequence()
            with self._futures_lock:
                if self._futures_new:
                    pending += self._futures_new
                    self._futures_new = []
                if not pending:
                    self._future_thread = None
                    return
            mask = store.sealed_mask(pending)
            if 1 not in mask:
                store.wait_seal_after(seq, 1.0)
                continue
            sealed = list(itertools.compress(pending, mask))
            pending = list(itertools.compress(pending, mask.translate(_NOT)))
            self._complete_sealed(sealed)

    def _complete_sealed(self, oids: list[bytes]) -> None:
        """Complete the futures of sealed objects. (A function of its own:
        no frame of the resolver keeps the last future, and so its value,
        alive while it waits for the next seal.)"""
        for oid in oids:
            with self._futures_lock:
                futs = self._futures.pop(oid, [])
            for fut in futs:
                ref, fut._shoal_ref = fut._shoal_ref, None
                self._complete(fut, ref)
