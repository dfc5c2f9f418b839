"""A first-in first-out queue shared by tasks and actors (Ray's
ray.util.queue.Queue), kept by an asyncio actor so that blocking puts and
gets with timeouts wait there without holding a CPU."""

from __future__ import annotations

import asyncio
import queue as _stdlib_queue
from collections.abc import Iterable
from typing import Any

from shoal import api, objectref

#: shutdown(): seconds, at most, to wait for the actor's process to exit
#: once it has been told to (its exit takes milliseconds; a SIGKILL cannot be ignored).
_EXIT_WAIT_S = 60.0

__all__ = ["Empty", "Full", "Queue"]


class Empty(_stdlib_queue.Empty):
    """get() found the queue empty (or waited past its timeout)."""


class Full(_stdlib_queue.Full):
    """put() found the queue full (or waited past its timeout)."""


class _QueueActor:
    def __init__(self, maxsize: int):
        self.maxsize = maxsize
        self.queue: asyncio.Queue = asyncio.Queue(maxsize)

    def qsize(self) -> int:
        return self.queue.qsize()

    def empty(self) -> bool:
        return self.queue.empty()

    def full(self) -> bool:
        return self.queue.full()

    async def put(self, item: Any, timeout: float | None = None) -> None:
        try:
            await asyncio.wait_for(self.queue.put(item), timeout)
        except asyncio.TimeoutError:
            raise Full(f"the queue stayed full for {timeout} s") from None

    async def get(self, timeout: float | None = None) -> Any:
        try:
            return await asyncio.wait_for(self.queue.get(), timeout)
        except asyncio.TimeoutError:
            raise Empty(f"the queue stayed empty for {timeout} s") from None

    def put_nowait(self, item: Any) -> None:
        try:
            self.queue.put_nowait(item)
        except asyncio.QueueFull:
            raise Full(f"the queue is full ({self.maxsize} items)") from None

    def put_nowait_batch(self, items: list) -> None:
        if self.maxsize > 0 and len(items) + self.queue.qsize() > self.maxsize:
            raise Full(f"cannot add {len(items)} items: {self.queue.qsize()} of at most "
                       f"{self.maxsize} are queued")
        for item in items:
            self.queue.put_nowait(item)

    def get_nowait(self) -> Any:
        try:
            return self.queue.get_nowait()
        except asyncio.QueueEmpty:
            raise Empty("the queue is empty") from None

    def get_nowait_batch(self, num_items: int) -> list:
        if num_items > self.queue.qsize():
            raise Empty(f"cannot get {num_items} items: only {self.queue.qsize()} are queued")
        return [self.queue.get_nowait() for _ in range(num_items)]


def _plain(e: BaseException) -> BaseException:
    """A task error caused by Empty or Full, as a plain Empty or Full."""
    for cls in (Empty, Full):
        if isinstance(e, cls):
            return cls(str(getattr(e, "cause", e)))
    return e


class Queue:
    """A queue that tasks and actors share (pass it to them like a handle).

    Args:
        maxsize: most items held at once (0: no limit).
        actor_options: options of the actor that keeps the items.
    """

    def __init__(self, maxsize: int = 0, actor_options: dict | None = None):
        self.maxsize = maxsize
        cls = api.remote(_QueueActor)
        self.actor = cls.options(**(actor_options or {})).remote(maxsize)

    def __len__(self) -> int:
        return self.size()

    def size(self) -> int:
        return api.get(self.actor.qsize.remote())

    qsize = size

    def empty(self) -> bool:
        return api.get(self.actor.empty.remote())

    def full(self) -> bool:
        return api.get(self.actor.full.remote())

    def _call(self, ref) -> Any:
        try:
            return api.get(ref)
        except (Empty, Full) as e:
            raise _plain(e) from None

    def put(self, item: Any, block: bool = True, timeout: float | None = None) -> None:
        """Add an item; if full, wait (block) up to `timeout` seconds (None:
        forever) or raise Full at once (not block)."""
        if timeout is not None and timeout < 0:
            raise ValueError("'timeout' must be a non-negative number")
        if not block:
            self._call(self.actor.put_nowait.remote(item))
        else:
            self._call(self.actor.put.remote(item, timeout))

    def get(self, block: bool = True, timeout: float | None = None) -> Any:
        """Remove and return an item; if empty, wait (block) up to `timeout`
        seconds or raise Empty at once (not block)."""
        if timeout is not None and timeout < 0:
            raise ValueError("'timeout' must be a non-negative number")
        if not block:
            return self._call(self.actor.get_nowait.remote())
        return self._call(self.actor.get.remote(timeout))

    async def put_async(self, item: Any, block: bool = True, timeout: float | None = None) -> None:
        """put() for asyncio code: awaits instead of blocking the thread."""
        if timeout is not None and timeout < 0:
            raise ValueError("'timeout' must be a non-negative number")
        ref = self.actor.put.remote(item, timeout) if block else self.actor.put_nowait.remote(item)
        try:
            await ref
        except (Empty, Full) as e:
            raise _plain(e) from None

    async def get_async(self, block: bool = True, timeout: float | None = None) -> Any:
        """get() for asyncio code: awaits instead of blocking the thread."""
        if timeout is not None and timeout < 0:
            raise ValueError("'timeout' must be a non-negative number")
        ref = self.actor.get.remote(timeout) if block else self.actor.get_nowait.remote()
        try:
            return await ref
        except (Empty, Full) as e:
            raise _plain(e) from None

    def put_nowait(self, item: Any) -> None:
        self.put(item, block=False)

    def put_nowait_batch(self, items: Iterable) -> None:
        """Add every item (in order), or none (Full) if they do not all fit."""
        if not isinstance(items, Iterable):
            raise TypeError(f"put_nowait_batch() takes an iterable of items, not {type(items).__name__}")
        self._call(self.actor.put_nowait_batch.remote(list(items)))

    def get_nowait(self) -> Any:
        return self.get(block=False)

    def get_nowait_batch(self, num_items: int) -> list:
        """Remove `num_items` items, or none (Empty) if fewer are queued."""
        if not isinstance(num_items, int):
            raise TypeError(f"get_nowait_batch() takes an int number of items, not {type(num_items).__name__}")
        if num_items < 0:
            raise ValueError(f"get_nowait_batch() takes a number of items >= 0, not {num_items}")
        return self._call(self.actor.get_nowait_batch.remote(num_items))

    def shutdown(self, force: bool = False, grace_period_s: int = 5) -> None:
        """Stop the queue's actor (its items are lost) and return once it
        is gone, as in Ray: calls on its old handle then raise
        RayActorError, and its resources are free.

        Args:
            force: kill the actor at once, even with calls running.
            grace_period_s: without force, seconds to wait for the calls
                already submitted to end before killing it.
        """
        actor = self.actor
        if actor is None:
            return
        if force:
            api.kill(actor, no_restart=True)
        else:
            ready, _ = api.wait([actor.__ray_terminate__.remote()], timeout=grace_period_s)
            if not ready:
                api.kill(actor, no_restart=True)
        wait_gone = getattr(objectref.current(), "wait_actor_gone", None)
        if wait_gone is not None:  # (the driver's runtime; a worker only asks)
            wait_gone(actor._actor_id, _EXIT_WAIT_S)
        self.actor = None


