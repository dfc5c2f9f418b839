"""concurrent.futures on shoal: an Executor whose calls run as tasks.

    with shoal.util.Executor() as ex:            # was: ProcessPoolExecutor()
        futures = [ex.submit(f, x) for x in xs]
        for fut in concurrent.futures.as_completed(futures):
            ...

Each call is a shoal task: its arguments and result travel through the
object store (a large array is stored once and read zero-copy, where
ProcessPoolExecutor pickles it through a pipe), and the futures are
concurrent.futures.Future objects, so the standard library's wait() and
as_completed() take them.

What a Future says follows ProcessPoolExecutor: cancel() succeeds only
while no worker has the call (a call that started is never interrupted),
shutdown(cancel_futures=True) cancels those, and the executor runs at most
max_workers calls at a time (each call asks for CPUs / max_workers of the
runtime's CPUs, so the scheduler enforces the limit).
"""

from __future__ import annotations

import atexit
import concurrent.futures as cf
import functools
import itertools
import os
import threading
import types
import weakref
from typing import Any, Callable, Iterable, Iterator

from shoal import objectref
from shoal.remote_function import RemoteFunction, current_context

__all__ = ["Executor"]

#: Functions an executor keeps a remote function for (stored once in the
#: runtime, sent to each worker once). Beyond it, calls carry their function.
MAX_CACHED_FUNCTIONS = 256

#: Executors whose initializer already ran in this process (a worker's).
_initialized: set[bytes] = set()
_init_lock = threading.Lock()


class _Call:
    """What a task of an executor runs: the initializer once per process,
    then fn(*args, **kwargs). `fn` is fixed (a cached function) or comes
    with each call (None)."""

    def __init__(self, fn: Callable | None, token: bytes, initializer: Callable | None, initargs: tuple):
        self.fn = fn
        self.token = token
        self.initializer = initializer
        self.initargs = initargs
        self.__name__ = (getattr(fn, "__name__", None) or type(fn).__name__) if fn is not None else "call"
        self.__qualname__ = getattr(fn, "__qualname__", self.__name__)
        self.__module__ = getattr(fn, "__module__", None) or __name__

    def __call__(self, args: tuple, kwargs: dict, fn: Callable | None = None) -> Any:
        if self.initializer is not None and self.token not in _initialized:
            with _init_lock:
                if self.token not in _initialized:
                    try:
                        self.initializer(*self.initargs)
                    except BaseException as e:
                        raise cf.BrokenExecutor(
                            f"the executor's initializer {self.initializer!r} raised {e!r} in worker "
                            f"process {os.getpid()}: the executor is broken (fix the initializer and "
                            f"make a new executor)") from e
                    _initialized.add(self.token)
        return (fn or self.fn)(*args, **kwargs)


def _run_chunk(fn: Callable, chunk: tuple) -> list:
    """map(): one task runs a chunk of calls."""
    return [fn(*args) for args in chunk]


class _Future(cf.Future):
    """A Future of a call: cancel() takes the task back if no worker has it."""

    def cancel(self) -> bool:
        # Under the future's lock: the runtime seals the call as cancelled
        # when it takes it back, and the thread that completes futures must
        # not finish this one with that error first (it waits for the lock).
        with self._condition:
            if self._state != "PENDING":
                return self._state in ("CANCELLED", "CANCELLED_AND_NOTIFIED")
            ref = getattr(self, "_shoal_ref", None)
            take_back = getattr(objectref.context_of(ref), "cancel_if_queued", None) if ref is not None else None
            if take_back is None or not take_back(ref):
                return False
            super().cancel()
            self.set_running_or_notify_cancel()  # waiters in wait()/as_completed() see it now
            return True


    def result(self, timeout: float | None = None) -> Any:
        if self.done():
            return super().result()
        with objectref.waiting():  # in a task: its CPU goes back while it waits
            return super().result(timeout)

    def exception(self, timeout: float | None = None) -> BaseException | None:
        if self.done():
            return super().exception()
        with objectref.waiting():
            return super().exception(timeout)


class Executor(cf.Executor):
    """A concurrent.futures.Executor whose calls run as shoal tasks.

    Starts a runtime (shoal.init()) if none is running; shutdown() leaves
    the runtime running (other code may use it; shoal.shutdown() ends it).

    Args:
        max_workers: calls that run at once (default: the runtime's CPUs).
            Each call takes CPUs / max_workers CPUs, so 1 runs calls one at
            a time and more than the CPUs runs that many processes at once,
            as ProcessPoolExecutor does.
        mp_context: accepted for ProcessPoolExecutor's signature; ignored.
        initializer: called with initargs in each worker process before the
            first call of this executor there. If it raises, that call's
            future raises BrokenExecutor, and so does every later submit().
        initargs: its arguments.
        max_tasks_per_child: a worker process exits after running this many
            calls of one function of this executor (None: never).
        remote_args: other task options for every call (num_gpus,
            resources, max_retries, ...; max_retries defaults to 0: a call
            whose process dies raises WorkerCrashedError).
    Raises:
        ValueError: max_workers <= 0, or max_tasks_per_child < 1.
        TypeError: initializer is not callable.
    """

    def __init__(self, max_workers: int | None = None, mp_context: Any = None,
                 initializer: Callable | None = None, initargs: tuple = (), *,
                 max_tasks_per_child: int | None = None, remote_args: dict | None = None):
        if max_workers is not None and (isinstance(max_workers, bool) or not isinstance(max_workers, int)):
            raise TypeError(f"max_workers must be an int, not {type(max_workers).__name__}")
        if max_workers is not None and max_workers <= 0:
            raise ValueError("max_workers must be greater than 0")
        if initializer is not None and not callable(initializer):
            raise TypeError("initializer must be a callable")
        if max_tasks_per_child is not None:
            if isinstance(max_tasks_per_child, bool) or not isinstance(max_tasks_per_child, int):
                raise TypeError("max_tasks_per_child must be an integer")
            if max_tasks_per_child <= 0:
                raise ValueError("max_tasks_per_child must be >= 1")
        ctx = current_context()
        cpus = _cpus(ctx)
        self._max_workers = max_workers or max(1, int(cpus))
        options = {"max_retries": 0, **(remote_args or {})}
        if max_workers is not None and "num_cpus" not in options:
            options["num_cpus"] = cpus / max_workers if cpus else 1
        if max_tasks_per_child is not None:
            options["max_calls"] = max_tasks_per_child
        self._options = options
        self._token = os.urandom(8)
        self._initializer = (initializer, tuple(initargs))
        self._functions: dict[Any, RemoteFunction] = {}
        self._generic: RemoteFunction | None = None
        self._pending: set[_Future] = set()  # futures not done yet
        self._lock = threading.Lock()
        self._shutdown = False
        self._broken: str | None = None
        # At exit, calls still running finish before the runtime shuts down
        # (registered after the runtime's own hook: atexit runs it first), as
        # the standard library's executors join their workers at exit.
        self._exit_hook = functools.partial(_finish_at_exit, weakref.ref(self))
        atexit.register(self._exit_hook)

    # -- the Executor interface ----------------------------------------------------

    def submit(self, fn: Callable, /, *args: Any, **kwargs: Any) -> cf.Future:
        """Run fn(*args, **kwargs) as a task; returns its Future at once.

        Raises:
            RuntimeError: after shutdown().
            BrokenExecutor: the initializer failed in a worker.
        """
        with self._lock:
            if self._broken is not None:
                raise cf.BrokenExecutor(self._broken)
            if self._shutdown:
                raise RuntimeError("cannot schedule new futures after shutdown")
            rf, carry = self._remote_for(fn)
        ref = rf.remote(args, kwargs, fn) if carry else rf.remote(args, kwargs)
        fut = _Future()
        fut._shoal_ref = ref
        with self._lock:
            self._pending.add(fut)
        fut.add_done_callback(self._on_done)
        objectref.context_of(ref).future_for(ref, fut)
        return fut

    def map(self, fn: Callable, *iterables: Iterable, timeout: float | None = None,
            chunksize: int = 1) -> Iterator:
        """Results of fn over the iterables, in order (a lazy iterator).

        All calls are submitted at once; with chunksize > 1 each task runs
        that many calls (fewer, larger tasks: for short functions). next()
        raises TimeoutError if a result is not ready `timeout` seconds
        after map() was called, and the error of a call when its result is
        reached; leaving the iterator early cancels the calls not started.
        """
        if chunksize < 1:
            raise ValueError("chunksize must be >= 1.")
        if chunksize == 1:
            return super().map(fn, *iterables, timeout=timeout)
        chunks = _batched(zip(*iterables), chunksize)
        return _flatten(super().map(_ChunkRunner(fn), chunks, timeout=timeout))

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """Refuse new calls; with cancel_futures, cancel those no worker has
        yet; with wait, return once every other call has finished. The
        runtime keeps running."""
        with self._lock:
            self._shutdown = True
            pending = list(self._pending)
        if cancel_futures:
            for fut in pending:
                fut.cancel()
        if wait:
            if pending:
                cf.wait(pending)
            atexit.unregister(self._exit_hook)

    # -- internals ---------------------------------------------------------------------

    def _remote_for(self, fn: Callable) -> tuple[RemoteFunction, bool]:
        """The remote function for fn, and whether calls must carry fn.

        Only module-level functions get their own (stored once, as Ray
        stores a remote function): they live as long as their module
        anyway. Anything else (a bound method, a lambda, a partial) travels
        with each call, so that the executor keeps no reference to it once
        its calls are done, as the standard library's executors keep none."""
        rf = self._functions.get(fn) if _module_level(fn) else None
        if rf is not None:
            return rf, False
        if _module_level(fn) and len(self._functions) < MAX_CACHED_FUNCTIONS:
            rf = self._functions[fn] = self._make_remote(fn)
            return rf, False
        if not callable(fn):
            raise TypeError(f"{fn!r} is not callable")
        if self._generic is None:
            self._generic = self._make_remote(None)
        return self._generic, True

    def _make_remote(self, fn: Callable | None) -> RemoteFunction:
        call = _Call(fn, self._token, *self._initializer)
        return RemoteFunction(call, {**self._options, "name": self._options.get("name") or call.__qualname__})

    def _on_done(self, fut: cf.Future) -> None:
        with self._lock:
            self._pending.discard(fut)
        if not fut.cancelled() and isinstance(fut.exception(), cf.BrokenExecutor):
            self._broken = str(fut.exception())

    def __repr__(self) -> str:
        return f"shoal.util.Executor(max_workers={self._max_workers})"


class _ChunkRunner:
    """fn over a chunk of argument tuples (picklable, unlike a lambda
    made per map() call; one per map() call)."""

    def __init__(self, fn: Callable):
        self.fn = fn
        self.__qualname__ = getattr(fn, "__qualname__", type(fn).__name__)
        self.__name__ = getattr(fn, "__name__", self.__qualname__)

    def __call__(self, chunk: tuple) -> list:
        return _run_chunk(self.fn, chunk)


def _finish_at_exit(executor_ref: "weakref.ref[Executor]") -> None:
    executor = executor_ref()
    if executor is not None:
        executor.shutdown(wait=True)


def _batched(iterable: Iterable, n: int) -> Iterator[tuple]:
    it = iter(iterable)
    while chunk := tuple(itertools.islice(it, n)):
        yield chunk


def _flatten(results: Iterator[list]) -> Iterator:
    for chunk in results:
        yield from chunk


def _module_level(fn: Any) -> bool:
    """A function defined at the top level of a module (or a builtin)."""
    if isinstance(fn, types.BuiltinFunctionType):
        return True
    return isinstance(fn, types.FunctionType) and "<" not in fn.__qualname__ and "." not in fn.__qualname__


def _cpus(ctx: Any) -> float:
    """The runtime's CPUs (in a worker, which cannot ask: this machine's)."""
    if hasattr(ctx, "cluster_resources"):
        return float(ctx.cluster_resources().get("CPU", 0))
    return float(os.cpu_count() or 1)
