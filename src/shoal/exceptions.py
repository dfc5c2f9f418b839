"""Every public exception of shoal, with Ray's names where Ray has one.

This module imports only the standard library, so that any process can
rebuild an error it receives. Each exception pickles (its state is in
``args`` or in ``__reduce__``), and each message says what happened, with
numbers, the likely cause, and what to do.

    RayError (ShoalError)
    +-- ObjectStoreError
    |   +-- ObjectExistsError
    |   +-- ObjectNotFoundError (LookupError)
    |   +-- ObjectStateError
    |   +-- StoreFullError (ObjectStoreFullError)
    |   |   +-- ObjectTooLargeError
    |   |   +-- ObjectTableFullError
    |   +-- TooManyClientsError
    |   +-- StoreClosedError
    |   +-- StoreForkedError
    |   +-- InvalidSegmentError (ValueError)
    +-- GetTimeoutError (TimeoutError)
    +-- RayTaskError (TaskError): an exception raised by user code in a task
    +-- WorkerCrashedError, TaskCancelledError, ObjectLostError, ...
    +-- RayActorError > ActorDiedError, ActorUnavailableError
    +-- RaySystemError: an internal invariant broke (a bug)
"""

from __future__ import annotations

import os


def _gib(n: int) -> str:
    """Format a byte count for a message: '1.50 GiB (1610612736 bytes)'."""
    for unit, scale in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= scale:
            return f"{n / scale:.2f} {unit} ({n} bytes)"
    return f"{n} bytes"


class RayError(Exception):
    """Base class of every shoal error (Ray's name; also ``ShoalError``)."""


ShoalError = RayError


# --------------------------------------------------------------------------
# Object store
# --------------------------------------------------------------------------


class ObjectStoreError(RayError):
    """Base class of the object store's errors."""


class ObjectExistsError(ObjectStoreError):
    """create() with an ID that is already in the store."""


class ObjectNotFoundError(ObjectStoreError, LookupError):
    """No object with this ID (never created, aborted, deleted or evicted)."""


class ObjectStateError(ObjectStoreError):
    """The object is in the wrong state: sealing twice, writing after seal,
    deleting an object that is still being written, ..."""


class StoreFullError(ObjectStoreError):
    """No room for a new object, even after evicting what may be evicted.

    Attributes (bytes): ``requested``, ``capacity``, ``in_use``, ``pinned``.
    """

    def __init__(self, requested: int, capacity: int, in_use: int, pinned: int, detail: str = ""):
        super().__init__(requested, capacity, in_use, pinned, detail)
        self.requested = requested
        self.capacity = capacity
        self.in_use = in_use
        self.pinned = pinned
        self.detail = detail

    def __str__(self) -> str:
        text = (
            f"the object store is full: {_gib(self.requested)} requested, "
            f"capacity {_gib(self.capacity)}, {_gib(self.in_use)} in use of which "
            f"{_gib(self.pinned)} pinned by live references or readers. "
        )
        if self.detail:
            text += self.detail + " "
        return text + (
            "Free objects you no longer need (drop their references), or start with a "
            "larger store (object_store_memory=...). In a container, /dev/shm may be "
            "small: run docker with --shm-size=<bytes>."
        )


ObjectStoreFullError = StoreFullError


class ObjectTooLargeError(StoreFullError):
    """The object is larger than the whole store: it can never fit."""

    def __str__(self) -> str:
        return (
            f"the object needs {_gib(self.requested)} but the whole object store holds "
            f"{_gib(self.capacity)}: it can never fit. Start with a larger store "
            f"(object_store_memory=...), or split the object."
        )


class ObjectTableFullError(StoreFullError):
    """Every entry of the object table is in use (too many objects)."""

    def __str__(self) -> str:
        return (
            f"the object table is full: all {self.detail} entries hold objects. Free "
            f"objects you no longer need, or start with a larger max_objects."
        )


class TooManyClientsError(ObjectStoreError):
    """Every client slot of the store is taken by a live process."""


class StoreClosedError(ObjectStoreError):
    """The store handle was closed (or the runtime shut down)."""


class StoreForkedError(ObjectStoreError):
    """A store handle was used in a forked child; the child must attach anew."""


class InvalidSegmentError(ObjectStoreError, ValueError):
    """The descriptor given to attach() is not a shoal store segment."""


# --------------------------------------------------------------------------
# Runtime
# --------------------------------------------------------------------------


class GetTimeoutError(RayError, TimeoutError):
    """A get() or wait() did not complete before its timeout."""


class RaySystemError(RayError):
    """An internal invariant broke. This is a bug in shoal: please report it."""


class RuntimeClosedError(RayError):
    """The runtime was shut down, or a call needs a runtime that is not there."""
