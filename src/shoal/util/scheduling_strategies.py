"""Scheduling strategies at Ray's path (ray.util.scheduling_strategies):
PlacementGroupSchedulingStrategy, NodeAffinitySchedulingStrategy,
NodeLabelSchedulingStrategy and its label expressions. "DEFAULT" and
"SPREAD" are given as strings; on one machine they mean the same."""

from shoal.placement import (
    DoesNotExist, Exists, In, NodeAffinitySchedulingStrategy, NodeLabelSchedulingStrategy, NotIn,
    PlacementGroupSchedulingStrategy,
)

__all__ = [
    "DoesNotExist", "Exists", "In", "NodeAffinitySchedulingStrategy", "NodeLabelSchedulingStrategy", "NotIn",
    "PlacementGroupSchedulingStrategy",
]
