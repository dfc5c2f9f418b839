"""What an actor handle knows of its class: its name, its methods (with
their num_returns), and whether it is an asyncio actor. Computed from the
class both where a handle is made and inside the actor's process."""

from __future__ import annotations

import inspect
from typing import NamedTuple

from shoal.scheduler import protocol as P


class MethodInfo(NamedTuple):
    num_returns: int
    is_async: bool


class ActorInfo(NamedTuple):
    class_name: str
    methods: dict
    is_async: bool


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
        methods[name] = MethodInfo(P.STREAMING if n == "streaming" else n, coro)
    methods["__ray_terminate__"] = MethodInfo(1, False)
    return ActorInfo(cls.__name__, methods, is_async)
