"""Task events as Chrome trace events (the format of ray.timeline()), which
chrome://tracing and Perfetto load.

Each worker and actor process is a row ("pid" in the trace is the OS pid,
named by a metadata event); each task or call is a complete event ("ph":
"X") from its start to its end, whose args say when it was submitted, how
long it waited, its arguments' and results' sizes and how it ended. The
driver's row marks each submission with an instant event.
"""

from __future__ import annotations

from shoal.scheduler.events import TaskEvent

#: Colours of chrome://tracing's palette, by how a task ended.
_COLOURS = {"FINISHED": "thread_state_running", "FAILED": "terrible", "FAILED_RETRYING": "bad",
            "CANCELLED": "grey"}


def chrome_trace(events: list[TaskEvent], names: dict[int, str], offset: float, driver_pid: int,
                 submits: bool = True) -> list[dict]:
    """Trace events for `events` (oldest first).

    Args:
        names: {pid: row name} of the processes ("worker (pid 12)", ...).
        offset: added to a time.perf_counter() value gives epoch seconds.
        driver_pid: the driver's row, where submissions are marked.
        submits: mark each submission on the driver's row.
    """
    out: list[dict] = []
    rows = {driver_pid: names.get(driver_pid, f"driver (pid {driver_pid})")}
    for ev in events:
        pid = ev.pid if ev.pid is not None else 0
        if pid not in rows:
            rows[pid] = names.get(pid) or (f"actor process (pid {pid})" if ev.actor_id else f"worker (pid {pid})")
        start_us = (ev.started + offset) * 1e6
        submitted_us = (ev.submitted + offset) * 1e6 if ev.submitted else None
        args = {
            "task_id": ev.task_id.hex(), "state": ev.state, "attempt": ev.attempt,
            "arg_bytes": ev.arg_bytes, "result_bytes": ev.result_bytes,
        }
        if ev.actor_id is not None:
            args["actor_id"] = ev.actor_id.hex()
        if submitted_us is not None:
            args["submitted_us"] = round(submitted_us, 3)
            args["waited_ms"] = round(max(0.0, ev.started - ev.submitted) * 1e3, 3)
        out.append({
            "cat": "task" if ev.actor_id is None else "actor_task", "name": ev.name, "ph": "X",
            "pid": pid, "tid": 0, "ts": round(start_us, 3), "dur": round(max(ev.duration, 0.0) * 1e6, 3),
            "cname": _COLOURS.get(ev.state, "thread_state_running"), "args": args,
        })
        if submits and submitted_us is not None:
            out.append({"cat": "submit", "name": f"submit {ev.name}", "ph": "i", "s": "t", "pid": driver_pid,
                        "tid": 0, "ts": round(submitted_us, 3), "args": {"task_id": ev.task_id.hex()}})
    for sort, (pid, name) in enumerate(sorted(rows.items(), key=lambda r: (r[0] != driver_pid, r[1]))):
        out.append({"name": "process_name", "ph": "M", "pid": pid, "tid": 0, "args": {"name": name}})
        out.append({"name": "process_sort_index", "ph": "M", "pid": pid, "tid": 0, "args": {"sort_index": sort}})
        out.append({"name": "thread_name", "ph": "M", "pid": pid, "tid": 0, "args": {"name": "tasks"}})
    return out
