"""Utilities with Ray's names: ActorPool, as_completed, map_unordered,
list_named_actors, get_node_ip_address, register_serializer, deregister_serializer,
inspect_serializability (and shoal.util.queue.Queue); Executor, a
concurrent.futures.Executor on shoal."""

from __future__ import annotations

import sys
from typing import Any, Callable, Iterable

from shoal import api, objectref
from shoal import exceptions as exc

from shoal.util.executor import Executor
from shoal.util.helpers import as_completed, map_unordered
from shoal.util.placement_group import (
    get_current_placement_group, get_placement_group, placement_group, placement_group_table, remove_placement_group,
)
from shoal.cluster import on_ray
from shoal.util import serialization as _serialization
from shoal.util.serialization import inspect_serializability

#: On a Ray cluster, Ray's registry is the one its workers read.
register_serializer = on_ray("")(_serialization.register_serializer)
deregister_serializer = on_ray("")(_serialization.deregister_serializer)


def memory_summary(**kwargs: Any) -> str:
    """The runtime's objects, who holds them and where they are, as text
    (see shoal.util.memory.memory_summary)."""
    from shoal.util.memory import memory_summary as summary

    if getattr(objectref.current(), "cluster", False):
        raise RuntimeError("memory_summary() describes shoal's own object store; on a Ray cluster, "
                           "run `ray memory` (or ray.util.state.list_objects) instead")
    return summary(**kwargs)


__all__ = ["ActorPool", "Executor", "as_completed", "get_current_placement_group", "get_placement_group",
           "placement_group", "placement_group_table", "remove_placement_group", "list_named_actors", "map_unordered", "register_serializer",
           "deregister_serializer", "inspect_serializability", "memory_summary", "get_node_ip_address"]


def get_node_ip_address(address: str = "8.8.8.8:53") -> str:
    """The IP address of this node, as Ray's util.get_node_ip_address.
    shoal has one node, this machine, and reports it as the loopback
    address (as nodes() does); `address` is accepted for Ray's signature."""
    from shoal import config

    return config.NODE_IP_ADDRESS


def list_named_actors(all_namespaces: bool = False) -> list:
    """Names of the living named actors (with their namespaces if
    all_namespaces, as Ray returns them)."""
    ctx = objectref.current()
    if ctx is None or not hasattr(ctx, "list_named_actors"):
        return []
    entries = ctx.list_named_actors(all_namespaces)
    return entries if all_namespaces else [e["name"] for e in entries]


class ActorPool:
    """Runs work over a fixed set of actors, one call per actor at a time.

    ``fn(actor, value)`` must call a method on the actor and return its ref
    (or a list of refs, for a method with several returns). Results come
    back in submission order (``get_next``, ``map``) or as they finish
    (``get_next_unordered``, ``map_unordered``). The attribute names of the
    bookkeeping are Ray's, for code that reads them.
    """

    def __init__(self, actors: Iterable[Any]):
        self._idle_actors = list(actors)
        self._future_to_actor: dict[Any, tuple[int, Any]] = {}  # key -> (index, actor)
        self._index_to_future: dict[int, Any] = {}  # index -> ref (or list of refs)
        self._next_task_index = 0
        self._next_return_index = 0
        self._pending_submits: list[tuple[Callable, Any]] = []  # waiting for an idle actor

    @staticmethod
    def _key(future: Any) -> Any:
        return tuple(future) if isinstance(future, list) else future

    @staticmethod
    def _first(future: Any) -> objectref.ObjectRef:
        """The ref to wait on: a method's returns are sealed together."""
        return future[0] if isinstance(future, (list, tuple)) else future

    def submit(self, fn: Callable[[Any, Any], Any], value: Any) -> None:
        """Run fn(actor, value) on an idle actor, or as soon as one frees up."""
        if self._idle_actors:
            actor = self._idle_actors.pop()
            future = fn(actor, value)
            self._future_to_actor[self._key(future)] = (self._next_task_index, actor)
            self._index_to_future[self._next_task_index] = future
            self._next_task_index += 1
        else:
            self._pending_submits.append((fn, value))

    def has_next(self) -> bool:
        """True if results are pending."""
        return bool(self._future_to_actor)

    def get_next(self, timeout: float | None = None, ignore_if_timedout: bool = False) -> Any:
        """The next result in submission order (raises its task's error).

        With a timeout, raises TimeoutError (GetTimeoutError) if it is not
        ready in time; with ignore_if_timedout too, that submission is
        dropped first (its actor goes back to the pool), as in Ray."""
        if not self.has_next():
            raise StopIteration("No more results to get")
        if self._next_return_index >= self._next_task_index:
            raise ValueError("It is not allowed to call get_next() after get_next_unordered().")
        future = self._index_to_future[self._next_return_index]
        timed_out = False
        if timeout is not None:
            ready, _ = api.wait([self._first(future)], timeout=timeout)
            if not ready:
                if not ignore_if_timedout:
                    raise exc.GetTimeoutError(f"Timed out waiting for result after {timeout} s")
                timed_out = True
        del self._index_to_future[self._next_return_index]
        self._next_return_index += 1
        _, actor = self._future_to_actor.pop(self._key(future))
        if timed_out:
            self._return_actor(actor)
            raise exc.GetTimeoutError(f"Timed out waiting for result after {timeout} s; the "
                                      f"submission {future} is dropped")
        return self._get_result(future, actor)

    def get_next_unordered(self, timeout: float | None = None, ignore_if_timedout: bool = False) -> Any:
        """Whichever result finishes first (TimeoutError as get_next)."""
        if not self.has_next():
            raise StopIteration("No more results to get")
        firsts = {self._first(key): key for key in self._future_to_actor}
        ready, _ = api.wait(list(firsts), num_returns=1, timeout=timeout)
        if not ready:
            # Nothing to drop: no submission is next in any order.
            raise exc.GetTimeoutError(f"Timed out waiting for result after {timeout} s")
        key = firsts[ready[0]]
        index, actor = self._future_to_actor.pop(key)
        future = self._index_to_future.pop(index)
        self._next_return_index = max(self._next_return_index, index + 1)
        return self._get_result(future, actor)

    def _get_result(self, future: Any, actor: Any) -> Any:
        """The submission's value; its actor goes back to the pool unless it
        died (a dead actor would take every later submission and fail it).
        A task's own error or an actor that is only unavailable keeps it."""
        alive = True
        try:
            # Looked up at call time, as Ray's pool calls ray.get: code that
            # wraps or patches shoal.get sees the pool's gets too.
            return sys.modules["shoal"].get(future)
        except exc.ActorDiedError:
            alive = False
            raise
        finally:
            self._return_actor(actor, alive)

    def _drop_earlier(self) -> None:
        """map() returns only its own results: earlier submissions are
        dropped without waiting for them (Ray issue #23107). Those still
        waiting for an actor are submitted as it frees up, then dropped."""
        while self._index_to_future:
            index = min(self._index_to_future)
            future = self._index_to_future.pop(index)
            _, actor = self._future_to_actor.pop(self._key(future))
            self._return_actor(actor)  # (may submit a pending one: dropped in turn)
        self._next_return_index = self._next_task_index

    def map(self, fn: Callable, values: Iterable[Any]):
        """Results of fn over values, in order (a generator)."""
        self._drop_earlier()
        for v in values:
            self.submit(fn, v)

        def results():
            while self.has_next():
                yield self.get_next()

        return results()

    def map_unordered(self, fn: Callable, values: Iterable[Any]):
        """Results of fn over values, as they finish (a generator)."""
        self._drop_earlier()
        for v in values:
            self.submit(fn, v)

        def results():
            while self.has_next():
                yield self.get_next_unordered()

        return results()

    def has_free(self) -> bool:
        """True if an actor is idle and nothing waits for one."""
        return bool(self._idle_actors) and not self._pending_submits

    def pop_idle(self) -> Any:
        """Take an idle actor out of the pool (None if there is none)."""
        return self._idle_actors.pop() if self.has_free() else None

    def push(self, actor: Any) -> None:
        """Add an actor to the pool."""
        busy = {a for _, a in self._future_to_actor.values()}
        if actor in self._idle_actors or actor in busy:
            raise ValueError("Actor already belongs to current ActorPool")
        self._return_actor(actor)

    def _return_actor(self, actor: Any, alive: bool = True) -> None:
        if alive:
            self._idle_actors.append(actor)
        if self._pending_submits and self._idle_actors:
            self.submit(*self._pending_submits.pop(0))
