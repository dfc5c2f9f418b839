"""What an actor handle knows of its class: its name, its methods (with
their num_returns), and whether it is an asyncio actor. Computed from the
class both where a handle is made and inside the actor's process."""

from __future__ import annotations

import inspect
from typing import NamedTuple

from shoal.scheduler import protocol as P
from shoal.worker.arguments import describe_params


class MethodInfo(NamedTuple):
    num_returns: int
    is_async: bool
    params: tuple | None = None  #: arguments.describe_params, checked at submission
    group: str | None = None  #: its concurrency group (@method(concurrency_group=...))


class ActorInfo(NamedTuple):
    class_name: str
    methods: dict
    is_async: bool
    init_params: tuple | None = None  #: the constructor's, likewise
    groups: tuple | None = None  #: the actor's concurrency group names (None: not known here)


def class_info(cls: type) -> ActorInfo:
    methods = {}
    is_async = False
    for name, fn in inspect.getmembers(cls, predicate=lambda m: inspect.isfunction(m) or inspect.ismethod(m)):
        if name.startswith("__") and name not in ("__call__",):
            continue
        opts = getattr(fn, "__shoal_method_options__", {})
        coro = inspect.iscoroutinefunction(fn) or inspect.isasyncgenfunction(fn)
        is_async = is_async or coro
        n = opts.get("num_returns")
        if n is None:
            n = "streaming" if inspect.isgeneratorfunction(fn) or inspect.isasyncgenfunction(fn) else 1
        bound = isinstance(inspect.getattr_static(cls, name, None), (staticmethod, classmethod))
        params = describe_params(fn, skip_first=not bound)
        methods[name] = MethodInfo({"streaming": P.STREAMING, "dynamic": P.DYNAMIC}.get(n, n), coro, params,
                                   opts.get("concurrency_group"))
    # Ray's built-in methods: terminate, a no-op that waits for the
    # constructor, and running a function on the instance.
    methods["__ray_terminate__"] = MethodInfo(1, False)
    methods["__ray_ready__"] = MethodInfo(1, False, ())
    methods["__ray_call__"] = MethodInfo(1, False)
    init = cls.__init__
    init_params = describe_params(init, skip_first=True) if inspect.isfunction(init) else None
    return ActorInfo(cls.__name__, methods, is_async, init_params)
