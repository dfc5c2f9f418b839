"""Ray 2.60's helpers for consuming results as they come: as_completed and
map_unordered (ray.util.as_completed, ray.util.map_unordered). Both are
plain iterators, so they compose with tqdm:

    for value in tqdm(shoal.util.as_completed(refs), total=len(refs)):
        ...
"""

from __future__ import annotations

from typing import Any, Iterable, Iterator, Sequence

from shoal import api

#: Results waited for at once (num_returns of each wait(); Ray's default).
DEFAULT_CHUNK_SIZE = 10
#: Tasks map_unordered keeps in flight before it waits (Ray's default).
DEFAULT_BACKPRESSURE_SIZE = 100

__all__ = ["as_completed", "map_unordered"]


def _check(chunk_size: int, wait_kwargs: dict) -> None:
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, not {chunk_size}")
    if "num_returns" in wait_kwargs:
        raise ValueError("pass chunk_size instead of num_returns")


def _next_batch(refs: list, chunk_size: int, yield_obj_refs: bool, wait_kwargs: dict) -> tuple[list, list]:
    """(ready values or refs, refs still pending), after waiting for up to
    chunk_size of refs. A wait that times out yields what is ready (maybe nothing)."""
    ready, pending = api.wait(refs, num_returns=min(chunk_size, len(refs)), **wait_kwargs)
    return (ready if yield_obj_refs else api.get(ready)), pending


def as_completed(refs: Sequence[Any], *, chunk_size: int = DEFAULT_CHUNK_SIZE, yield_obj_refs: bool = False,
                 **kwargs: Any) -> Iterator[Any]:
    """Yield the results of `refs` as they finish, chunk_size at a time
    (within a chunk, in the order of `refs`).

    Args:
        refs: ObjectRefs.
        chunk_size: results waited for at once (num_returns of wait()).
        yield_obj_refs: yield the refs themselves instead of their values.
        **kwargs: passed to wait(), e.g. timeout (seconds, for each chunk:
            when it runs out, what is ready is yielded and waiting goes on).
    Raises:
        ValueError: chunk_size < 1, or num_returns given.
        The error of a task, when its result is reached.
    """
    _check(chunk_size, kwargs)
    pending = list(refs)
    while pending:
        values, pending = _next_batch(pending, chunk_size, yield_obj_refs, kwargs)
        yield from values


def map_unordered(fn: Any, items: Iterable[Any], *, backpressure_size: int | None = DEFAULT_BACKPRESSURE_SIZE,
                  chunk_size: int = DEFAULT_CHUNK_SIZE, yield_obj_refs: bool = False, **kwargs: Any) -> Iterator[Any]:
    """Run the remote function fn on each item and yield the results as
    they finish, keeping at most backpressure_size tasks in flight.

    Args:
        fn: a remote function (fn.remote(item) is called for each item).
        items: any iterable; read lazily, as room frees up.
        backpressure_size: tasks in flight before waiting for chunk_size of
            them (None: submit everything at once).
        chunk_size, yield_obj_refs, **kwargs: as in as_completed().
    Raises:
        ValueError: backpressure_size <= 0, chunk_size < 1, or num_returns given.
    """
    if backpressure_size is not None and backpressure_size <= 0:
        raise ValueError(f"backpressure_size must be positive or None, not {backpressure_size}")
    _check(chunk_size, kwargs)
    limit = float("inf") if backpressure_size is None else backpressure_size
    pending: list = []
    for item in items:
        pending.append(fn.remote(item))
        if len(pending) >= limit:
            values, pending = _next_batch(pending, chunk_size, yield_obj_refs, kwargs)
            yield from values
    yield from as_completed(pending, chunk_size=chunk_size, yield_obj_refs=yield_obj_refs, **kwargs)
