"""init(address=...) runs the same program on a real Ray cluster: two Ray
nodes on this machine, started with Ray's CLI for this module and ended
after it. Skipped only where Ray is not installed (pip install "shoal[ray]")."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests._ray_cluster import RayCluster, closed_port, environment

pytestmark = pytest.mark.timeout(120)

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
ROOT = EXAMPLES.parent


def _run(code: str, env: dict, timeout: float = 100) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=ROOT,
                          timeout=timeout)


def test_an_address_without_ray_names_the_extra():
    code = ("import sys; sys.modules['ray'] = None\n"  # as if Ray were not installed
            "import shoal\n"
            "try:\n"
            "    shoal.init(address='127.0.0.1:6379')\n"
            "except ImportError as e:\n"
            "    print(e)\n")
    proc = _run(code, {**os.environ, "RAY_ADDRESS": ""})
    assert 'pip install "shoal[ray]"' in proc.stdout, proc.stdout + proc.stderr


def test_an_unreachable_address_fails_at_init_and_names_it():
    pytest.importorskip("ray")
    import shoal
    from shoal import exceptions

    address = f"127.0.0.1:{closed_port()}"
    with pytest.raises(exceptions.ClusterUnreachableError, match=address) as info:
        shoal.init(address=address)
    assert isinstance(info.value, ConnectionError)  # as Ray's own error
    assert not shoal.is_initialized()


@pytest.fixture(scope="module")
def cluster():
    pytest.importorskip("ray")
    c = RayCluster()
    # Drivers here and in subprocesses use the cluster's token.
    with environment({**c.auth, "RAY_AUTH_TOKEN_PATH": None}):
        try:
            yield c.start()
        finally:
            import shoal

            shoal.shutdown()
            c.stop()
    assert not c.processes(), "Ray processes left behind"


@pytest.fixture(scope="module")
def ray(cluster):
    """shoal, connected to the cluster for the whole module."""
    import shoal

    shoal.init(address=cluster.address)
    yield shoal
    shoal.shutdown()


def test_ray_address_in_the_environment_is_picked_up(cluster):
    code = ("import shoal\n"
            "shoal.init()\n"
            "print(len(shoal.nodes()), shoal.get(shoal.put(41)) + 1)\n"
            "shoal.shutdown()\n")
    proc = _run(code, {**os.environ, "RAY_ADDRESS": cluster.address})
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["2", "42"]


def test_a_ray_client_address_works_the_same(cluster):
    code = ("import sys, shoal\n"
            "shoal.init(address=sys.argv[1])\n"
            "@shoal.remote\n"
            "def double(x):\n"
            "    return 2 * x\n"
            "@shoal.remote\n"
            "def fail():\n"
            "    raise KeyError('k')\n"
            "ref = double.remote(shoal.put(20))\n"
            "try:\n"
            "    shoal.get(fail.remote())\n"
            "except KeyError as e:\n"
            "    caught = isinstance(e, shoal.exceptions.RayTaskError)\n"
            "print(isinstance(ref, shoal.ObjectRef), shoal.get(ref) + 2, caught)\n"
            "shoal.shutdown()\n")
    for _ in range(2):
        proc = subprocess.run([sys.executable, "-c", code, f"ray://127.0.0.1:{cluster.client_port}"],
                              capture_output=True, text=True, cwd=ROOT, timeout=100)
        # Ray's client server starts a server process per client; on a loaded
        # 2-core machine that start sometimes fails on Ray's side ("Initialization
        # failure from server"), and a second client is served: try once more.
        if "Initialization failure from server" not in proc.stderr:
            break
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["True", "42", "True"]


def test_shoal_only_settings_say_what_they_do_on_a_cluster(cluster):
    import shoal

    with pytest.raises(ValueError, match="object_spilling_directory"):
        shoal.init(address=cluster.address, object_spilling_directory="/tmp")
    assert not shoal.is_initialized()
    with pytest.warns(UserWarning, match="local_mode=True runs every task in this process"):
        shoal.init(address=cluster.address, local_mode=True)
    try:
        from shoal import objectref

        assert type(objectref.current()).__name__ == "LocalRuntime"  # this process, not the cluster
        assert shoal.get(shoal.put(5)) == 5
    finally:
        shoal.shutdown()


@pytest.mark.parametrize("script", ["sleep_tasks.py", "matrix_dag.py", "matrix_dag_bind.py", "aggregation.py",
                                    "quickstart.py", "counter_actor.py", "message_actor.py"])
def test_seed_examples_run_unchanged_on_the_cluster(cluster, script):
    env = {**os.environ, "RAY_ADDRESS": cluster.address, "SHOAL_EXAMPLE_ROUNDS": "2"}
    proc = subprocess.run([sys.executable, str(EXAMPLES / script)], capture_output=True, text=True, env=env,
                          timeout=100)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr
    assert "Connected to Ray cluster" in proc.stderr  # it ran there, not on a runtime of its own


def test_tasks_land_on_both_nodes(ray):
    @ray.remote(num_cpus=0)
    class Barrier:
        """Answers once both tasks are in: they then run at the same time,
        which one CPU per node allows only on two nodes."""

        def __init__(self):
            import asyncio

            self.both = asyncio.Event()
            self.n = 0

        async def arrive(self):
            self.n += 1
            if self.n == 2:
                self.both.set()
            await self.both.wait()

    @ray.remote(num_cpus=1)
    def where(barrier):
        ray.get(barrier.arrive.remote())
        return ray.get_runtime_context().get_node_id()

    barrier = Barrier.remote()
    nodes = ray.get([where.remote(barrier), where.remote(barrier)], timeout=60)
    assert set(nodes) == {n["NodeID"] for n in ray.nodes() if n["Alive"]}
    assert len(set(nodes)) == 2


def test_refs_are_shoal_refs_and_pass_as_arguments(ray):
    @ray.remote
    def add(a, b):
        return a + b

    x = ray.put(40)
    assert isinstance(x, ray.ObjectRef)
    y = add.remote(x, 1)
    assert isinstance(y, ray.ObjectRef)
    assert ray.get(add.remote(y, 1)) == 42
    ready, pending = ray.wait([y], timeout=30)
    assert ready == [y] and pending == []


def test_nested_tasks_and_nested_refs(ray):
    @ray.remote
    def leaf(v):
        return v * 2

    @ray.remote
    def parent(refs):
        return sum(ray.get(refs))  # refs nested in a list stay refs, as in Ray

    assert ray.get(parent.remote([leaf.remote(i) for i in range(4)]), timeout=60) == 12


def test_actors_with_options_names_and_kill(ray):
    @ray.remote
    class Counter:
        def __init__(self, start):
            self.n = start

        def inc(self):
            self.n += 1
            return self.n

        @ray.method(num_returns=2)
        def pair(self):
            return self.n, -self.n

    c = Counter.options(name="counter", max_concurrency=1).remote(10)
    assert isinstance(c, ray.actor.ActorHandle)
    assert ray.get([c.inc.remote() for _ in range(3)]) == [11, 12, 13]
    a, b = c.pair.remote()
    assert ray.get([a, b]) == [13, -13]
    assert ray.get(ray.get_actor("counter").inc.remote()) == 14
    ray.kill(c)
    with pytest.raises(ray.exceptions.RayActorError):  # (calls sent before the kill lands may still run)
        for _ in range(1000):
            ray.get(c.inc.remote(), timeout=60)
    with pytest.raises(ValueError):
        ray.get_actor("no-such-actor")


def test_a_task_error_is_caught_by_its_own_type_and_as_ray_task_error(ray):
    class Mine(Exception):
        pass

    @ray.remote
    def fail():
        raise Mine("bad input 7")

    ref = fail.remote()
    with pytest.raises(Mine, match="bad input 7"):
        ray.get(ref)
    with pytest.raises(ray.exceptions.RayTaskError) as info:
        ray.get(ref)
    assert "bad input 7" in str(info.value)
    import ray as real_ray  # and Ray's own class, for code written against Ray

    assert isinstance(info.value, real_ray.exceptions.RayTaskError)


def test_a_timeout_is_a_get_timeout_error(ray):
    @ray.remote(num_cpus=0)
    class Gate:
        async def wait(self):
            import asyncio

            await asyncio.Event().wait()  # never set: the call never ends

    ref = Gate.remote().wait.remote()
    with pytest.raises(ray.exceptions.GetTimeoutError):
        ray.get(ref, timeout=0.2)
    with pytest.raises(TimeoutError):
        ray.get(ref, timeout=0)
    ray.cancel(ref)


def test_cancel_a_queued_task(ray):
    @ray.remote(resources={"never": 1})
    def unschedulable():
        return 1

    ref = unschedulable.remote()
    ray.cancel(ref)
    with pytest.raises(ray.exceptions.TaskCancelledError):
        ray.get(ref, timeout=60)


def test_runtime_context_and_resources(ray):
    ctx = ray.get_runtime_context()
    assert ctx.get_node_id() in {n["NodeID"] for n in ray.nodes()}
    assert ray.cluster_resources()["CPU"] == 2.0
    assert 0 <= ray.available_resources().get("CPU", 0) <= 2.0

    @ray.remote
    def task_id():
        return ray.get_runtime_context().get_task_id()

    assert ray.get(task_id.remote())


def test_util_actor_pool_queue_and_multiprocessing_pool(ray):
    from shoal.util import ActorPool
    from shoal.util.multiprocessing import Pool
    from shoal.util.queue import Queue

    @ray.remote(num_cpus=0)
    class Doubler:
        def double(self, v):
            return 2 * v

    pool = ActorPool([Doubler.remote(), Doubler.remote()])
    assert list(pool.map(lambda a, v: a.double.remote(v), range(5))) == [0, 2, 4, 6, 8]

    q = Queue()
    q.put(1)
    q.put_nowait(2)
    assert (q.get(timeout=30), q.get(timeout=30), q.empty()) == (1, 2, True)

    with Pool(processes=2) as p:
        assert p.map(abs, [-1, -2, 3]) == [1, 2, 3]


def test_util_serializers_register_with_ray_and_memory_summary_says_what_to_use(ray):
    class Handle:
        def __init__(self, v):
            self.v = v

        def __reduce__(self):
            raise TypeError("a Handle does not pickle")

    ray.util.register_serializer(Handle, serializer=lambda h: h.v, deserializer=Handle)
    try:
        assert ray.get(ray.put(Handle(3))).v == 3
    finally:
        ray.util.deregister_serializer(Handle)
    with pytest.raises(RuntimeError, match="ray memory"):
        ray.util.memory_summary()


def test_util_executor_and_placement_groups(ray):
    from shoal.util import Executor, placement_group, remove_placement_group
    from shoal.util.scheduling_strategies import PlacementGroupSchedulingStrategy

    with Executor() as ex:
        assert list(ex.map(abs, [-3, 4])) == [3, 4]

    pg = placement_group([{"CPU": 1}, {"CPU": 1}], strategy="STRICT_SPREAD")
    assert ray.get(pg.ready(), timeout=60)

    @ray.remote(num_cpus=1)
    def node():
        return ray.get_runtime_context().get_node_id()

    refs = [node.options(scheduling_strategy=PlacementGroupSchedulingStrategy(pg, i)).remote() for i in range(2)]
    assert len(set(ray.get(refs, timeout=60))) == 2  # one bundle a node
    remove_placement_group(pg)


# -- the project's public-API tests, run against the cluster -----------------------
# Those about Ray's API rather than shoal's own runtime: workers, the store,
# crashes, timings and messages of shoal's own are left out, and so are these,
# where Ray behaves otherwise (docs/cluster.md lists each difference):
#   test_method_num_returns_and_generators  Ray's generator methods fail on `yield from`
#   test_get_rejects_non_refs, test_wrong_arguments_raise_at_submission,
#   test_num_returns                        Ray's own messages and error types
#   test_object_ref_identity_and_pickle     ObjectRef(binary) builds a ref of shoal's
#   test_wait_semantics                     Ray may return any of the ready refs
#   test_runtime_context_in_tasks_and_actors   a task may run on the other node
#   test_task_error_is_both_types_with_remote_traceback   Ray cannot rebuild an
#                                           exception whose __init__ takes other arguments
#   test_streaming_generator                Ray's completed() is None, not the item count
# and test_cancel_queued_and_running, whose 30 s limits Ray's restart of a
# force-killed worker can pass on a loaded 2-core machine (cancel is covered above).

from tests.test_actors import (  # noqa: E402, F401 (collected here, run against the cluster)
    test_actor_pool, test_async_actor_interleaves_and_awaits_refs, test_calls_run_in_submission_order_one_at_a_time,
    test_constructor_error_fails_every_call, test_counter_seed, test_handles_pickle_to_tasks_and_actors_and_back,
    test_message_actor_seed, test_method_error_keeps_the_actor_alive, test_named_actors, test_queue,
    test_runtime_context, test_threaded_actor_runs_calls_concurrently,
)
from tests.test_api_basic import (  # noqa: E402, F401 (collected here, run against the cluster)
    test_closures_and_lambdas, test_dag_of_refs, test_future_and_await, test_get_timeout,
    test_large_arguments_travel_through_the_store, test_nested_refs_stay_refs, test_option_validation,
    test_put_get_roundtrip_and_order, test_remote_forms_and_direct_call,
)
from tests.test_api_compat import (  # noqa: E402, F401 (collected here, run against the cluster)
    test_get_of_a_list_raises_a_later_error_without_waiting_for_earlier_refs,
    test_get_of_a_list_that_times_out_still_raises_timeout, test_wait_of_an_empty_list_returns_two_empty_lists,
)
from tests.test_api_errors import (  # noqa: E402, F401 (collected here, run against the cluster)
    test_error_propagates_to_dependents, test_get_of_list_raises_the_first_error, test_retry_exceptions,
)
from tests.test_api_tasks import (  # noqa: E402, F401 (collected here, run against the cluster)
    test_fractional_cpus, test_generator_with_a_fixed_num_returns, test_nested_tasks, test_put_and_get_inside_a_task,
    test_recursive_tasks, test_wait_inside_a_task,
)
