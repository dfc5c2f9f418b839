"""Binary IDs of objects and tasks (stdlib only).

An object ID is 20 bytes (``ID_SIZE``): a 16-byte origin followed by a
4-byte little-endian index. A task's return values share the task's ID as
origin (index 1, 2, ...), so every process can name a task's results
without asking anyone; ``put`` objects get an origin of their own and index
0xFFFFFFFF. Origins are a random 8-byte prefix drawn once per process (and
again after fork) followed by an 8-byte counter: unique without any
coordination between processes.
"""

from __future__ import annotations

import itertools
import os
import struct

ID_SIZE = 20
TASK_ID_SIZE = 16
PUT_INDEX = 0xFFFFFFFF

_index = struct.Struct("<I")


class _Origins:
    """Per-process source of unique 16-byte origins."""

    def __init__(self) -> None:
        self._reset()
        os.register_at_fork(after_in_child=self._reset)

    def _reset(self) -> None:
        self._prefix = os.urandom(8)
        self._counter = itertools.count(1)

    def next(self) -> bytes:
        return self._prefix + next(self._counter).to_bytes(8, "little")


_origins = _Origins()


def new_task_id() -> bytes:
    """A fresh, unique 16-byte task ID."""
    return _origins.next()


def return_id(task_id: bytes, index: int) -> bytes:
    """The ID of a task's `index`-th return value (0-based)."""
    return task_id + _index.pack(index + 1)


def new_put_id() -> bytes:
    """A fresh, unique object ID for a value put by this process."""
    return _origins.next() + b"\xff\xff\xff\xff"


HANDLE_INDEX = b"\xfe\xff\xff\xff"


def actor_handle_id(actor_id: bytes) -> bytes:
    """The ID under which handles to an actor are reference-counted (it
    names no object in the store)."""
    return actor_id + HANDLE_INDEX


def is_actor_handle_id(object_id: bytes) -> bool:
    return object_id[TASK_ID_SIZE:] == HANDLE_INDEX


def task_of(object_id: bytes) -> bytes | None:
    """The task that returns this object, or None for a put object."""
    if object_id[TASK_ID_SIZE:] == b"\xff\xff\xff\xff":
        return None
    return object_id[:TASK_ID_SIZE]


def restore_copy_id(object_id: bytes) -> bytes:
    """The ID under which a spilled object's bytes are brought back into the
    store before it takes them (the top bit of its index flipped: no task
    has two billion returns)."""
    return object_id[:TASK_ID_SIZE] + bytes([object_id[TASK_ID_SIZE] ^ 0x80]) + object_id[TASK_ID_SIZE + 1:]


def nil_id() -> bytes:
    """The all-zero ID, which never names an object."""
    return bytes(ID_SIZE)
