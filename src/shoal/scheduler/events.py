"""Task events: the tasks and actor calls that ended lately, kept in bounded
buffers for the timeline, `shoal list tasks` and the dashboard.

The shell appends one plain tuple per ended task (a tuple costs a tenth of
a NamedTuple to build, on the path of every task); readers turn them into
TaskEvent records. Times are time.perf_counter() values, which on Linux
read CLOCK_MONOTONIC: one clock for the driver and every worker.

    worker: started, duration, sizes, error --DONE--> shell._on_done --> TaskEvents.ended
    driver: submitted (at submit)  ---------------------------------^
"""

from __future__ import annotations

import collections
import time
from typing import NamedTuple

#: Ended tasks kept by default (Ray keeps 100,000 per job in its GCS; a
#: record here is about 200 bytes).
DEFAULT_CAPACITY = 10_000

#: Failed tasks kept with their error text.
FAILURES_KEPT = 100

#: Names of the DONE statuses (scheduler/protocol.py), as Ray's task states.
STATUS_NAMES = {0: "FINISHED", 1: "FAILED", 2: "FAILED_RETRYING", 3: "CANCELLED", 4: "FINISHED"}


class TaskEvent(NamedTuple):
    """One ended task or actor call (times: time.perf_counter() seconds)."""

    task_id: bytes
    name: str
    actor_id: bytes | None  #: None for a task
    wid: int  #: the process that ran it (the scheduler's worker id)
    pid: int | None
    submitted: float
    started: float
    duration: float
    status: int  #: protocol.OK, FAILED, RETRY, CANCELLED or EXITED
    attempt: int
    arg_bytes: int  #: its arguments: inline bytes, or the stored ones, and each ref's object
    result_bytes: int  #: what it sealed as results

    @property
    def state(self) -> str:
        return STATUS_NAMES.get(self.status, "FINISHED")

    @property
    def ended(self) -> float:
        return self.started + self.duration


class Failure(NamedTuple):
    task_id: bytes
    name: str
    pid: int | None
    ended: float  #: time.perf_counter()
    error: str


class TaskEvents:
    """Bounded buffers of ended tasks and failures, and counts since start.

    Mutated only by the shell, under its lock; readers copy under the lock."""

    def __init__(self, capacity: int = DEFAULT_CAPACITY):
        self.capacity = capacity
        #: ended tasks as TaskEvent-shaped tuples, oldest first
        self.ended: collections.deque[tuple] = collections.deque(maxlen=capacity)
        #: the last failures with their error text, oldest first
        self.failures: collections.deque[Failure] = collections.deque(maxlen=FAILURES_KEPT)
        #: tasks and calls ended since start, by status
        self.totals = [0, 0, 0, 0, 0]
        #: when the buffer began (time.perf_counter())
        self.since = time.perf_counter()

    def failed(self, task_id: bytes, name: str, pid: int | None, ended: float, error: str) -> None:
        self.failures.append(Failure(task_id, name, pid, ended, error))

    def snapshot(self, limit: int | None = None) -> list[TaskEvent]:
        """The last `limit` ended tasks (all kept: None), oldest first. Call
        under the shell's lock."""
        items = list(self.ended) if limit is None else list(self.ended)[-limit:]
        return [TaskEvent._make(t) for t in items]


def wall_clock_offset() -> float:
    """Add to a time.perf_counter() value to get seconds since the epoch."""
    return time.time() - time.perf_counter()
