"""@remote for functions: RemoteFunction and its .options()."""

from __future__ import annotations

import functools
import inspect
from typing import Any

from shoal import ids, objectref, placement, serialization, words
from shoal.objectref import ObjectRef
from shoal.options import TaskOptions, validate
from shoal.scheduler import protocol as P
from shoal.worker import arguments


#: A function or class that pickles to more than this (bytes) warns: it
#: almost always captures a large object by accident (Ray refuses above 95 MiB).
LARGE_DEFINITION_BYTES = 100 << 20

_warned_large: set[str] = set()


def store_definition(ctx, obj: Any, what: str) -> bytes:
    """Put a remote function or actor class (`what`, e.g. "remote function
    mod.f") in the store; warn, once per process, if it is large."""
    s = serialization.serialize(obj)
    if s.size > LARGE_DEFINITION_BYTES and what not in _warned_large:
        _warned_large.add(what)
        words.warn(
            f"the {what} pickles to {words.size(s.size)}: it captures a large object, from its "
            f"closure or from global variables it uses. It is stored, and read by every worker, "
            f"once per runtime; put() the object instead and pass its ref as an argument (an "
            f"array is then shared, not copied).")
    oid = ids.new_put_id()
    ctx.store.put_serialized(oid, s._replace(kind=serialization.KIND_DEFINITION))
    return oid


def current_context():
    """This process's runtime context, starting a runtime if there is none
    (as Ray does on first use, unless RAY_ENABLE_AUTO_CONNECT=0)."""
    ctx = objectref.current()
    if ctx is None:
        from shoal import api

        api._auto_init()
        ctx = objectref.current()
    return ctx


class RemoteFunction:
    """A function turned into a task by @remote: call ``f.remote(...)`` to
    run it in a worker process; it returns ObjectRef(s) at once."""

    def __init__(self, function: Any, options: dict):
        if not callable(function):
            raise TypeError(f"@remote needs a function or a class, not {function!r}")
        if inspect.iscoroutinefunction(function):  # as Ray: a task is not a coroutine
            raise ValueError(
                "'async def' should not be used for remote tasks. You can wrap the async "
                "function with `asyncio.run(f())`, or make it a method of an asyncio actor.")
        self._function = function
        self._is_generator = inspect.isgeneratorfunction(function)
        self._params = arguments.describe_params(function)
        self._default_name = getattr(function, "__name__", "task")
        self._options = validate(dict(options), "task")
        self._compiled = TaskOptions(self._options, self._default_name, self._is_generator)
        self._function_ids: dict[str, bytes] = {}  # runtime session -> function object in its store
        functools.update_wrapper(self, function)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        raise TypeError(
            f"Remote functions cannot be called directly. Instead of running "
            f"'{self._function.__module__}.{self._default_name}()', try "
            f"'{self._function.__module__}.{self._default_name}.remote()'.")

    def remote(self, *args: Any, **kwargs: Any) -> Any:
        """Run the function as a task; returns an ObjectRef (a list of them
        for num_returns > 1, a generator of them for generator functions)."""
        return self._submit(args, kwargs, self._compiled)

    def bind(self, *args: Any, **kwargs: Any) -> Any:
        """A DAG node calling the function with these arguments, run by
        its DAG's execute() (see shoal.dag)."""
        from shoal.dag import FunctionNode

        return FunctionNode(self, args, kwargs)

    def options(self, **options: Any) -> "_Bound":
        """The function with these options changed for the calls made
        through the returned object (``f.options(num_cpus=2).remote()``)."""
        validate(options, "task")
        merged = {**self._options, **options}
        return _Bound(self, TaskOptions(merged, self._default_name, self._is_generator))

    def _function_id(self, ctx) -> bytes:
        fid = self._function_ids.get(ctx.session)
        if fid is None:
            fid = store_definition(ctx, self._function, f"remote function {self._function.__module__}."
                                                        f"{self._default_name}")
            self._function_ids = {ctx.session: fid}  # one runtime at a time
        return fid

    def _submit(self, args: tuple, kwargs: dict, opts: TaskOptions) -> Any:
        ctx = current_context()
        ctx.check_open()
        arguments.check_call(self._params, args, kwargs, f"{opts.name}()")
        if getattr(ctx, "cluster", False):  # a Ray task (shoal.cluster)
            return ctx.submit_function(self, opts.options, args, kwargs)
        if getattr(ctx, "local", False):
            return ctx.run_task(self._function, opts.name, args, kwargs, opts.num_returns)
        fid = self._function_id(ctx)
        task_id = ids.new_task_id()
        a = arguments.prepare(ctx, args, kwargs, f"{opts.name}()")
        n = opts.num_returns
        shape, where = opts.shape, None
        if opts.placement is not None or getattr(ctx, "placement", None):
            shape, where = placement.place(shape, opts.placement, ctx)
        spec = P.TaskSpec(task_id, fid, opts.name, a.blob, a.args_id, n, opts.max_retries,
                          opts.retry_exceptions, 0, opts.assigned, opts.env, (), opts.max_calls, where)
        if n == P.STREAMING:
            result: Any = objectref.ObjectRefGenerator(task_id, ctx)
        elif n == 1 or n == P.DYNAMIC:
            result = ObjectRef(ids.return_id(task_id, 0), ctx)
        else:
            result = [ObjectRef(ids.return_id(task_id, i), ctx) for i in range(n)] if n else None
        ctx.submit(spec, shape, a.deps, a.held)
        return result

    def __reduce__(self):
        return (_rebuild, (self._function, self._options))

    def __repr__(self) -> str:
        return f"RemoteFunction({self._function.__module__}.{self._default_name})"


def _rebuild(function: Any, options: dict) -> RemoteFunction:
    return RemoteFunction(function, options)


class _Bound:
    """A remote function with options set by .options()."""

    __slots__ = ("_rf", "_opts")

    def __init__(self, rf: RemoteFunction, opts: TaskOptions):
        self._rf = rf
        self._opts = opts

    def remote(self, *args: Any, **kwargs: Any) -> Any:
        return self._rf._submit(args, kwargs, self._opts)

    def bind(self, *args: Any, **kwargs: Any) -> Any:
        """A DAG node calling the function with these options (see shoal.dag)."""
        from shoal.dag import FunctionNode

        return FunctionNode(self, args, kwargs)

    def options(self, **options: Any) -> "_Bound":
        validate(options, "task")
        merged = {**self._opts.options, **options}
        return _Bound(self._rf, TaskOptions(merged, self._rf._default_name, self._rf._is_generator))
