"""The shell's side of the memory monitor (a mixin of Shell): what runs,
for the monitor to choose from; the kill; and what a death for memory
means for the task (OutOfMemoryError, a retry later) or how a SIGKILL is
explained (memory_monitor.py decides, this carries it out).

    MonitorThread --memory_candidates()--> [Candidate]      under the shell's lock
                  --oom_kill(Kill)-------> worker.oom = Kill; SIGKILL
    fork server "exited" --> _pool_worker_died --> oom_verdict(h) --> worker_died(oom=...)
"""

from __future__ import annotations

import signal
import sys
import time

from shoal import exceptions as exc
from shoal.scheduler import memory_monitor as M
from shoal.scheduler.state import RetryLater


class MemoryGuard:
    """Mixin of Shell (uses its lock, workers, sched, actors)."""

    monitor: M.MonitorThread | None = None
    _retry_due: dict  # seq -> time.monotonic() when the task may run again
    _oom_retry_base_s: float = 1.0

    def start_memory_monitor(self, cfg) -> None:
        """Start watching memory (cfg: config.MemoryMonitorConfig). With the
        monitor off, SIGKILL deaths are still explained."""
        self._oom_retry_base_s = cfg.retry_delay_base_s
        self.monitor = M.MonitorThread(cfg.threshold, cfg.refresh_s if cfg.enabled else 0.0,
                                       self.memory_candidates, self.oom_kill, cfg.min_free_bytes)
        self.monitor.start()

    def stop_memory_monitor(self) -> None:
        if self.monitor is not None:
            self.monitor.stop()

    def memory_candidates(self) -> list[M.Candidate]:
        """The processes running work now: pool workers with a started task,
        and actors."""
        out = []
        with self.lock:
            for wid, w in self.sched.workers.items():
                h = self.workers.get(wid)
                if h is None or h.pid is None or not w.queue or getattr(h, "oom", None) is not None:
                    continue
                task = w.queue[0]
                if h.to_worker is None or h.to_worker.user_word != task.seq:
                    continue  # sent, not started
                retriable = task.max_retries != 0
                owner = task.owner if retriable else ("task", task.seq)
                out.append(M.Candidate(wid, h.pid, task.name, owner, retriable, task.seq))
            for actor in self.actors.actors.values():
                h = self.workers.get(actor.wid) if actor.wid is not None else None
                if actor.state not in ("constructing", "alive") or h is None or h.pid is None or getattr(h, "oom", None) is not None:
                    continue
                out.append(M.Candidate(actor.wid, h.pid, f"actor {actor.describe()}", ("actor", actor.actor_id),
                                       actor.max_restarts != 0, 0, True))
        return out

    def oom_kill(self, kill: M.Kill) -> None:
        """Carry out the monitor's decision, if the process still runs that work."""
        v = kill.victim
        with self.lock:
            h = self.workers.get(v.wid)
            if h is None or h.pid != v.pid:
                return
            if not v.is_actor:
                w = self.sched.workers.get(v.wid)
                if w is None or not w.queue or w.queue[0].seq != v.seq:
                    return  # it finished meanwhile
            h.oom = kill
            r = kill.reading
            sys.stderr.write(
                f"shoal: memory is low ({exc.format_bytes(r.used_bytes)} of {exc.format_bytes(r.total_bytes)} "
                f"in use, {r.fraction:.3f} > threshold {kill.threshold:g}): killing the worker (pid {v.pid}) "
                f"running {v.name}, which uses {exc.format_bytes(v.rss_bytes or 0)}; {kill.why}\n")
            h.signal(signal.SIGKILL)

    def oom_verdict(self, h, started: bool) -> tuple[str | None, float]:
        """For a pool worker's death: ("retry" or "fail", retry delay) if the
        monitor killed it while it ran the task it chose; (None, 0) else."""
        kill = getattr(h, "oom", None)
        if kill is None or not started:
            return None, 0.0
        w = self.sched.workers.get(h.wid)
        if w is None or not w.queue or w.queue[0].seq != kill.victim.seq:
            return None, 0.0
        if kill.retry:
            return "retry", M.retry_delay(self._oom_retry_base_s, w.queue[0].oom_kills + 1)
        return "fail", 0.0

    def oom_error(self, h, spec) -> exc.OutOfMemoryError:
        """The error of a task whose worker the monitor killed."""
        kill = h.oom
        v = kill.victim
        return exc.OutOfMemoryError(
            "", spec.name, v.pid, v.rss_bytes, kill.reading.used_bytes, kill.reading.total_bytes,
            kill.threshold, f"It was chosen because {kill.why}.")

    def explain_kill(self, h, code: int | None) -> str:
        """More words for how a process died: killed by the monitor, or by
        a SIGKILL that memory pressure likely explains; '' if neither."""
        kill = getattr(h, "oom", None)
        if kill is not None:
            r = kill.reading
            return (f"; the memory monitor killed it because the machine was low on memory "
                    f"({exc.format_bytes(r.used_bytes)} of {exc.format_bytes(r.total_bytes)} in use, above "
                    f"the threshold of {kill.threshold}) while it used "
                    f"{exc.format_bytes(kill.victim.rss_bytes or 0)}: {kill.why}")
        if code == -signal.SIGKILL and self.monitor is not None:
            why = self.monitor.explain_sigkill(h.pid)
            if why:
                return f"; {why}"
        return ""

    # -- delayed retries ----------------------------------------------------------

    def retry_later(self, a: RetryLater) -> None:
        self._retry_due[a.seq] = time.monotonic() + a.delay
        self.wake()  # the I/O thread sleeps until the earliest is due

    def retry_due(self) -> None:
        """Queue again the tasks whose delay is over (the I/O thread, locked)."""
        now = time.monotonic()
        for seq, due in list(self._retry_due.items()):
            if due <= now:
                del self._retry_due[seq]
                self._execute(self.sched.retry_now(seq))
