"""The scheduler's decisions, as a pure state machine: events in, actions out.

No processes, sockets, clocks or threads here; the shell (shell.py) feeds
events and carries out the actions, and the tests drive it directly.

    submit(task) ------> waiting (a dependency unsealed) --> ready --> assigned --> done
                                                    object_sealed     |  dispatch    task_finished
                                                                      +--> (retry) ready

Resources are logical, in 1/10000 units: a task's shape (its CPU, GPU and
custom resource needs) is acquired when it is assigned to an idle worker and
released when that worker runs out of work of the same shape. A busy worker
may be handed more tasks of its shape ahead of time (prefetch) when the
function is known to be short: this hides the round trip per task without
letting a long task hold others back. A worker whose task blocks in get()
gives back its CPU and its unstarted tasks, so nested tasks cannot
deadlock; the pool grows to run them.

Placement groups (reserved bundles of resources) are part of this state
machine too: see groups.py, a mixin of Scheduler.

GPUs are also counted per device: a lease (or an actor) that needs GPU gets
device indices (whole devices, or a share of one for a fraction), which the
shell hands to the process as CUDA_VISIBLE_DEVICES, as Ray does.
"""

from __future__ import annotations

import collections
import heapq
from typing import Any, NamedTuple

from shoal import words
from shoal.scheduler.devices import UNIT, GpuDevices  # UNIT: resource amounts are kept in 1/UNIT

#: Resources counted in bytes (shown as sizes in messages).
MEMORY_RESOURCES = ("memory", "object_store_memory")


# Prefetch: queue up to this much expected work (seconds) on a busy worker,
# only for functions whose average run is below PREFETCH_MAX_TASK.
PREFETCH_BUDGET = 0.002
PREFETCH_MAX_TASK = 0.0005
PREFETCH_MAX = 256

Shape = tuple  # ((resource name, amount in units), ...), sorted by name


def make_shape(resources: dict[str, float]) -> Shape:
    """A shape from {name: amount}; zero amounts are dropped."""
    return tuple(sorted((k, round(v * UNIT)) for k, v in resources.items() if v))


def shape_amounts(shape: Shape) -> dict[str, float]:
    """{name: amount} of a shape (make_shape's inverse)."""
    return {k: v / UNIT for k, v in shape}


# ---------------------------------------------------------------------------
# Actions
# ---------------------------------------------------------------------------


class Dispatch(NamedTuple):
    """Send task to worker."""

    worker: int
    task: "Task"


class StartWorker(NamedTuple):
    """Start a worker process, known from now on as `worker`."""

    worker: int


class FailTask(NamedTuple):
    """Seal an error for each return of task: kind is 'crashed' (its worker
    died max_retries + 1 times) or 'cancelled'."""

    task: "Task"
    kind: str
    detail: str


class StopWorker(NamedTuple):
    """Tell idle worker `worker` to exit (the pool is above its size)."""

    worker: int


class Surplus(NamedTuple):
    """Idle worker `worker` is beyond the pool's size: if it is still idle
    after a while, ask stop_if_surplus() (the shell keeps the time)."""

    worker: int


class CancelRunning(NamedTuple):
    """Interrupt task seq, which runs on worker (force: kill the worker)."""

    worker: int
    seq: int
    force: bool


class Revoke(NamedTuple):
    """Tell worker to drop tasks seqs, sent to it but not read (they are
    queued for other workers again)."""

    worker: int
    seqs: list


class CancelQueued(NamedTuple):
    """Tell worker to drop task seq, queued there and not started."""

    worker: int
    seq: int


class CancelActorCall(NamedTuple):
    """Cancel the actor call `task_id` (a child of a cancelled task or
    call; the actors' side carries it out, recursively)."""

    task_id: bytes


class RetryLater(NamedTuple):
    """The memory monitor killed the task's worker: run it again after
    `delay` seconds (call Scheduler.retry_now(seq) then)."""

    seq: int
    delay: float


class Warn(NamedTuple):
    text: str


class KillActor(NamedTuple):
    """Kill the actor for good (its placement group was removed)."""

    actor_id: bytes
    detail: str


class PlaceActor(NamedTuple):
    """The actor's resources are held: start its process (with these GPU
    device indices)."""

    actor_id: bytes
    gpu_ids: tuple = ()


# ---------------------------------------------------------------------------
# Records
# ---------------------------------------------------------------------------


class Task:
    """A task as the scheduler sees it; `payload` is opaque (the shell's)."""

    __slots__ = (
        "seq", "task_id", "function_id", "shape", "max_retries", "payload", "name",
        "state", "missing", "worker", "attempts", "cancelled", "submitted", "owner", "oom_kills",
    )

    def __init__(self, seq: int, task_id: bytes, function_id: bytes, shape: Shape,
                 max_retries: int = 3, payload: Any = None, name: str = ""):
        self.seq = seq
        self.task_id = task_id
        self.function_id = function_id
        self.shape = shape
        self.max_retries = max_retries
        self.payload = payload
        self.name = name
        self.state = "new"  # waiting | ready | assigned | done
        self.missing: set[bytes] = set()
        self.worker: int | None = None
        self.attempts = 0
        self.cancelled = False
        self.submitted = 0.0  # when it was submitted (the shell's clock; for task events)
        self.owner: bytes | None = None  # the task (or call) that submitted it; None: the driver
        self.oom_kills = 0  # times the memory monitor killed it (each retry waits longer)

    def __repr__(self) -> str:
        return f"Task({self.name}#{self.seq} {self.state})"


class Worker:
    __slots__ = ("wid", "_state", "_table", "shape", "queue", "gpus", "cpu_lent")

    def __init__(self, wid: int):
        self.wid = wid
        self._table: WorkerTable | None = None  # the table it is in, which indexes it by state
        self._state = "starting"  # idle | busy | blocked | stopping | dead
        self.shape: Shape | None = None  # the lease it holds while busy (or blocked)
        self.queue: collections.deque[Task] = collections.deque()  # head: running
        self.gpus: list[tuple[int, int]] = []  # (device, units) of its lease
        self.cpu_lent = 0  # CPU units of its lease given back while blocked

    @property
    def state(self) -> str:
        return self._state

    @state.setter
    def state(self, new: str) -> None:
        table = self._table
        if table is not None and new != self._state:
            del table.by_state[self._state][self.wid]
            table.by_state[new][self.wid] = self
            if new == "idle":
                heapq.heappush(table._idle_heap, self.wid)
        self._state = new

    def gpu_ids(self) -> tuple:
        return tuple(i for i, _ in self.gpus)


class WorkerTable(dict):
    """The workers by id (a dict), also indexed by state, so that the pool's
    counts and the search for an idle worker cost the same at 2 workers and
    at 1,000 (bench/bench_scheduler.py)."""

    def __init__(self) -> None:
        super().__init__()
        self.by_state: collections.defaultdict[str, dict[int, Worker]] = collections.defaultdict(dict)
        self._idle_heap: list[int] = []  # ids of workers that went idle (see lowest_idle)

    def __setitem__(self, wid: int, w: Worker) -> None:
        if wid in self:
            del self[wid]
        super().__setitem__(wid, w)
        w._table = self
        self.by_state[w._state][wid] = w
        if w._state == "idle":
            heapq.heappush(self._idle_heap, wid)

    def __delitem__(self, wid: int) -> None:
        w = self[wid]
        super().__delitem__(wid)
        del self.by_state[w._state][wid]
        w._table = None

    def pop(self, wid: int, *default: Any) -> Any:
        if wid not in self:
            if default:
                return default[0]
            raise KeyError(wid)
        w = self[wid]
        del self[wid]
        return w

    def count(self, state: str) -> int:
        """How many workers are in `state`."""
        bucket = self.by_state.get(state)
        return len(bucket) if bucket else 0

    def lowest_idle(self) -> Worker | None:
        """The idle worker with the lowest id (None: none is idle), as a scan
        of the table in id order would find it, in O(log n): a heap of the
        ids that went idle, whose stale entries (no longer idle, or gone)
        are dropped as they come up."""
        idle = self.by_state.get("idle")
        if not idle:
            return None
        heap = self._idle_heap
        if len(heap) > 2 * len(self) + 64:  # too many stale entries: rebuild
            heap[:] = sorted(idle)
        while heap:
            w = idle.get(heap[0])
            if w is not None:
                return w
            heapq.heappop(heap)
        heap[:] = sorted(idle)  # (cannot happen: every idle worker pushed its id)
        return idle[heap[0]]


class _Stats:
    __slots__ = ("avg", "n")

    def __init__(self) -> None:
        self.avg = 0.0
        self.n = 0


# ---------------------------------------------------------------------------
# The state machine
# ---------------------------------------------------------------------------


# The placement groups' part of the state machine (group_shape: what a task
# in a group asks for; re-exported for the API layer).
from shoal.scheduler.groups import Group, PlacementGroups, group_shape  # noqa: E402, F401


class Scheduler(PlacementGroups):
    """Decides which task runs where and when.

    Args:
        resources: total logical resources, e.g. {"CPU": 2, "GPU": 0}.
        target_workers: workers kept running (normally the CPU count).
        max_workers: the pool never grows beyond this (blocked tasks make
            it grow above target_workers).
    """

    def __init__(self, resources: dict[str, float], target_workers: int, max_workers: int = 1024):
        self.total = dict(make_shape(resources))
        self.available = dict(self.total)
        # Free units per GPU device (a last partial device if the total is fractional).
        self.gpus = GpuDevices(self.total.get("GPU", 0))
        self.actor_gpus: dict[bytes, list[tuple[int, int]]] = {}
        self.target_workers = target_workers
        self.max_workers = max_workers
        self.tasks: dict[int, Task] = {}
        self.workers = WorkerTable()
        self.ready: dict[Shape, collections.deque[Task]] = {}
        self.waiting_on: dict[bytes, list[Task]] = {}
        self.sealed: set[bytes] = set()  # recently sealed ids a waiter may still ask about
        self.stats: dict[bytes, _Stats] = {}
        self._next_wid = 1  # 0 is the driver's holder id in the reference table
        self._warned: set[Shape] = set()
        # Actors: (actor id, shape that must be free to place it, shape it holds).
        self.actor_queue: collections.deque = collections.deque()
        self.actor_holds: dict[bytes, Shape] = {}  # what each placed actor holds
        # Recursive cancel: the tasks each running task (or actor call)
        # submitted, by its task id, and the parents already cancelled
        # (what they submit from now on is cancelled at once).
        self.children: dict[bytes, list[int]] = {}
        self.call_children: dict[bytes, list[bytes]] = {}  # parent -> task ids of its actor calls
        self.cancelled_parents: set[bytes] = set()
        # Placement groups, by id; those waiting to be placed, in order.
        self.groups: dict[str, Group] = {}
        self.group_queue: collections.deque[str] = collections.deque()
        # Why a task killed on purpose failed (seq -> (kind, detail)).
        self._fail_reasons: dict[int, tuple[str, str]] = {}
        self._group_gpus: dict[str, list] = {}  # GPU device units each placed group holds

    # -- queries -----------------------------------------------------------

    def available_resources(self) -> dict[str, float]:
        """Free resources, without placement groups' own names (as Ray
        shows them: a placed group's resources are simply not free)."""
        return {k: v / UNIT for k, v in self.available.items() if v > 0 and self._group_of(k) is None}

    def total_resources(self) -> dict[str, float]:
        return {k: v / UNIT for k, v in self.total.items()}

    def idle_workers(self) -> list[int]:
        return list(self.workers.by_state.get("idle", ()))

    def running_on(self, wid: int) -> list[Task]:
        return list(self.workers[wid].queue)

    def why_infeasible(self, shape: Shape) -> str | None:
        """Why `shape` can never be had here, in words ("needs 1 GPU but
        this machine has 2 CPU in total"); None if it can."""
        if self._fits_ever(shape):
            return None
        if all(self.total.get(k, 0) >= v or self._pending_group_resource(k) for k, v in shape):
            return None  # a group not placed yet will have the rest: it is its placement that may never come
        have = tuple((k, self.total.get(k, 0)) for k, _ in self._plain(dict(shape)))  # what it asks for, zeros too
        return f"needs {self._describe(shape)} but this machine has {self._describe(have)} in total"

    # -- events --------------------------------------------------------------

    def submit(self, task: Task, unsealed: list[bytes] = (), parent: bytes | None = None) -> list:
        """A new task whose dependencies `unsealed` are not sealed yet,
        submitted by the running task (or actor call) `parent`, if any."""
        if parent is not None:
            if parent in self.cancelled_parents:
                self.tasks[task.seq] = task
                task.state = "ready"  # never queued: cancelled as it comes
                return self.cancel(task.seq)
            self.children.setdefault(parent, []).append(task.seq)
        task.owner = parent
        self.tasks[task.seq] = task
        actions: list = []
        doomed = self._doomed(task.shape, f"task {task.name}")
        if doomed is not None:
            task.state = "ready"
            self._forget(task)
            return [FailTask(task, *doomed)]
        why = self.why_infeasible(task.shape)
        if why is not None and task.shape not in self._warned:
            self._warned.add(task.shape)
            actions.append(Warn(
                f"task {task.name} {why}: it will wait until such resources exist (it never will "
                f"in this session)."))
        for oid in unsealed:
            task.missing.add(oid)
            self.waiting_on.setdefault(oid, []).append(task)
        if task.missing:
            task.state = "waiting"
            return actions
        self._make_ready(task, actions)
        return actions

    def object_sealed(self, object_id: bytes) -> list:
        """An object some task may wait for is now sealed."""
        waiters = self.waiting_on.pop(object_id, None)
        if not waiters:
            return []
        actions: list = []
        for t in waiters:
            t.missing.discard(object_id)
            if not t.missing and t.state == "waiting":
                self._make_ready(t, actions)
        return actions

    def start(self) -> list:
        """The runtime starts: bring the pool to its target size."""
        actions: list = []
        self._maybe_grow(actions)
        return actions

    def new_process_id(self) -> int:
        """An id for a process that is not a pool worker (an actor)."""
        wid = self._next_wid
        self._next_wid += 1
        return wid

    # -- actors --------------------------------------------------------------

    def place_actor(self, actor_id: bytes, placing: Shape, living: Shape, name: str = "") -> list:
        """An actor starts once `placing` is free and holds `living` from
        then on, while it is built too (Ray's default: 1 CPU to schedule,
        none to run, so any number of default actors are built at once)."""
        actions: list = []
        why = self.why_infeasible(placing)
        if why is not None and placing not in self._warned:
            self._warned.add(placing)
            actions.append(Warn(f"actor {name} {why}: it will wait."))
        self.actor_queue.append((actor_id, placing, living))
        self._place_actors(actions)
        return actions

    def actor_gone(self, actor_id: bytes) -> list:
        """The actor's process ended (or it never started): release it."""
        actions: list = []
        self.actor_queue = collections.deque(e for e in self.actor_queue if e[0] != actor_id)
        held = self.actor_holds.pop(actor_id, None)
        self.gpus.give(self.actor_gpus.pop(actor_id, []))
        if held:
            for k, v in held:
                if k in self.total:  # (a removed group's are gone)
                    self.available[k] = self.available.get(k, 0) + v
            self._schedule_all(actions)
        return actions

    def _place_actors(self, actions: list) -> None:
        if self.group_queue:
            self._place_groups(actions)
        if not self.actor_queue:
            return
        waiting = collections.deque()
        while self.actor_queue:
            actor_id, placing, living = self.actor_queue.popleft()
            if self._fits_now(placing):
                # `placing` is a check, not a hold: as in Ray, a default actor
                # under construction leaves its CPU to tasks.
                for k, v in living:
                    self.available[k] = self.available.get(k, 0) - v
                self.actor_holds[actor_id] = living
                gpus = self.gpus.take(dict(living).get("GPU", 0))
                if gpus:
                    self.actor_gpus[actor_id] = gpus
                actions.append(PlaceActor(actor_id, tuple(i for i, _ in gpus)))
            else:
                waiting.append((actor_id, placing, living))
        self.actor_queue = waiting

    def worker_started(self, wid: int) -> list:
        w = self.workers[wid]
        if w.state == "stopping":
            return []
        w.state = "idle"
        actions: list = []
        self._fill_idle(w, actions)
        return actions

    def is_running(self, wid: int, seq: int) -> bool:
        """Whether worker wid runs task seq now: the only task it may
        report finished (a report naming another is stale or forged)."""
        w = self.workers.get(wid)
        return w is not None and bool(w.queue) and w.queue[0].seq == seq

    def task_finished(self, wid: int, seq: int, duration: float, retry: bool = False) -> list:
        """Task seq ended on worker wid (retry: it raised an exception that
        its options retry; nothing was sealed). Raises ValueError, changing
        nothing, if wid is not running seq (see is_running)."""
        if not self.is_running(wid, seq):
            raise ValueError(f"worker {wid} reported task {seq} finished, but it is not running it")
        w = self.workers[wid]
        t = w.queue.popleft()
        self._record(t.function_id, duration)
        actions: list = []
        if retry and not t.cancelled:
            t.attempts += 1
            t.state = "ready"
            t.worker = None
            self._queue_ready(t, front=True)
        else:
            self._done(t)
            if retry:  # cancelled while it ran: nothing sealed, nothing will run it again
                actions.append(FailTask(t, "cancelled", "cancelled while it ran"))
        if w.state == "blocked":
            # It returned while another of its threads still waited: that
            # wait no longer counts.
            self._take_back_cpu(w)
            w.state = "busy"
        self._after_progress(w, actions)
        return actions

    def worker_blocked(self, wid: int, returned: list[int]) -> list:
        """The worker's running task waits in get(): its resources go back,
        and so do the queued tasks it handed back (seqs in `returned`).

        Always answered with exactly one Revoke (maybe empty): the worker
        holds back every task it reads after saying BLOCKED until then, so
        a task revoked here can never also start there."""
        w = self.workers[wid]
        if w.state != "busy":
            return [Revoke(wid, [])]
        # Tasks sent after the worker said it blocks: it has not read them, and
        # its task may be waiting for one of them. Take them back. The answer
        # goes first: the worker holds every task it reads until it comes.
        late = [t.seq for t in list(w.queue)[1:] if t.seq not in returned]
        actions: list = [Revoke(wid, late)]
        for seq in returned:
            self._requeue_unstarted(w, seq, actions)
        for seq in reversed(late):
            self._requeue_unstarted(w, seq, actions)
        # Only its CPU goes back, as in Ray: a GPU stays with the task using it.
        w.cpu_lent = dict(w.shape or ()).get("CPU", 0)
        if w.cpu_lent:
            self.available["CPU"] = self.available.get("CPU", 0) + w.cpu_lent
        w.state = "blocked"
        self._schedule_all(actions)
        return actions

    def worker_unblocked(self, wid: int) -> list:
        """The wait is over: the task takes its resources back, even if that
        oversubscribes them for a while (as Ray does)."""
        w = self.workers[wid]
        if w.state != "blocked":
            return []
        self._take_back_cpu(w)
        w.state = "busy"
        actions: list = []
        self._reap_idle(actions)
        return actions

    def worker_died(self, wid: int, started: bool = True, oom: str | None = None,
                    retry_delay: float = 0.0) -> list:
        """Worker wid is gone. Its running task (if `started`) failed once;
        its unstarted ones go back to the queue. oom: the memory monitor
        killed it ("retry": the task runs again after retry_delay seconds,
        without spending one of its max_retries, as Ray retries tasks it
        killed for memory; "fail": it fails with OutOfMemoryError)."""
        w = self.workers.pop(wid)
        actions: list = []
        if w.state in ("busy", "blocked"):
            self._release(w)
        running = w.queue.popleft() if w.queue and started else None
        for t in reversed(w.queue):  # unstarted: back to the front, in order
            self._requeue(t, actions)
        w.queue.clear()
        w.state = "dead"
        if running is not None:
            running.worker = None
            running.attempts += 1
            if running.cancelled:
                self._done(running)
                kind, detail = self._fail_reasons.pop(running.seq, ("cancelled", "cancelled with force=True"))
                actions.append(FailTask(running, kind, detail))
            elif oom == "retry":
                running.attempts -= 1  # not one of its max_retries
                running.oom_kills += 1
                running.state = "backoff"
                actions.append(RetryLater(running.seq, retry_delay))
            elif oom is not None:
                self._done(running)
                actions.append(FailTask(running, "oom", f"{running.attempts} time(s)"))
            elif running.max_retries < 0 or running.attempts <= running.max_retries:
                running.state = "ready"
                self._queue_ready(running, front=True)
            else:
                self._done(running)
                actions.append(FailTask(running, "crashed", f"{running.attempts} time(s)"))
        self._maybe_grow(actions)
        self._schedule_all(actions)
        return actions

    def retry_now(self, seq: int) -> list:
        """The delay of RetryLater(seq) is over: queue the task again."""
        t = self.tasks.get(seq)
        if t is None or t.state != "backoff":
            return []  # cancelled meanwhile
        actions: list = []
        self._make_ready(t, actions)
        self._schedule_all(actions)
        return actions

    def cancel(self, seq: int, force: bool = False, recursive: bool = True) -> list:
        """Cancel a task: dropped if not started, interrupted if running
        (force: its worker is killed). recursive (Ray's default): the tasks
        it submitted, and theirs, are cancelled too, and so is any it
        submits from now on, so that none keeps running or holding
        resources for a result nobody will read."""
        t = self.tasks.get(seq)
        if t is None or t.state == "done" or t.cancelled:
            return []
        t.cancelled = True
        if t.state in ("waiting", "ready", "new", "backoff"):
            self._forget(t)
            return [FailTask(t, "cancelled", "cancelled before it ran")]
        w = self.workers.get(t.worker)
        if w is not None and w.queue and w.queue[0] is t:
            actions: list = [CancelRunning(w.wid, t.seq, force)]
        else:  # queued on a worker, not started: the worker drops it when it comes up
            actions = [CancelQueued(t.worker, t.seq)]
        if recursive:
            actions += self.cancel_children(t.task_id, force)
        return actions

    def cancel_if_queued(self, seq: int) -> list | None:
        """Cancel task seq only if no worker has it yet (it waits for its
        arguments or its resources): the actions, or None if a worker has
        it (it may be running) or it ended. What concurrent.futures'
        Future.cancel() needs: a call that started is never interrupted."""
        t = self.tasks.get(seq)
        if t is None or t.cancelled or t.state not in ("new", "waiting", "ready", "backoff"):
            return None
        return self.cancel(seq, recursive=False)

    def cancel_children(self, parent: bytes, force: bool = False) -> list:
        """Cancel what task (or actor call) `parent` submitted, tasks and
        actor calls (as in Ray), recursively, and what it submits from now
        on (until parent_done). force does not apply to actor calls."""
        self.cancelled_parents.add(parent)
        actions: list = []
        for seq in self.children.pop(parent, ()):
            actions += self.cancel(seq, force, True)
        actions += [CancelActorCall(tid) for tid in self.call_children.pop(parent, ())]
        return actions

    def actor_call_submitted(self, task_id: bytes, parent: bytes | None) -> list:
        """Task (or call) `parent` made actor call `task_id`: it is among
        what cancelling the parent cancels. One made after that cancel is
        left alone, as in Ray: a cancelled call may still call out while it
        handles its CancelledError."""
        if parent is not None and parent not in self.cancelled_parents:
            self.call_children.setdefault(parent, []).append(task_id)
        return []

    def parent_done(self, parent: bytes) -> None:
        """Task or actor call `parent` ended: nothing of it is left to cancel."""
        self.children.pop(parent, None)
        self.call_children.pop(parent, None)
        self.cancelled_parents.discard(parent)

    # -- internals -----------------------------------------------------------

    @staticmethod
    def _describe(shape: Shape) -> str:
        return ", ".join(
            f"{words.size(v / UNIT)} {k}" if k in MEMORY_RESOURCES else f"{v / UNIT:g} {k}"
            for k, v in shape) or "nothing"

    def _fits_ever(self, shape: Shape) -> bool:
        return all(self.total.get(k, 0) >= v for k, v in shape)

    def _fits_now(self, shape: Shape) -> bool:
        avail = self.available
        for k, v in shape:
            if avail.get(k, 0) < v:
                return False
            if k == "GPU" and self.gpus and self.gpus.choose(v) is None:
                return False  # enough in total, but not on the devices one lease can use
        return True

    def _acquire(self, w: Worker, shape: Shape) -> None:
        for k, v in shape:
            self.available[k] -= v
        w.shape = shape
        if self.gpus:
            w.gpus = self.gpus.take(dict(shape).get("GPU", 0))

    def _release(self, w: Worker) -> None:
        if w.shape is not None:
            for k, v in w.shape:
                if k == "CPU":
                    v -= w.cpu_lent  # (already given back while it was blocked)
                if k in self.total:  # (a removed group's are gone)
                    self.available[k] = self.available.get(k, 0) + v
            w.shape = None
            w.cpu_lent = 0
            self.gpus.give(w.gpus)
            w.gpus = []

    def _take_back_cpu(self, w: Worker) -> None:
        """A blocked task runs again: it takes its CPU back, even if that
        oversubscribes it for a while (as Ray does)."""
        if w.cpu_lent:
            self.available["CPU"] = self.available.get("CPU", 0) - w.cpu_lent
            w.cpu_lent = 0

    def _record(self, function_id: bytes, duration: float) -> None:
        s = self.stats.get(function_id)
        if s is None:
            s = self.stats[function_id] = _Stats()
        s.n += 1
        s.avg += (duration - s.avg) * (0.2 if s.n > 5 else 1.0 / s.n)

    def _prefetch_limit(self, function_id: bytes) -> int:
        s = self.stats.get(function_id)
        if s is None or s.avg > PREFETCH_MAX_TASK:
            return 1  # unknown or long: only the task it runs
        return min(PREFETCH_MAX, 1 + int(PREFETCH_BUDGET / max(s.avg, 1e-6)))

    def _is_short(self, t: Task) -> bool:
        """Known to run briefly: a task may be queued behind it."""
        s = self.stats.get(t.function_id)
        return s is not None and s.avg <= PREFETCH_MAX_TASK

    def _queue_ready(self, t: Task, front: bool = False) -> None:
        q = self.ready.get(t.shape)
        if q is None:
            q = self.ready[t.shape] = collections.deque()
        q.appendleft(t) if front else q.append(t)

    def _make_ready(self, t: Task, actions: list) -> None:
        t.state = "ready"
        # An idle worker, if the resources allow.
        if self._fits_now(t.shape):
            w = self.workers.lowest_idle()
            if w is not None:
                self._acquire(w, t.shape)
                w.state = "busy"
                self._assign(w, t, actions)
                return
        # A busy worker of the same shape with room in its prefetch window.
        if not self.ready.get(t.shape):
            limit = self._prefetch_limit(t.function_id)
            if limit > 1:
                for w in self.workers.by_state.get("busy", {}).values():
                    if (w.shape == t.shape and len(w.queue) < limit
                            and self._is_short(w.queue[0]) and self._is_short(w.queue[-1])):
                        self._assign(w, t, actions)
                        return
        self._queue_ready(t)
        self._maybe_grow(actions)

    def _assign(self, w: Worker, t: Task, actions: list) -> None:
        t.state = "assigned"
        t.worker = w.wid
        w.queue.append(t)
        actions.append(Dispatch(w.wid, t))

    def _maybe_grow(self, actions: list) -> None:
        """Start workers up to the target size, and more whenever ready work
        could run (its resources are free) but no worker is idle for it."""
        workers = self.workers
        alive = len(workers) - workers.count("stopping")
        spare = workers.count("idle") + workers.count("starting")
        need = max(0, self.target_workers - alive)
        if need == 0:
            need = max(0, self._runnable_now(limit=spare + 64) - spare)
        for _ in range(min(need, self.max_workers - alive)):
            wid = self._next_wid
            self._next_wid += 1
            self.workers[wid] = Worker(wid)
            actions.append(StartWorker(wid))

    def _runnable_now(self, limit: int) -> int:
        """How many ready tasks the free resources could run at once (up to limit)."""
        avail = dict(self.available)
        n = 0
        for shape, q in self.ready.items():
            for _ in range(len(q)):
                if n >= limit or any(avail.get(k, 0) < v for k, v in shape):
                    break
                for k, v in shape:
                    avail[k] = avail.get(k, 0) - v
                n += 1
        return n

    def _surplus_count(self) -> int:
        """Workers beyond the target size plus one per blocked worker (the
        extra ones ran work in the blocked ones' place)."""
        workers = self.workers
        alive = len(workers) - workers.count("stopping")
        return alive - (self.target_workers + workers.count("blocked"))

    def _reap_idle(self, actions: list) -> None:
        """Report idle workers the pool could do without (Surplus); they
        stop only if still idle later, so a pool that needs them again
        soon keeps them (as Ray keeps idle workers for a second)."""
        extra = self._surplus_count()
        for w in self.workers.by_state.get("idle", {}).values():
            if extra <= 0:
                break
            actions.append(Surplus(w.wid))
            extra -= 1

    def stop_if_surplus(self, wid: int) -> list:
        """Worker wid was reported Surplus a while ago: stop it if it is
        idle and still beyond the pool's size."""
        w = self.workers.get(wid)
        if w is None or w.state != "idle" or self._surplus_count() <= 0:
            return []
        w.state = "stopping"
        return [StopWorker(wid)]

    def _after_progress(self, w: Worker, actions: list) -> None:
        """Worker w finished a task: keep it fed with work of its shape, or
        let its lease go and give it other work."""
        shape = w.shape
        # A waiting placement group goes first: the lease is given back
        # rather than kept for more work of its shape.
        q = self.ready.get(shape) if shape is not None and not self.group_queue else None
        if q:
            self._feed(w, q, actions)
        if not w.queue:
            self._release(w)
            w.state = "idle"
            self._place_actors(actions)
            self._fill_idle(w, actions)
            if w.state == "idle":
                self._reap_idle(actions)

    def _feed(self, w: Worker, q: collections.deque, actions: list) -> None:
        """Give worker w the head of q if it has nothing, then, behind it,
        more tasks as long as they are known to be short (prefetch)."""
        if not w.queue:
            self._assign(w, q.popleft(), actions)
        while q and self._is_short(q[0]) and self._is_short(w.queue[-1]) \
                and len(w.queue) < self._prefetch_limit(q[0].function_id):
            self._assign(w, q.popleft(), actions)

    def _fill_idle(self, w: Worker, actions: list) -> None:
        for shape, q in self.ready.items():
            if q and self._fits_now(shape):
                self._acquire(w, shape)
                w.state = "busy"
                self._feed(w, q, actions)
                return

    def _schedule_all(self, actions: list) -> None:
        self._place_actors(actions)
        for w in list(self.workers.values()):
            if w.state == "idle":
                self._fill_idle(w, actions)
        self._maybe_grow(actions)

    def _requeue_unstarted(self, w: Worker, seq: int, actions: list) -> None:
        for i, t in enumerate(w.queue):
            if t.seq == seq and i > 0:
                del w.queue[i]
                self._requeue(t, actions)
                return

    def _requeue(self, t: Task, actions: list) -> None:
        """A task taken back from a worker before it started: to the front
        of the queue, or, if it was cancelled meanwhile, failed as such."""
        t.worker = None
        if t.cancelled:
            self._done(t)
            actions.append(FailTask(t, "cancelled", "cancelled before it ran"))
        else:
            t.state = "ready"
            self._queue_ready(t, front=True)

    def _done(self, t: Task) -> None:
        t.state = "done"
        self.tasks.pop(t.seq, None)
        self.parent_done(t.task_id)

    def _forget(self, t: Task) -> None:
        self.parent_done(t.task_id)
        self.tasks.pop(t.seq, None)
        for oid in t.missing:
            waiters = self.waiting_on.get(oid)
            if waiters and t in waiters:
                waiters.remove(t)
        q = self.ready.get(t.shape)
        if q and t in q:
            q.remove(t)
        t.state = "done"

    def check(self) -> None:
        """Assert the invariants (tests and validate mode)."""
        used: dict[str, int] = collections.defaultdict(int)
        grants = list(self.actor_gpus.values())
        indexed = {wid: w.state for bucket in self.workers.by_state.values() for wid, w in bucket.items()}
        assert indexed == {wid: w.state for wid, w in self.workers.items()}, "the workers' state index is stale"
        for w in self.workers.values():
            if w.state in ("busy", "blocked"):
                assert w.shape is not None, w.wid
                for k, v in w.shape:
                    used[k] += v - (w.cpu_lent if k == "CPU" else 0)
                assert w.queue, f"{w.state} worker {w.wid} has no task"
                assert all(t.shape == w.shape for t in w.queue)
                assert w.state == "blocked" or not w.cpu_lent
                grants.append(w.gpus)
                assert sum(u for _, u in w.gpus) == (dict(w.shape).get("GPU", 0) if self.gpus else 0)
            if w.state in ("idle", "stopping"):
                assert not w.queue and w.shape is None and not w.gpus
            for t in w.queue:
                assert t.state == "assigned" and t.worker == w.wid
        for shape in self.actor_holds.values():
            for k, v in shape:
                used[k] += v
        for g in self.groups.values():
            if g.state == "CREATED":
                for k, v in self._group_total(g):
                    used[k] += v
        grants += list(self._group_gpus.values())
        for k, total in self.total.items():
            assert self.available.get(k, 0) + used[k] == total, (k, self.available, used)
        self.gpus.check(grants)
        for shape, q in self.ready.items():
            for t in q:
                assert t.state == "ready" and t.shape == shape
