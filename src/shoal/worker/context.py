"""The runtime context of a worker process: its channel to the driver, and
what user code running in it can do (submit nested tasks, get, put, wait).

Ordering rule: around every message the worker sends the reference
changes it has queued (REFS): the objects it started to hold go before the
message, the ones it stopped holding go after it. So the driver always
learns that this process holds an object before anything that could lead
another process to release it, and learns of a release only after the
message that may hand the object on (a result that contains a ref the task
made and then dropped, for example).
"""

from __future__ import annotations

import collections
import contextvars
import threading

from shoal import exceptions as exc
from shoal.objectref import Context
from shoal.scheduler import protocol as P


class WorkerContext(Context):
    def __init__(self, store, wid: int, to_worker, to_driver, own_fd: int, driver_fd: int, session: str,
                 room_fd: int = -1):
        super().__init__(store)
        self.holder = wid
        self.wid = wid
        self.session = session
        self.to_worker = to_worker
        self.to_driver = to_driver
        self.own_fd = own_fd  # rung when a message arrives
        self.room_fd = room_fd  # rung when the driver makes room in to_driver
        self.driver_fd = driver_fd
        self.pending: collections.deque = collections.deque()  # (seq, spec) read, not started
        self.cancelled: set[int] = set()
        self.exit_requested = False
        self.current_seq = 0
        self.current_name = ""
        self.is_actor = False  # an actor's calls are never handed back to the driver
        self.current_task_id: bytes | None = None
        self.actor_id: bytes | None = None
        self.actor_info = None
        self.actor_name: str | None = None
        self.node_id = ""
        self.assigned: dict = {}  # logical resources of the running task
        self.gpu_ids: list = []  # GPU devices of the running task (or of the actor)
        self.placement: tuple | None = None  # (group id, bundle index, capture) of the running task or actor
        self._send_lock = threading.Lock()
        self._read_lock = threading.Lock()  # the ring has one consumer: one thread at a time
        # Tasks read after a BLOCKED are held back until the driver's REVOKE
        # answering it says which of them it took back (see before_wait).
        self.revokes_due = 0
        self.held: list = []
        self._blocked = 0  # threads of the task _blocked_seq waiting in get()/wait()
        self._blocked_seq = 0
        self._blocked_lock = threading.Lock()
        self._waiting = threading.local()  # .seq: the task a thread's wait belongs to
        self._thread_task = threading.local()  # .task_id: a threaded actor's call on this thread
        self._async_call: contextvars.ContextVar = contextvars.ContextVar("shoal_async_call", default=None)
        # Cancellation interrupts the main thread (SIGINT -> TaskCancelled)
        # only while user code runs there and no bookkeeping is under way:
        # an interrupt inside a send, a ring read or the blocked/unblocked
        # exchange would leave the driver and this worker out of step (a
        # held task never released, a message half sent). _shield counts the
        # main thread's reasons not to be interrupted (1: the runtime's own
        # loop); an interrupt that comes then is raised when it drops to 0.
        self._main_thread = threading.get_ident()
        self._shield = 1
        self._interrupt_pending = False
        self._delivered = 0  # the task whose cancel was raised

    # Channel -------------------------------------------------------------------

    # Interrupts (task cancellation) -----------------------------------------------

    def interrupt(self) -> None:
        """SIGINT handler: cancel the running task now if that is safe, or
        as soon as it is."""
        seq = self.current_seq
        if not (seq and self._delivered != seq and self.cancel_requested()):
            return
        if self._shield:
            self._interrupt_pending = True
            return
        self._raise_cancelled()

    def _raise_cancelled(self) -> None:
        from shoal.worker.execution import TaskCancelled

        self._delivered = self.current_seq  # once per task: user code may catch it and go on
        raise TaskCancelled()

    def check_cancelled(self) -> None:
        """Raise the cancel of the running task if its interrupt has not
        come (waits call this between slices: a signal that lands just
        before a futex sleep may be seen only late)."""
        seq = self.current_seq
        if (seq and not self._shield and self._delivered != seq and self.cancel_requested()
                and threading.get_ident() == self._main_thread):
            self._raise_cancelled()

    def shield(self) -> None:
        """Enter a section that an interrupt must not cut (main thread only)."""
        if threading.get_ident() == self._main_thread:
            self._shield += 1

    def unshield(self) -> None:
        """Leave such a section; an interrupt that came meanwhile is raised now."""
        if threading.get_ident() == self._main_thread:
            self._shield -= 1
            if not self._shield and self._interrupt_pending:
                self._interrupt_pending = False
                self.interrupt()

    def user_code(self) -> "_UserCode":
        """A context manager around user code: the only place where an
        interrupt may land (a pending one is raised on entry)."""
        return _UserCode(self)

    # Channel -------------------------------------------------------------------

    def send(self, message: tuple) -> None:
        data = P.encode(message)
        self.shield()
        try:
            with self._send_lock:
                lasts = self._send_firsts_locked()
                self._send_locked(data)
                if lasts:
                    self._send_locked(P.encode((P.REFS, [], lasts)))
        finally:
            self.unshield()

    def _send_firsts_locked(self) -> list[bytes]:
        """Send the queued new holds; return the queued releases, which
        the caller sends after its message."""
        if not self.refs.pending():
            return []
        firsts, lasts = self.refs.drain()
        if firsts:
            self._send_locked(P.encode((P.REFS, firsts, [])))
        return lasts

    def _send_locked(self, data: bytes) -> None:
        if not self.to_driver.send(data, self.driver_fd):
            self.to_driver.send_wait(data, self.driver_fd, self.room_fd)

    def flush_refs(self) -> None:
        if self.refs.pending():
            self.shield()
            try:
                with self._send_lock:
                    self._flush_refs_locked()
            finally:
                self.unshield()

    def _flush_refs_locked(self) -> None:
        if self.refs.pending():
            firsts, lasts = self.refs.drain()
            if firsts or lasts:
                self._send_locked(P.encode((P.REFS, firsts, lasts)))

    def read_ring(self) -> None:
        """Take every message the driver queued for this worker."""
        self.shield()
        try:
            with self._read_lock:
                self._read_ring_locked()
        finally:
            self.unshield()

    def _read_ring_locked(self) -> None:
        for data in self.to_worker.recv_many():
            msg = P.decode(data)
            kind = msg[0]
            if kind == P.TASK:
                (self.held if self.revokes_due else self.pending).append((msg[1], msg[2]))
            elif kind == P.CANCEL:
                self.cancelled.add(msg[1])
            elif kind == P.REVOKE:  # answers one BLOCKED; read after the TASKs it names
                gone = set(msg[1])
                self.cancelled -= gone
                self.revokes_due -= 1
                self.held = [p for p in self.held if p[0] not in gone]
                if not self.revokes_due:
                    self.pending.extend(self.held)
                    self.held = []
            elif kind == P.EXIT:
                self.exit_requested = True

    def started(self, seq: int, name: str, task_id: bytes | None = None) -> None:
        self.current_seq = seq
        self.current_name = name
        self.current_task_id = task_id
        self.to_worker.user_word = seq  # the driver reads it if this process dies
        # Each task starts from the runtime's own level. (An interrupt that
        # lands as user code is left can leave the count one low; it is
        # raised once per task, so nothing else can land then.)
        self._shield = 1
        self._interrupt_pending = False

    def set_thread_task(self, task_id: bytes | None, seq: int = 0) -> None:
        """The call this thread runs (threaded actors run several at once)."""
        self._thread_task.task_id = task_id
        self._thread_task.seq = seq

    def call_cancelled(self) -> bool:
        """Whether cancel() was called for the actor call this thread runs.
        As in Ray, a running call of a sync or threaded actor is not
        interrupted: it may check this, and its result is dropped. (The
        driver's CANCEL is read here: a sync call holds the thread that
        would read it otherwise.)"""
        seq = getattr(self._thread_task, "seq", 0) or self.current_seq
        if not seq:
            return False
        self.read_ring()
        return seq in self.cancelled

    def set_async_call(self, task_id: bytes) -> None:
        """The call the current asyncio task runs (each call of an asyncio
        actor is a task with its own context)."""
        self._async_call.set(task_id)

    def task_id_here(self) -> bytes | None:
        """The task or call the calling thread (or asyncio task) runs."""
        return getattr(self._thread_task, "task_id", None) or self._async_call.get() or self.current_task_id

    def cancel_requested(self) -> bool:
        return self.to_driver.user_word == self.current_seq

    # Context hooks ---------------------------------------------------------------

    def before_wait(self, object_ids: list[bytes]) -> bool:
        """The running task is about to wait: hand back the tasks queued
        here (another worker will run them) and the CPU.

        The driver may have sent more tasks that we have not read yet; it
        answers BLOCKED with a REVOKE naming those it takes back, and tasks
        read meanwhile wait for that answer, so none runs twice."""
        seq = self.current_seq
        if self.is_actor or not seq:
            return False
        self.shield()
        try:
            return self._before_wait(seq)
        finally:
            self.unshield()  # (a cancel that came meanwhile: the wait never starts)

    def _before_wait(self, seq: int) -> bool:
        with self._blocked_lock:
            self._waiting.seq = seq
            if self._blocked_seq == seq and self._blocked:
                self._blocked += 1  # another thread of this task already gave the CPU back
                return True
            self._blocked_seq, self._blocked = seq, 1
            with self._read_lock:
                self._read_ring_locked()
                returned = [s for s, _ in self.pending]
                self.pending.clear()
                self.revokes_due += 1
            self.cancelled -= set(returned)
            self.send((P.BLOCKED, returned))
        return True

    def after_wait(self) -> None:
        self.shield()
        try:
            self._after_wait()
        finally:
            self.unshield()

    def _after_wait(self) -> None:
        with self._blocked_lock:
            if getattr(self._waiting, "seq", None) != self._blocked_seq or not self._blocked:
                return  # its task has ended meanwhile (a thread it left behind)
            self._blocked -= 1
            if self._blocked == 0:
                self.send((P.UNBLOCKED,))

    def task_ended(self) -> None:
        """The running task returned: threads it left waiting no longer
        count as its wait (the driver learns from DONE that it is over)."""
        with self._blocked_lock:
            self._blocked = 0
            self._blocked_seq = 0

    def submit(self, spec: P.TaskSpec, shape: tuple, deps: list, held: list) -> None:
        self.check_open()
        self.send((P.SUBMIT, spec, shape, deps, held, self.task_id_here()))  # its parent, for cancel

    def on_put(self, oid: bytes, nested: list) -> None:
        if nested:
            self.send((P.PUT, oid, [r._id for r in nested if hasattr(r, "_id")]))

    def cancel(self, ref, force: bool, recursive: bool) -> None:
        """cancel() from a task or actor: the driver, which owns every task,
        carries it out and says if it refused."""
        from shoal import ids

        task_id = ids.task_of(ref._id)
        if task_id is None:  # a put object: no task
            return
        answer = self._ask((P.CANCEL_TASK, task_id, force, recursive))
        if isinstance(answer, BaseException):
            raise answer

    # Actors (every request goes to the driver, which owns them) ----------------------

    def _ask(self, message_without_reply: tuple):
        """Send a request whose answer the driver seals under a fresh ID."""
        from shoal import ids

        reply = ids.new_put_id()
        self.send((*message_without_reply, reply))
        buf = self.store.raw.get(reply, None)
        from shoal import serialization

        answer = serialization.deserialize(buf, buf.metadata)
        del buf
        self.store.raw.delete(reply)  # nobody else refers to it
        return answer

    def create_actor(self, actor, deps: list, held: list, wait: bool) -> None:
        self.check_open()
        if wait:  # a named actor: the caller must learn now if the name is taken
            answer = self._ask((P.CREATE_ACTOR, actor, deps, held))
            if isinstance(answer, BaseException):
                raise answer
        else:
            self.send((P.CREATE_ACTOR, actor, deps, held, None))

    def call_actor(self, actor_id: bytes, spec, deps: list, held: list) -> None:
        self.check_open()
        self.send((P.CALL_ACTOR, actor_id, spec, deps, held, self.task_id_here()))  # its parent, for cancel

    def named_actor(self, name: str, namespace: str):
        """(actor_id, info) of a named actor, or None."""
        return self._ask((P.GET_ACTOR, name, namespace))

    def kill_actor(self, actor_id: bytes, no_restart: bool) -> None:
        self.send((P.KILL_ACTOR, actor_id, no_restart))

    # Resources (the driver's scheduler keeps them) ------------------------------------

    def cluster_resources(self) -> dict:
        return self._ask((P.RESOURCES,))[0]

    def available_resources(self) -> dict:
        return self._ask((P.RESOURCES,))[1]


class _UserCode:
    """WorkerContext.user_code(): interrupts may land while user code runs."""

    __slots__ = ("ctx",)

    def __init__(self, ctx: WorkerContext):
        self.ctx = ctx

    def __enter__(self) -> None:
        ctx = self.ctx
        if threading.get_ident() != ctx._main_thread:
            return
        ctx._shield -= 1
        if not ctx._shield and ctx._interrupt_pending:
            ctx._interrupt_pending = False
            try:
                ctx.interrupt()
            except BaseException:
                ctx._shield += 1  # (__exit__ will not run)
                raise

    def __exit__(self, *exc_info) -> None:
        if threading.get_ident() == self.ctx._main_thread:
            self.ctx._shield += 1
