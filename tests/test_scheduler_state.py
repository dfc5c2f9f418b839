"""The scheduler state machine alone: events in, actions out; no processes."""

from __future__ import annotations

import pytest

from shoal.scheduler.state import (
    CancelQueued, CancelRunning, Dispatch, FailTask, Scheduler, StartWorker, Task, Warn, make_shape,
)

pytestmark = pytest.mark.timeout(30)

CPU1 = make_shape({"CPU": 1})


def task(seq, shape=CPU1, fn=b"f", retries=3):
    return Task(seq, seq.to_bytes(16, "little"), fn, shape, retries, payload=None, name=f"t{seq}")


def started(cpus=2, target=None, max_workers=1024, **kw):
    """A scheduler with `target` (default: one per CPU) started workers."""
    target = cpus if target is None else target
    s = Scheduler({"CPU": cpus, **kw}, target_workers=target, max_workers=max_workers)
    actions = s.start()
    assert [type(a) for a in actions] == [StartWorker] * target
    for a in actions:
        s.worker_started(a.worker)
    s.check()
    return s


def short_known():
    """One worker; the scheduler has learned that function b"short" is short."""
    s = started(1)
    s.submit(task(1, fn=b"short"))
    s.task_finished(1, 1, 1e-6)
    return s


def dispatched(actions):
    return [(a.worker, a.task.seq) for a in actions if type(a) is Dispatch]


def test_tasks_go_to_idle_workers_then_queue():
    s = started(2)
    assert dispatched(s.submit(task(1))) == [(1, 1)]
    assert dispatched(s.submit(task(2))) == [(2, 2)]
    assert dispatched(s.submit(task(3))) == []  # both busy, function unknown: no prefetch
    assert s.available_resources() == {}
    s.check()
    assert dispatched(s.task_finished(1, 1, 0.5)) == [(1, 3)]
    s.check()
    assert dispatched(s.task_finished(1, 3, 0.5)) == []
    assert s.available_resources() == {"CPU": 1}
    s.check()


def test_short_functions_are_prefetched_long_ones_not():
    s = started(1)
    s.submit(task(1, fn=b"short"))
    s.task_finished(1, 1, 10e-6)  # now known to be short
    s.submit(task(2, fn=b"short"))
    assert dispatched(s.submit(task(3, fn=b"short"))) == [(1, 3)]  # queued behind 2 on the worker
    s.check()
    s.submit(task(4, fn=b"long"))
    s.task_finished(1, 2, 10e-6)
    s.task_finished(1, 3, 10e-6)
    s.task_finished(1, 4, 2.0)
    s.submit(task(5, fn=b"long"))
    assert dispatched(s.submit(task(6, fn=b"long"))) == []  # not behind a long task
    s.check()


def test_dependencies_hold_tasks_until_sealed():
    s = started(2)
    dep = b"x" * 20
    assert s.submit(task(1), unsealed=[dep]) == []
    assert s.tasks[1].state == "waiting"
    assert dispatched(s.object_sealed(dep)) == [(1, 1)]
    assert s.object_sealed(dep) == []
    s.check()


def test_resources_admission_and_never_fitting_shapes():
    s = started(2, GPU=1)
    gpu = make_shape({"CPU": 1, "GPU": 1})
    assert dispatched(s.submit(task(1, gpu))) == [(1, 1)]
    assert dispatched(s.submit(task(2, gpu))) == []  # the one GPU is taken
    assert dispatched(s.submit(task(3))) == [(2, 3)]
    huge = make_shape({"CPU": 1, "GPU": 8})
    actions = s.submit(task(4, huge))
    assert any(type(a) is Warn and "8 GPU" in a.text for a in actions)
    assert s.submit(task(5, huge)) == []  # warned once per shape
    assert dispatched(s.task_finished(1, 1, 1.0)) == [(1, 2)]
    s.check()


def test_blocked_worker_gives_back_cpu_and_queued_tasks():
    s = short_known()
    s.submit(task(2, fn=b"short"))
    s.submit(task(3, fn=b"short"))  # prefetched behind 2
    actions = s.worker_blocked(1, returned=[3])
    # The CPU is free again and no worker is idle: the pool grows.
    assert [type(a).__name__ for a in actions] == ["Revoke", "StartWorker"]
    s.check()
    assert s.available_resources() == {"CPU": 1}
    assert dispatched(s.worker_started(actions[1].worker)) == [(actions[1].worker, 3)]
    s.worker_unblocked(1)  # oversubscribed for a while, as in Ray
    assert s.available["CPU"] == -10_000 + 10_000 * 0
    s.check()


def test_worker_death_retries_then_fails():
    s = started(1)
    s.submit(task(1, retries=1))
    actions = s.worker_died(1, started=True)
    assert [type(a) for a in actions] == [StartWorker]
    w2 = actions[0].worker
    assert dispatched(s.worker_started(w2)) == [(w2, 1)]
    actions = s.worker_died(w2, started=True)
    fails = [a for a in actions if type(a) is FailTask]
    assert fails and fails[0].kind == "crashed" and fails[0].task.seq == 1
    assert 1 not in s.tasks
    s.check()


def test_unstarted_tasks_of_a_dead_worker_are_not_counted_as_attempts():
    s = started(1)
    s.submit(task(1, fn=b"short", retries=0))
    s.task_finished(1, 1, 1e-6)
    s.submit(task(2, fn=b"short", retries=0))
    s.submit(task(3, fn=b"short", retries=0))
    actions = s.worker_died(1, started=True)
    assert [a.task.seq for a in actions if type(a) is FailTask] == [2]
    assert s.tasks[3].state == "ready" and s.tasks[3].attempts == 0
    s.check()


def test_cancel_each_state():
    s = started(1)
    s.submit(task(1))
    s.submit(task(2))
    waiting = task(3)
    s.submit(waiting, unsealed=[b"y" * 20])
    assert [type(a) for a in s.cancel(3)] == [FailTask]
    assert [type(a) for a in s.cancel(2)] == [FailTask]
    assert s.cancel(1) == [CancelRunning(1, 1, False)]
    assert s.cancel(1) == []  # already cancelled
    assert s.cancel(99) == []
    s.check()


def test_cancel_prefetched_task():
    s = short_known()
    s.submit(task(2, fn=b"short"))
    s.submit(task(3, fn=b"short"))
    assert s.cancel(3) == [CancelQueued(1, 3)]


def test_retry_goes_to_the_front():
    s = started(1)
    s.submit(task(1))
    s.submit(task(2))
    assert dispatched(s.task_finished(1, 1, 0.1, retry=True)) == [(1, 1)]
    assert s.tasks[1].attempts == 1
    s.check()


def test_cancelled_queued_task_handed_back_by_a_blocked_worker_fails():
    s = short_known()
    s.submit(task(2, fn=b"short"))
    s.submit(task(3, fn=b"short"))  # prefetched behind 2
    assert s.cancel(3) == [CancelQueued(1, 3)]
    actions = s.worker_blocked(1, returned=[3])  # read, not started, handed back
    fails = [a for a in actions if type(a) is FailTask]
    assert [(a.task.seq, a.kind) for a in fails] == [(3, "cancelled")]
    assert 3 not in s.tasks
    s.check()


def test_cancelled_queued_task_of_a_dead_worker_fails():
    s = short_known()
    s.submit(task(2, fn=b"short"))
    s.submit(task(3, fn=b"short"))
    s.cancel(3)
    actions = s.worker_died(1, started=True)
    assert (3, "cancelled") in [(a.task.seq, a.kind) for a in actions if type(a) is FailTask]
    s.check()


def test_cancel_then_retryable_error_seals_the_cancellation():
    s = started(1)
    s.submit(task(1))
    assert s.cancel(1) == [CancelRunning(1, 1, False)]
    actions = s.task_finished(1, 1, 0.1, retry=True)  # raised before the interrupt landed
    assert [(a.task.seq, a.kind) for a in actions if type(a) is FailTask] == [(1, "cancelled")]
    assert 1 not in s.tasks
    s.check()


def test_every_blocked_is_answered_with_one_revoke():
    from shoal.scheduler.state import Revoke

    s = started(1)
    s.submit(task(1))
    assert [a for a in s.worker_blocked(1, returned=[]) if type(a) is Revoke] == [Revoke(1, [])]
    # a second BLOCKED (not busy any more) is answered too: the worker waits for it
    assert s.worker_blocked(1, returned=[]) == [Revoke(1, [])]
    s.check()


def test_task_that_returns_while_another_thread_waits_frees_the_worker():
    s = started(1)
    s.submit(task(1))
    s.worker_blocked(1, returned=[])
    s.submit(task(2))  # runs on a second worker the pool starts (or waits)
    s.task_finished(1, 1, 0.1)  # returned; a thread it started still waits in get()
    assert s.workers[1].state in ("idle", "busy")
    assert s.worker_unblocked(1) == []  # the late UNBLOCKED changes nothing
    s.check()


def test_tasks_sent_after_blocked_are_revoked():
    """A blocked worker has not read tasks sent after it blocked; its task
    may wait for one of them, so they go back to the queue."""
    from shoal.scheduler.state import Revoke

    s = started(1)
    s.submit(task(1, fn=b"parent"))
    s.submit(task(9, fn=b"short"))  # learn that "short" is short
    s.task_finished(1, 1, 1e-6)
    s.task_finished(1, 9, 1e-6)
    s.submit(task(2, fn=b"parent"))
    assert dispatched(s.submit(task(3, fn=b"short"))) == [(1, 3)]  # prefetched behind the parent
    actions = s.worker_blocked(1, returned=[])  # the worker had not read task 3
    assert Revoke(1, [3]) in actions
    assert s.tasks[3].state in ("ready", "assigned") and s.tasks[3].worker != 1
    s.check()


def test_pool_grows_by_as_many_workers_as_blocked_cpus_allow_then_shrinks():
    from shoal.scheduler.state import StopWorker, Surplus

    s = started(2)
    for seq in (1, 2):  # two parents fill both CPUs
        s.submit(task(seq))
    for seq in (3, 4):  # their children wait
        s.submit(task(seq))
    s.worker_blocked(1, returned=[])
    actions = s.worker_blocked(2, returned=[])
    new = [a.worker for a in actions if type(a) is StartWorker]
    assert len(new) == 1  # together with the one started at the first block: one per child
    workers = [w for w in s.workers if w not in (1, 2)]
    assert len(workers) == 2
    for wid in workers:
        s.worker_started(wid)
    s.check()
    # children finish, parents wake and finish: two workers are surplus
    surplus = []
    for wid in workers:
        (child,) = [t.seq for t in s.workers[wid].queue]
        surplus += [a.worker for a in s.task_finished(wid, child, 0.1) if type(a) is Surplus]
    assert surplus == []  # the parents still wait: the extra workers are needed
    surplus += [a.worker for a in s.worker_unblocked(1) + s.worker_unblocked(2) if type(a) is Surplus]
    for wid, seq in ((1, 1), (2, 2)):
        surplus += [a.worker for a in s.task_finished(wid, seq, 0.2) if type(a) is Surplus]
    assert len(set(surplus)) >= 2
    # later: the shell asks again; only as many stop as the pool can spare
    stops = []
    for wid in dict.fromkeys(surplus):
        stops += [a.worker for a in s.stop_if_surplus(wid) if type(a) is StopWorker]
    assert len(stops) == 2
    assert sum(1 for w in s.workers.values() if w.state != "stopping") == 2
    for wid in stops:
        s.worker_died(wid, started=False)
    assert len(s.workers) == 2
    s.check()


def test_a_surplus_worker_that_got_work_again_is_kept():
    from shoal.scheduler.state import Surplus

    s = started(2, target=1)
    s.submit(task(1))
    (grow,) = [a for a in s.submit(task(2)) if type(a) is StartWorker]  # CPU free, no idle worker
    s.worker_started(grow.worker)
    assert s.tasks[2].worker == grow.worker
    assert Surplus(grow.worker) in s.task_finished(grow.worker, 2, 0.1)
    s.submit(task(3))  # work again before the shell asks
    assert s.workers[grow.worker].state == "busy"
    assert s.stop_if_surplus(grow.worker) == []
    s.task_finished(grow.worker, 3, 0.1)
    assert [type(a).__name__ for a in s.stop_if_surplus(grow.worker)] == ["StopWorker"]
    s.check()


def test_pool_never_grows_past_max_workers():
    s = started(1, max_workers=2)
    s.submit(task(1))
    s.submit(task(2))
    s.submit(task(3))
    started_ids = [a.worker for a in s.worker_blocked(1, returned=[]) if type(a) is StartWorker]
    assert len(started_ids) == 1
    s.worker_started(started_ids[0])
    assert [a for a in s.worker_blocked(started_ids[0], returned=[]) if type(a) is StartWorker] == []
    assert len(s.workers) == 2
    s.check()


def test_short_tasks_are_not_queued_behind_a_long_one():
    s = started(1)
    s.submit(task(1, fn=b"short"))
    s.task_finished(1, 1, 1e-6)
    s.submit(task(2, fn=b"long"))  # runs now; its length is unknown
    assert dispatched(s.submit(task(3, fn=b"short"))) == []  # waits in the queue instead
    s.check()


def test_gpu_devices_are_assigned_whole_or_shared():
    gpu1, half = make_shape({"CPU": 1, "GPU": 1}), make_shape({"CPU": 1, "GPU": 0.5})
    s = started(4, GPU=2)
    s.submit(task(1, shape=gpu1))
    s.submit(task(2, shape=half))
    s.submit(task(3, shape=half))
    s.check()
    ids = {t: s.workers[s.tasks[t].worker].gpu_ids() for t in (1, 2, 3)}
    assert ids[1] in ((0,), (1,))
    assert ids[2] == ids[3] != ids[1]  # the halves pack onto the other device
    # 1.5 GPUs are free in total but no whole device: a whole-GPU task waits
    s.task_finished(s.tasks[2].worker, 2, 0.1)
    assert dispatched(s.submit(task(4, shape=gpu1))) == []
    s.task_finished(s.tasks[3].worker, 3, 0.1)  # now a device is whole again
    s.check()
    assert s.tasks[4].state == "assigned"
    assert s.workers[s.tasks[4].worker].gpu_ids() == ids[2]
    s.check()


def test_blocked_task_lends_its_cpu_but_keeps_its_gpu():
    shape = make_shape({"CPU": 1, "GPU": 1})
    s = started(1, GPU=1)
    s.submit(task(1, shape=shape))
    s.worker_blocked(1, returned=[])
    assert s.available_resources() == {"CPU": 1}
    s.check()
    s.worker_unblocked(1)
    assert s.available_resources() == {}
    s.task_finished(1, 1, 0.1)
    assert s.available_resources() == {"CPU": 1, "GPU": 1}
    s.check()


def test_actor_holds_its_gpu_device():
    from shoal.scheduler.state import PlaceActor

    s = Scheduler({"CPU": 2, "GPU": 2}, target_workers=2)
    place = make_shape({"CPU": 1, "GPU": 1})
    live = make_shape({"GPU": 1})
    (a,) = s.place_actor(b"a" * 16, place, live)
    (b,) = s.place_actor(b"b" * 16, place, live)
    assert type(a) is PlaceActor and {a.gpu_ids, b.gpu_ids} == {(0,), (1,)}
    assert s.available_resources() == {"CPU": 2}  # the placing CPU is only a check
    s.check()
    s.actor_gone(b"a" * 16)
    assert s.gpus.free[a.gpu_ids[0]] == 10_000
    s.check()


def test_a_default_actor_needs_a_free_cpu_to_start_but_holds_none():
    from shoal.scheduler.state import PlaceActor

    s = started(1)
    place, live = make_shape({"CPU": 1}), make_shape({})
    # Any number start at once, and a task still finds the CPU (as in Ray).
    assert [type(a) for a in s.place_actor(b"a" * 16, place, live)] == [PlaceActor]
    assert [type(a) for a in s.place_actor(b"b" * 16, place, live)] == [PlaceActor]
    assert s.available_resources() == {"CPU": 1}
    assert dispatched(s.submit(task(1)))
    s.check()
    # With the CPU busy, the next one waits for it.
    assert s.place_actor(b"c" * 16, place, live) == []
    placed = s.task_finished(1, 1, 0.1)
    assert [a.actor_id for a in placed if type(a) is PlaceActor] == [b"c" * 16]
    s.check()


def test_prefetch_takes_only_short_tasks_behind_the_head():
    s = started(2)
    s.submit(task(1, fn=b"short"))
    s.task_finished(1, 1, 1e-5)  # "short" is known to be short
    s.submit(task(2, fn=b"longX"))
    s.submit(task(3, fn=b"longY"))
    for seq, fn in ((4, b"short"), (5, b"long"), (6, b"long")):
        s.submit(task(seq, fn=fn))
    assert dispatched(s.task_finished(1, 2, 5.0)) == [(1, 4)]  # not 5 and 6 behind it
    assert dispatched(s.task_finished(2, 3, 5.0)) == [(2, 5)]
    s.check()


def test_revoke_is_the_first_answer_to_blocked():
    from shoal.scheduler.state import Revoke

    s = short_known()
    s.submit(task(2, fn=b"short"))
    s.submit(task(3, fn=b"short"))
    s.cancel(3)
    actions = s.worker_blocked(1, returned=[3])
    assert type(actions[0]) is Revoke  # before the FailTask that sealing may trip on
    s.check()


def test_a_stale_or_forged_done_changes_nothing():
    """A report that a worker finished a task it is not running (another
    worker's task, an old one, one never sent) is refused before any
    change: the task it names and the worker's own task are untouched."""
    s = started(2)
    s.submit(task(1))
    s.submit(task(2))
    s.submit(task(3))  # queued: both workers busy
    for wid, seq in ((1, 2), (1, 3), (1, 99), (2, 1), (7, 1)):
        assert not s.is_running(wid, seq)
        with pytest.raises(ValueError, match="not running"):
            s.task_finished(wid, seq, 0.1)
        s.check()
    assert [t.seq for t in s.workers[1].queue] == [1] and [t.seq for t in s.workers[2].queue] == [2]
    assert s.tasks[3].state == "ready" and s.tasks[1].state == "assigned"
    assert dispatched(s.task_finished(1, 1, 0.1)) == [(1, 3)]  # the real report still works


def test_recursive_cancel_reaches_running_and_queued_children_and_later_ones():
    s = started(2)
    parent = task(1)
    s.submit(parent)
    s.worker_blocked(1, [])  # the parent waits in get(): its CPU goes to the children
    s.submit(task(2), parent=parent.task_id)  # runs on the other worker
    s.submit(task(3), parent=parent.task_id)  # queued: no CPU left
    grandchild = task(4)
    s.submit(grandchild, parent=task(2).task_id, unsealed=[b"z" * 20])
    actions = s.cancel(1)
    assert CancelRunning(1, 1, False) in actions
    assert any(type(a) is CancelRunning and a.seq == 2 for a in actions)
    failed = sorted(a.task.seq for a in actions if type(a) is FailTask)
    assert failed == [3, 4]  # not started: failed at once
    late = s.submit(task(5), parent=parent.task_id)  # submitted after the cancel
    assert [(type(a), a.task.seq) for a in late if type(a) is FailTask] == [(FailTask, 5)]
    s.check()


def test_cancel_not_recursive_keeps_the_children():
    s = started(2)
    parent = task(1)
    s.submit(parent)
    s.submit(task(2), parent=parent.task_id)
    assert s.cancel(1, recursive=False) == [CancelRunning(1, 1, False)]
    assert s.tasks[2].state == "assigned" and not s.tasks[2].cancelled
    s.task_finished(1, 1, 0.1)
    assert not s.children and not s.cancelled_parents  # nothing kept for a finished parent
    s.check()


def test_recursive_cancel_reaches_the_actor_calls_a_task_made():
    from shoal.scheduler.state import CancelActorCall

    s = started(1)
    s.submit(task(1))
    parent = task(1).task_id
    assert s.actor_call_submitted(b"call-a", parent) == []
    assert s.actor_call_submitted(b"call-b", None) == []  # from the driver: no parent
    actions = s.cancel(1)
    assert [a for a in actions if type(a) is CancelActorCall] == [CancelActorCall(b"call-a")]
    # One made after the cancel is left alone (as in Ray: the cancelled call
    # may call out while it handles its cancellation).
    assert s.actor_call_submitted(b"call-c", parent) == []
    s.parent_done(parent)
    assert s.cancel_children(parent) == []


def test_the_pools_ceiling_grows_with_the_machine_within_the_stores_slots(monkeypatch):
    from shoal import config

    monkeypatch.delenv("SHOAL_MAX_WORKERS", raising=False)
    assert config.max_pool_workers(8, 256) == 192  # small machines: as before
    assert config.max_pool_workers(192, 256) == 224  # every slot but the reserved ones
    assert config.max_pool_workers(192, 1024) == 768  # a store built with SHOAL_MAX_CLIENTS=1024
    monkeypatch.setenv("SHOAL_MAX_WORKERS", "500")
    assert config.max_pool_workers(8, 1024) == 500
    with pytest.raises(ValueError, match="SHOAL_MAX_CLIENTS"):
        config.max_pool_workers(8, 256)


def test_the_worker_table_index_follows_every_state_change():
    s = started(3)
    s.submit(task(1))
    assert s.workers.count("busy") == 1 and s.workers.count("idle") == 2
    assert s.workers.lowest_idle().wid == 2
    s.task_finished(1, 1, 5.0)
    assert s.workers.lowest_idle().wid == 1
    s.workers.pop(1)
    assert s.workers.lowest_idle().wid == 2 and s.workers.count("idle") == 2
    s.check()


@pytest.mark.timeout(60)
def test_more_cpus_than_the_store_admits_processes_warns(monkeypatch):
    import shoal
    from shoal import config

    monkeypatch.setattr(config, "max_pool_workers", lambda cpus, slots: 1)  # as on a machine past the slots
    with pytest.warns(UserWarning, match="SHOAL_MAX_CLIENTS"):
        shoal.init(num_cpus=2, object_store_memory=64 << 20)
    try:
        assert shoal.get(shoal.remote(lambda: 7).remote(), timeout=30) == 7  # it runs, on fewer workers
    finally:
        shoal.shutdown()
