"""Placement groups and scheduling strategies: the objects of Ray's API
(shoal.util.placement_group and shoal.util.scheduling_strategies export
them) and how a task's or actor's options turn into what it asks the
scheduler for.

On one machine, a placement group is a reservation: its bundles' resources
are held from the moment it is placed, and only tasks and actors scheduled
in it use them (the scheduler renames them, as Ray does: see
scheduler/state.py). "SPREAD" and "DEFAULT" mean the same here, and a node
affinity names this runtime's node or, with soft=False, makes the task
unschedulable.
"""

from __future__ import annotations

import abc
from typing import Any, NamedTuple

from shoal.objectref import _is_ray

from shoal.scheduler.devices import UNIT
from shoal.scheduler.state import group_shape

#: Ray's placement group strategies.
STRATEGIES = ("PACK", "SPREAD", "STRICT_PACK", "STRICT_SPREAD")


class PlacementGroupID:
    """The ID of a placement group (18 bytes, as Ray's)."""

    __slots__ = ("_hex",)

    def __init__(self, hex_id: str):
        self._hex = hex_id

    def hex(self) -> str:
        return self._hex

    def binary(self) -> bytes:
        return bytes.fromhex(self._hex)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, PlacementGroupID) and other._hex == self._hex

    def __hash__(self) -> int:
        return hash(self._hex)

    def __repr__(self) -> str:
        return f"PlacementGroupID({self._hex})"


class PlacementGroup(metaclass=abc.ABCMeta):
    """A handle to a placement group (Ray's ray.util.placement_group.PlacementGroup).
    Pickles; a copy in a task refers to the same group. On a Ray cluster
    (init(address=...)) groups are Ray's, and count as instances too."""

    @classmethod
    def __subclasshook__(cls, other: type):
        if cls is PlacementGroup and _is_ray(other, "PlacementGroup"):
            return True
        return NotImplemented

    def __init__(self, id: PlacementGroupID, bundle_cache: list[dict] | None = None):
        self.id = id
        self.bundle_cache = bundle_cache
        self._ready_ref = None

    @property
    def bundle_specs(self) -> list[dict]:
        """Each bundle's resources, e.g. [{"CPU": 1.0}, {"GPU": 1.0}]."""
        return [dict(b) for b in self.bundle_cache or []]

    @property
    def bundle_count(self) -> int:
        return len(self.bundle_cache or [])

    def is_empty(self) -> bool:
        return not self.bundle_cache

    def ready(self) -> Any:
        """An ObjectRef that resolves (to this group) once the group is
        placed; get() or wait() it. A task with no resources of its own
        that runs in the group, as in Ray."""
        if self._ready_ref is None:
            self._ready_ref = _ready_task().options(
                num_cpus=0, scheduling_strategy=PlacementGroupSchedulingStrategy(self)).remote(self)
        return self._ready_ref

    def wait(self, timeout_seconds: float | None = 30) -> bool:
        """Wait up to timeout_seconds (None: no limit) for the group to be
        placed; True if it is."""
        from shoal import api

        ready, _ = api.wait([self.ready()], timeout=timeout_seconds)
        return bool(ready)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, PlacementGroup) and other.id == self.id

    def __hash__(self) -> int:
        return hash(self.id)

    def __reduce__(self):
        return (PlacementGroup, (self.id, self.bundle_cache))

    def __repr__(self) -> str:
        return f"PlacementGroup({self.id.hex()}, {self.bundle_specs})"


_READY = None


def _ready_task():
    """The remote function behind PlacementGroup.ready() (made on first use)."""
    global _READY
    if _READY is None:
        from shoal.remote_function import RemoteFunction

        def placement_group_ready(pg):
            return pg

        _READY = RemoteFunction(placement_group_ready, {"max_retries": 0})
    return _READY


class PlacementGroupSchedulingStrategy:
    """Run in a placement group: in bundle placement_group_bundle_index
    (-1: any of them); with placement_group_capture_child_tasks, the tasks
    and actors this one creates without a strategy of their own go to the
    same group."""

    def __init__(self, placement_group: PlacementGroup, placement_group_bundle_index: int = -1,
                 placement_group_capture_child_tasks: bool | None = None):
        self.placement_group = placement_group
        self.placement_group_bundle_index = placement_group_bundle_index
        self.placement_group_capture_child_tasks = placement_group_capture_child_tasks


class NodeAffinitySchedulingStrategy:
    """Run on node node_id (hex); soft=True: elsewhere if it cannot. On one
    machine: this runtime's node runs it; another node runs nothing, so
    with soft=False the task fails with TaskUnschedulableError, as in Ray."""

    def __init__(self, node_id: str, soft: bool, _spill_on_unavailable: bool = False,
                 _fail_on_unavailable: bool = False):
        self.node_id = node_id
        self.soft = soft
        self._spill_on_unavailable = _spill_on_unavailable
        self._fail_on_unavailable = _fail_on_unavailable


class NodeLabelSchedulingStrategy:
    """Run on nodes whose labels match (accepted; the one node runs it)."""

    def __init__(self, hard: dict, *, soft: dict | None = None):
        self.hard = hard
        self.soft = soft


class _LabelExpression:
    def __init__(self, *values: str):
        self.values = list(values)


class In(_LabelExpression):
    pass


class NotIn(_LabelExpression):
    pass


class Exists(_LabelExpression):
    pass


class DoesNotExist(_LabelExpression):
    pass


class Placement(NamedTuple):
    """Where a task or actor asked to run: in a placement group (group set)
    or on a node (node_id set), or nothing special (both None)."""

    group: str | None = None
    bundle_index: int = -1
    capture: bool = False
    bundles: tuple = ()
    node_id: str | None = None
    soft: bool = True


def resolve(options: dict) -> Placement | None:
    """The placement that options (scheduling_strategy, or the older
    placement_group= form) ask for; None if they name none, so that a task
    in a capturing group puts its children there. Raises ValueError for
    what Ray refuses."""
    strategy = options.get("scheduling_strategy")
    pg = options.get("placement_group", "default")
    if strategy is None and pg not in ("default", None):
        strategy = PlacementGroupSchedulingStrategy(
            pg, options.get("placement_group_bundle_index", -1),
            options.get("placement_group_capture_child_tasks"))
    if strategy is None:
        return None if pg == "default" else Placement()
    if isinstance(strategy, str):
        if strategy not in ("DEFAULT", "SPREAD"):
            raise ValueError(f'Invalid scheduling_strategy value {strategy}. Valid values are ["DEFAULT" | '
                             f'"SPREAD" | PlacementGroupSchedulingStrategy | NodeAffinitySchedulingStrategy]')
        return Placement()
    if isinstance(strategy, PlacementGroupSchedulingStrategy):
        group = strategy.placement_group
        if not isinstance(group, PlacementGroup):
            raise ValueError(f"placement_group must be a PlacementGroup, not {type(group).__name__}")
        index = strategy.placement_group_bundle_index
        if isinstance(index, bool) or not isinstance(index, int) or index < -1 or (
                group.bundle_cache is not None and index >= group.bundle_count):
            raise ValueError(f"placement group bundle index {index} is invalid. Valid placement group indexes: "
                             f"0-{group.bundle_count}")
        return Placement(group.id.hex(), index, bool(strategy.placement_group_capture_child_tasks),
                         tuple(tuple(sorted(b.items())) for b in group.bundle_cache or ()))
    if isinstance(strategy, NodeAffinitySchedulingStrategy):
        return Placement(node_id=str(strategy.node_id), soft=bool(strategy.soft))
    if isinstance(strategy, NodeLabelSchedulingStrategy):
        return Placement()
    raise ValueError(f"Invalid scheduling_strategy value {strategy!r}. Valid values are [\"DEFAULT\" | \"SPREAD\" | "
                     f"PlacementGroupSchedulingStrategy | NodeAffinitySchedulingStrategy]")


def place(shape: tuple, placement: Placement | None, ctx: Any) -> tuple[tuple, tuple | None]:
    """(the shape to ask the scheduler for, the placement a worker learns)
    for a task or actor of `shape` submitted from `ctx`. A task that names
    no placement inherits its parent's group if that group captures its
    children."""
    if placement is None:
        inherited = getattr(ctx, "placement", None)
        if not inherited or not inherited[2]:
            return shape, None
        group, _, _, bundles = inherited
        placement = Placement(group, -1, True, bundles)
    if placement.group is not None:
        spec = (placement.group, placement.bundle_index, placement.capture, placement.bundles)
        return group_shape(shape, placement.group, placement.bundle_index), spec
    if placement.node_id is not None and not placement.soft and placement.node_id != getattr(ctx, "node_id", None):
        return tuple(sorted((*shape, ("node:" + placement.node_id, UNIT)))), None
    return shape, None
