"""Utilities with Ray's names: ActorPool, list_named_actors,
register_serializer, deregister_serializer, inspect_serializability (and
shoal.util.queue.Queue)."""

from __future__ import annotations

from typing import Any, Callable, Iterable

from shoal import api, objectref
from shoal import exceptions as exc

from shoal.util.serialization import deregister_serializer, inspect_serializability, register_serializer


def memory_summary(**kwargs: Any) -> str:
    """The runtime's objects, who holds them and where they are, as text
    (see shoal.util.memory.memory_summary)."""
    from shoal.util.memory import memory_summary as summary

    return summary(**kwargs)


__all__ = ["ActorPool", "list_named_actors", "register_serializer", "deregister_serializer",
           "inspect_serializability", "memory_summary"]


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

    ``fn(actor, value)`` must call a method on the actor and return its ref.
    Results come back in submission order (``get_next``, ``map``) or as they
    finish (``get_next_unordered``, ``map_unordered``).
    """

    def __init__(self, actors: Iterable[Any]):
        self._idle = list(actors)
        self._busy: dict[objectref.ObjectRef, tuple[int, Any]] = {}  # ref -> (index, actor)
        self._by_index: dict[int, objectref.ObjectRef] = {}
        self._next_index = 0  # of the next submission
        self._next_return = 0  # of the next in-order result
        self._backlog: list[tuple[Callable, Any]] = []

    def submit(self, fn: Callable[[Any, Any], objectref.ObjectRef], value: Any) -> None:
        """Run fn(actor, value) on an idle actor, or as soon as one frees up."""
        if self._idle:
            actor = self._idle.pop()
            ref = fn(actor, value)
            self._busy[ref] = (self._next_index, actor)
            self._by_index[self._next_index] = ref
            self._next_index += 1
        else:
            self._backlog.append((fn, value))

    def has_next(self) -> bool:
        """True if results are pending."""
        return bool(self._by_index)

    def get_next(self, timeout: float | None = None, ignore_if_timedout: bool = False) -> Any:
        """The next result in submission order (raises its task's error).
        Raises GetTimeoutError (or returns None with ignore_if_timedout) if
        it is not ready within `timeout` seconds."""
        if not self.has_next():
            raise StopIteration("No more results to get")
        if self._next_return >= self._next_index:
            raise ValueError("It is not allowed to call get_next() after get_next_unordered().")
        ref = self._by_index[self._next_return]
        if timeout is not None:
            ready, _ = api.wait([ref], timeout=timeout)
            if not ready:
                if ignore_if_timedout:
                    return None
                raise exc.GetTimeoutError("Timed out waiting for result")
        del self._by_index[self._next_return]
        self._next_return += 1
        _, actor = self._busy.pop(ref)
        self._return(actor)
        return api.get(ref)

    def get_next_unordered(self, timeout: float | None = None, ignore_if_timedout: bool = False) -> Any:
        """Whichever result finishes first."""
        if not self.has_next():
            raise StopIteration("No more results to get")
        ready, _ = api.wait(list(self._busy), num_returns=1, timeout=timeout)
        if not ready:
            if ignore_if_timedout:
                return None
            raise exc.GetTimeoutError("Timed out waiting for result")
        ref = ready[0]
        index, actor = self._busy.pop(ref)
        del self._by_index[index]
        self._next_return = max(self._next_return, index + 1)
        self._return(actor)
        return api.get(ref)

    def map(self, fn: Callable, values: Iterable[Any]):
        """Results of fn over values, in order (a generator)."""
        while self.has_next():  # results of earlier submissions are dropped, as in Ray
            try:
                self.get_next_unordered(timeout=0)
            except exc.GetTimeoutError:
                break
        for v in values:
            self.submit(fn, v)
        while self.has_next():
            yield self.get_next()

    def map_unordered(self, fn: Callable, values: Iterable[Any]):
        """Results of fn over values, as they finish (a generator)."""
        for v in values:
            self.submit(fn, v)
        while self.has_next():
            yield self.get_next_unordered()

    def has_free(self) -> bool:
        """True if an actor is idle and nothing waits for one."""
        return bool(self._idle) and not self._backlog

    def pop_idle(self) -> Any:
        """Take an idle actor out of the pool (None if there is none)."""
        return self._idle.pop() if self.has_free() else None

    def push(self, actor: Any) -> None:
        """Add an actor to the pool."""
        busy = {a for _, a in self._busy.values()}
        if actor in self._idle or actor in busy:
            raise ValueError("Actor already belongs to current ActorPool")
        self._return(actor)

    def _return(self, actor: Any) -> None:
        self._idle.append(actor)
        if self._backlog:
            fn, value = self._backlog.pop(0)
            self.submit(fn, value)
