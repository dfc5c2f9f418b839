"""The placement groups' part of the scheduler's state machine (a mixin
of Scheduler, pure like the rest of it: events in, actions out).

A placed group holds the sum of its bundles' resources and adds them again
under Ray's names: f"{r}_group_{i}_{G}" for bundle i of group G and
f"{r}_group_{G}" for any of G's bundles. A task or actor in G asks for
those names instead of its own (group_shape), plus a little of BUNDLE,
which every bundle has: so it waits for G to be placed even when it needs
nothing else. Waiting groups are placed in order, before queued tasks and
actors, whenever resources come back.
"""

from __future__ import annotations

import collections

from shoal.scheduler.devices import UNIT

Shape = tuple  # as in state.py: ((resource name, amount in units), ...)

BUNDLE = "bundle"
BUNDLE_UNITS = 1000 * UNIT  # what each bundle has of BUNDLE
BUNDLE_ASK = UNIT // 1000  # what a task in a group asks of it (0.001)


def group_shape(shape: Shape, group: str, index: int = -1) -> Shape:
    """The shape a task (or actor) of `shape` asks for in bundle `index`
    of placement group `group` (-1: any of its bundles)."""
    suffix = f"_group_{group}" if index < 0 else f"_group_{index}_{group}"
    spec = {k + suffix: v for k, v in shape}
    spec[BUNDLE + suffix] = BUNDLE_ASK
    return tuple(sorted(spec.items()))


def _group_resources(gid: str, bundles: list) -> dict[str, int]:
    """Every resource placed group gid adds (units)."""
    out: dict[str, int] = collections.defaultdict(int)
    for i, bundle in enumerate(bundles):
        for k, v in (*bundle, (BUNDLE, BUNDLE_UNITS)):
            out[f"{k}_group_{i}_{gid}"] += v
            out[f"{k}_group_{gid}"] += v
    return dict(out)


class Group:
    """A placement group as the scheduler sees it."""

    __slots__ = ("gid", "bundles", "strategy", "name", "state", "never")

    def __init__(self, gid: str, bundles: list, strategy: str, name: str = ""):
        self.gid = gid
        self.bundles = bundles  #: a Shape per bundle
        self.strategy = strategy
        self.name = name
        self.state = "PENDING"  # CREATED once its resources are held | REMOVED
        self.never = False  # can never be placed here (it stays PENDING, as in Ray)

    def label(self) -> str:
        return f"{self.name!r} ({self.gid})" if self.name else self.gid


class PlacementGroups:
    """Scheduler's placement group events and decisions. Uses Scheduler's
    resources (total, available, gpus), tasks, workers and actors."""

    def create_group(self, gid: str, bundles: list, strategy: str, name: str = "") -> list:
        """A placement group of `bundles` (a Shape each): placed as soon as
        all of them fit at once, before tasks and actors waiting for the
        same resources; until then, and for good if it can never fit (or
        is STRICT_SPREAD with several bundles: one bundle per node, and
        this runtime is one node), it waits, and a warning says why."""
        from shoal.scheduler.state import Warn  # (state.py imports this module)

        g = self.groups[gid] = Group(gid, list(bundles), strategy, name)
        actions: list = []
        if strategy == "STRICT_SPREAD" and len(g.bundles) > 1:
            why = (f"STRICT_SPREAD puts each of its {len(g.bundles)} bundles on a different node, and this "
                   f"runtime is one node")
        else:
            why = self.why_infeasible(self._group_total(g))
        if why is not None:
            g.never = True
            actions.append(Warn(f"placement group {g.label()} can never be placed: {why}. It stays pending, as "
                                f"on a one-node Ray cluster: remove it with remove_placement_group()."))
            return actions
        self.group_queue.append(gid)
        self._place_groups(actions)
        if g.state == "PENDING":
            actions.append(Warn(
                f"placement group {g.label()} waits: its bundles need {self._describe(self._group_total(g))} "
                f"and {self._describe(self._plain(self.available))} is free now. It is placed when "
                f"running tasks and actors release enough."))
        return actions

    def remove_group(self, gid: str) -> list:
        """Remove a placement group, as Ray does: its queued tasks fail
        (TaskPlacementGroupRemoved), its running tasks' workers are killed
        (their tasks fail the same way, without retry) and its actors die;
        its resources go back."""
        from shoal.scheduler.state import FailTask, KillActor  # (state.py imports this module)

        g = self.groups.get(gid)
        if g is None or g.state == "REMOVED":
            return []
        placed = g.state == "CREATED"
        g.state = "REMOVED"
        if gid in self.group_queue:
            self.group_queue.remove(gid)
        actions: list = []
        detail = f"its placement group {g.label()} was removed"
        in_group = lambda shape: any(self._group_of(k) == gid for k, _ in shape)  # noqa: E731
        for t in list(self.tasks.values()):
            if not in_group(t.shape) or t.cancelled:
                continue
            if t.state in ("new", "waiting", "ready", "backoff"):
                t.cancelled = True
                self._forget(t)
                actions.append(FailTask(t, "pg_removed", detail))
            elif t.state == "assigned":
                self._fail_reasons[t.seq] = ("pg_removed", detail)
                actions += self.cancel(t.seq, force=True, recursive=True)
        for entry in list(self.actor_queue):
            if in_group(entry[1]):
                actions.append(KillActor(entry[0], detail))
        for actor_id, shape in list(self.actor_holds.items()):
            if in_group(shape) or in_group(self._living.get(actor_id, ())):
                actions.append(KillActor(actor_id, detail))
        if placed:
            for k, v in _group_resources(gid, g.bundles).items():
                self.total.pop(k, None)
                self.available.pop(k, None)
            for k, v in self._group_total(g):
                self.available[k] = self.available.get(k, 0) + v
            self.gpus.give(self._group_gpus.pop(gid, []))
        self._schedule_all(actions)
        return actions

    def group_state(self, gid: str) -> str | None:
        g = self.groups.get(gid)
        return None if g is None else g.state

    def _group_of(self, resource: str) -> str | None:
        """The placement group whose resource this is (None: not one)."""
        if "_group_" not in resource:
            return None
        gid = resource.rsplit("_", 1)[-1]
        return gid if gid in self.groups else None

    def _pending_group_resource(self, resource: str) -> bool:
        gid = self._group_of(resource)
        return gid is not None and self.groups[gid].state == "PENDING"

    def _doomed(self, shape: Shape, what: str) -> tuple[str, str] | None:
        """(kind, detail) of the failure of a task that can never run
        because its group was removed or it must run on another node."""
        for k, _ in shape:
            if k.startswith("node:") and k not in self.total:
                return ("unschedulable", f"{what} must run on node {k[5:]} (NodeAffinitySchedulingStrategy "
                                         f"with soft=False), which is not this runtime's node")
            gid = self._group_of(k)
            if gid is not None and self.groups[gid].state == "REMOVED":
                return ("pg_removed", f"its placement group {self.groups[gid].label()} was removed")
        return None

    def _plain(self, amounts: dict[str, int]) -> Shape:
        """amounts without placement groups' own resources (for messages)."""
        return tuple(sorted((k, v) for k, v in amounts.items() if self._group_of(k) is None))

    @staticmethod
    def _group_total(g: Group) -> Shape:
        total: dict[str, int] = collections.defaultdict(int)
        for bundle in g.bundles:
            for k, v in bundle:
                total[k] += v
        return tuple(sorted(total.items()))

    def _place_groups(self, actions: list) -> None:
        """Place waiting groups, in order, while the next one fits."""
        while self.group_queue:
            g = self.groups[self.group_queue[0]]
            need = self._group_total(g)
            if not self._fits_now(need):
                return
            self.group_queue.popleft()
            for k, v in need:
                self.available[k] -= v
            gpus = self.gpus.take(dict(need).get("GPU", 0))
            if gpus:
                self._group_gpus[g.gid] = gpus
            for k, v in _group_resources(g.gid, g.bundles).items():
                self.total[k] = self.total.get(k, 0) + v
                self.available[k] = self.available.get(k, 0) + v
            g.state = "CREATED"
            # Tasks and actors that waited for its bundles may run now.
            for w in list(self.workers.values()):
                if w.state == "idle":
                    self._fill_idle(w, actions)
            self._maybe_grow(actions)
