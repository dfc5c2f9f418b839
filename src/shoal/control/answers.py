"""The questions a runtime answers on its control endpoint, each as JSON-able
data. Each takes a snapshot under the scheduler's lock and builds the answer
after releasing it: an answer never holds up the scheduler while it is
encoded or sent.

    status          resources, workers, tasks and actors by state, the store
    tasks           unfinished and recently ended tasks (Ray's list tasks columns)
    actors, workers, objects          as `ray list`
    summary_tasks   {function: {state: count}}
    memory          memory_summary()'s text
    timeline        Chrome trace events of the ended tasks kept
    stack           Python stacks of every process
    dashboard       all the dashboard shows, in one answer
"""

from __future__ import annotations

import collections
import dataclasses
import os
import threading
import time
from typing import Any

from shoal.control import procstat, stacks, trace
from shoal.scheduler import introspect
from shoal.scheduler.events import wall_clock_offset

_OPS = {"=": lambda a, b: str(a) == str(b), "!=": lambda a, b: str(a) != str(b)}

#: Default number of rows of a list (Ray's default limit).
DEFAULT_LIMIT = 100


def select(rows: list[dict], filters: list | None, limit: int | None) -> list[dict]:
    """Rows matching every filter ([key, "=" or "!=", value]), at most `limit`."""
    for key, op, value in filters or ():
        if op not in _OPS:
            raise ValueError(f"unsupported filter predicate {op!r} in {key}{op}{value} (use = or !=)")
        rows = [r for r in rows if _OPS[op](r.get(key), value)]
    return rows if limit is None else rows[: int(limit)]


class Answers:
    """Answers questions about one runtime (called from the endpoint's threads)."""

    def __init__(self, rt: Any):
        self.rt = rt
        self.proc = procstat.ProcStat()
        self._proc_lock = threading.Lock()
        self._handlers = {
            "status": self.status, "tasks": self.tasks, "actors": self.actors, "workers": self.workers,
            "objects": self.objects, "summary_tasks": self.summary_tasks, "memory": self.memory,
            "timeline": self.timeline, "stack": self.stack, "dashboard": self.dashboard,
            "failures": self.failures,
        }

    def __call__(self, question: str, args: dict) -> Any:
        handler = self._handlers.get(question)
        if handler is None:
            raise ValueError(f"unknown question {question!r}; known: {', '.join(sorted(self._handlers))}")
        if self.rt.closed:
            raise RuntimeError("the runtime is shutting down")
        return handler(**args)

    # -- the questions ------------------------------------------------------------

    def status(self) -> dict:
        rt, shell = self.rt, self.rt.shell
        with shell.lock:
            total = shell.sched.total_resources()
            free = shell.sched.available_resources()
            workers = collections.Counter(w.state.upper() for w in shell.sched.workers.values())
            n_actor_processes = len(shell.actors.by_wid)
            events = shell.events
            kept = len(events.ended) if events is not None else 0
            capacity = events.capacity if events is not None else 0
        actors = collections.Counter(a["state"] for a in introspect.actors(shell, rt.session, rt.node_id))
        st = rt.store.statistics()
        resources = {k: {"total": v, "used": round(v - free.get(k, 0.0), 4)} for k, v in total.items()}
        return {
            "pid": os.getpid(), "session": rt.session, "namespace": rt.namespace,
            "started_at": rt.started_at, "uptime_s": time.time() - rt.started_at,
            "resources": resources,
            "workers": {"total": sum(workers.values()) + n_actor_processes, "by_state": dict(workers),
                        "actor_processes": n_actor_processes},
            "tasks": introspect.task_counts(shell),
            "actors": dict(actors),
            "store": {
                "capacity_bytes": st.capacity_bytes, "used_bytes": st.bytes_in_use, "pinned_bytes": st.bytes_pinned,
                "objects": st.num_objects, "spilled_bytes": st.bytes_spilled, "spilled_objects": st.num_spilled,
                "fallback_objects": st.num_fallback,
            },
            "spilling": {"enabled": rt.spilling.enabled,
                         "folders": list(rt.spill_folders.paths) if rt.spill_folders is not None else []},
            "task_events": {"kept": kept, "capacity": capacity},
        }

    def tasks(self, filters: list | None = None, limit: int | None = DEFAULT_LIMIT) -> list[dict]:
        rt = self.rt
        return select(introspect.tasks(rt.shell, rt.session, rt.node_id), filters, limit)

    def actors(self, filters: list | None = None, limit: int | None = DEFAULT_LIMIT) -> list[dict]:
        rt = self.rt
        return select(introspect.actors(rt.shell, rt.session, rt.node_id), filters, limit)

    def workers(self, filters: list | None = None, limit: int | None = DEFAULT_LIMIT) -> list[dict]:
        """Worker and actor processes, with what each runs now and for how
        long, CPU % and resident memory."""
        rt, shell = self.rt, self.rt.shell
        rows = introspect.workers(shell, rt.node_id)
        with shell.lock:
            pid_of = {wid: h.pid for wid, h in shell.workers.items()}
        running = {pid_of.get(wid): r for wid, r in introspect.running(shell).items()}
        now = time.perf_counter()
        with self._proc_lock:
            usage = self.proc.sample([r["pid"] for r in rows if r["pid"]])
        for r in rows:
            name, task_id, since = running.get(r["pid"], (None, None, 0.0))
            r["current_task"] = name
            r["current_task_id"] = task_id
            r["running_s"] = round(now - since, 3) if name is not None and since else None
            r.update(usage.get(r["pid"], {"cpu_percent": None, "rss_bytes": None}))
        return select(rows, filters, limit)

    def objects(self, filters: list | None = None, limit: int | None = DEFAULT_LIMIT) -> list[dict]:
        from shoal.util.memory import memory_objects

        rows = []
        for o in memory_objects(self.rt):
            row = dataclasses.asdict(o)
            row["references"] = [list(r) for r in o.references]
            row["reference_type"] = ",".join(dict.fromkeys(t for t, _ in o.references)) or "-"
            rows.append(row)
        return select(rows, filters, limit)

    def summary_tasks(self) -> dict:
        """{function or method name: {state: count}} over the unfinished
        tasks and the ended ones kept."""
        out: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
        for t in self.tasks(limit=None):
            out[t["func_or_class_name"]][t["state"]] += 1
        return {name: dict(states) for name, states in sorted(out.items())}

    def memory(self, group_by: str = "holder", sort_by: str = "size", num_entries: int | None = None,
               stats_only: bool = False) -> str:
        from shoal.util.memory import memory_summary

        return memory_summary(group_by=group_by, sort_by=sort_by, num_entries=num_entries,
                              stats_only=stats_only)

    def timeline(self, limit: int | None = None, since_s: float | None = None) -> list[dict]:
        """Chrome trace events of the ended tasks kept (the last `limit`, or
        those that ended in the last `since_s` seconds)."""
        events, names = self._events(limit)
        if since_s is not None:
            cut = time.perf_counter() - since_s
            events = [e for e in events if e.ended >= cut]
        return trace.chrome_trace(events, names, wall_clock_offset(), os.getpid())

    def failures(self, limit: int = 20) -> list[dict]:
        """The last failed tasks, latest first, with their error text."""
        shell = self.rt.shell
        with shell.lock:
            failures = list(shell.events.failures) if shell.events is not None else []
        offset = wall_clock_offset()
        return [{"task_id": f.task_id.hex(), "name": f.name, "pid": f.pid, "ended_at": f.ended + offset,
                 "error": f.error} for f in reversed(failures[-limit:])]

    def stack(self) -> list[dict]:
        return stacks.all_stacks(self.rt.shell)

    def dashboard(self, window_s: float = 120.0, objects: int = 10) -> dict:
        """What the dashboard shows, in one answer: status, workers, actors,
        the largest objects, the ended tasks of the last `window_s` seconds
        per process, finishes per second, and the last failures."""
        events, names = self._events(None)
        now = time.perf_counter()
        offset = wall_clock_offset()
        recent = [e for e in events if e.ended >= now - window_s]
        per_second: dict[int, list[int]] = collections.defaultdict(lambda: [0, 0])
        for e in recent:
            per_second[int(now - e.ended)][e.state != "FINISHED"] += 1
        return {
            "now": now + offset,
            "status": self.status(),
            "workers": self.workers(limit=None),
            "actors": self.actors(limit=None),
            "objects": self.objects(limit=objects),
            "ended_per_second": [[-age, ok, bad] for age, (ok, bad) in sorted(per_second.items())],
            "recent": [{"name": e.name, "pid": e.pid, "start": e.started + offset, "end": e.ended + offset,
                        "state": e.state, "actor": e.actor_id is not None} for e in recent[-2000:]],
            "process_names": {str(pid): name for pid, name in names.items()},
            "failures": self.failures(limit=10),
        }

    # -- shared ---------------------------------------------------------------------

    def _events(self, limit: int | None) -> tuple[list, dict[int, str]]:
        """(the ended tasks kept, {pid: process name})."""
        shell = self.rt.shell
        with shell.lock:
            events = shell.events.snapshot(limit) if shell.events is not None else []
            by_wid = introspect.process_names(shell, os.getpid())
            names = {h.pid: by_wid[wid] for wid, h in shell.workers.items() if h.pid is not None and wid in by_wid}
        names[os.getpid()] = by_wid[0]
        return events, names
