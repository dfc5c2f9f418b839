"""Messages between the driver and its worker processes.

They travel over shared-memory rings (shoal._channel), one pair per worker,
as pickled tuples whose first item is the kind. Values never travel here
when large: arguments above the inline limit, and every result, go through
the object store; messages carry object IDs.

Driver -> worker
  (TASK, seq, spec)                 run a task (spec: TaskSpec tuple below)
  (CANCEL, seq, force)              cancel task seq if queued or running
  (EXIT,)                           finish and exit
Worker -> driver
  (READY, pid)                      first message of a started worker
  (DONE, seq, status, duration_s, contained)
                                    task seq ended; its results are sealed.
                                    status: OK, FAILED (error objects sealed),
                                    RETRY (an exception to retry; nothing sealed),
                                    CANCELLED; contained: {result id: [ids]}
  (SUBMIT, spec, owner_holds)       a nested task (the worker holds its returns)
  (PUT, object_id, contained)       the worker put an object and holds it
  (REFS, added, removed)            the worker's first / last references changed
  (BLOCKED, returned_seqs)          the running task waits in get(); the worker
                                    hands back the queued tasks it had not started
  (UNBLOCKED,)                      the wait is over
"""

from __future__ import annotations

import array
import pickle
import socket
from typing import Any, NamedTuple

TASK, CANCEL, EXIT = 1, 2, 3
READY, DONE, SUBMIT, PUT, REFS, BLOCKED, UNBLOCKED = 10, 11, 12, 13, 14, 15, 16

OK, FAILED, RETRY, CANCELLED = 0, 1, 2, 3

STREAMING = -1  # num_returns of a generator task

_dumps = pickle.dumps
_loads = pickle.loads


class TaskSpec(NamedTuple):
    """What a worker needs to run a task (pickled into TASK messages)."""

    task_id: bytes  #: 16 bytes; return i is ids.return_id(task_id, i)
    function_id: bytes  #: store object holding the pickled function
    name: str  #: for errors and output prefixes
    args: bytes | None  #: serialized (args, kwargs), or None when there are none
    args_id: bytes | None  #: store object holding them when too large to inline
    num_returns: int  #: >= 1, or STREAMING
    max_retries: int  #: system failures retried this many times (-1: forever)
    retry_exceptions: Any  #: False, True, or a tuple of exception types
    attempt: int  #: 0 for the first run
    resources: dict  #: assigned resources, e.g. {"GPU": [0]} (empty for CPU only)


def return_ids(spec: TaskSpec) -> list[bytes]:
    """The objects a task seals: its returns (for a generator, the record
    at index 0 that ends the stream)."""
    from shoal import ids

    n = 1 if spec.num_returns == STREAMING else spec.num_returns
    return [ids.return_id(spec.task_id, i) for i in range(n)]


def encode(message: tuple) -> bytes:
    return _dumps(message, 5)


def decode(data: bytes) -> tuple:
    return _loads(data)


MAX_FDS = 8


def send_with_fds(sock: socket.socket, message: object, fds: list[int] = ()) -> None:
    """Send a pickled control message (and descriptors) over a Unix socket."""
    anc = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds))] if fds else []
    sock.sendmsg([pickle.dumps(message)], anc)


def recv_with_fds(sock: socket.socket) -> tuple[object, list[int]]:
    """One control message and the descriptors sent with it; (None, []) at EOF."""
    fds = array.array("i")
    data, ancdata, _, _ = sock.recvmsg(1 << 16, socket.CMSG_SPACE(MAX_FDS * fds.itemsize))
    for level, kind, payload in ancdata:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            fds.frombytes(payload[: len(payload) - len(payload) % fds.itemsize])
    if not data:
        return None, list(fds)
    return pickle.loads(data), list(fds)
