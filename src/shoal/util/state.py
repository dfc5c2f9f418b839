"""What the runtime is doing, with Ray's state API names
(ray.util.state): list_actors, list_tasks, list_workers, list_nodes,
get_actor, summarize_tasks. Each entry is a dict with Ray's field names,
whose fields also read as attributes (row["state"] or row.state), as Ray's
entries do.

Call these from the driver (the process that owns the runtime). Tasks are
the unfinished ones, then those that ended lately (the task events keep the
last 10,000; SHOAL_TASK_EVENTS), latest first, with Ray's states
(FINISHED, FAILED, ...) and their duration and sizes.
"""

from __future__ import annotations

import collections
from typing import Any

from shoal import api, config, objectref
from shoal.cluster import on_ray
from shoal.scheduler import introspect

__all__ = ["list_actors", "list_tasks", "list_workers", "list_nodes", "get_actor", "summarize_tasks"]

_OPS = {"=": lambda a, b: str(a) == str(b), "!=": lambda a, b: str(a) != str(b)}


def _runtime():
    ctx = objectref.current()
    if ctx is None or not hasattr(ctx, "shell"):
        raise RuntimeError("the state API is available in the driver of a running (non-local) runtime")
    return ctx


class Row(dict):
    """One entry: a dict whose fields also read as attributes."""

    def __getattr__(self, name: str) -> Any:
        try:
            return self[name]
        except KeyError:
            raise AttributeError(f"no field {name!r} (fields: {sorted(self)})") from None


def _select(rows: list[dict], filters: list | None, limit: int) -> list[Row]:
    """Ray's filters: [(key, "=" or "!=", value), ...]; keys and states
    match in any case, as in Ray."""
    for key, op, value in filters or ():
        if op not in _OPS:
            raise ValueError(f"unsupported filter predicate {op!r} (use '=' or '!=')")
        key = key.lower()
        if key == "state" and isinstance(value, str):
            value = value.upper()
        rows = [r for r in rows if _OPS[op](r.get(key), value)]
    return [Row(r) for r in rows[:limit]]


@on_ray("state")
def list_actors(filters: list | None = None, limit: int = 100, **_: Any) -> list[dict]:
    """The runtime's actors (alive, pending, restarting and dead)."""
    rt = _runtime()
    return _select(introspect.actors(rt.shell, rt.session, rt.node_id), filters, limit)


@on_ray("state")
def get_actor(id: str, **_: Any) -> dict | None:  # noqa: A002 - Ray's parameter name
    """One actor by its hex id (None if there is no such actor)."""
    rows = list_actors(filters=[("actor_id", "=", id)], limit=1)
    return rows[0] if rows else None


@on_ray("state")
def list_tasks(filters: list | None = None, limit: int = 100, **_: Any) -> list[dict]:
    """Unfinished tasks and actor calls, then the ended ones kept."""
    rt = _runtime()
    return _select(introspect.tasks(rt.shell, rt.session, rt.node_id), filters, limit)


@on_ray("state")
def list_workers(filters: list | None = None, limit: int = 100, **_: Any) -> list[dict]:
    """The worker and actor processes."""
    rt = _runtime()
    return _select(introspect.workers(rt.shell, rt.node_id), filters, limit)


@on_ray("state")
def list_nodes(filters: list | None = None, limit: int = 100, **_: Any) -> list[dict]:
    """The one node (this machine)."""
    rt = _runtime()
    row = {"node_id": rt.node_id, "node_ip": config.NODE_IP_ADDRESS, "state": "ALIVE", "is_head_node": True,
           "resources_total": api.cluster_resources()}
    return _select([row], filters, limit)


@on_ray("state")
def summarize_tasks(**_: Any) -> dict:
    """{function name: {state: count}} over the unfinished tasks and the ended ones kept."""
    summary: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
    for t in list_tasks(limit=1 << 30):
        summary[t["func_or_class_name"]][t["state"]] += 1
    return {name: dict(states) for name, states in summary.items()}
