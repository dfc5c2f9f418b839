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
    +-- ClusterUnreachableError (ConnectionError)
    +-- RayTaskError (TaskError): an exception raised by user code in a task
    +-- RuntimeClosedError > StaleObjectRefError (ValueError)
    +-- WorkerCrashedError, TaskCancelledError, OutOfMemoryError, ...
    +-- ObjectLostError > ObjectFreedError, OwnerDiedError, ...
    +-- RayActorError > ActorDiedError, ActorUnavailableError
    +-- RaySystemError: an internal invariant broke (a bug)

Every class of Ray's ``ray.exceptions`` has a namesake here with the same
base classes (some are never raised by shoal; see the end of this module).
"""

from __future__ import annotations


def format_bytes(n: int) -> str:
    """Format a byte count for a message: '1.50 GiB (1610612736 bytes)'."""
    for unit, scale in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= scale:
            return f"{n / scale:.2f} {unit} ({n} bytes)"
    return f"{n} bytes"


_gib = format_bytes


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
            f"{_gib(self.pinned)} pinned by readers (live buffers or arrays of objects). "
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
            f"objects you no longer need (spilled objects keep their entry), or start with a "
            f"larger table (SHOAL_MAX_OBJECTS=...; ObjectStore.open(max_objects=...))."
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


class ClusterUnreachableError(RayError, ConnectionError):
    """init(address=...) named a Ray cluster that does not answer (a
    ConnectionError, as Ray raises for it)."""


class RaySystemError(RayError):
    """An internal invariant broke. This is a bug in shoal: please report it."""


class ObjectDeserializationError(RaySystemError):
    """An object (a value, a task's arguments) could not be rebuilt in the
    process that read it. A RaySystemError, as Ray raises for this; the
    original exception is its ``__cause__``.

    Attributes: ``what`` (which object, with its ID), ``cause`` (the
    original error's type and text), ``pid`` (the reading process).
    """

    def __init__(self, what: str, cause: str, pid: int | None = None, kind: str = "other"):
        RaySystemError.__init__(self, what, cause, pid, kind)
        self.what = what
        self.cause = cause
        self.pid = pid
        self.kind = kind

    def __str__(self) -> str:
        where = f" in process {self.pid}" if self.pid is not None else ""
        hint = {
            "missing": "It refers to a module, class or function that this process cannot import, though "
                       "the process that stored it could: a module on the driver's sys.path but not on the "
                       "workers', or installed after they started. Make the module importable in every "
                       "process (install it, or set PYTHONPATH before init(), or runtime_env={'env_vars': "
                       "{'PYTHONPATH': ...}}), or define the class in __main__ so that it travels by value.",
            "corrupt": "Its bytes are not a valid pickle: they were written over after the object was "
                       "stored (a stray write through a writable view, or native code), or come from an "
                       "incompatible version. Store the value again.",
        }.get(self.kind, "The value's own code failed while it was rebuilt (its __setstate__, __reduce__ "
                         "or a registered deserializer); see the cause below.")
        return f"{self.what} could not be deserialized{where}: {self.cause}. {hint}"


class RuntimeClosedError(RayError):
    """The runtime was shut down, or a call needs a runtime that is not there."""


class StaleObjectRefError(RuntimeClosedError, ValueError):
    """An ObjectRef of a runtime that was shut down was used (its value is
    gone). A ValueError, as Ray's "objects whose owner is unknown" error."""


class RayTaskError(RayError):
    """User code raised in a task or actor method.

    ``get`` raises an instance of a class derived from both this class and
    the user's exception type (see ``as_instanceof_cause``), so both
    ``except ValueError`` and ``except RayTaskError`` catch it. Its text is
    the remote traceback, with the function name and the worker's pid.

    Attributes: ``function_name``, ``traceback_str``, ``cause`` (the user's
    exception), ``pid``, ``actor_repr``.
    """

    def __init__(self, function_name: str, traceback_str: str, cause: BaseException | None = None,
                 pid: int | None = None, actor_repr: str | None = None):
        RayError.__init__(self, function_name, traceback_str, cause, pid, actor_repr)
        self.function_name = function_name
        self.traceback_str = traceback_str
        self.cause = cause
        self.pid = pid
        self.actor_repr = actor_repr

    def __str__(self) -> str:
        where = f"shoal::{self.function_name}() (pid={self.pid})"
        if self.actor_repr:
            where += f", actor {self.actor_repr}"
        return f"{where}\n{self.traceback_str.rstrip()}"

    def __reduce__(self):
        return (_rebuild_task_error, (self.function_name, self.traceback_str, portable(self.cause),
                                      self.pid, self.actor_repr, type(self) is not RayTaskError))

    def as_instanceof_cause(self) -> "RayTaskError":
        """This error as an instance of a class derived from RayTaskError and
        the cause's own class; where that class cannot be derived from, of
        its nearest base class that can (as Ray: numpy's _ArrayMemoryError
        still gives a MemoryError); itself if only Exception remains."""
        cause = self.cause
        if cause is None or isinstance(cause, RayTaskError):
            return self
        for base in type(cause).__mro__:
            if base in (Exception, BaseException) or not issubclass(base, BaseException):
                break
            cls = _dual_class(base)
            if cls is None:
                continue
            try:
                err = _new_exception(cls)
                RayTaskError.__init__(err, self.function_name, self.traceback_str, cause, self.pid,
                                      self.actor_repr)
                err.args = cause.args
                err.__dict__.update({k: v for k, v in vars(cause).items() if k not in err.__dict__})
            except Exception:  # an exotic constructor or layout: try the next base
                continue
            return err
        return self


TaskError = RayTaskError

_dual_classes: dict = {}
_HEAPTYPE = 1 << 9  # Py_TPFLAGS_HEAPTYPE: a class made by a class statement or type()


def _dual_class(cause_cls: type):
    cls = _dual_classes.get(cause_cls)
    if cls is None and cause_cls not in _dual_classes:
        try:
            cls = type(f"RayTaskError({cause_cls.__name__})", (RayTaskError, cause_cls),
                       {"__module__": cause_cls.__module__, "__str__": RayTaskError.__str__,
                        "__reduce__": RayTaskError.__reduce__, "__init__": RayTaskError.__init__})
        except Exception:  # an incompatible C layout, a final class, an __init_subclass__ that refuses
            cls = None
        _dual_classes[cause_cls] = cls
    return cls


def _new_exception(cls: type) -> BaseException:
    """An instance of cls, without calling __init__. cls.__new__ may be a
    builtin base's that refuses a class whose layout comes from another base
    (MemoryError.__new__ with RayTaskError first); then the __new__ that
    cls() itself would use, its nearest builtin base's, makes it."""
    try:
        return cls.__new__(cls)
    except TypeError:
        static = cls
        while static.__flags__ & _HEAPTYPE:
            static = static.__base__
        return static.__new__(cls)


def rebuild_exception(cls: type, args: tuple, state: dict | None) -> BaseException:
    """An exception instance made without calling its __init__ (which may
    take other arguments than its args), attributes included."""
    e = cls.__new__(cls, *args)
    e.args = args
    if state:
        e.__dict__.update(state)
    return e


class _Portable:
    """Pickles an exception whose class keeps BaseException's __reduce__
    (which calls cls(*args), and fails when __init__ wants other arguments)."""

    def __init__(self, e: BaseException):
        self.e = e

    def __reduce__(self):
        e = self.e
        return (rebuild_exception, (type(e), e.args, e.__dict__ or None))


def portable(e):
    """e, or a wrapper that pickles it safely (see rebuild_exception)."""
    if isinstance(e, BaseException):
        cls = type(e)
        if cls.__reduce__ is BaseException.__reduce__ and cls.__module__ != "builtins":
            return _Portable(e)
    return e


def _rebuild_task_error(function_name, traceback_str, cause, pid, actor_repr, dual):
    err = RayTaskError(function_name, traceback_str, cause, pid, actor_repr)
    return err.as_instanceof_cause() if dual else err


class WorkerCrashedError(RayError):
    """The worker process running the task died (a crash, os._exit, a signal
    such as the kernel's OOM killer's SIGKILL), after every retry."""

    def __str__(self) -> str:
        return super().__str__() or "The worker died unexpectedly while executing this task."


class MalformedMessageError(RayError, ValueError):
    """A message between the runtime's processes could not be read: a frame
    longer than its ring, a truncated or corrupt pickle, an unknown kind or
    the wrong number of fields. The process that sent it is stopped (its
    task fails with WorkerCrashedError naming this) and the runtime goes on."""


class TaskCancelledError(RayError):
    """The task was cancelled with cancel() before it produced its result."""


class ObjectLostError(RayError):
    """The object's value is gone (its store entry vanished) and cannot be
    recomputed."""


class ObjectFreedError(ObjectLostError):
    """The object was freed explicitly."""


class OwnerDiedError(ObjectLostError):
    """The process that owned the object died."""


class TaskUnschedulableError(RayError):
    """The task asks for resources that do not exist."""


class RayActorError(RayError):
    """The actor died or cannot run the call.

    Attributes: ``actor_id`` (hex), ``error_msg``.
    """

    def __init__(self, error_msg: str = "The actor experienced an error before finishing this task.",
                 actor_id: str | None = None):
        RayError.__init__(self, error_msg, actor_id)
        self.error_msg = error_msg
        self.actor_id = actor_id

    def __str__(self) -> str:
        return self.error_msg


class ActorDiedError(RayActorError):
    """The actor's process died, or its constructor raised; calls fail."""

    def __init__(self, error_msg: str = "The actor died unexpectedly before finishing this task.",
                 actor_id: str | None = None):
        super().__init__(error_msg, actor_id)


class ActorUnavailableError(RayActorError):
    """The actor is restarting; the call may be retried."""


class ActorAlreadyExistsError(RayError, ValueError):
    """An actor with this name already exists in the namespace."""


class PendingCallsLimitExceeded(RayError):
    """An actor has more pending calls than max_pending_calls."""


class AsyncioActorExit(RayError):
    """Raised inside an async actor to exit it."""


class ObjectRefStreamEndOfStreamError(RayError, StopIteration):
    """A streaming generator has no more items."""


# --------------------------------------------------------------------------
# Ray's other exceptions. Shoal raises few of them (a single machine has no
# nodes, RPCs or spilling to fail), but each exists, with Ray's base
# classes, so that code written for Ray can name it in an ``except``.
# --------------------------------------------------------------------------


class ObjectFetchTimedOutError(ObjectLostError):
    """Fetching the object from another node timed out."""


class ObjectReconstructionFailedError(ObjectLostError):
    """The object was lost and recomputing it failed."""


class ReferenceCountingAssertionError(ObjectLostError, AssertionError):
    """The object was deleted while references to it remained (a bug)."""


class OutOfMemoryError(RayError):
    """The task's worker was killed because the machine ran out of memory:
    the memory monitor stopped it before the kernel's OOM killer would pick
    a process (Ray's name and base class).

    Attributes: ``task_name``, ``pid``, ``rss_bytes`` (its memory of its own:
    resident minus shared pages), ``used_bytes`` and ``total_bytes`` (the
    machine's, or its container's), ``threshold`` (share of total),
    ``detail`` (why this worker, what happens next); all None when made
    from a message alone, as Ray's ``OutOfMemoryError(message)``.
    """

    def __init__(self, message: str = "", task_name: str | None = None, pid: int | None = None,
                 rss_bytes: int | None = None, used_bytes: int | None = None, total_bytes: int | None = None,
                 threshold: float | None = None, detail: str = ""):
        RayError.__init__(self, message, task_name, pid, rss_bytes, used_bytes, total_bytes, threshold, detail)
        self.message = message
        self.task_name = task_name
        self.pid = pid
        self.rss_bytes = rss_bytes
        self.used_bytes = used_bytes
        self.total_bytes = total_bytes
        self.threshold = threshold
        self.detail = detail

    def __str__(self) -> str:
        if self.message or self.used_bytes is None:
            return self.message or "The task was killed because the machine ran low on memory."
        used, total = self.used_bytes, self.total_bytes or 1
        rss = f" using {_gib(self.rss_bytes)} of its own" if self.rss_bytes is not None else ""
        return (
            f"Task {self.task_name} was killed because the machine was running low on memory: "
            f"{_gib(used)} of {_gib(total)} in use ({used / total:.3f}), above the memory usage "
            f"threshold of {self.threshold}. Its worker (pid {self.pid}) was{rss}. "
            + (self.detail + " " if self.detail else "")
            + "To avoid this: run fewer such tasks at once (ask for more num_cpus or for memory=... "
            "per task), make each use less memory, or raise the threshold "
            "(RAY_memory_usage_threshold or _system_config={'memory_usage_threshold': ...}); "
            "RAY_memory_monitor_refresh_ms=0 turns the monitor off (the kernel then kills processes "
            "when memory runs out)."
        )


class OutOfDiskError(RayError):
    """The object could not be stored or spilled: the disk is full."""


class NodeDiedError(RayError):
    """The node running the task died."""


class LocalRayletDiedError(RayError):
    """The local node manager (raylet) died."""


class RuntimeEnvSetupError(RayError):
    """The runtime environment of the task or actor could not be set up."""


class ActorUnschedulableError(RayError):
    """The actor cannot be scheduled (its resources or placement cannot be had)."""


class ActorHandleNotFoundError(RayError, ValueError):
    """The actor handle is not known to this process."""


class ActorPlacementGroupRemoved(RayError):
    """The placement group of the actor was removed."""


class TaskPlacementGroupRemoved(RayError):
    """The placement group of the task was removed."""


class PlasmaObjectNotAvailable(RayError):
    """The object is not in the object store (yet)."""


class RpcError(RayError):
    """A remote procedure call between runtime processes failed.

    Attributes: ``rpc_code`` (or None).
    """

    def __init__(self, message: str = "", rpc_code: int | None = None):
        RayError.__init__(self, message, rpc_code)
        self.rpc_code = rpc_code

    def __str__(self) -> str:
        return str(self.args[0])


class AuthenticationError(RayError):
    """The connection to the cluster was refused: bad or missing credentials."""


class CrossLanguageError(RayError):
    """An error raised by code in another language (Java, C++)."""


class UnserializableException(RayError):
    """A task raised an exception that could not be pickled; the text holds
    its traceback."""


class UserCodeException(RayError):
    """User code raised during a runtime operation (e.g. a __reduce__)."""


class OufOfBandObjectRefSerializationException(RayError):
    """An ObjectRef was pickled out of band, which Ray forbids by setting."""


class RayChannelError(RaySystemError):
    """A compiled-graph channel failed."""


class RayChannelTimeoutError(RayChannelError, TimeoutError):
    """A compiled-graph channel operation timed out."""


class RayCgraphCapacityExceeded(RaySystemError):
    """A compiled graph has too many executions in flight."""


class RayDirectTransportError(RaySystemError):
    """A direct (device-to-device) object transfer failed."""


class StreamingGeneratorReplayInconsistentError(RaySystemError):
    """A retried generator task yielded different items than its first run."""
