"""The scheduler's I/O shell: it feeds the state machine (state.py) and the
reference table (refs.py) with events, and carries out their actions.

    submitting thread --submit()--+
                                  v
    workers --rings--> I/O thread --> Scheduler / ReferenceTable --> actions:
    fork server -------^    ^            dispatch to a ring, start a worker,
    worker pipes -----------+            seal errors, delete objects, cancel

Everything runs under one lock, in whichever thread holds it: the thread
that submits a task dispatches it itself (no hop to another thread), and
the I/O thread handles what workers send. The I/O thread sleeps in a
selector on the driver's eventfd (which workers ring when they see it
asleep), the fork server's socket and the workers' output pipes.
"""

from __future__ import annotations

import collections
import itertools
import os
import selectors
import signal
import sys
import threading
import time
from time import perf_counter as _clock

from shoal import config, ids, words
from shoal import exceptions as exc
from shoal.scheduler import protocol as P
from shoal.scheduler import actors as A
from shoal.scheduler.actor_calls import ActorCalls
from shoal.scheduler.events import TaskEvents
from shoal.scheduler.memory_guard import MemoryGuard
from shoal.scheduler.output import OutputRouter
from shoal._channel import child_subreaper, set_child_subreaper
from shoal.scheduler.pool import WorkerHandle, WorkerPool, describe_exit
from shoal.scheduler.respawn import Respawn
from shoal.scheduler.refs import DRIVER, ReferenceTable
from shoal.scheduler.state import (
    CancelActorCall, CancelQueued, CancelRunning, Dispatch, FailTask, KillActor, PlaceActor, RetryLater, Revoke,
    Scheduler, StartWorker, StopWorker, Surplus, Task, Warn, make_shape,
)
from shoal.store import MAX_CLIENTS

#: Workers that die before saying READY this many times in a row stop the
#: pool from starting more (something in the environment is broken).
MAX_START_FAILURES = 3


#: An idle worker beyond the pool's size exits after this many seconds idle
#: (Ray keeps idle workers for one second too): bursts of nested or
#: fractional-CPU work then reuse workers instead of forking new ones.
IDLE_STOP_S = 1.0

#: A submit reads the rings of the busy workers first when at most this
#: many are busy (see Shell._read_few_busy; more would cost each submit more
#: than a wake-up saves).
FEW_BUSY = 4


class Shell(ActorCalls, Respawn, MemoryGuard):
    """Args:
        store: the driver's ObjectStore.
        local_refs: the driver's LocalRefs (its ObjectRef counts).
        resources: total logical resources.
        num_workers: workers kept running.
        spin: seconds a worker spins for its next task before sleeping.
        log_to_driver: forward worker output.
        preload: modules the fork server imports before forking.
        validate: check every invariant after each step (tests).
        remove_on_driver_death: folders the fork server deletes if the driver
            dies without shutting down (its spill folders).
        task_events: ended tasks kept for the timeline (0: none recorded).
    """

    def __init__(self, store, local_refs, resources: dict, num_workers: int, session: str, *,
                 spin: float = 0.0, log_to_driver: bool = True, preload: tuple = (), validate: bool = False,
                 namespace: str = "", worker_cfg: dict | None = None, gpu_names: list | None = None,
                 remove_on_driver_death: tuple | list = (), task_events: int = 0):
        self.store = store
        self.local_refs = local_refs
        self.session = session
        self.namespace = namespace
        self.worker_cfg = worker_cfg
        # Device i of the scheduler is the driver's i-th visible device (as
        # in Ray: a task gets the ids CUDA_VISIBLE_DEVICES lists, not 0..n-1).
        self.gpu_names = gpu_names or None
        self.spin = spin
        self.remove_on_driver_death = list(remove_on_driver_death)
        self.preload = list(preload)
        self.validate = validate
        self.lock = threading.RLock()
        self.process_exited = threading.Condition(self.lock)  # notified when a worker or actor exits
        # The pool's ceiling (blocked tasks make it grow past its target):
        # grows with the machine, within the store's client slots.
        ceiling = config.max_pool_workers(None, MAX_CLIENTS)
        if num_workers > ceiling:
            words.warn(f"{num_workers} CPUs asked for, but the pool runs at most {ceiling} worker processes: "
                       f"the store admits {MAX_CLIENTS} processes (and keeps {config.RESERVED_CLIENT_SLOTS} "
                       f"for others). Reinstall with SHOAL_MAX_CLIENTS=<a multiple of 64> to use them all "
                       f"(docs/cluster.md).")
        self.sched = Scheduler(resources, target_workers=num_workers, max_workers=ceiling)
        self.refs = ReferenceTable()
        self.shared: set[bytes] = set()  # objects another process may refer to
        self.drop_when_sealed: set[bytes] = set()
        # Results sealed and already freed (their refs dropped) while their
        # task or call had not reported DONE: a death now must not store an
        # error under their ID, which nothing would ever free.
        self._gone_results: set[bytes] = set()
        self.by_task_id: dict[bytes, int] = {}
        self.actors = A.ActorTable()
        self.calls: dict[int, A.Actor] = {}  # seq of an actor call -> its actor
        self.group_info: dict[str, dict] = {}  # placement groups: what placement_group_table shows
        self._reading = False  # inside _read_rings
        self._actions: collections.deque = collections.deque()  # see _execute
        self._executing = False
        self._surplus: dict[int, float] = {}  # worker -> time.monotonic() to stop it at
        self._retry_due: dict[int, float] = {}  # task killed for memory -> time.monotonic() to retry it at
        self._oom_error: BaseException | None = None  # while a task killed for memory is failed
        self._orphans: list = []  # calls to actors whose creation is not read yet
        self._late_cancels: list = []  # cancels from workers of tasks not read yet
        self.workers: dict[int, WorkerHandle] = {}
        self.output = OutputRouter(log_to_driver)
        self.output.arrived = threading.Condition(self.lock)
        self.events: TaskEvents | None = TaskEvents(task_events) if task_events > 0 else None
        self.doorbell = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
        self.sel = selectors.DefaultSelector()
        self.pool: WorkerPool | None = None
        self.closed = False
        self.broken: BaseException | None = None  # set when the runtime cannot go on
        self._seq = itertools.count(1)
        self._start_failures = 0
        self._server_failures = 0
        self._was_subreaper = False
        self.adopted: set[int] = set()  # workers whose fork server died (now this process's children)
        # While a worker's death is handled: how it died, and its fault report.
        self._dying: tuple[str, str | None] | None = None
        self._started = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="shoal-io", daemon=True)

    # -- life -------------------------------------------------------------------

    def start(self) -> None:
        """Start the I/O thread, which starts the fork server (so that the
        fork server's parent thread lives as long as the runtime)."""
        self._thread.start()
        self._started.wait()
        if self._error is not None:
            raise self._error

    def _run(self) -> None:
        try:
            # Workers outlive their fork server's death: the kernel then
            # gives them to this process, which must ask for them first
            # (before the fork server is started, as the kernel requires).
            self._was_subreaper = child_subreaper()
            set_child_subreaper(True)
            self.pool = WorkerPool(self.store.fd, self.doorbell, self.session, self.spin, self.preload,
                                   namespace=self.namespace, worker_cfg=self.worker_cfg,
                                   remove_on_driver_death=self.remove_on_driver_death)
            self.sel.register(self.doorbell, selectors.EVENT_READ, "doorbell")
            self.sel.register(self.pool.sock, selectors.EVENT_READ, "pool")
            with self.lock:
                self._execute(self.sched.start())
        except BaseException as e:
            self._error = e
            self._started.set()
            return
        self._started.set()
        try:
            self._loop()
        except BaseException:
            if not self.closed:
                import traceback

                sys.stderr.write("shoal: the runtime's I/O thread failed; this is a bug:\n")
                traceback.print_exc()
                with self.lock:
                    self.broken = exc.RaySystemError(
                        "the runtime's I/O thread failed (a bug in shoal; its traceback is on stderr): "
                        "call shutdown() and init() again")
                    self._fail_everything(self.broken)

    def shutdown(self, timeout: float = 10.0) -> None:
        """Fail what is unfinished, stop the I/O thread and the workers."""
        self.stop_memory_monitor()
        with self.lock:
            if self.closed:
                return
            self.closed = True
            self._retry_due.clear()
            self._fail_everything(exc.RuntimeClosedError("the runtime was shut down before this task finished"))
            self.process_exited.notify_all()
        self.wake()
        if threading.current_thread() is not self._thread:
            self._thread.join(timeout)
        if self.pool is not None:
            self.pool.close(timeout)
        self._kill_adopted()
        self._reap_strays(kill=True, everyone=True)
        if not self._was_subreaper:
            set_child_subreaper(False)
        self.output.close()
        for h in self.workers.values():
            h.close()
        self.workers.clear()
        self.sel.close()
        fd, self.doorbell = self.doorbell, -1  # (wake() checks it first)
        os.close(fd)

    def wake(self) -> None:
        """Make the I/O thread look again."""
        fd = self.doorbell
        if fd < 0:
            return  # shut down
        try:
            os.eventfd_write(fd, 1)
        except OSError:
            pass

    # -- the I/O loop -------------------------------------------------------------

    def _loop(self) -> None:
        while not self.closed:
            with self.lock:
                if self.closed:
                    return
                if self._drain():
                    continue
                ready = any(h.to_driver.prepare_sleep() for h in self.workers.values()
                            if h.to_driver and not h.malformed)
                if ready or self.local_refs.pending():
                    self._end_sleep()
                    continue
            events = self.sel.select(self._select_timeout())
            with self.lock:
                self._end_sleep()
                if self.closed:
                    return
                if self._surplus:
                    self._stop_surplus()
                self._check_fork_server()
                if self._retry_due:
                    self.retry_due()
                for key, _ in events:
                    what = key.data
                    if what == "doorbell":
                        try:
                            os.eventfd_read(self.doorbell)
                        except BlockingIOError:
                            pass
                    elif what == "pool":
                        self._on_pool_message()
                    elif type(what) is int:  # an adopted worker exited
                        self._on_adopted_exit(what)
                    elif key.fd in self.output.streams and self.output.read(key.fd) is False:
                        self.sel.unregister(key.fd)  # (a pipe may have closed earlier in this batch)

    def _select_timeout(self) -> float | None:
        """Sleep until the next surplus worker or delayed retry is due, or a
        spawn is overdue (None: no deadline)."""
        due = [*self._surplus.values(), *self._retry_due.values()]
        spawn_due = self.pool.spawn_deadline()
        if spawn_due is not None:
            due.append(spawn_due)
        if not due:
            return None
        return max(0.0, min(due) - time.monotonic())

    def _stop_surplus(self) -> None:
        now = time.monotonic()
        for wid, due in list(self._surplus.items()):
            if due <= now:
                del self._surplus[wid]
                self._execute(self.sched.stop_if_surplus(wid))

    def _end_sleep(self) -> None:
        for h in self.workers.values():
            if h.to_driver is not None:
                h.to_driver.end_sleep()

    def _drain(self) -> bool:
        """Handle every message workers have queued; True if there were any."""
        got = self._read_rings()
        self._apply_driver_refs()
        if self.refs.candidates:
            self._collect()
        if self.validate:
            self.check()
        return got

    def _read_rings(self) -> bool:
        """One pass over every worker's ring, handling each message in
        order. Not re-entrant: handlers never read rings themselves."""
        got = False
        self._reading = True
        try:
            for h in list(self.workers.values()):
                ring = h.to_driver
                if ring is None or h.malformed:
                    continue
                try:
                    msgs = ring.recv_many(h.room_fd)
                except exc.MalformedMessageError as e:
                    self._reject(h, e)
                    continue
                if msgs:
                    got = True
                    for data in msgs:
                        if h.malformed:
                            break
                        self._handle(h, data)
                if h.outbox:
                    h.flush()
        finally:
            self._reading = False
        self._after_reading()
        return got

    def _after_reading(self) -> None:
        """What handlers left for after a pass over the rings."""
        if self._orphans:
            orphans, self._orphans = self._orphans, []
            for actor_id, spec, held, deps, caller, parent in orphans:
                self._call_actor(actor_id, spec, held, deps, caller, parent)
        if self._late_cancels:
            late, self._late_cancels = self._late_cancels, []
            for msg in late:
                self._cancel_for_worker(msg)

    def _read_few_busy(self) -> None:
        """Before placing a task, read what the busy workers said, when they
        are few: a caller that saw a result sealed submits its next task
        before the I/O thread has read that worker's DONE, and without this
        the task goes to another idle worker, asleep, instead of the one
        that just finished and still spins (with two workers, sync round
        trips alternated between them at about twice the cost)."""
        if self._reading:
            return
        by_state = self.sched.workers.by_state
        busy = by_state.get("busy")
        if not busy or len(busy) > FEW_BUSY or not by_state.get("idle"):
            return  # (the choice of worker matters only while one is idle)
        handles = [self.workers.get(wid) for wid in busy]
        self._reading = True
        try:
            for h in handles:
                if h is None or h.to_driver is None or h.malformed:
                    continue
                try:
                    msgs = h.to_driver.recv_many(h.room_fd)
                except exc.MalformedMessageError as e:
                    self._reject(h, e)
                    continue
                for data in msgs:
                    if h.malformed:
                        break
                    self._handle(h, data)
        finally:
            self._reading = False
        self._after_reading()

    # -- submission ----------------------------------------------------------------

    def submit(self, spec: P.TaskSpec, shape: tuple, deps: list, held: list) -> int:
        """Schedule a task (from any thread). Returns its sequence number."""
        with self.lock:
            if self.closed:
                raise exc.RuntimeClosedError("the runtime was shut down")
            if self.broken is not None:
                raise self.broken
            self._apply_driver_refs()
            self._read_few_busy()
            return self._submit(spec, shape, deps, held)

    def _submit(self, spec: P.TaskSpec, shape: tuple, deps: list, held: list, parent: bytes | None = None) -> int:
        seq = next(self._seq)
        task = Task(seq, spec.task_id, spec.function_id, shape, spec.max_retries, spec, spec.name)
        if self.events is not None:
            task.submitted = _clock()
        self.by_task_id[spec.task_id] = seq
        if held:
            self.refs.hold_for_task(seq, held)
            self.shared.update(held)
        unsealed = []
        if deps:
            mask = self.store.raw.sealed_mask(deps)
            unsealed = [d for d, ok in zip(deps, mask) if not ok]
        self._execute(self.sched.submit(task, unsealed, parent))
        return seq

    def cancel(self, task_id: bytes, force: bool, recursive: bool = True) -> None:
        with self.lock:
            seq = self.by_task_id.get(task_id)
            if seq is None:
                return
            actor = self.calls.get(seq)
            if actor is None:
                self._execute(self.sched.cancel(seq, force, recursive))
                return
            if force:
                raise ValueError("force=True is not supported for actor tasks (as in Ray)")
            self._cancel_call(seq, actor, task_id, recursive)

    def _cancel_call(self, seq: int, actor, task_id: bytes, recursive: bool) -> None:
        """Cancel actor call seq: dropped if not sent yet, else its process
        is told (an asyncio call is cancelled; another sees is_canceled())."""
        with self.lock:
            if recursive:  # what the call submitted goes with it
                self._execute(self.sched.cancel_children(task_id))
            call = self.actors.cancel_queued(actor, seq)
            if call is not None:
                self._execute([A.FailCalls(actor, [call], exc.TaskCancelledError(
                    f"actor task {call.spec.name} ({call.spec.task_id.hex()}) was cancelled before it ran"))])
                self._execute(self.actors.release_held(actor))
            elif actor.wid in self.workers:  # sent: dropped there if it has not started
                self.workers[actor.wid].send(P.encode((P.CANCEL, seq, False)))

    def _cancel_for_worker(self, msg: tuple) -> None:
        _, task_id, force, recursive, reply = msg
        try:
            self.cancel(task_id, force, recursive)
            answer: object = None
        except ValueError as e:  # force=True on an actor call: the caller gets it, as in Ray
            answer = e
        self.store.put(answer, reply)

    # -- placement groups ------------------------------------------------------

    def create_group(self, gid: str, bundles: list[dict], strategy: str, name: str, lifetime: str | None) -> None:
        """Reserve a placement group's bundles (see Scheduler.create_group)."""
        with self.lock:
            if name and any(i["name"] == name and i["state"] != "REMOVED" for i in self.group_info.values()):
                raise ValueError(f"a placement group named {name!r} exists already")
            self.group_info[gid] = {"name": name, "bundles": [dict(b) for b in bundles], "strategy": strategy,
                                    "lifetime": lifetime, "created_at": time.monotonic(), "placed_after": None}
            self._execute(self.sched.create_group(gid, [make_shape(b) for b in bundles], strategy, name))
            self._note_groups()

    def remove_group(self, gid: str) -> None:
        with self.lock:
            self._execute(self.sched.remove_group(gid))
            self._note_groups()

    def group_table(self) -> dict[str, dict]:
        """Every placement group of this runtime, with its state now."""
        with self.lock:
            self._note_groups()
            return {gid: {**info, "state": self.sched.group_state(gid)} for gid, info in self.group_info.items()}

    def _note_groups(self) -> None:
        """Note when each group got placed (for placement_group_table's stats)."""
        for gid, info in self.group_info.items():
            if info["placed_after"] is None and self.sched.group_state(gid) == "CREATED":
                info["placed_after"] = time.monotonic() - info["created_at"]

    def cancel_if_queued(self, task_id: bytes) -> bool:
        """Cancel a task (not an actor call) only if no worker has it yet;
        True if it was cancelled (its results are sealed as such)."""
        with self.lock:
            seq = self.by_task_id.get(task_id)
            if seq is None or seq in self.calls:
                return False
            actions = self.sched.cancel_if_queued(seq)
            if actions is None:
                return False
            self._execute(actions)
            return True

    def sync(self) -> None:
        """Handle every message workers have sent so far and the driver's
        own reference changes, so that a snapshot taken next is current."""
        with self.lock:
            if not self.closed:
                self._drain()

    def flush_refs(self) -> None:
        """Apply the driver's reference changes now (frees what it dropped)."""
        with self.lock:
            if not self.closed:
                self._apply_driver_refs()
                if self.refs.candidates:
                    self._collect()

    def resources(self) -> tuple[dict, dict]:
        """(total, available) resources as cluster_resources() and
        available_resources() report them; memory amounts are totals."""
        with self.lock:
            total = self.sched.total_resources()
            available = self.sched.available_resources()
        total["object_store_memory"] = float(self.store.statistics().capacity_bytes)
        for key in ("memory", "object_store_memory"):
            available[key] = total[key]
        return total, available

    # -- messages from workers ---------------------------------------------------------

    def _reject(self, h: WorkerHandle, e: exc.MalformedMessageError) -> None:
        """A worker sent what cannot be read: nothing more is read from it,
        and it is stopped (its task fails, or is retried, as for a crash)."""
        if h.malformed:
            return
        h.malformed = str(e)
        h.exit_reason = f"it sent the driver a malformed message, and was stopped ({e})"
        sys.stderr.write(f"shoal: worker {h.wid} (pid {h.pid}) sent a malformed message: {e}. "
                         f"It is stopped; the runtime goes on.\n")
        if h.pid is None:
            h.kill_when_spawned = True
        else:
            h.signal(signal.SIGKILL)

    def _handle(self, h: WorkerHandle, data: bytes) -> None:
        """Handle one message; a malformed one stops its worker (_reject); a
        failure in a handler is reported and contained to that message, so
        the runtime goes on."""
        try:
            msg = P.decode_from_worker(data)
        except exc.MalformedMessageError as e:
            self._reject(h, e)
            return
        try:
            self._on_message(h, msg)
        except Exception:
            import traceback

            sys.stderr.write(f"shoal: error handling a message from worker {h.wid} (a bug in shoal):\n")
            traceback.print_exc()

    def _on_message(self, h: WorkerHandle, msg: tuple) -> None:
        kind = msg[0]
        wid = h.wid
        if kind == P.DONE:
            self._on_done(h, msg)
        elif kind == P.REFS:
            refs, shared = self.refs, self.shared
            for oid in msg[1]:
                refs.add_holder(wid, oid)
                shared.add(oid)
            for oid in msg[2]:
                refs.remove_holder(wid, oid)
        elif kind == P.SUBMIT:
            self._submit(msg[1], msg[2], msg[3], msg[4], msg[5])
        elif kind == P.PUT:
            self.refs.add_contained(msg[1], msg[2])
            self.shared.update(msg[2])
            self.shared.add(msg[1])
        elif kind == P.READY:
            h.ready = True
            self._start_failures = 0
            actor = self.actors.by_wid.get(wid)
            if actor is not None:
                self._execute(self.actors.process_ready(actor))
            else:
                self._execute(self.sched.worker_started(wid))
        elif kind == P.CONSTRUCTED:
            actor = self.actors.by_wid.get(wid)
            if actor is not None:
                error = msg[1]
                self._execute(self.actors.constructed(actor, error))
        elif kind == P.CREATE_ACTOR:
            _, actor, deps, held, reply = msg
            try:
                self._create_actor(actor, deps, held)
                answer: object = None
            except exc.ActorAlreadyExistsError as e:
                answer = e
            if reply is not None:
                self.store.put(answer, reply)
        elif kind == P.CALL_ACTOR:
            self._call_actor(msg[1], msg[2], msg[4], msg[3], wid, msg[5] if len(msg) > 5 else None)
        elif kind == P.GET_ACTOR:
            _, name, namespace, reply = msg
            actor = self.actors.named(name, namespace)
            self.store.put((actor.actor_id, actor.info) if actor is not None else None, reply)
        elif kind == P.RESOURCES:
            self.store.put(self.resources(), msg[1])
        elif kind == P.CANCEL_TASK:
            if msg[1] not in self.by_task_id and self._reading:
                # Its task may be submitted in a ring not read yet in this pass.
                self._late_cancels.append(msg)
            else:
                self._cancel_for_worker(msg)
        elif kind == P.KILL_ACTOR:
            actor = self.actors.actors.get(msg[1])
            if actor is not None:
                self._execute(self.actors.kill(actor, msg[2]))
        elif kind == P.BLOCKED:
            if wid in self.sched.workers:
                self._execute(self.sched.worker_blocked(wid, msg[1]))
        elif kind == P.UNBLOCKED:
            if wid in self.sched.workers:
                self._execute(self.sched.worker_unblocked(wid))
        elif kind == P.EXITING:
            h.exit_reason = str(msg[1])
        else:
            raise exc.RaySystemError(f"unknown message {kind} from worker {wid}")

    def _on_done(self, h: WorkerHandle, msg: tuple) -> None:
        _, seq, status, duration, contained, info = msg
        actor = self.actors.by_wid.get(h.wid)
        # Checked before anything changes: a DONE naming a task this
        # process is not running (stale, or forged by code in the worker)
        # must not remove another task or touch references.
        running = seq in actor.inflight if actor is not None else self.sched.is_running(h.wid, seq)
        if not running:
            sys.stderr.write(
                f"shoal: ignored a message from worker {h.wid} (pid {h.pid}) saying that task {seq} "
                f"finished: it is not running that task (a stale or forged message); nothing changed\n")
            return
        for rid, inner in contained.items():
            if rid in self.drop_when_sealed:
                continue  # deleted as soon as this task ends: it keeps nothing alive
            self.refs.add_contained(rid, inner)
            self.shared.update(inner)
        if actor is not None:
            if status == P.EXITED:
                self.actors.exiting(actor)
            call = self.actors.call_done(actor, seq)
            if call is not None:
                if self.events is not None:
                    self._record(h, call.spec, actor.actor_id, call.submitted, call.attempts, status, duration, info)
                self._call_ended(actor, call)
            return
        task = self.sched.tasks.get(seq)
        if self.events is not None and task is not None:
            self._record(h, task.payload, None, task.submitted, task.attempts, status, duration, info)
        retry = status == P.RETRY
        self._execute(self.sched.task_finished(h.wid, seq, duration, retry))  # decided first: sent first
        if not retry and task is not None:
            self._task_ended(task)

    def _record(self, h: WorkerHandle, spec, actor_id, submitted: float, attempt: int, status: int,
                duration: float, info: tuple) -> None:
        """Keep an ended task's event (see events.py)."""
        started, arg_bytes, result_bytes, error = info
        ev = self.events
        ev.ended.append((spec.task_id, spec.name, actor_id, h.wid, h.pid, submitted, started, duration, status,
                         attempt, arg_bytes, result_bytes))
        ev.totals[status] += 1
        h.last_end = started + duration
        if error is not None:
            ev.failed(spec.task_id, spec.name, h.pid, started + duration, error)

    def _task_ended(self, task: Task) -> None:
        """A task's results (or errors) are sealed: release what it held and
        wake what waited for them."""
        self._ended(task.seq, task.payload)

    def _ended(self, seq: int, spec) -> None:
        """Task or actor call `seq` sealed its results (values or errors)."""
        self.refs.release_task(seq)
        self.by_task_id.pop(spec.task_id, None)
        gone = self._gone_results
        for rid in P.return_ids(spec):
            if gone:
                gone.discard(rid)
            self._execute(self.sched.object_sealed(rid))
            self._execute(self.actors.object_sealed(rid))
            if rid in self.drop_when_sealed:
                self.drop_when_sealed.discard(rid)
                self._delete(rid)

    def _on_pool_message(self) -> None:
        msg, fds = self.pool.receive()
        if msg is None:
            if not self.closed:
                self._fork_server_died()
            return
        kind = msg[0]
        if kind == "spawned":
            _, wid, pid = msg
            self.pool.spawned(wid)
            h = self.workers.get(wid)
            if h is not None:
                h.spawned(pid)
                if h.kill_when_spawned:
                    h.signal(signal.SIGKILL)
            for fd, err in zip(fds, (False, True)):
                self.output.add(fd, wid, pid, err)
                self.sel.register(fd, selectors.EVENT_READ, "output")
        elif kind == "exited":
            self._on_worker_exit(msg[1], msg[3])
        elif kind == "ready":
            self.pool.server_pid = msg[1]
            self._server_failures = 0
            if self.pool.servers > 1:
                self._reap_strays()  # what the dead one forked and never reported

    def _on_worker_exit(self, wid: int, code: int | None) -> None:
        h = self.workers.get(wid)
        if h is None:
            return
        if wid in self.adopted:  # (its fork server reported the exit before dying)
            self.adopted.discard(wid)
            self.sel.unregister(h.pidfd)
        if h.to_driver is not None and not h.malformed:  # what it said before dying counts
            self._reading = True
            try:
                for data in h.to_driver.recv_many():
                    if h.malformed:
                        break
                    self._handle(h, data)
            except exc.MalformedMessageError as e:
                self._reject(h, e)
            finally:
                self._reading = False
        for fd in self.output.read_worker(wid):
            self.sel.unregister(fd)
        self._surplus.pop(wid, None)
        actor = self.actors.by_wid.get(wid)
        if actor is not None:
            self._execute(self.actors.process_died(actor, self._how_it_died(h, code),
                                                   self.output.fault_report(wid) or ""))
        else:
            self._pool_worker_died(wid, h, code)
        self.refs.holder_gone(wid)
        del self.workers[wid]
        self.output.forget(wid)
        h.close()
        self.process_exited.notify_all()
        self._reap_strays()  # what its tasks started and left behind, if they ended
        try:
            self.store.raw.reap_dead_clients()  # its pins and unsealed objects
        except exc.StoreClosedError:
            pass

    def _how_it_died(self, h: WorkerHandle, code: int | None) -> str:
        """Words for a worker's death: its exit status, and why it exited
        when it said so (sys.exit() in a task)."""
        how = describe_exit(code)
        if h.exit_reason:
            how += f": {h.exit_reason}"
        return how + self.explain_kill(h, code)

    def _pool_worker_died(self, wid: int, h: WorkerHandle, code: int | None) -> None:
        w = self.sched.workers.get(wid)
        started = bool(w and w.queue and w.queue[0].seq == h.to_worker.user_word)
        if not h.ready:
            self._start_failures += 1
        self._dying = (self._how_it_died(h, code), self.output.fault_report(wid))
        try:
            if self._start_failures >= MAX_START_FAILURES:
                self.sched.target_workers = 0
                tail = self.output.tail(wid)
                self.broken = exc.RaySystemError(
                    f"{self._start_failures} workers in a row died while starting; the last one: "
                    f"{describe_exit(code)}. Last lines of its stderr:\n{tail}")
                self._fail_everything(self.broken)
                self.sched.workers.pop(wid, None)
            else:
                oom, delay = self.oom_verdict(h, started)
                if oom == "fail":
                    self._oom_error = self.oom_error(h, w.queue[0].payload)
                self._execute(self.sched.worker_died(wid, started, oom, delay))
        finally:
            self._dying = None
            self._oom_error = None

    # -- actions -------------------------------------------------------------------------

    def _execute(self, actions: list) -> None:
        """Carry out actions in the order the state machines decided them.

        Carrying one out may feed the state machines again (a FailTask seals
        results, which makes dependents ready): the actions that follows go
        to the end of the queue, after the rest of this list, which was
        decided first. Otherwise a worker could be sent its tasks in
        another order than its queue in the scheduler."""
        queue = self._actions
        queue.extend(actions)
        if self._executing:
            return  # the outer call carries them out, in order
        self._executing = True
        try:
            while queue:
                self._execute_one(queue.popleft())
        finally:
            self._executing = False

    def _execute_one(self, a) -> None:
        t = type(a)
        if t is Dispatch:
            task = a.task
            spec = task.payload if not task.attempts else task.payload._replace(attempt=task.attempts)
            w = self.sched.workers[a.worker]
            if w.gpus:
                spec = spec._replace(gpu_ids=self._gpu_names(w.gpu_ids()))
            self.workers[a.worker].send(P.encode((P.TASK, task.seq, spec)))
        elif t is StartWorker:
            h = self.workers[a.worker] = self.pool.start(a.worker)
            h.to_driver.prepare_sleep()  # its first message rings the doorbell
            self._watch_spawn()
        elif t is StopWorker:
            h = self.workers.get(a.worker)
            if h is not None:
                h.send(P.encode((P.EXIT,)))
        elif t is Surplus:
            self._surplus[a.worker] = time.monotonic() + IDLE_STOP_S  # (idle again: the clock restarts)
            if threading.current_thread() is not self._thread:
                self.wake()  # the I/O thread may be asleep with no deadline
        elif t is FailTask:
            self._fail(a.task, a.kind, a.detail)
        elif t is CancelRunning:
            self._cancel_running(a)
        elif t is Revoke:
            h = self.workers.get(a.worker)
            if h is not None:
                h.send(P.encode((P.REVOKE, a.seqs)))
        elif t is CancelActorCall:
            seq = self.by_task_id.get(a.task_id)
            actor = self.calls.get(seq) if seq is not None else None
            if actor is not None:
                self._cancel_call(seq, actor, a.task_id, True)
        elif t is CancelQueued:
            h = self.workers.get(a.worker)
            if h is not None:
                h.send(P.encode((P.CANCEL, a.seq, False)))
        elif t is RetryLater:
            self.retry_later(a)
        elif t is Warn:
            words.warn(a.text, RuntimeWarning)
        elif t is KillActor:
            actor = self._find_actor(a.actor_id)
            if actor is not None:
                self._execute(self.actors.kill(actor, True))
        elif t is PlaceActor:
            actor = self.actors.actors.get(a.actor_id)
            if actor is None or actor.state != "placing":
                self._execute(self.sched.actor_gone(a.actor_id))
                return
            wid = self.sched.new_process_id()
            h = self.workers[wid] = self.pool.start(wid, actor=True, gpu_ids=self._gpu_names(a.gpu_ids))
            h.to_driver.prepare_sleep()
            self._watch_spawn()
            self.actors.placed(actor, wid)
        else:
            self._execute_actor(a)

    def _gpu_names(self, devices: tuple) -> tuple:
        names = self.gpu_names
        if not names:
            return devices
        return tuple(int(n) if n.isdigit() else n for n in (names[i] if i < len(names) else str(i)
                                                             for i in devices))

    def _fail(self, task: Task, kind: str, detail: str) -> None:
        spec = task.payload
        if kind == "cancelled":
            err: BaseException = exc.TaskCancelledError(f"task {spec.name} ({spec.task_id.hex()}) was cancelled "
                                                         f"({detail})")
        elif kind == "pg_removed":
            err = exc.TaskPlacementGroupRemoved(f"task {spec.name} cannot run: {detail}")
        elif kind == "unschedulable":
            err = exc.TaskUnschedulableError(f"The task is not schedulable: {detail}.")
        elif kind == "oom" and self._oom_error is not None:
            err = self._oom_error
        else:
            how, report = self._dying or ("it exited", None)
            err = exc.WorkerCrashedError(
                f"the worker process running task {spec.name} died: {how}. The task was tried "
                f"{detail} (max_retries={spec.max_retries}). "
                + (report or "Check the worker's output above."))
        self.put_error(spec, err)
        self._task_ended(task)

    def put_error(self, spec, err: BaseException) -> None:
        """Seal err as the results of a failed task or call, except those
        it sealed and that were freed since (see _gone_results)."""
        rids = P.return_ids(spec)
        if self._gone_results:
            rids = [r for r in rids if r not in self._gone_results]
        self.store.put_error(rids, err)

    def _cancel_running(self, a: CancelRunning) -> None:
        h = self.workers.get(a.worker)
        if h is None or h.pid is None:
            return
        if a.force:
            h.signal(signal.SIGKILL)
        else:
            h.to_driver.user_word = a.seq  # the worker checks it is still that task
            h.signal(signal.SIGINT)

    def _fail_everything(self, error: BaseException) -> None:
        """Seal `error` for every unfinished task and actor call (waiters wake)."""
        for task in list(self.sched.tasks.values()):
            self.store.put_error(P.return_ids(task.payload), error)
        self.sched.tasks.clear()
        for actor in self.actors.actors.values():
            for call in list(actor.inflight.values()) + list(actor.queue):
                self.store.put_error(P.return_ids(call.spec), error)
            actor.inflight.clear()
            actor.queue.clear()
        for q in self.sched.ready.values():
            q.clear()

    # -- references -------------------------------------------------------------------------

    def _apply_driver_refs(self) -> None:
        if self.local_refs.pending():
            firsts, lasts = self.local_refs.drain()
            refs = self.refs
            for oid in firsts:
                refs.add_holder(DRIVER, oid)
            for oid in lasts:
                refs.remove_holder(DRIVER, oid)

    def _collect(self) -> None:
        """Delete what nothing refers to any more. For an object another
        process might know of, first read every message already sent: any
        reference taken before our last release is among them."""
        while True:
            candidates = self.refs.take_candidates()
            if not candidates:
                return
            if not candidates.isdisjoint(self.shared):
                self._read_rings()
                self._apply_driver_refs()
            for oid in candidates:
                if self.refs.collect(oid):
                    self.shared.discard(oid)
                    self._delete(oid)

    def _delete(self, oid: bytes) -> None:
        if ids.is_actor_handle_id(oid):  # the last handle to an actor is gone
            actor = self.actors.actors.get(oid[: ids.TASK_ID_SIZE])
            if actor is not None:
                self._execute(self.actors.handles_gone(actor))
            return
        try:
            self.store.delete(oid)
            task = ids.task_of(oid)
            if task is not None and task in self.by_task_id:  # sealed before its DONE was read
                self._gone_results.add(oid)
        except (exc.ObjectNotFoundError, exc.ObjectStateError):
            task = ids.task_of(oid)
            if task is not None and task in self.by_task_id:
                self.drop_when_sealed.add(oid)  # its task has not sealed it yet
        except exc.StoreClosedError:
            pass

    # -- queries and checks -------------------------------------------------------------------

    def check(self) -> None:
        self.sched.check()
        self.refs.check()
        self.store.raw.validate()

    def why_pending(self, object_id: bytes) -> str | None:
        """Why the task or actor call that returns object_id cannot run, if
        it never can here (it needs resources this machine lacks); else None."""
        task_id = ids.task_of(object_id)
        with self.lock:
            seq = self.by_task_id.get(task_id) if task_id is not None else None
            if seq is None:
                return None
            task = self.sched.tasks.get(seq)
            if task is not None:
                why = self.sched.why_infeasible(task.shape)
                return None if why is None else f"its task {task.name} {why}: it is infeasible and never runs"
            actor = self.calls.get(seq)
            if actor is not None and actor.state == "placing":
                why = self.sched.why_infeasible(actor.placing)
                if why is not None:
                    return (f"its actor {actor.describe()} {why}: it is infeasible, never starts, and "
                            f"so never runs this call")
            return None

    def worker_pids(self) -> list[int]:
        with self.lock:
            return [h.pid for h in self.workers.values() if h.pid is not None]
