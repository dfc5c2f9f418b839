"""Running user code inside a worker: a task, an actor's constructor, or a
method call. Arguments are resolved, the code is called, and results (or
the error) are sealed in the object store.

Every path ends with each of the call's return objects sealed, as a value or
as an error, except RETRY (the scheduler will run the task again) and a
crash of the process (the driver seals the errors then).
"""

from __future__ import annotations

import contextvars
import inspect
import linecache
import os
import pickle
import sys
import traceback
from typing import Any, Callable, NoReturn

from shoal import exceptions as exc
from shoal import ids, serialization
from shoal.scheduler import protocol as P
from shoal.worker import arguments
from shoal.worker.actor_info import class_info
from shoal.words import a_type, type_name


class TaskCancelled(KeyboardInterrupt):
    """Raised in the worker's main thread when the running task is
    cancelled. A KeyboardInterrupt, as in Ray: `except Exception` in user
    code does not catch it, `except KeyboardInterrupt` may (and the task
    then returns normally)."""


class ActorExit(BaseException):
    """Raised by exit_actor(): the actor finishes the call and exits."""


class _Unserializable(Exception):
    """A value the user's function returned or yielded does not pickle.
    Never leaves the worker: `error` is reported at the function, whose
    frames are gone by then, instead of at shoal's frames that found it."""

    def __init__(self, error: BaseException, where: str):
        super().__init__(error, where)
        self.error = error
        self.where = where


#: Added to the remote traceback of numpy's "assignment destination is
#: read-only" and its kin: the likely cause is a value from the store.
READ_ONLY_HINT = (
    "(Arrays from the object store, a task's arguments and what get() returns, are zero-copy "
    "views of shared memory and read-only; call .copy() for a writable array.)\n")


def describe_exception(name: str, e: BaseException, pid: int, actor_repr: str | None = None) -> exc.RayTaskError:
    """A picklable RayTaskError for exception e raised by user code."""
    if isinstance(e, exc.RayTaskError):
        return e  # a dependency's error, passed on unchanged
    if isinstance(e, _Unserializable):
        text = "Traceback (most recent call last):\n" + e.where + "".join(
            traceback.format_exception_only(type(e.error), e.error))
        e = e.error
    else:
        text = "".join(traceback.format_exception(type(e), e, e.__traceback__.tb_next if e.__traceback__ else None))
    if isinstance(e, ValueError) and "read-only" in str(e):
        text += READ_ONLY_HINT
    cause: BaseException = e
    try:
        _round_trip(e)
    except Exception as why:
        cause = _picklable_stand_in(e)
        text += (f"(the exception {type_name(type(e))} could not be pickled to send it to the caller "
                 f"({why}); it is raised as its nearest base class that pickles, "
                 f"{type_name(type(cause))}, with the same message)\n")
    err = exc.RayTaskError(name, text, cause, pid, actor_repr)
    err.__traceback__ = None
    return err


def _round_trip(e: BaseException) -> None:
    """Pickle and unpickle e as the caller will (raises if it cannot)."""
    serialization.deserialize(serialization.dumps(e))


def _picklable_stand_in(e: BaseException) -> BaseException:
    """An instance of the nearest base class of type(e) that pickles, with
    e's arguments (or its message, if they do not pickle)."""
    for base in type(e).__mro__[1:]:
        if not issubclass(base, BaseException):
            break
        for args in (e.args, (str(e),)):
            try:
                stand_in = exc.rebuild_exception(base, args, None)
                _round_trip(stand_in)
            except Exception:
                continue
            return stand_in
    return Exception(str(e))


def exit_on_request(ctx, spec, e: SystemExit) -> NoReturn:
    """User code of `spec` raised SystemExit (sys.exit()): the process exits
    with that status, as a Python program would, after one line on stderr
    and a word to the driver, instead of a traceback of shoal's frames."""
    code = e.code
    status = 0 if code is None else code & 0xFF if isinstance(code, int) else 1
    frames = traceback.extract_tb(e.__traceback__)
    where = f" at {frames[-1].filename}, line {frames[-1].lineno}" if frames else ""
    why = f"{spec.name} called sys.exit({code!r}){where}"
    try:
        for stream in (sys.stdout, sys.stderr):
            if stream is not None:
                stream.flush()
        os.write(2, f"{why}: the worker exits with code {status}\n".encode(errors="replace"))
        ctx.send((P.EXITING, why))
    finally:
        os._exit(status)


class CallInfo:
    """What one task or call read and wrote, for the driver's task events
    (the timeline): argument and result sizes in bytes, and the error it
    ended with. Set per call in CALL_INFO (a thread or an asyncio task of
    an actor has its own)."""

    __slots__ = ("arg_bytes", "result_bytes", "error")

    def __init__(self) -> None:
        self.arg_bytes = 0
        self.result_bytes = 0
        self.error: BaseException | None = None

    def done(self, seq: int, status: int, started: float, duration: float, contained: dict) -> tuple:
        """The DONE message of this call (started: time.perf_counter(), which
        is CLOCK_MONOTONIC on Linux, the same clock in every process)."""
        error = None
        if status == P.FAILED and self.error is not None:
            error = _error_text(self.error)
        return (P.DONE, seq, status, duration, contained, (started, self.arg_bytes, self.result_bytes, error))


CALL_INFO: contextvars.ContextVar[CallInfo | None] = contextvars.ContextVar("shoal_call_info", default=None)

#: The error of a failed task travels to the driver's task events cut to this many characters.
ERROR_TEXT_CHARS = 8000


def _error_text(error: BaseException) -> str:
    try:
        text = str(error)
    except Exception as e:  # a user exception whose __str__ raises
        text = f"{type(error).__name__} (its text could not be formatted: {e!r})"
    if len(text) > ERROR_TEXT_CHARS:
        text = text[:ERROR_TEXT_CHARS // 2] + "\n...\n" + text[-ERROR_TEXT_CHARS // 2:]
    return text


def new_call_info() -> CallInfo:
    """A fresh CallInfo, current in this thread or asyncio task."""
    info = CallInfo()
    CALL_INFO.set(info)
    return info


def seal_error(store, object_ids: list[bytes], error: BaseException) -> None:
    """Seal `error` as each object that is not sealed yet."""
    info = CALL_INFO.get()
    if info is not None:
        info.error = error
    try:
        store.put_error(object_ids, error)
    except exc.ObjectExistsError:  # some were sealed before the error (a generator's items)
        for oid in object_ids:
            try:
                store.put_error([oid], error)
            except exc.ObjectExistsError:
                pass


return_ids = P.return_ids


def _cancelled(spec) -> exc.TaskCancelledError:
    return exc.TaskCancelledError(f"task {spec.name} ({spec.task_id.hex()}) was cancelled")


def _interrupted(spec, interrupt: BaseException, pid: int, actor_repr: str | None = None) -> exc.RayTaskError:
    """A task that cancel() interrupted while it ran: as in Ray, a
    RayTaskError caused by TaskCancelledError (get raises both types), with
    where the interrupt landed. (One cancelled before it started gets a
    plain TaskCancelledError.)"""
    tb = interrupt.__traceback__.tb_next if interrupt.__traceback__ else None
    text = "".join(traceback.format_exception(type(interrupt), interrupt, tb))
    text += f"TaskCancelledError: task {spec.name} ({spec.task_id.hex()}) was cancelled while it ran\n"
    err = exc.RayTaskError(spec.name, text, _cancelled(spec), pid, actor_repr)
    err.__traceback__ = None
    return err


class Executor:
    """Runs a worker's tasks, or an actor's constructor and method calls."""

    def __init__(self, ctx, pid: int):
        self.ctx = ctx
        self.store = ctx.store
        self.pid = pid
        self.functions: dict[bytes, Callable] = {}
        self.retry_types: dict[bytes, Any] = {}
        self.instance: Any = None
        self.actor_repr: str | None = None

    # -- tasks -----------------------------------------------------------------

    def function(self, function_id: bytes) -> Callable:
        fn = self.functions.get(function_id)
        if fn is None:
            fn = self.functions[function_id] = self.store.get(function_id, timeout=0)
        return fn

    def run(self, spec: P.TaskSpec) -> tuple[int, dict]:
        """Run a task; returns (status, {result id: [contained ids]})."""
        try:
            fn = self.function(spec.function_id)
        except BaseException as e:
            seal_error(self.store, return_ids(spec), describe_exception(spec.name, e, self.pid))
            return P.FAILED, {}
        self.ctx.assigned = spec.resources
        self.ctx.gpu_ids = list(spec.gpu_ids)
        self.ctx.placement = spec.placement
        env = spec.env or {}
        if spec.gpu_ids:  # as Ray: the task sees only its own devices
            env = {**env, "CUDA_VISIBLE_DEVICES": ",".join(map(str, spec.gpu_ids))}
        if not env:
            return self._invoke(spec, fn)
        saved = {k: os.environ.get(k) for k in env}
        os.environ.update(env)
        try:
            return self._invoke(spec, fn)
        finally:  # the next task on this worker sees the environment it started with
            for k, v in saved.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v

    # -- actors ----------------------------------------------------------------

    def construct(self, init: P.ActorSpec) -> str | None:
        """Build the actor's instance; the error's text if __init__ raised."""
        name = f"{init.class_name}.__init__"
        self.ctx.actor_name = init.name
        if init.env:
            os.environ.update(init.env)  # the actor's process is its own: for its whole life
        try:
            cls = self.store.get(init.class_id, timeout=0)
            self.ctx.actor_info = class_info(cls)
            args, kwargs = self._args(init)
            self.instance = cls(*args, **kwargs)
        except Exception as e:
            return str(describe_exception(name, e, self.pid))
        self.actor_repr = f"{init.class_name}({init.actor_id.hex()[:12]})"
        return None

    def method(self, spec: P.CallSpec) -> Callable:
        if spec.method == "__ray_terminate__":
            return _terminate
        if spec.method == "__ray_ready__":
            return _ready
        if spec.method == "__ray_call__":
            instance = self.instance
            return lambda fn, *args, **kwargs: fn(instance, *args, **kwargs)
        # From the class, as in Ray: an instance attribute of the same name
        # (self.done = False beside a method done()) does not hide the method.
        cls = type(self.instance)
        attr = inspect.getattr_static(cls, spec.method, None)
        if attr is not None and hasattr(attr, "__get__"):
            return attr.__get__(self.instance, cls)
        return getattr(self.instance, spec.method)

    def run_call(self, spec: P.CallSpec) -> tuple[int, dict]:
        try:
            fn = self.method(spec)
        except BaseException as e:
            seal_error(self.store, return_ids(spec), describe_exception(spec.name, e, self.pid, self.actor_repr))
            return P.FAILED, {}
        return self._invoke(spec, fn)

    async def run_call_async(self, spec: P.CallSpec) -> tuple[int, dict]:
        """A call on an asyncio actor: coroutines are awaited on its loop."""
        try:
            fn = self.method(spec)
            args, kwargs = self._args(spec)
        except exc.RayError as e:
            seal_error(self.store, return_ids(spec), e)
            return P.FAILED, {}
        except BaseException as e:
            seal_error(self.store, return_ids(spec), describe_exception(spec.name, e, self.pid, self.actor_repr))
            return P.FAILED, {}
        try:
            result = fn(*args, **kwargs)
            if inspect.iscoroutine(result):
                result = await result
            if spec.num_returns == P.STREAMING:
                if inspect.isasyncgen(result):
                    return await self._stream_async(spec, result, fn)
                return self._stream(spec, result, fn)
            if inspect.isasyncgen(result):
                result = [item async for item in result]
            if spec.num_returns == P.DYNAMIC:
                return self._store_dynamic(spec, result, fn)
            if inspect.isgenerator(result) and spec.num_returns > 1:
                return self._store_generator(spec, result, fn)
            return P.OK, self._store_results(spec, result, fn)
        except ActorExit:
            seal_error(self.store, return_ids(spec), self._exit_error())
            raise
        except Exception as e:
            seal_error(self.store, return_ids(spec), describe_exception(spec.name, e, self.pid, self.actor_repr))
            return P.FAILED, {}

    # -- shared ----------------------------------------------------------------

    def _args(self, spec) -> tuple[tuple, dict]:
        data = spec.args if spec.args is not None else (
            self.store.raw.get(spec.args_id, 0) if spec.args_id is not None else None)
        if data is None:
            return (), {}
        info = CALL_INFO.get()
        if info is not None:
            info.arg_bytes += len(data) if type(data) is bytes else data.nbytes
        return arguments.decode(data, self._values, lambda: f"the arguments of {spec.name}" + (
            f" (object {spec.args_id.hex()})" if spec.args is None else ""))

    def _values(self, refs: list) -> list:
        """The values of a call's top-level ref arguments (their sizes count
        as the call's argument bytes)."""
        values = self.ctx.get(refs, None)
        info = CALL_INFO.get()
        if info is not None:
            raw = self.store.raw
            for ref in refs:
                try:
                    buf = raw.get(ref._id, 0)
                except (exc.ObjectStoreError, exc.ObjectLostError):  # freed meanwhile: size unknown
                    continue
                info.arg_bytes += buf.nbytes + len(buf.metadata)
                buf.release()
        return values

    def _invoke(self, spec, fn: Callable) -> tuple[int, dict]:
        store = self.store
        user_code = self.ctx.user_code  # only there may a cancel interrupt land
        try:
            with user_code():
                args, kwargs = self._args(spec)
        except exc.RayError as e:  # a dependency failed: its error is ours
            seal_error(store, return_ids(spec), e)
            return P.FAILED, {}
        except TaskCancelled:
            seal_error(store, return_ids(spec), _cancelled(spec))
            return P.CANCELLED, {}
        except BaseException as e:
            seal_error(store, return_ids(spec), describe_exception(spec.name, e, self.pid, self.actor_repr))
            return P.FAILED, {}
        try:
            with user_code():
                result = fn(*args, **kwargs)
            del args, kwargs
            if self.instance is not None and not inspect.isgenerator(result) and self.ctx.call_cancelled():
                # An actor call cancelled while it ran (not interrupted, as in Ray): its result is dropped.
                seal_error(store, return_ids(spec), _cancelled(spec))
                return P.CANCELLED, {}
            if spec.num_returns == P.STREAMING:
                return self._stream(spec, result, fn)
            if spec.num_returns == P.DYNAMIC:
                return self._store_dynamic(spec, result, fn)
            if inspect.isgenerator(result) and spec.num_returns > 1:
                return self._store_generator(spec, result, fn)
            return P.OK, self._store_results(spec, result, fn)
        except KeyboardInterrupt as e:  # cancelled, or raised by the code itself: Ray reports both so
            seal_error(store, return_ids(spec), _interrupted(spec, e, self.pid, self.actor_repr))
            return P.CANCELLED, {}
        except ActorExit:
            seal_error(self.store, return_ids(spec), self._exit_error())
            raise
        except Exception as e:
            if not isinstance(e, _Unserializable) and self._retryable(spec, e):
                return P.RETRY, {}
            seal_error(store, return_ids(spec), describe_exception(spec.name, e, self.pid, self.actor_repr))
            return P.FAILED, {}

    def _exit_error(self) -> exc.ActorDiedError:
        """The result of the call that made its actor exit (as in Ray)."""
        actor_id = self.ctx.actor_id.hex() if self.ctx.actor_id else None
        return exc.ActorDiedError(f"The actor {self.actor_repr} exited on request (exit_actor() or "
                                  f"__ray_terminate__) in this call", actor_id)

    def _retryable(self, spec, e: Exception) -> bool:
        rule = getattr(spec, "retry_exceptions", False)
        if not rule or (spec.max_retries >= 0 and spec.attempt >= spec.max_retries):
            return False
        if rule is True:
            return True
        types = self.retry_types.get(rule)
        if types is None:
            types = self.retry_types[rule] = tuple(pickle.loads(rule))
        return isinstance(e, types)

    def _store_results(self, spec, result: Any, fn: Callable) -> dict:
        n = spec.num_returns
        if n == 0:
            return {}
        if inspect.isgenerator(result):  # a generator with a fixed num_returns: its items are the returns
            result = list(result)
            if n == 1 and result:
                result = result[0]  # (Ray keeps the first item)
        if n == 1:
            values = (result,)
        else:
            if not isinstance(result, (tuple, list)) or len(result) != n:
                got = f"{len(result)} objects" if hasattr(result, "__len__") else f"a {type(result).__name__}"
                raise ValueError(  # Ray's words first
                    f"Task returned {got}, but num_returns={n}. Task {spec.name} must return a tuple "
                    f"or list of {n} values.")
            values = tuple(result)
        contained = {}
        for i, value in enumerate(values):
            rid = ids.return_id(spec.task_id, i)
            s = _serialize_result(spec, fn, value, "returned" if n == 1 else f"returned, as return {i},")
            if not self._put_result(spec, rid, s):
                continue
            if s.nested:
                contained[rid] = [r._id for r in s.nested if hasattr(r, "_id")]
        return contained

    def _store_generator(self, spec, gen: Any, fn: Callable) -> tuple[int, dict]:
        """A generator with num_returns=n > 1, as in Ray: item i is return
        i, sealed as it is yielded; if the generator raises, or ends after
        k < n items, returns k..n-1 are that error. Items beyond n are not
        stored (the worker's stderr says so)."""
        n = spec.num_returns
        contained: dict = {}
        k = 0
        try:
            for item in self._items(gen):
                if k == n:
                    gen.close()
                    import sys

                    print(f"shoal: task {spec.name} yielded more than num_returns={n} objects; "
                          f"the rest are dropped", file=sys.stderr)
                    break
                rid = ids.return_id(spec.task_id, k)
                s = _serialize_result(spec, fn, item, f"yielded, as return {k},")
                if self._put_result(spec, rid, s) and s.nested:
                    contained[rid] = [r._id for r in s.nested if hasattr(r, "_id")]
                k += 1
        except KeyboardInterrupt as e:
            seal_error(self.store, return_ids(spec)[k:], _interrupted(spec, e, self.pid, self.actor_repr))
            return P.CANCELLED, contained
        except ActorExit:
            seal_error(self.store, return_ids(spec)[k:], self._exit_error())
            raise
        except Exception as e:
            seal_error(self.store, return_ids(spec)[k:],
                       describe_exception(spec.name, e, self.pid, self.actor_repr))
            return P.FAILED, contained
        if k < n:
            short = ValueError(f"Task returned {k} objects, but num_returns={n}.")
            seal_error(self.store, return_ids(spec)[k:], describe_exception(spec.name, short, self.pid,
                                                                             self.actor_repr))
            return P.FAILED, contained
        return P.OK, contained

    def _store_dynamic(self, spec, gen: Any, fn: Callable) -> tuple[int, dict]:
        """num_returns="dynamic": every item is stored (as return 1, 2,
        ...), then return 0 holds a DynamicObjectRefGenerator of their refs.
        As in Ray, an exception of the generator that is not retried is one
        more item, after those it yielded (its get raises it)."""
        from shoal.objectref import DynamicObjectRefGenerator, ObjectRef

        if not hasattr(gen, "__next__"):  # (raised to the caller as the task's error)
            raise TypeError(f"{spec.name} has num_returns='dynamic', so it must be a generator "
                            f"(use yield), but it returned a {type(gen).__name__}")
        items, error = [], None
        try:
            for k, item in enumerate(self._items(gen)):
                items.append(_serialize_result(spec, fn, item, f"yielded, as item {k + 1},"))
        except Exception as e:
            if not isinstance(e, _Unserializable) and self._retryable(spec, e):
                raise  # the task runs again (see _invoke)
            error = e
        refs, contained = [], {}
        for k, s in enumerate(items):
            rid = ids.return_id(spec.task_id, k + 1)
            if self._put_result(spec, rid, s) and s.nested:
                contained[rid] = [r._id for r in s.nested if hasattr(r, "_id")]
            refs.append(ObjectRef(rid, self.ctx))
        if error is not None:
            rid = ids.return_id(spec.task_id, len(items) + 1)
            seal_error(self.store, [rid], describe_exception(spec.name, error, self.pid, self.actor_repr))
            refs.append(ObjectRef(rid, self.ctx))
        one = spec._replace(num_returns=1)
        contained.update(self._store_results(one, DynamicObjectRefGenerator(refs), fn))
        return P.OK, contained

    def _put_result(self, spec, rid: bytes, s) -> bool:
        """Seal one result; False if an earlier attempt of this task sealed
        it before its process died (the retry keeps that value)."""
        try:
            self.store.put_serialized(rid, s)
            info = CALL_INFO.get()
            if info is not None:
                info.result_bytes += s.size
        except exc.ObjectExistsError:
            if not getattr(spec, "attempt", 0):
                raise
            return False
        return True

    def _stream(self, spec, gen: Any, fn: Callable) -> tuple[int, dict]:
        """A generator: item k (1, 2, ...) is sealed as soon as it is
        yielded; the record at index 0 is sealed last, holding the count (or
        the error that ended the generator). The items live as long as that
        record."""
        if not inspect.isgenerator(gen) and not hasattr(gen, "__next__"):
            gen = iter([gen])
        out = _Stream(self, spec, fn)
        try:
            for item in self._items(gen):
                out.add(item)
        except BaseException as e:
            return out.end(e)
        return out.end(None)

    def _items(self, gen: Any):
        """The items of a user's generator: only its own code may be
        interrupted by a cancel, not the storing of what it yielded."""
        user_code = self.ctx.user_code
        while True:
            with user_code():
                try:
                    item = next(gen)
                except StopIteration:
                    return
            yield item

    async def _stream_async(self, spec, agen: Any, fn: Callable) -> tuple[int, dict]:
        """_stream for an async generator (an asyncio actor's method)."""
        out = _Stream(self, spec, fn)
        try:
            async for item in agen:
                out.add(item)
        except BaseException as e:
            return out.end(e)
        return out.end(None)


class _Stream:
    """The objects of one streaming call: items, then the end record."""

    def __init__(self, executor: Executor, spec, fn: Callable):
        self.executor = executor
        self.spec = spec
        self.fn = fn
        self.items: list = []
        self.contained: dict = {}

    def add(self, item: Any) -> None:
        rid = ids.return_id(self.spec.task_id, len(self.items) + 1)
        s = _serialize_result(self.spec, self.fn, item, f"yielded, as item {len(self.items) + 1},")
        sealed_now = self.executor._put_result(self.spec, rid, s)
        self.items.append(rid)
        if sealed_now and s.nested:
            self.contained[rid] = [r._id for r in s.nested if hasattr(r, "_id")]

    def end(self, error: BaseException | None) -> tuple[int, dict]:
        """Seal the end record: the count, or the error that ended it.
        ActorExit and asyncio cancellation propagate once it is sealed."""
        ex, spec = self.executor, self.spec
        end = ids.return_id(spec.task_id, 0)
        status = P.OK
        if error is None:
            ex.store.put(len(self.items), end)
        elif isinstance(error, KeyboardInterrupt):
            seal_error(ex.store, [end], _interrupted(spec, error, ex.pid, ex.actor_repr))
            status = P.CANCELLED
        elif isinstance(error, Exception):
            seal_error(ex.store, [end], describe_exception(spec.name, error, ex.pid, ex.actor_repr))
            status = P.FAILED
        else:  # ActorExit, CancelledError, SystemExit: the caller's handlers seal and report it
            raise error
        if self.items:
            self.contained[end] = self.items
        return status, self.contained


def _serialize_result(spec, fn: Callable, value: Any, how: str) -> serialization.Serialized:
    """serialize(value), or _Unserializable naming the function and where
    it is defined (e.g. how = "returned")."""
    try:
        return serialization.serialize(value)
    except serialization.SerializationError as e:
        code = getattr(getattr(fn, "__func__", fn), "__code__", None)
        where = f'  File "{code.co_filename}", line {_def_line(code)}, in {code.co_name}\n' if code else ""
        error = serialization.SerializationError(
            f"{spec.name}() {how} {a_type(value)}, which cannot be serialized: {e.__cause__ or e}. "
            f"{serialization.UNPICKLABLE_HINT}")
        raise _Unserializable(error, where) from None


def _def_line(code) -> int:
    """The line of the `def` itself (co_firstlineno is the first decorator's)."""
    first = code.co_firstlineno
    for n in range(first, first + 50):
        line = linecache.getline(code.co_filename, n).lstrip()
        if line.startswith(("def ", "async def ")):
            return n
        if not line:
            break
    return first


def _ready() -> bool:
    return True


def _terminate() -> None:
    raise ActorExit()
