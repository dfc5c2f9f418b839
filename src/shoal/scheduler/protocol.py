"""Messages between the driver and its worker processes.

They travel over shared-memory rings (shoal._channel), one pair per worker,
as pickled tuples whose first item is the kind. Values never travel here
when large: arguments above the inline limit, and every result, go through
the object store; messages carry object IDs.

Driver -> worker
  (TASK, seq, spec)                 run a task (spec: TaskSpec tuple below)
  (CANCEL, seq, force)              cancel task seq if queued or running
  (REVOKE, seqs)                    drop these tasks if not started: they were
                                    sent after this worker blocked, and go elsewhere
  (EXIT,)                           finish and exit
Worker -> driver
  (READY, pid)                      first message of a started worker
  (DONE, seq, status, duration_s, contained, (started, arg_bytes, result_bytes, error))
                                    task seq ended; its results are sealed.
                                    status: OK, FAILED (error objects sealed),
                                    RETRY (an exception to retry; nothing sealed),
                                    CANCELLED, EXITED (an actor's call ran
                                    exit_actor(): done, and the actor exits
                                    for good); contained: {result id: [ids]};
                                    started: time.perf_counter() at its start
                                    (CLOCK_MONOTONIC, one clock for every
                                    process); error: a FAILED task's text
  (SUBMIT, spec, shape, deps, held, parent)
                                    a nested task (the worker holds its returns);
                                    parent: the task id of the task or call that
                                    submitted it (cancel is recursive)
  (PUT, object_id, contained)       the worker put an object and holds it
  (REFS, added, removed)            the worker's first / last references changed
  (BLOCKED, returned_seqs)          the running task waits in get(); the worker
                                    hands back the queued tasks it had not started
  (UNBLOCKED,)                      the wait is over
  (EXITING, why)                    the process exits now, on purpose: why, in
                                    words (the task called sys.exit(3) at ...)

Actors: an actor is a worker process of its own. The driver sends it
(ACTOR_INIT, ActorSpec, restarts, assigned resources) once it is READY, then its method calls as TASK
messages carrying a CallSpec, in submission order; it answers
(CONSTRUCTED, error) after __init__ (error: None, or the RayTaskError
pickled) and DONE for each call. From any worker or actor:
  (CREATE_ACTOR, ActorSpec, options, deps, held, reply_id)
  (CALL_ACTOR, actor_id, CallSpec, deps, held, parent)   parent: the task or
                                           call that made it (cancel is recursive)
  (GET_ACTOR, name, namespace, reply_id)   the answer is sealed in the store
  (KILL_ACTOR, actor_id, no_restart)       under reply_id
  (RESOURCES, reply_id)                    (total, available) resources, sealed
                                           under reply_id
  (CANCEL_TASK, task_id, force, recursive, reply_id)
                                           cancel() from a task or actor; None
                                           or the error is sealed under reply_id
"""

from __future__ import annotations

import array
import pickle
import socket
from typing import Any, NamedTuple

from shoal.exceptions import MalformedMessageError

TASK, CANCEL, EXIT, REVOKE = 1, 2, 3, 4
READY, DONE, SUBMIT, PUT, REFS, BLOCKED, UNBLOCKED, EXITING = 10, 11, 12, 13, 14, 15, 16, 17
ACTOR_INIT, CONSTRUCTED, CREATE_ACTOR, CALL_ACTOR, GET_ACTOR, KILL_ACTOR = 20, 21, 22, 23, 24, 25
RESOURCES, CANCEL_TASK = 26, 27

OK, FAILED, RETRY, CANCELLED, EXITED = 0, 1, 2, 3, 4

STREAMING = -1  # num_returns of a generator task
DYNAMIC = -2  # num_returns="dynamic": one return, a DynamicObjectRefGenerator of the items

_dumps = pickle.dumps
_loads = pickle.loads


class TaskSpec(NamedTuple):
    """What a worker needs to run a task (pickled into TASK messages)."""

    task_id: bytes  #: 16 bytes; return i is ids.return_id(task_id, i)
    function_id: bytes  #: store object holding the pickled function
    name: str  #: for errors and output prefixes
    args: bytes | None  #: serialized (args, kwargs), or None when there are none
    args_id: bytes | None  #: store object holding them when too large to inline
    num_returns: int  #: >= 1, STREAMING or DYNAMIC
    max_retries: int  #: system failures retried this many times (-1: forever)
    retry_exceptions: Any  #: False, True, or a tuple of exception types
    attempt: int  #: 0 for the first run
    resources: dict  #: its logical resources, e.g. {"CPU": 1.0} (get_assigned_resources)
    env: dict | None = None  #: runtime_env env_vars, set while it runs
    gpu_ids: tuple = ()  #: GPU devices of its lease (CUDA_VISIBLE_DEVICES), set at dispatch
    max_calls: int = 0  #: the worker exits after running this function so many times (0: never)
    placement: tuple | None = None  #: (group id, bundle index, capture child tasks) of its placement group


class ActorSpec(NamedTuple):
    """What an actor process needs to build its instance."""

    actor_id: bytes  #: 16 bytes
    class_id: bytes  #: store object holding the pickled class
    class_name: str
    args: bytes | None  #: serialized (args, kwargs) for __init__
    args_id: bytes | None
    max_concurrency: int  #: > 1: calls run in a thread pool (or as asyncio tasks)
    is_async: bool  #: the class has async methods: calls run on an event loop
    name: str | None = None  #: its name, if named
    env: dict | None = None  #: runtime_env env_vars, set for the process's life
    groups: dict | None = None  #: concurrency groups, {name: max concurrent calls}
    placement: tuple | None = None  #: (group id, bundle index, capture child tasks) of its placement group


class CallSpec(NamedTuple):
    """One method call, sent to the actor as a TASK message."""

    task_id: bytes  #: return i is ids.return_id(task_id, i)
    method: str
    name: str  #: "Class.method", for errors and output
    args: bytes | None
    args_id: bytes | None
    num_returns: int
    attempt: int
    group: str | None = None  #: the concurrency group it runs in (None: the default one)


def return_ids(spec) -> list[bytes]:
    """The objects a task seals: its returns (for a generator, the record
    at index 0 that ends the stream)."""
    from shoal import ids

    n = 1 if spec.num_returns < 0 else spec.num_returns  # STREAMING, DYNAMIC: one record
    return [ids.return_id(spec.task_id, i) for i in range(n)]


def encode(message: tuple) -> bytes:
    return _dumps(message, 5)


def decode(data: bytes) -> tuple:
    return _loads(data)


#: How many items each kind of message from a worker has (kind included).
FROM_WORKER_ARITY = {
    DONE: (6,), REFS: (3,), SUBMIT: (6,), PUT: (3,), READY: (2,), CONSTRUCTED: (2,), CREATE_ACTOR: (5,),
    CALL_ACTOR: (5, 6), GET_ACTOR: (4,), RESOURCES: (2,), CANCEL_TASK: (5,), KILL_ACTOR: (3,), BLOCKED: (2,),
    UNBLOCKED: (1,), EXITING: (2,),
}


def decode_from_worker(data: bytes) -> tuple:
    """A message a worker sent, checked for its shape: a tuple of a known
    kind with that kind's number of items.

    Raises:
        MalformedMessageError: the bytes do not unpickle (truncated,
            corrupt), or the result is not such a tuple.
    """
    try:
        msg = _loads(data)
    except Exception as e:  # pickle raises many kinds for garbage: each means "malformed"
        head = bytes(data[:16]).hex()
        raise MalformedMessageError(
            f"a {len(data)}-byte message (starting {head}) does not unpickle: {type(e).__name__}: {e}") from e
    if type(msg) is not tuple or not msg:
        raise MalformedMessageError(f"a message must be a non-empty tuple, not {type(msg).__name__}")
    kind = msg[0]
    arity = FROM_WORKER_ARITY.get(kind) if type(kind) is int else None
    if arity is None:
        raise MalformedMessageError(f"unknown message kind {kind!r} ({len(msg)} items)")
    if len(msg) not in arity:
        raise MalformedMessageError(
            f"a message of kind {kind} has {len(msg)} items, not {' or '.join(map(str, arity))}")
    return msg


MAX_FDS = 8


def send_with_fds(sock: socket.socket, message: object, fds: list[int] = ()) -> None:
    """Send a pickled control message (and descriptors) over a Unix socket."""
    anc = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds))] if fds else []
    sock.sendmsg([pickle.dumps(message)], anc)


def recv_with_fds(sock: socket.socket) -> tuple[object, list[int]]:
    """One control message and the descriptors sent with it, close-on-exec
    (a program the receiver starts must not get them); (None, []) at EOF."""
    fds = array.array("i")
    data, ancdata, _, _ = sock.recvmsg(1 << 16, socket.CMSG_SPACE(MAX_FDS * fds.itemsize),
                                       socket.MSG_CMSG_CLOEXEC)
    for level, kind, payload in ancdata:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            fds.frombytes(payload[: len(payload) - len(payload) % fds.itemsize])
    if not data:
        return None, list(fds)
    return pickle.loads(data), list(fds)
