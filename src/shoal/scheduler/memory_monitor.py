"""The memory monitor: it kills a worker when the machine runs low on memory,
before the kernel's OOM killer takes some process of its own choosing, as
Ray's raylet does.

    MonitorThread, every refresh_s:          (thin shell: /proc, a thread)
      read_memory() --> MemoryReading        /proc/meminfo, the cgroup's limit
      shell.memory_candidates() + RSS        the processes running work
      MonitorCore.decide(reading, cands) --> Kill | None       (pure)
      shell.oom_kill(kill)                   SIGKILL; the death fails or
                                             retries the task (memory_guard.py)

The victim (Ray's group-by-owner policy): running work is grouped by its
owner (the driver, or the task that submitted it); a process that cannot be
retried (max_retries=0, an actor without max_restarts) is a group of its
own. Retriable groups go first, then larger groups, then the group whose
oldest work started last; in the group, the work that started last dies.
Its task is retried (after a delay that doubles, up to 60 s, without
spending max_retries) only if its group has other work running, so that
each owner keeps making progress; else it fails with OutOfMemoryError.
One process is killed at a time: the next only after it is gone.

A worker's memory is its resident pages minus the shared ones (/proc/<pid>/statm):
the object store's pages are shared by every process and are not counted
against any one of them.
"""

from __future__ import annotations

import collections
import os
import sys
import threading
import time
from typing import Callable, NamedTuple

from shoal import exceptions as exc

_PAGE = os.sysconf("SC_PAGE_SIZE")

#: A worker SIGKILLed while memory was above this share of the total is
#: said to have been likely killed for memory, even without a counter to
#: prove it (the kernel kills at about 100%; samples are refresh_s old).
NEAR_FULL = 0.9

#: Seconds of samples kept to explain a death: the kernel's kill and the
#: runtime's handling of the death may fall on either side of a sample.
EVIDENCE_WINDOW_S = 5.0


class MemoryReading(NamedTuple):
    """The machine's memory (or its container's) at one moment, in bytes."""

    used_bytes: int
    total_bytes: int

    @property
    def fraction(self) -> float:
        return self.used_bytes / self.total_bytes if self.total_bytes else 0.0


class Candidate(NamedTuple):
    """A process running work the monitor may kill."""

    wid: int  #: the scheduler's id of the process
    pid: int
    name: str  #: the task's name, or the actor's description
    owner: object  #: who submitted the work (None: the driver); unique for non-retriable work
    retriable: bool  #: a task with max_retries != 0, or an actor with max_restarts != 0
    seq: int = 0  #: the task's sequence number (0 for an actor)
    is_actor: bool = False
    started: float = 0.0  #: time.monotonic() when the monitor first saw it run
    rss_bytes: int | None = None  #: private resident memory (None: unknown)


class Kill(NamedTuple):
    """The monitor's decision: kill `victim`'s process."""

    victim: Candidate
    retry: bool  #: its task may run again (its owner has other work running)
    reading: MemoryReading
    threshold: float
    why: str  #: why this one, in words


def limit_bytes(total: int, threshold: float, min_free_bytes: int = -1) -> int:
    """Bytes in use beyond which the monitor kills (Ray: the larger of
    threshold x total and total - min_free_bytes, when the latter is set)."""
    limit = int(total * threshold)
    if min_free_bytes > 0:
        limit = max(limit, total - min_free_bytes)
    return limit


def choose_victim(candidates: list[Candidate]) -> tuple[Candidate, bool, str] | None:
    """The process to kill, whether its task may be retried, and why it was
    chosen (see the module's docstring); None if there is no candidate."""
    if not candidates:
        return None
    groups: dict[object, list[Candidate]] = {}
    for c in candidates:
        key = ("owner", c.owner) if c.retriable and not c.is_actor else ("alone", c.wid)
        groups.setdefault(key, []).append(c)

    def rank(members: list[Candidate]):
        retriable = members[0].retriable
        return (retriable, len(members), min(m.started for m in members))

    members = max(groups.values(), key=rank)
    victim = max(members, key=lambda c: (c.started, c.seq))
    retry = victim.retriable and not victim.is_actor and len(members) > 1
    if victim.is_actor:
        why = "it is the actor chosen to free memory (" + (
            "it can be restarted" if victim.retriable else "no task that could be retried was running") + ")"
    elif retry:
        why = (f"it was the most recently started of the {len(members)} retriable tasks of its owner; "
               f"it will be retried")
    elif victim.retriable:
        why = ("it was the most recently started retriable task, and the only one running for its owner: "
               "it is not retried, so that a task that cannot get the memory it needs does not loop forever")
    else:
        why = "no task that could be retried was running (this one has max_retries=0)"
    return victim, retry, why


class MonitorCore:
    """The monitor's decisions, without I/O: fed readings and candidates,
    it answers whom to kill. Kills one process at a time."""

    def __init__(self, threshold: float, min_free_bytes: int = -1):
        self.threshold = threshold
        self.min_free_bytes = min_free_bytes
        self.pending: int | None = None  #: wid of the process killed last, until it is gone

    def over(self, reading: MemoryReading) -> bool:
        """True when the machine uses more memory than the monitor allows."""
        return reading.used_bytes > limit_bytes(reading.total_bytes, self.threshold, self.min_free_bytes)

    def decide(self, reading: MemoryReading, candidates: list[Candidate]) -> Kill | None:
        """Whom to kill now, if anyone."""
        if self.pending is not None:
            if any(c.wid == self.pending for c in candidates):
                return None  # the last one killed is not gone yet: its memory is not free yet
            self.pending = None
        if not self.over(reading):
            return None
        choice = choose_victim(candidates)
        if choice is None:
            return None
        victim, retry, why = choice
        self.pending = victim.wid
        return Kill(victim, retry, reading, self.threshold, why)


def retry_delay(base_s: float, kills: int, cap_s: float = 60.0) -> float:
    """Seconds before the retry of a task the monitor killed `kills` times."""
    if kills <= 0:
        return 0.0
    return min(cap_s, base_s * (2 ** min(kills - 1, 32)))


class OomCounters(NamedTuple):
    """The kernel's counts of OOM kills that an unprivileged process can read
    (None: not available here)."""

    machine: int | None  #: /proc/vmstat oom_kill
    cgroup: int | None  #: the cgroup's memory.events (v2) or memory.oom_control (v1) oom_kill


def kernel_oom_evidence(before: OomCounters, after: OomCounters, reading: MemoryReading | None,
                        rss_bytes: int | None) -> str | None:
    """Words saying that a process that died of SIGKILL was likely killed by
    the kernel for memory, or None if nothing suggests it."""
    signs = []
    for label, a, b in (("the machine's", before.machine, after.machine),
                        ("its container's", before.cgroup, after.cgroup)):
        if a is not None and b is not None and b > a:
            signs.append(f"{label} count of processes killed for memory (oom_kill) went from {a} to {b}")
    if reading is not None and reading.fraction >= NEAR_FULL:
        signs.append(f"memory in use was {exc.format_bytes(reading.used_bytes)} of "
                     f"{exc.format_bytes(reading.total_bytes)} ({reading.fraction:.0%}) when last sampled")
    if not signs:
        return None
    text = "it was likely killed for memory by the kernel's out-of-memory killer: " + "; ".join(signs)
    if rss_bytes is not None:
        text += f"; its last memory use seen was {exc.format_bytes(rss_bytes)}"
    return text


# ---------------------------------------------------------------------------
# Readings (Linux)
# ---------------------------------------------------------------------------


def _read_int_file(path: str) -> int | None:
    try:
        with open(path) as f:
            text = f.read().strip()
    except OSError:
        return None
    try:
        return int(text)
    except ValueError:
        return None  # "max": no limit


def _read_keyed(path: str, key: str) -> int | None:
    """The value of line "key value" in a /proc or cgroup file."""
    try:
        with open(path) as f:
            for line in f:
                parts = line.split()
                if len(parts) >= 2 and parts[0].rstrip(":") == key:
                    return int(parts[1])
    except (OSError, ValueError):
        pass
    return None


def read_meminfo(path: str = "/proc/meminfo") -> MemoryReading:
    """The machine's memory: used is total minus MemAvailable."""
    total = _read_keyed(path, "MemTotal")
    available = _read_keyed(path, "MemAvailable")
    if total is None or available is None:
        return MemoryReading(0, 0)
    return MemoryReading((total - available) * 1024, total * 1024)


def read_cgroup(root: str = "/sys/fs/cgroup") -> MemoryReading | None:
    """The container's memory, if its cgroup has a limit: usage minus the
    inactive file cache (what the kernel can drop), as Ray counts it."""
    v2_limit = _read_int_file(f"{root}/memory.max")
    if v2_limit is not None:
        usage = _read_int_file(f"{root}/memory.current")
        inactive = _read_keyed(f"{root}/memory.stat", "inactive_file") or 0
    else:
        v2_limit = _read_int_file(f"{root}/memory/memory.limit_in_bytes")
        usage = _read_int_file(f"{root}/memory/memory.usage_in_bytes")
        inactive = _read_keyed(f"{root}/memory/memory.stat", "total_inactive_file") or 0
    if v2_limit is None or usage is None or v2_limit >= (1 << 60):
        return None  # no limit (cgroup v1 says so with a huge number)
    return MemoryReading(max(0, usage - inactive), v2_limit)


def read_memory() -> MemoryReading:
    """The tighter of the machine's and its container's memory."""
    machine = read_meminfo()
    group = read_cgroup()
    if group is not None and group.total_bytes < machine.total_bytes and group.fraction >= machine.fraction:
        return group
    return machine


def read_private_rss(pid: int) -> int | None:
    """Resident bytes of a process that are its own (resident minus shared
    pages: the store's pages are shared), or None if it is gone."""
    try:
        with open(f"/proc/{pid}/statm", "rb") as f:
            fields = f.read().split()
        return (int(fields[1]) - int(fields[2])) * _PAGE
    except (OSError, ValueError, IndexError):
        return None


def read_oom_counters(root: str = "/sys/fs/cgroup") -> OomCounters:
    """The kernel's OOM kill counts (see OomCounters)."""
    group = _read_keyed(f"{root}/memory.events", "oom_kill")
    if group is None:
        group = _read_keyed(f"{root}/memory/memory.oom_control", "oom_kill")
    return OomCounters(_read_keyed("/proc/vmstat", "oom_kill"), group)


# ---------------------------------------------------------------------------
# The thread
# ---------------------------------------------------------------------------


class MonitorThread:
    """Looks at memory every `refresh_s` seconds and has the shell kill
    the process MonitorCore picks; keeps the last sample of each process's
    memory to explain a SIGKILL from the kernel.

    Args:
        candidates: () -> [Candidate] (rss_bytes and started not filled).
        kill: (Kill) -> None, carries the decision out.
        refresh_s: seconds between looks; 0: never look (only explain deaths).
    """

    def __init__(self, threshold: float, refresh_s: float, candidates: Callable[[], list],
                 kill: Callable[[Kill], None], min_free_bytes: int = -1):
        self.core = MonitorCore(threshold, min_free_bytes)
        self.refresh_s = refresh_s
        self._candidates = candidates
        self._kill = kill
        self.read_memory = read_memory  # replaceable (tests)
        self.read_counters = read_oom_counters
        self.counters = self.read_counters()  # the baseline a death is compared with
        self.last_reading: MemoryReading | None = None
        self.last_rss: dict[int, int] = {}  # pid -> private resident bytes when last seen
        # (time, counters, reading) of the looks of the last EVIDENCE_WINDOW_S
        self._history: collections.deque = collections.deque()
        self._rss_seen: dict[int, float] = {}  # pid -> when its last_rss was sampled
        self._seen: dict[tuple, float] = {}  # (wid, seq) -> when first seen running
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if self.refresh_s > 0:
            self._thread = threading.Thread(target=self._run, name="shoal-memory-monitor", daemon=True)
            self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Stop looking; waits up to `timeout` seconds for a look in progress."""
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout)

    def _run(self) -> None:
        while not self._stop.wait(self.refresh_s):  # a sampling period, not a synchronisation
            try:
                self.tick()
            except Exception:  # never let the monitor's failure go unseen, nor end the runtime
                import traceback

                sys.stderr.write("shoal: the memory monitor failed (a bug in shoal); it goes on:\n")
                traceback.print_exc()

    def tick(self) -> Kill | None:
        """One look: sample, decide, kill. Returns the decision."""
        reading = self.read_memory()
        self.last_reading = reading
        now = time.monotonic()
        seen = {}
        cands = []
        rss = {}
        for c in self._candidates():
            key = (c.wid, c.seq)
            started = seen[key] = self._seen.get(key, now)
            r = read_private_rss(c.pid)
            if r is None:
                continue  # gone
            rss[c.pid] = r
            cands.append(c._replace(started=started, rss_bytes=r))
        self._seen = seen
        self._remember(now, reading, rss)
        kill = self.core.decide(reading, cands)
        if kill is not None:
            self._kill(kill)
        return kill

    def _remember(self, now: float, reading: MemoryReading, rss: dict[int, int]) -> None:
        """Keep this look's samples for EVIDENCE_WINDOW_S (a process that
        died keeps its last one that long)."""
        history = self._history
        history.append((now, self.read_counters(), reading))
        while len(history) > 1 and history[0][0] < now - EVIDENCE_WINDOW_S:
            history.popleft()
        self.last_rss.update(rss)
        for pid in rss:
            self._rss_seen[pid] = now
        for pid, t in list(self._rss_seen.items()):
            if t < now - EVIDENCE_WINDOW_S:
                del self._rss_seen[pid]
                self.last_rss.pop(pid, None)

    def explain_sigkill(self, pid: int | None) -> str | None:
        """Why a process that died of a SIGKILL nobody in the runtime sent
        likely died (memory), or None if nothing suggests it: the kernel's
        counts are compared with those of EVIDENCE_WINDOW_S ago."""
        now = self.read_counters()
        history = list(self._history)  # (the monitor's thread appends meanwhile)
        if history:
            before = history[0][1]
            reading = max((h[2] for h in history), key=lambda r: r.fraction)
        else:  # no looks: each death is compared with the one before
            before, self.counters = self.counters, now
            reading = self.last_reading
        return kernel_oom_evidence(before, now, reading, self.last_rss.get(pid))
