"""Snapshots of the runtime's actors, tasks and workers as plain dicts, with
the field names of Ray's state API (ray.util.state). Read under the shell's
lock; nothing here changes state."""

from __future__ import annotations

import collections

from shoal.scheduler.events import STATUS_NAMES as _STATUS_NAMES
from shoal.scheduler.state import shape_amounts as _resources

_ACTOR_STATES = {
    "placing": "PENDING_CREATION", "starting": "PENDING_CREATION", "constructing": "PENDING_CREATION",
    "alive": "ALIVE", "dead": "DEAD",
}
_TASK_STATES = {
    "new": "PENDING_ARGS_AVAIL", "waiting": "PENDING_ARGS_AVAIL", "ready": "PENDING_NODE_ASSIGNMENT",
    "assigned": "SUBMITTED_TO_WORKER", "backoff": "PENDING_NODE_ASSIGNMENT",
}


def actors(shell, job_id: str, node_id: str) -> list[dict]:
    with shell.lock:
        out = []
        for a in [*shell.actors.retired, *shell.actors.actors.values()]:
            h = shell.workers.get(a.wid) if a.wid is not None else None
            state = _ACTOR_STATES.get(a.state, a.state.upper())
            if a.state == "placing" and a.restarts:
                state = "RESTARTING"
            out.append({
                "actor_id": a.actor_id.hex(), "class_name": a.spec.class_name, "state": state,
                "name": a.name or "", "ray_namespace": a.namespace, "job_id": job_id, "node_id": node_id,
                "pid": h.pid if h is not None else None, "is_detached": a.keep and a.name is None,
                "required_resources": _resources(a.placing), "num_restarts": a.restarts,
                "death_cause": str(a.cause) if a.state == "dead" and a.cause is not None else None,
                "pending_calls": len(a.queue) + len(a.inflight),
            })
        return out


def tasks(shell, job_id: str, node_id: str, finished: bool = True) -> list[dict]:
    """Unfinished tasks and actor calls, then (finished) the ended ones the
    task events keep, latest first."""
    with shell.lock:
        out = []
        for t in shell.sched.tasks.values():
            w = shell.sched.workers.get(t.worker) if t.worker is not None else None
            running = w is not None and w.queue and w.queue[0] is t
            h = shell.workers.get(t.worker) if t.worker is not None else None
            out.append({
                "task_id": t.task_id.hex(), "name": t.name, "func_or_class_name": t.name,
                "type": "NORMAL_TASK", "job_id": job_id, "node_id": node_id,
                "state": "RUNNING" if running else _TASK_STATES.get(t.state, t.state.upper()),
                "worker_pid": h.pid if running and h is not None else None,
                "attempt_number": t.attempts, "required_resources": _resources(t.shape),
            })
        for actor in dict.fromkeys(shell.calls.values()):
            # In flight, the first max_concurrency calls run (the process
            # starts them in the order they were sent); the rest wait there,
            # which Ray calls waiting for ordering or concurrency too.
            limit = max(1, getattr(actor.spec, "max_concurrency", 1) or 1)
            states = [(c, "RUNNING" if i < limit else "PENDING_ACTOR_TASK_ORDERING_OR_CONCURRENCY")
                      for i, c in enumerate(actor.inflight.values())]
            states += [(c, "PENDING_ACTOR_TASK_ORDERING_OR_CONCURRENCY") for c in actor.queue]
            for line in actor.held.values():  # the first waits for its arguments, the rest for it
                states += [(c, "PENDING_ARGS_AVAIL" if c.missing else "PENDING_ACTOR_TASK_ORDERING_OR_CONCURRENCY")
                           for c in line]
            for call, state in states:
                out.append({
                    "task_id": call.spec.task_id.hex(), "name": call.spec.name,
                    "func_or_class_name": call.spec.name, "type": "ACTOR_TASK", "job_id": job_id,
                    "node_id": node_id, "actor_id": actor.actor_id.hex(), "state": state,
                    "attempt_number": call.attempts, "required_resources": {},
                })
        if finished and shell.events is not None:
            out += [_ended_row(ev, job_id, node_id) for ev in reversed(shell.events.snapshot())]
        return out


def _ended_row(ev, job_id: str, node_id: str) -> dict:
    return {
        "task_id": ev.task_id.hex(), "name": ev.name, "func_or_class_name": ev.name,
        "type": "ACTOR_TASK" if ev.actor_id is not None else "NORMAL_TASK", "job_id": job_id,
        "node_id": node_id, "state": ev.state, "worker_pid": ev.pid, "attempt_number": ev.attempt,
        "actor_id": ev.actor_id.hex() if ev.actor_id is not None else None,
        "duration_s": ev.duration, "arg_bytes": ev.arg_bytes, "result_bytes": ev.result_bytes,
    }


def running(shell) -> dict[int, tuple[str, str, float]]:
    """{process id: (task or call name, task id hex, since)} of what each
    worker and actor runs now; since: time.perf_counter() at which it began
    at the earliest (its submission or the end of the task before it on that
    process, as far as the driver has read; 0.0 without task events)."""
    with shell.lock:
        out = {}
        for wid, w in shell.sched.workers.items():
            if w.queue and w.state in ("busy", "blocked"):
                t = w.queue[0]
                h = shell.workers.get(wid)
                out[wid] = (t.name, t.task_id.hex(), max(t.submitted, h.last_end if h is not None else 0.0))
        for actor in shell.actors.actors.values():
            if actor.inflight and actor.wid is not None:
                call = next(iter(actor.inflight.values()))
                h = shell.workers.get(actor.wid)
                since = max(call.submitted, h.last_end if h is not None else 0.0)
                out[actor.wid] = (call.spec.name, call.spec.task_id.hex(), since)
        return out


def task_counts(shell) -> dict[str, int]:
    """{Ray's task state: count} of unfinished tasks and calls, and of the
    ended ones since start (FINISHED, FAILED...)."""
    counts: dict[str, int] = {}
    with shell.lock:  # counted, not listed: a poller must not hold the lock for long (10k tasks: ~0.5 ms)
        raw = collections.Counter(t.state for t in shell.sched.tasks.values())
        running = sum(1 for w in shell.sched.workers.values() if w.queue and w.state in ("busy", "blocked"))
        queued_calls = sum(len(a.queue) for a in shell.actors.actors.values())
        sent_calls = sum(len(a.inflight) for a in shell.actors.actors.values())
    for state, n in raw.items():
        name = _TASK_STATES.get(state, state.upper())
        counts[name] = counts.get(name, 0) + n
    if running:
        counts["RUNNING"] = running
        left = counts.pop("SUBMITTED_TO_WORKER", 0) - running  # the heads of busy workers' queues run
        if left > 0:
            counts["SUBMITTED_TO_WORKER"] = left
    if queued_calls:
        counts["PENDING_ACTOR_TASK_ORDERING_OR_CONCURRENCY"] = queued_calls
    if sent_calls:
        counts["SUBMITTED_TO_WORKER"] = counts.get("SUBMITTED_TO_WORKER", 0) + sent_calls
    with shell.lock:
        if shell.events is not None:
            for status, n in enumerate(shell.events.totals):
                if n:
                    name = _STATUS_NAMES[status]
                    counts[name] = counts.get(name, 0) + n
    return counts


def workers(shell, node_id: str) -> list[dict]:
    with shell.lock:
        out = []
        for wid, h in shell.workers.items():
            actor = shell.actors.by_wid.get(wid)
            w = shell.sched.workers.get(wid)
            out.append({
                "worker_id": f"{wid:056x}", "pid": h.pid, "node_id": node_id, "is_alive": True,
                "worker_type": "WORKER", "actor_id": actor.actor_id.hex() if actor is not None else None,
                "state": (w.state.upper() if w is not None else "ACTOR"),
            })
        return out


def process_names(shell, driver_pid: int) -> dict[int, str]:
    """{holder id: who it is} for the driver and every live worker:
    "driver (pid N)", "worker (pid N)", "actor Class name (pid N)"."""
    names = {0: f"driver (pid {driver_pid})"}
    for wid, h in shell.workers.items():
        actor = shell.actors.by_wid.get(wid)
        if actor is None:
            names[wid] = f"worker (pid {h.pid})"
        else:
            label = actor.spec.class_name + (f" {actor.name!r}" if actor.name else "")
            names[wid] = f"actor {label} (pid {h.pid})"
    return names


def references(shell, driver_pid: int) -> dict[bytes, list[tuple[str, str]]]:
    """{oid: [(reference type, holder)]} for every object the runtime's
    reference table tracks, with Ray's reference types: LOCAL_REFERENCE (a
    process holds a ref), USED_BY_PENDING_TASK (an argument of a task not
    finished), CAPTURED_IN_OBJECT (a stored object contains a ref to it)."""
    with shell.lock:
        names = process_names(shell, driver_pid)
        refs = shell.refs
        out: dict[bytes, list[tuple[str, str]]] = {}
        for holder, oids in refs.held_by.items():
            who = names.get(holder, f"process {holder} (gone)")
            for oid in oids:
                out.setdefault(oid, []).append(("LOCAL_REFERENCE", who))
        for seq, oids in refs.task_args.items():
            task = shell.sched.tasks.get(seq)
            if task is not None:
                who = f"task {task.name} (pending)"
            else:
                actor = shell.calls.get(seq)
                who = f"call to actor {actor.spec.class_name} (pending)" if actor is not None else "a pending task"
            for oid in oids:
                out.setdefault(oid, []).append(("USED_BY_PENDING_TASK", who))
        for container, oids in refs.contains.items():
            who = f"object {container.hex()} (contains a ref)"
            for oid in oids:
                out.setdefault(oid, []).append(("CAPTURED_IN_OBJECT", who))
        return out
