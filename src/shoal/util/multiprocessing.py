"""A drop-in for multiprocessing.Pool on shoal's actors (Ray's
ray.util.multiprocessing.Pool): ``from shoal.util.multiprocessing import
Pool``.

Each pool process is an actor that runs the initializer once, then chunks
of calls in the order they reach it. Arguments and results travel through
the object store, so large numpy arrays are not pickled into pipes.

As in Ray, the processes hold no CPU (num_cpus=0 unless ray_remote_args say
otherwise; a pool may then be used from inside a pool's task), the pool
starts the runtime with num_cpus=processes if none runs, and refuses more
processes than the runtime has CPUs. An exception raised by the function
fails only its own item: map() and get() raise it, imap() and
imap_unordered() return it in that item's place, as a PoolTaskError (Ray's
class, whose .underlying is the exception) that is also an instance of the
exception's own class.
"""

from __future__ import annotations

import itertools
import math
import multiprocessing
import os
import threading
import traceback
from multiprocessing import JoinableQueue, TimeoutError  # at Ray's paths, as Ray has them
from typing import Any, Callable, Iterable

from shoal import api
from shoal import exceptions as exc

__all__ = ["Pool", "AsyncResult", "IMapIterator", "JoinableQueue", "PoolTaskError", "TimeoutError"]


class PoolTimeoutError(exc.GetTimeoutError, multiprocessing.TimeoutError):
    """A result was not ready in time: caught by `except
    multiprocessing.TimeoutError` (as with the stdlib's Pool) and by
    `except TimeoutError` / GetTimeoutError."""


class PoolTaskError(Exception):
    """What imap() and imap_unordered() hand out in the place of an item
    whose call raised (Ray's class): ``underlying`` is that exception. The
    value is made an instance of the exception's own class too where that
    class can be derived from, so both Ray's ``isinstance(r, PoolTaskError)``
    and ``isinstance(r, ValueError)`` hold."""

    def __init__(self, underlying: BaseException):
        Exception.__init__(self, underlying)
        self.underlying = underlying

    def __reduce__(self):
        return _rebuild_pool_task_error, (exc.portable(self.underlying),)


_dual_pool_errors: dict = {}


def _dual_pool_error_class(cause_cls: type) -> type | None:
    if cause_cls not in _dual_pool_errors:
        try:
            cls = type(f"PoolTaskError({cause_cls.__name__})", (PoolTaskError, cause_cls),
                       {"__module__": cause_cls.__module__, "__init__": PoolTaskError.__init__,
                        "__reduce__": PoolTaskError.__reduce__, "__str__": PoolTaskError.__str__})
        except Exception:  # a C layout that cannot be mixed, a final class, ...
            cls = None
        _dual_pool_errors[cause_cls] = cls
    return _dual_pool_errors[cause_cls]


def _rebuild_pool_task_error(underlying: BaseException) -> PoolTaskError:
    """A PoolTaskError for `underlying`, an instance of its class too where
    that class can be derived from (else a plain PoolTaskError)."""
    if isinstance(underlying, PoolTaskError) or type(underlying) in (Exception, BaseException):
        return PoolTaskError(underlying)
    cls = _dual_pool_error_class(type(underlying))
    if cls is not None:
        try:
            err = cls.__new__(cls, underlying)
            PoolTaskError.__init__(err, underlying)
            err.__dict__.update({k: v for k, v in vars(underlying).items() if k not in err.__dict__})
            err.__notes__ = list(getattr(underlying, "__notes__", []))
            return err
        except Exception:  # an exotic constructor or layout
            pass
    return PoolTaskError(underlying)


class _ItemError:
    """In a chunk's results: the item's call raised `error` (an Exception;
    its traceback in the pool process is added to it as a note)."""

    __slots__ = ("error",)

    def __init__(self, error: BaseException):
        self.error = error

    def __reduce__(self):
        return _ItemError, (self.error,)


def _call(func: Callable, args: tuple, kwds: dict) -> Any:
    try:
        return func(*args, **kwds)
    except Exception as e:  # one item's failure; BaseException (cancel, exit) ends the chunk
        e.add_note(f"(raised in pool process {os.getpid()})\n" + traceback.format_exc().rstrip())
        return _ItemError(e)


class _PoolProcess:
    """The body of one pool process (made an actor by Pool)."""

    def __init__(self, initializer: Callable | None, initargs: tuple):
        if initializer is not None:
            initializer(*initargs)

    def run(self, func: Callable, chunk: list, star: bool) -> list:
        return [_call(func, tuple(args) if star else (args,), {}) for args in chunk]

    def apply(self, func: Callable, args: tuple, kwds: dict) -> Any:
        return _call(func, args, kwds)


def _first_error(values: list) -> BaseException | None:
    for v in values:
        if isinstance(v, _ItemError):
            return v.error
    return None


class _Retiring:
    """A pool process given its last task: the call goes out, then it exits."""

    def __init__(self, actor):
        self._actor = actor

    def __getattr__(self, method: str):
        actor = self._actor

        class _Call:
            def remote(self, *args):
                ref = getattr(actor, method).remote(*args)
                actor.__ray_terminate__.remote()
                return ref

        return _Call()


class IMapIterator:
    """What imap / imap_unordered return: an iterator whose next() takes a
    timeout, as the stdlib's does (TimeoutError if no result came in time)."""

    def __init__(self, more: Callable, ordered: bool):
        self._more = more
        self._ordered = ordered
        self._pending: list = []
        self._sizes: dict = {}  # ref of a chunk -> number of items in it
        self._ready: list = []  # values of a chunk not handed out yet
        more(self._pending, self._sizes)

    def __iter__(self) -> "IMapIterator":
        return self

    def __next__(self) -> Any:
        return self.next()

    def next(self, timeout: float | None = None) -> Any:
        """The next result, waiting up to `timeout` seconds (None: forever)."""
        while not self._ready:
            if not self._pending:
                raise StopIteration
            if self._ordered:
                ready, _ = api.wait(self._pending[:1], timeout=timeout)
            else:
                ready, _ = api.wait(self._pending, num_returns=1, timeout=timeout)
            if not ready:
                raise PoolTimeoutError(f"no result within {timeout} s")
            ref = ready[0]
            self._pending.remove(ref)
            size = self._sizes.pop(ref)
            try:
                values = api.get(ref)
            except exc.RayError as e:  # the whole chunk failed (its process died): each item
                values = [_ItemError(e)] * size
            # As in Ray, an item whose call raised is returned as a PoolTaskError.
            self._ready = [_rebuild_pool_task_error(v.error) if isinstance(v, _ItemError) else v
                           for v in values]
            self._more(self._pending, self._sizes)
        return self._ready.pop(0)


class AsyncResult:
    """The result of apply_async / map_async / starmap_async."""

    def __init__(self, refs: list, single: bool, callback: Callable | None = None,
                 error_callback: Callable | None = None):
        self._refs = refs
        self._single = single  # apply_async: one value, not a list of chunks
        self._value: Any = None
        self._error: BaseException | None = None
        self._done = threading.Event()
        self._lock = threading.Lock()
        if callback is not None or error_callback is not None:
            def notify() -> None:
                # Wait without the lock, so that get(timeout) in another
                # thread keeps its timeout.
                api.wait(self._refs, num_returns=len(self._refs)) if self._refs else None
                try:
                    value = self.get()
                except BaseException as e:  # noqa: BLE001 - handed to the user's callback
                    if error_callback is not None:
                        error_callback(e)
                else:
                    if callback is not None:
                        callback(value)

            threading.Thread(target=notify, name="shoal-pool-callback", daemon=True).start()

    def _collect(self, timeout: float | None) -> None:
        with self._lock:
            if self._done.is_set():
                return
            try:
                chunks = api.get(self._refs, timeout=timeout)
            except exc.GetTimeoutError:
                raise PoolTimeoutError(f"the result was not ready within {timeout} s") from None
            except BaseException as e:  # a chunk failed as a whole (its process died)
                self._error = e
            else:
                values = chunks if self._single else [v for chunk in chunks for v in chunk]
                self._error = _first_error(values)  # the first item that raised, in order
                self._value = values[0] if self._single else values
            self._done.set()

    def get(self, timeout: float | None = None) -> Any:
        """The result (seconds to wait; None: forever); raises the function's
        exception, or TimeoutError."""
        self._collect(timeout)
        if self._error is not None:
            raise self._error
        return self._value

    def wait(self, timeout: float | None = None) -> None:
        """Wait until the result is ready or `timeout` seconds pass."""
        try:
            self._collect(timeout)
        except PoolTimeoutError:
            pass

    def ready(self) -> bool:
        if self._done.is_set():
            return True
        ready, _ = api.wait(self._refs, num_returns=len(self._refs), timeout=0)
        return len(ready) == len(self._refs)

    def successful(self) -> bool:
        """Whether the call completed without raising (ValueError if not ready)."""
        if not self.ready():
            raise ValueError("the result is not ready")
        self.wait()
        return self._error is None


class Pool:
    """A pool of `processes` worker processes (None: one per CPU of the
    runtime), each running `initializer(*initargs)` before the constructor
    returns. The methods are those of multiprocessing.Pool.

    Starts the runtime with ``num_cpus=processes`` if none runs. Raises
    ValueError if `processes` is more than the runtime's CPUs.
    """

    def __init__(self, processes: int | None = None, initializer: Callable | None = None,
                 initargs: tuple = (), maxtasksperchild: int | None = None, context: Any = None,
                 ray_address: str | None = None, ray_remote_args: dict | None = None):
        if maxtasksperchild is not None and (not isinstance(maxtasksperchild, int) or maxtasksperchild < 1):
            raise ValueError(f"maxtasksperchild must be an int >= 1 or None, not {maxtasksperchild!r}")
        if processes is not None and (not isinstance(processes, int) or processes < 1):
            raise ValueError(f"processes must be an int >= 1, not {processes!r}")
        self._maxtasks = maxtasksperchild
        if not api.is_initialized():
            api.init(**({} if processes is None else {"num_cpus": processes}))
        cpus = int(api.cluster_resources().get("CPU", 0))
        if processes is None:
            processes = max(1, cpus)
        elif processes > cpus:
            raise ValueError(f"a pool of {processes} processes needs as many CPUs, but the runtime has {cpus}: "
                             f"ask for at most {cpus} processes, or init() with more num_cpus")
        options = {"num_cpus": 0, **(ray_remote_args or {})}
        self._new_actor = lambda: api.remote(**options)(_PoolProcess).remote(initializer, tuple(initargs))
        self._actors = [self._new_actor() for _ in range(processes)]
        # Every initializer has run when the pool is returned (and one that
        # raised fails here, with its traceback).
        api.get([a.__ray_ready__.remote() for a in self._actors])
        self._runs = [0] * processes  # tasks (chunks) sent to each process, for maxtasksperchild
        self._retired: list = []  # processes told to exit after their last task
        self._next = 0
        self._running = True

    # -- helpers ----------------------------------------------------------------

    def _check_running(self) -> None:
        if not self._running:
            raise ValueError("Pool not running")

    def _actor(self):
        i = self._next % len(self._actors)
        self._next += 1
        actor = self._actors[i]
        self._runs[i] += 1
        if self._maxtasks is not None and self._runs[i] >= self._maxtasks:
            # maxtasksperchild: this is its last task. Calls run in order, so
            # it exits once that is done; a fresh process takes its place.
            self._retired.append(actor)
            self._actors[i] = self._new_actor()
            self._runs[i] = 0
            return _Retiring(actor)
        return actor

    def _chunks(self, iterable: Iterable, chunksize: int | None) -> list[list]:
        items = list(iterable)
        if chunksize is None:
            chunksize = max(1, math.ceil(len(items) / (4 * len(self._actors))))
        return [items[i:i + chunksize] for i in range(0, len(items), chunksize)]

    def _submit(self, func: Callable, iterable: Iterable, chunksize: int | None, star: bool) -> list:
        self._check_running()
        return [self._actor().run.remote(func, chunk, star) for chunk in self._chunks(iterable, chunksize)]

    # -- multiprocessing.Pool's API -------------------------------------------------

    def apply(self, func: Callable, args: tuple = (), kwds: dict | None = None) -> Any:
        return self.apply_async(func, args, kwds).get()

    def apply_async(self, func: Callable, args: tuple = (), kwds: dict | None = None,
                    callback: Callable | None = None, error_callback: Callable | None = None) -> AsyncResult:
        self._check_running()
        ref = self._actor().apply.remote(func, tuple(args), dict(kwds or {}))
        return AsyncResult([ref], True, callback, error_callback)

    def map(self, func: Callable, iterable: Iterable, chunksize: int | None = None) -> list:
        return self.map_async(func, iterable, chunksize).get()

    def map_async(self, func: Callable, iterable: Iterable, chunksize: int | None = None,
                  callback: Callable | None = None, error_callback: Callable | None = None) -> AsyncResult:
        return AsyncResult(self._submit(func, iterable, chunksize, False), False, callback, error_callback)

    def starmap(self, func: Callable, iterable: Iterable, chunksize: int | None = None) -> list:
        return self.starmap_async(func, iterable, chunksize).get()

    def starmap_async(self, func: Callable, iterable: Iterable, chunksize: int | None = None,
                      callback: Callable | None = None, error_callback: Callable | None = None) -> AsyncResult:
        return AsyncResult(self._submit(func, iterable, chunksize, True), False, callback, error_callback)

    def _lazy(self, func: Callable, iterable: Iterable, chunksize: int):
        """Submit chunks of `iterable` as results are taken: a window of a
        few per process in flight, so that the input may be endless."""
        self._check_running()
        it = iter(iterable)
        window = 2 * len(self._actors)

        def more(pending: list, sizes: dict) -> None:
            while len(pending) < window:
                chunk = list(itertools.islice(it, max(1, chunksize)))
                if not chunk:
                    return
                ref = self._actor().run.remote(func, chunk, False)
                pending.append(ref)
                sizes[ref] = len(chunk)

        return more

    def imap(self, func: Callable, iterable: Iterable, chunksize: int = 1) -> IMapIterator:
        """Results in order, each as soon as it (and those before it) are
        ready; the input is read as the results are taken."""
        return IMapIterator(self._lazy(func, iterable, chunksize), ordered=True)

    def imap_unordered(self, func: Callable, iterable: Iterable, chunksize: int = 1) -> IMapIterator:
        """Results as they are ready, in any order."""
        return IMapIterator(self._lazy(func, iterable, chunksize), ordered=False)

    def close(self) -> None:
        """No more work may be submitted; the processes end once it is done."""
        self._running = False

    def terminate(self) -> None:
        """Stop the processes now."""
        self._running = False
        for actor in self._actors + self._retired:
            api.kill(actor)
        self._actors = []
        self._retired = []

    def join(self) -> None:
        """Wait for the work submitted so far (after close() or
        terminate()); the processes then end and free their CPUs."""
        if self._running:
            raise ValueError("join() before close() or terminate()")
        if self._actors:
            api.get([a.__ray_ready__.remote() for a in self._actors])  # calls run in order: all done
            self.terminate()

    def __enter__(self) -> "Pool":
        self._check_running()
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.terminate()
