"""Placement groups: the scheduler's decisions alone (no processes), then
Ray's API at Ray's paths (shoal.util.placement_group,
shoal.util.scheduling_strategies) end to end."""

from __future__ import annotations

import os
import time

import pytest

from shoal.scheduler.state import (
    Dispatch, FailTask, KillActor, Scheduler, StartWorker, Task, Warn, group_shape, make_shape,
)

pytestmark = pytest.mark.timeout(120)

CPU1 = make_shape({"CPU": 1})
G1, G2 = "a1" * 18, "b2" * 18


def started(cpus=2, **resources):
    s = Scheduler({"CPU": cpus, **resources}, target_workers=int(cpus))
    for a in s.start():
        assert type(a) is StartWorker
        s.worker_started(a.worker)
    s.check()
    return s


def task(seq, shape):
    return Task(seq, seq.to_bytes(16, "little"), b"f", shape, 3, payload=None, name=f"t{seq}")


def kinds(actions):
    return [type(a).__name__ for a in actions]


# -- the state machine ---------------------------------------------------------------


def test_a_placed_group_holds_its_bundles_for_its_own_tasks():
    s = started(2)
    assert kinds(s.create_group(G1, [CPU1, CPU1], "PACK")) == []
    assert s.group_state(G1) == "CREATED"
    assert s.available_resources() == {}  # both CPUs reserved, the group's own names hidden
    s.check()
    # A task outside the group waits; one in bundle 0 runs on the reservation.
    assert kinds(s.submit(task(1, CPU1))) == []
    actions = s.submit(task(2, group_shape(CPU1, G1, 0)))
    assert [(type(a), a.task.seq) for a in actions if type(a) is Dispatch] == [(Dispatch, 2)]
    s.check()
    # Bundle 0 is taken: a second task for it waits, one for any bundle runs.
    assert not [a for a in s.submit(task(3, group_shape(CPU1, G1, 0))) if type(a) is Dispatch]
    assert [a.task.seq for a in s.submit(task(4, group_shape(CPU1, G1, -1))) if type(a) is Dispatch] == [4]
    s.check()


def test_a_group_that_does_not_fit_waits_with_a_warning_and_is_placed_first():
    s = started(2)
    s.submit(task(1, CPU1))
    s.submit(task(2, CPU1))
    actions = s.create_group(G1, [CPU1], "PACK")
    assert kinds(actions) == ["Warn"] and "waits" in actions[0].text and "1 CPU" in actions[0].text
    assert s.group_state(G1) == "PENDING"
    s.submit(task(3, CPU1))  # waits too, after the group
    s.check()
    # The first CPU that comes back goes to the group, not to the queued task
    # (whose worker kept its lease for it otherwise).
    assert not [a for a in s.task_finished(1, 1, 0.1) if type(a) is Dispatch]
    assert s.group_state(G1) == "CREATED" and s.tasks[3].state == "ready"
    s.check()
    assert [a.task.seq for a in s.task_finished(2, 2, 0.1) if type(a) is Dispatch] == [3]
    s.check()


def test_strict_spread_of_several_bundles_can_never_be_placed_on_one_node():
    s = started(4)
    actions = s.create_group(G1, [CPU1, CPU1], "STRICT_SPREAD")
    assert kinds(actions) == ["Warn"] and "different node" in actions[0].text
    assert s.group_state(G1) == "PENDING"
    assert s.available_resources() == {"CPU": 4}  # nothing reserved
    # One bundle is fine, as in Ray.
    assert kinds(s.create_group(G2, [CPU1], "STRICT_SPREAD")) == [] and s.group_state(G2) == "CREATED"
    # More than the machine has: never, whatever the strategy.
    assert "can never" in s.create_group("c3" * 18, [make_shape({"CPU": 8})], "PACK")[0].text
    # A task in a pending group does not warn that it is infeasible: the group may come.
    assert not [a for a in s.submit(task(1, group_shape(CPU1, "c3" * 18))) if type(a) is Warn]
    s.check()


def test_removing_a_group_fails_its_tasks_kills_its_actors_and_frees_its_resources():
    s = started(2)
    s.create_group(G1, [CPU1, CPU1], "PACK")
    s.submit(task(1, group_shape(CPU1, G1, 0)))  # runs
    s.submit(task(2, group_shape(CPU1, G1, 0)))  # waits for bundle 0
    s.place_actor(b"actor", group_shape(CPU1, G1, 1), group_shape(CPU1, G1, 1))
    s.check()
    actions = s.remove_group(G1)
    failed = {a.task.seq: a.kind for a in actions if type(a) is FailTask}
    assert failed == {2: "pg_removed"}
    assert [a.actor_id for a in actions if type(a) is KillActor] == [b"actor"]
    assert any(type(a).__name__ == "CancelRunning" and a.force for a in actions)  # task 1's worker is killed
    # Its worker dies: task 1 fails as removed, not retried.
    died = s.worker_died(1)
    assert [(a.task.seq, a.kind) for a in died if type(a) is FailTask] == [(1, "pg_removed")]
    s.actor_gone(b"actor")
    assert s.available_resources() == {"CPU": 2}
    # Later tasks for it fail at once.
    assert [a.kind for a in s.submit(task(3, group_shape(CPU1, G1))) if type(a) is FailTask] == ["pg_removed"]
    s.check()


def test_a_node_that_is_not_this_one_makes_a_task_unschedulable():
    s = started(1)
    actions = s.submit(task(1, tuple(sorted((*CPU1, ("node:ab12", 10000))))))
    assert [a.kind for a in actions if type(a) is FailTask] == ["unschedulable"]
    s.check()


# -- the API -------------------------------------------------------------------------


def where():
    import shoal
    from shoal.util.placement_group import get_current_placement_group

    pg = get_current_placement_group()
    ctx = shoal.get_runtime_context()
    return (pg.id.hex() if pg else None), ctx.get_assigned_resources(), ctx.get_placement_group_id()


def test_placement_group_api_at_rays_paths(ray):
    from shoal.util.placement_group import (
        get_placement_group, placement_group, placement_group_table, remove_placement_group,
    )
    from shoal.util.scheduling_strategies import PlacementGroupSchedulingStrategy

    assert ray.util.placement_group is placement_group
    pg = placement_group([{"CPU": 1}, {"CPU": 1}], strategy="PACK", name="pair")
    assert ray.get(pg.ready(), timeout=30) == pg
    assert pg.wait(10) and pg.bundle_count == 2 and pg.bundle_specs == [{"CPU": 1.0}, {"CPU": 1.0}]
    row = placement_group_table(pg)
    assert row["state"] == "CREATED" and row["strategy"] == "PACK" and row["name"] == "pair"
    assert row["bundles"] == {0: {"CPU": 1.0}, 1: {"CPU": 1.0}}
    assert set(row["bundles_to_node_id"].values()) == {ray.get_runtime_context().get_node_id()}
    assert pg.id.hex() in placement_group_table()
    assert get_placement_group("pair") == pg
    assert "CPU" not in ray.available_resources()  # reserved
    remote_where = ray.remote(where)
    inside = ray.get(remote_where.options(
        scheduling_strategy=PlacementGroupSchedulingStrategy(pg, 1)).remote(), timeout=30)
    assert inside == (pg.id.hex(), {"CPU": 1.0}, pg.id.hex())
    legacy = ray.get(remote_where.options(placement_group=pg, placement_group_bundle_index=0).remote(), timeout=30)
    assert legacy[0] == pg.id.hex()
    assert ray.get(remote_where.options(num_cpus=0).remote(), timeout=30) == (None, {}, None)
    with pytest.raises(ValueError, match="bundle index 5 is invalid"):
        remote_where.options(scheduling_strategy=PlacementGroupSchedulingStrategy(pg, 5)).remote()
    remove_placement_group(pg)
    assert placement_group_table(pg)["state"] == "REMOVED"
    with pytest.raises(ValueError, match="Failed to look up placement group"):
        get_placement_group("pair")


def test_bundle_and_strategy_checks_with_rays_messages(ray):
    from shoal.util.placement_group import placement_group

    with pytest.raises(ValueError, match="non-empty list"):
        placement_group([])
    with pytest.raises(ValueError, match="empty dictionary or resources with only 0"):
        placement_group([{"CPU": 0}])
    with pytest.raises(ValueError, match="Invalid placement group strategy"):
        placement_group([{"CPU": 1}], strategy="TIGHT")
    with pytest.raises(ValueError, match="lifetime"):
        placement_group([{"CPU": 1}], lifetime="forever")


def test_child_tasks_are_captured_only_when_asked(ray):
    from shoal.util.placement_group import placement_group
    from shoal.util.scheduling_strategies import PlacementGroupSchedulingStrategy

    pg = placement_group([{"CPU": 2}])
    assert pg.wait(30)
    remote_where = ray.remote(where)

    @ray.remote(num_cpus=0)
    def parent():
        return ray.get(remote_where.options(num_cpus=1).remote())

    captured = ray.get(parent.options(scheduling_strategy=PlacementGroupSchedulingStrategy(
        pg, placement_group_capture_child_tasks=True)).remote(), timeout=30)
    assert captured[0] == pg.id.hex()
    # Without capture the child runs outside the group, where no CPU is
    # free (the group holds both): it would wait forever, so give it none.
    @ray.remote(num_cpus=0)
    def free_parent():
        return ray.get(remote_where.options(num_cpus=0).remote())

    free = ray.get(free_parent.options(scheduling_strategy=PlacementGroupSchedulingStrategy(pg)).remote(),
                   timeout=30)
    assert free[0] is None


def sleeper(path):
    with open(path, "w") as f:
        f.write(str(os.getpid()))
    time.sleep(600)  # work that would outlive the test: the removal kills it


def test_removal_fails_running_and_queued_tasks_and_kills_actors(ray, tmp_path):
    from shoal.util.placement_group import placement_group, remove_placement_group
    from shoal.util.scheduling_strategies import PlacementGroupSchedulingStrategy

    pg = placement_group([{"CPU": 1}, {"CPU": 1}])
    assert pg.wait(30)
    in_bundle = lambda i: PlacementGroupSchedulingStrategy(pg, i)  # noqa: E731
    started_file = tmp_path / "started"
    running = ray.remote(sleeper).options(scheduling_strategy=in_bundle(0), num_cpus=1).remote(str(started_file))
    queued = ray.remote(sleeper).options(scheduling_strategy=in_bundle(0), num_cpus=1).remote("/dev/null")

    @ray.remote(num_cpus=1)
    class Pinger:
        def ping(self):
            return "pong"

    actor = Pinger.options(scheduling_strategy=in_bundle(1)).remote()
    assert ray.get(actor.ping.remote(), timeout=30) == "pong"
    deadline = time.monotonic() + 30
    while not started_file.exists():  # the file appears when the task runs (polled: a cross-process event)
        assert time.monotonic() < deadline, "the task in the group never started"
        ray.wait([running], timeout=0.05)
    remove_placement_group(pg)
    for ref in (running, queued):
        with pytest.raises(ray.exceptions.TaskPlacementGroupRemoved, match="placement group"):
            ray.get(ref, timeout=30)
    with pytest.raises(ray.exceptions.ActorDiedError):
        ray.get(actor.ping.remote(), timeout=30)
    # Its CPUs are back.
    assert ray.get(ray.remote(lambda: 1).remote(), timeout=30) == 1
    with pytest.raises(ray.exceptions.TaskPlacementGroupRemoved):
        ray.get(ray.remote(where).options(scheduling_strategy=in_bundle(0)).remote(), timeout=30)


def test_waiting_and_infeasible_groups_warn_and_stay_pending(ray):
    from shoal.util.placement_group import placement_group, placement_group_table, remove_placement_group

    holder = placement_group([{"CPU": 2}])
    assert holder.wait(30)
    with pytest.warns(RuntimeWarning, match="waits"):
        waiting = placement_group([{"CPU": 1}])
    assert not waiting.wait(0.2) and placement_group_table(waiting)["state"] == "PENDING"
    with pytest.warns(RuntimeWarning, match="different node"):
        spread = placement_group([{"CPU": 0.5}, {"CPU": 0.5}], strategy="STRICT_SPREAD")
    remove_placement_group(holder)
    assert waiting.wait(30)  # placed once the first group's CPUs came back
    assert not spread.wait(0.2)
    remove_placement_group(spread)
    remove_placement_group(waiting)


def test_strategies_with_rays_meaning(ray):
    from shoal.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    f = ray.remote(where)
    node = ray.get_runtime_context().get_node_id()
    for strategy in ("DEFAULT", "SPREAD", NodeAffinitySchedulingStrategy(node, soft=False),
                     NodeAffinitySchedulingStrategy("ab" * 28, soft=True)):
        assert ray.get(f.options(scheduling_strategy=strategy).remote(), timeout=30)[1] == {"CPU": 1.0}
    with pytest.raises(ray.exceptions.TaskUnschedulableError, match="not this runtime's node"):
        ray.get(f.options(scheduling_strategy=NodeAffinitySchedulingStrategy("ab" * 28, soft=False)).remote(),
                timeout=30)
    with pytest.raises(ValueError, match="Invalid scheduling_strategy"):
        f.options(scheduling_strategy="FASTEST").remote()
