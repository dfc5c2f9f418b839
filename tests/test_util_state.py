"""shoal.util.state: actors, tasks and workers as Ray's state API lists them."""

from __future__ import annotations

import time

import pytest

from shoal.util import state
from tests._child import gate_actor

pytestmark = pytest.mark.timeout(60)


def test_actors_tasks_and_workers_are_listed(ray, tmp_path):
    gate = tmp_path / "gate"

    @ray.remote
    class Counter:
        def ping(self):
            return 1

    @ray.remote
    def blocked():
        while not gate.exists():
            time.sleep(0.005)
        return 1

    named = Counter.options(name="listed").remote()
    ray.get(named.ping.remote(), timeout=30)
    refs = [blocked.remote() for _ in range(3)]  # 2 run, 1 waits for a CPU

    actors = state.list_actors()
    (row,) = [a for a in actors if a["name"] == "listed"]
    assert row["class_name"] == "Counter" and row["state"] == "ALIVE" and row["pid"]
    assert state.get_actor(row["actor_id"])["name"] == "listed"
    assert state.get_actor("00" * 16) is None

    def states():
        return sorted(t["state"] for t in state.list_tasks(filters=[("name", "=", "blocked")]))

    from tests._child import wait_until

    wait_until(lambda: states().count("RUNNING") == 2, what="two tasks running")
    assert len(states()) == 3
    assert state.summarize_tasks()["blocked"]["RUNNING"] == 2
    pids = {w["pid"] for w in state.list_workers()}
    assert row["pid"] in pids
    assert state.list_nodes()[0]["state"] == "ALIVE"
    with pytest.raises(ValueError, match="predicate"):
        state.list_tasks(filters=[("name", ">", "x")])
    gate.touch()
    assert ray.get(refs, timeout=30) == [1, 1, 1]
    wait_until(lambda: states() == ["FINISHED"] * 3, what="tasks listed as finished")


def test_actor_calls_are_listed_running_waiting_or_waiting_for_arguments(ray):
    @ray.remote
    class Worker:
        def work(self, gate_ref):
            ray.get(gate_ref[0])

        def takes(self, value):
            return value

    gate, worker = gate_actor(ray), Worker.remote()
    opened = gate.wait.remote()
    refs = [worker.work.remote([opened]), worker.work.remote([opened]), worker.takes.remote(opened)]

    def by_name():
        rows = state.list_tasks(filters=[("TYPE", "=", "ACTOR_TASK")])  # keys in any case, as in Ray
        return sorted((r.func_or_class_name, r["state"]) for r in rows if r.func_or_class_name != "Gate.wait")

    from tests._child import wait_until

    expected = [("Worker.takes", "PENDING_ARGS_AVAIL"),
                ("Worker.work", "PENDING_ACTOR_TASK_ORDERING_OR_CONCURRENCY"), ("Worker.work", "RUNNING")]
    wait_until(lambda: by_name() == expected, 30, f"actor call states {expected}")
    ray.get(gate.open.remote(), timeout=30)
    ray.get(refs, timeout=30)
