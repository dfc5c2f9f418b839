"""Placement groups at Ray's path (ray.util.placement_group): bundles of
resources reserved together, for tasks and actors scheduled in them.

    pg = placement_group([{"CPU": 1}, {"CPU": 1}], strategy="PACK")
    ray.get(pg.ready())
    f.options(scheduling_strategy=PlacementGroupSchedulingStrategy(pg, 0)).remote()

On one machine every bundle is on the one node: PACK, SPREAD and
STRICT_PACK groups are placed once all their bundles fit at once (until
then they wait, with a warning), and a STRICT_SPREAD group of more than one
bundle can never be placed (it stays pending, as on a one-node Ray cluster).
Groups are made and removed in the driver.
"""

from __future__ import annotations

import os
from typing import Any

from shoal import objectref
from shoal.cluster import on_ray
from shoal.placement import STRATEGIES, PlacementGroup, PlacementGroupID
from shoal.remote_function import current_context

__all__ = [
    "PlacementGroup", "get_current_placement_group", "get_placement_group", "placement_group",
    "placement_group_table", "remove_placement_group",
]


def _driver(what: str) -> Any:
    ctx = current_context()
    if not hasattr(ctx, "create_placement_group"):
        raise RuntimeError(f"{what} works in the driver only (shoal's placement groups live in the driver's "
                           f"runtime); make the group there and pass it to the task")
    return ctx


def _check_bundles(bundles: Any) -> list[dict]:
    if not isinstance(bundles, list) or not bundles:
        raise ValueError('Bundles must be a non-empty list of resource dictionaries. For example: '
                         '`[{"CPU": 1.0}, {"GPU": 1.0}]`. Got '
                         f'{"empty list" if isinstance(bundles, list) else type(bundles).__name__} instead.')
    out = []
    for bundle in bundles:
        if not isinstance(bundle, dict) or not bundle or all(v == 0 for v in bundle.values()):
            raise ValueError(f"Bundles cannot be an empty dictionary or resources with only 0 values. "
                             f"Bundles: {bundles}")
        for k, v in bundle.items():
            if not isinstance(k, str) or isinstance(v, bool) or not isinstance(v, (int, float)) or v < 0:
                raise ValueError(f"a bundle maps resource names to amounts >= 0, not {k!r}: {v!r}")
        out.append({k: float(v) for k, v in bundle.items() if v})
    return out


@on_ray("placement_group")
def placement_group(bundles: list[dict], strategy: str = "PACK", name: str = "", lifetime: str | None = None,
                    _soft_target_node_id: str | None = None, bundle_label_selector: Any = None) -> PlacementGroup:
    """Reserve bundles of resources; returns the group at once (ready()
    says when it is placed).

    Args:
        bundles: a dict of resources per bundle, e.g. [{"CPU": 2}, {"GPU": 1}].
        strategy: "PACK", "SPREAD", "STRICT_PACK" or "STRICT_SPREAD".
        name: a name get_placement_group() finds it by ("" for none).
        lifetime: None, or "detached" (accepted: a group lives until it is
            removed or the runtime shuts down).
    Raises:
        ValueError: empty or all-zero bundles, an unknown strategy or
            lifetime, a name taken by a living group.
    """
    checked = _check_bundles(bundles)
    if strategy not in STRATEGIES:
        raise ValueError(f"Invalid placement group strategy {strategy}. Supported strategies are: "
                         f"{set(STRATEGIES)}.")
    if lifetime not in (None, "detached"):
        raise ValueError(f"Placement group `lifetime` argument must be either `None` or 'detached'. "
                         f"Got {lifetime}.")
    if not isinstance(name, str):
        raise TypeError(f"name must be a str, not {type(name).__name__}")
    ctx = _driver("placement_group()")
    gid = os.urandom(18).hex()
    ctx.create_placement_group(gid, checked, strategy, name, lifetime)
    return PlacementGroup(PlacementGroupID(gid), checked)


@on_ray("placement_group")
def remove_placement_group(placement_group: PlacementGroup) -> None:
    """Release the group's resources: its queued tasks fail with
    TaskPlacementGroupRemoved, its running tasks are killed (and fail the
    same way), its actors die (ActorDiedError), as in Ray."""
    if not isinstance(placement_group, PlacementGroup):
        raise TypeError(f"remove_placement_group() takes a PlacementGroup, not {type(placement_group).__name__}")
    _driver("remove_placement_group()").remove_placement_group(placement_group.id.hex())


@on_ray("placement_group")
def get_placement_group(placement_group_name: str) -> PlacementGroup:
    """The living group of that name (ValueError if there is none)."""
    for gid, info in _driver("get_placement_group()").placement_group_table().items():
        if info["name"] == placement_group_name and info["state"] != "REMOVED":
            return PlacementGroup(PlacementGroupID(gid), info["bundles"])
    raise ValueError(f"Failed to look up placement group with name: {placement_group_name}")


@on_ray("placement_group")
def placement_group_table(placement_group: PlacementGroup | None = None) -> dict:
    """Ray's table of a group (or of all groups, by id): its id, name,
    bundles, strategy, state (PENDING, CREATED or REMOVED), the node of
    each bundle and its scheduling stats."""
    ctx = _driver("placement_group_table()")
    table = ctx.placement_group_table()
    node = getattr(ctx, "node_id", "")
    rows = {gid: _row(gid, info, node) for gid, info in table.items()}
    if placement_group is None:
        return rows
    return rows.get(placement_group.id.hex(), {})


def _row(gid: str, info: dict, node: str) -> dict:
    placed = info["state"] == "CREATED" or (info["state"] == "REMOVED" and info["placed_after"] is not None)
    latency = round(info["placed_after"] * 1000, 3) if info["placed_after"] is not None else 0.0
    return {
        "placement_group_id": gid,
        "name": info["name"],
        "bundles": dict(enumerate(info["bundles"])),
        "bundles_to_node_id": {i: node for i in range(len(info["bundles"]))} if placed else {},
        "strategy": info["strategy"],
        "state": info["state"],
        "stats": {"end_to_end_creation_latency_ms": latency, "scheduling_latency_ms": latency,
                  "scheduling_attempt": 1, "highest_retry_delay_ms": 0.0,
                  "scheduling_state": "FINISHED" if placed else ("REMOVED" if info["state"] == "REMOVED"
                                                                 else "QUEUED")},
    }


@on_ray("placement_group")
def get_current_placement_group() -> PlacementGroup | None:
    """The group the running task or actor was scheduled in (None in the
    driver, or outside any group), as in Ray."""
    ctx = objectref.current()
    where = getattr(ctx, "placement", None)
    if not where:
        return None
    gid, _, _, bundles = where
    return PlacementGroup(PlacementGroupID(gid), [dict(b) for b in bundles])
