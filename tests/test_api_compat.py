"""Ray compatibility of the API's edges: async iteration of generator
tasks, wait() of nothing, get() failing fast on a list, Ray's exception
classes, shutdown()'s and init()'s keywords, the runtime context, and refs
that outlive their runtime."""

from __future__ import annotations

import asyncio
import inspect
import pickle
import time
import warnings

import pytest

import shoal
from shoal import exceptions as exc

pytestmark = pytest.mark.timeout(60)


# -- ObjectRefGenerator ---------------------------------------------------------


def test_async_for_over_a_streaming_generator(ray):
    @ray.remote(num_returns="streaming")
    def produce(n):
        for i in range(n):
            yield i * 10

    async def collect(gen):
        return [await ref async for ref in gen]

    assert asyncio.run(asyncio.wait_for(collect(produce.remote(5)), 30)) == [0, 10, 20, 30, 40]
    assert asyncio.run(asyncio.wait_for(collect(produce.remote(0)), 30)) == []


def test_async_for_over_a_failing_generator_raises_its_error(ray):
    @ray.remote(num_returns="streaming")
    def fails_midway():
        yield 1
        raise ValueError("midway")

    async def collect(gen):
        return [await ref async for ref in gen]

    with pytest.raises(ValueError, match="midway"):
        asyncio.run(asyncio.wait_for(collect(fails_midway.remote()), 30))


# -- wait -----------------------------------------------------------------------


def test_wait_of_an_empty_list_returns_two_empty_lists(ray):
    assert ray.wait([]) == ([], [])
    assert ray.wait([], num_returns=2, timeout=0) == ([], [])  # Ray checks num_returns after
    with pytest.raises(ValueError, match="num_returns"):
        ray.wait([ray.put(1)], num_returns=2)


# -- get fails fast ---------------------------------------------------------------


def _gate(ray):
    @ray.remote
    class Gate:
        def __init__(self):
            self.opened = asyncio.Event()

        async def wait(self):
            await self.opened.wait()
            return "through"

        async def open(self):
            self.opened.set()

    return Gate.remote()


def test_get_of_a_list_raises_a_later_error_without_waiting_for_earlier_refs(ray):
    @ray.remote
    def fail():
        raise ValueError("fails fast")

    @ray.remote
    def ok(x):
        return x

    gate = _gate(ray)
    blocked = gate.wait.remote()  # not ready until the gate opens
    refs = [ok.remote(1), blocked, ok.remote(2), fail.remote()]
    with pytest.raises(ValueError, match="fails fast") as info:
        ray.get(refs)  # no timeout: waiting for `blocked` would hang
    assert isinstance(info.value, exc.RayTaskError)
    assert ray.wait([blocked], timeout=0) == ([], [blocked])
    with pytest.raises(ValueError, match="fails fast"):
        ray.get(refs, timeout=0)  # what is ready now is enough to know
    ray.get(gate.open.remote(), timeout=30)
    assert ray.get(refs[:3], timeout=30) == [1, "through", 2]


def test_get_of_a_list_that_times_out_still_raises_timeout(ray):
    gate = _gate(ray)
    blocked = gate.wait.remote()
    refs = [blocked, ray.put(1)]
    with pytest.raises(exc.GetTimeoutError, match="not ready"):
        ray.get(refs, timeout=0)
    with pytest.raises(exc.GetTimeoutError, match="not ready"):
        ray.get(refs, timeout=0.05)
    ray.get(gate.open.remote(), timeout=30)
    assert ray.get(refs, timeout=30) == ["through", 1]


# -- exceptions ---------------------------------------------------------------------

#: Ray 2.60's exception classes (ray.exceptions) that users catch, with the
#: builtin bases that Ray gives them besides RayError (ObjectStoreFullError,
#: built from byte counts, is in test_api_errors).
RAY_EXCEPTIONS = {
    "OutOfMemoryError": (), "OutOfDiskError": (), "NodeDiedError": (), "LocalRayletDiedError": (),
    "ObjectLostError": (), "ObjectFetchTimedOutError": (), "ObjectReconstructionFailedError": (),
    "ObjectFreedError": (), "OwnerDiedError": (), "ReferenceCountingAssertionError": (AssertionError,),
    "RuntimeEnvSetupError": (), "ActorUnschedulableError": (), "TaskUnschedulableError": (),
    "ActorHandleNotFoundError": (ValueError,), "ActorAlreadyExistsError": (ValueError,),
    "ActorPlacementGroupRemoved": (), "TaskPlacementGroupRemoved": (), "PendingCallsLimitExceeded": (),
    "PlasmaObjectNotAvailable": (), "RpcError": (), "AuthenticationError": (), "CrossLanguageError": (),
    "UnserializableException": (), "UserCodeException": (), "AsyncioActorExit": (),
    "OufOfBandObjectRefSerializationException": (), "ObjectRefStreamEndOfStreamError": (),
    "RayChannelError": (), "RayChannelTimeoutError": (TimeoutError,), "RayCgraphCapacityExceeded": (),
    "RayDirectTransportError": (), "StreamingGeneratorReplayInconsistentError": (),
    "GetTimeoutError": (TimeoutError,), "WorkerCrashedError": (), "TaskCancelledError": (),
    "RaySystemError": (), "RayActorError": (), "ActorDiedError": (),
    "ActorUnavailableError": (),
}


@pytest.mark.parametrize("name", sorted(RAY_EXCEPTIONS))
def test_ray_exception_exists_catches_and_pickles(name):
    cls = getattr(shoal.exceptions, name)
    assert issubclass(cls, exc.RayError)
    for base in RAY_EXCEPTIONS[name]:
        assert issubclass(cls, base)
    e = cls("what happened")
    back = pickle.loads(pickle.dumps(e))
    assert type(back) is cls and str(back) == str(e)
    with pytest.raises(getattr(shoal.exceptions, name)):
        raise back


def test_ray_exception_bases_follow_rays():
    assert issubclass(exc.ObjectFetchTimedOutError, exc.ObjectLostError)
    assert issubclass(exc.ObjectReconstructionFailedError, exc.ObjectLostError)
    assert issubclass(exc.ReferenceCountingAssertionError, exc.ObjectLostError)
    assert issubclass(exc.OwnerDiedError, exc.ObjectLostError)
    assert issubclass(exc.RayChannelTimeoutError, exc.RayChannelError)
    assert issubclass(exc.RayChannelError, exc.RaySystemError)
    assert exc.RpcError("down", rpc_code=14).rpc_code == 14
    assert pickle.loads(pickle.dumps(exc.RpcError("down", 14))).rpc_code == 14


# -- shutdown and init keywords ---------------------------------------------------------


def test_shutdown_takes_rays_keywords(ray):
    params = inspect.signature(ray.shutdown).parameters
    assert {"wait_for_processes", "_exiting_interpreter"} <= set(params)
    assert all(p.kind is p.KEYWORD_ONLY for p in params.values())
    ray.shutdown(wait_for_processes=True, _exiting_interpreter=False)
    assert not ray.is_initialized()


def test_init_accepts_harmless_ray_keywords_silently():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        shoal.init(num_cpus=1, object_store_memory=64 << 20, include_dashboard=False,
                   dashboard_host="0.0.0.0", configure_logging=False, logging_level="warning",
                   logging_format="%(message)s", _temp_dir="/tmp/elsewhere", log_to_driver=None,
                   _node_name="here", _disable_object_store_spilling=True)
    try:
        assert shoal.is_initialized()
    finally:
        shoal.shutdown()


def test_init_warns_once_for_unimplemented_ray_keywords():
    from shoal import options

    options._warned.discard("init:job_config")  # another test of this process may have warned
    try:
        with pytest.warns(UserWarning, match="job_config"):
            shoal.init(num_cpus=1, object_store_memory=64 << 20, job_config=object())
    finally:
        shoal.shutdown()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        shoal.init(num_cpus=1, object_store_memory=64 << 20, job_config=object())
    shoal.shutdown()


def test_job_config_at_rays_path_sets_env_vars_and_namespace():
    import os

    from shoal.job_config import JobConfig

    assert shoal.job_config.JobConfig is JobConfig  # ray.job_config.JobConfig
    config = JobConfig(runtime_env={"env_vars": {"SHOAL_T_JOBCONF": "from-config"}}, ray_namespace="jc",
                       metadata={"team": "a"})
    config.set_metadata("run", "1")
    assert config.metadata == {"team": "a", "run": "1"}
    with pytest.raises(ValueError, match="detached"):
        config.set_default_actor_lifetime("forever")
    with pytest.raises(TypeError, match="list of paths"):
        JobConfig(code_search_path="/one/path")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a JobConfig of applied fields only: no warning
        context = shoal.init(num_cpus=1, object_store_memory=64 << 20, job_config=config)
    try:
        # Ray's context has the address key; here it names a runtime of its own
        assert context["address"] == "local" and context.address_info["address"] == "local"

        @shoal.remote
        def read(name):
            return os.environ.get(name)

        assert shoal.get(read.remote("SHOAL_T_JOBCONF"), timeout=30) == "from-config"
        assert shoal.get_runtime_context().namespace == "jc"
    finally:
        shoal.shutdown()


def test_init_arguments_win_over_the_job_config():
    import os

    from shoal import options
    from shoal.job_config import JobConfig

    config = JobConfig(runtime_env={"env_vars": {"SHOAL_T_JOBCONF": "config"}}, ray_namespace="cfg",
                       code_search_path=["/somewhere"])
    options._warned.discard("init:job_config:code_search_path")
    with pytest.warns(UserWarning, match="code_search_path"):
        shoal.init(num_cpus=1, object_store_memory=64 << 20, job_config=config, namespace="arg",
                   runtime_env={"env_vars": {"SHOAL_T_JOBCONF": "argument"}})
    try:
        @shoal.remote
        def read(name):
            return os.environ.get(name)

        assert shoal.get(read.remote("SHOAL_T_JOBCONF"), timeout=30) == "argument"
        assert shoal.get_runtime_context().namespace == "arg"
    finally:
        shoal.shutdown()


def test_first_use_starts_a_runtime_unless_auto_connect_is_off(monkeypatch):
    @shoal.remote
    def one():
        return 1

    @shoal.remote
    class Probe:
        def ping(self):
            return "pong"

    monkeypatch.setenv("RAY_ENABLE_AUTO_CONNECT", "0")  # Ray's switch
    for call in (one.remote, Probe.remote, lambda: shoal.put(1)):
        with pytest.raises(exc.RaySystemError, match="init"):
            call()
    assert not shoal.is_initialized()
    monkeypatch.setenv("RAY_ENABLE_AUTO_CONNECT", "1")
    try:
        assert shoal.get(one.remote(), timeout=30) == 1  # started on first use
        assert shoal.is_initialized()
        assert shoal.get(Probe.remote().ping.remote(), timeout=30) == "pong"
    finally:
        shoal.shutdown()


def test_node_ip_address_at_rays_path_matches_nodes(ray):
    import shoal.util

    @ray.remote
    def ip_in_a_task():
        return shoal.util.get_node_ip_address()

    address = shoal.util.get_node_ip_address()
    assert address == ray.nodes()[0]["NodeManagerAddress"]
    assert ray.get(ip_in_a_task.remote(), timeout=30) == address


# -- runtime context ------------------------------------------------------------------


def test_was_current_actor_reconstructed_is_a_property(ray):
    assert isinstance(inspect.getattr_static(type(ray.get_runtime_context()),
                                             "was_current_actor_reconstructed"), property)

    @ray.remote
    class Probe:
        def reconstructed(self):
            return ray.get_runtime_context().was_current_actor_reconstructed

    assert ray.get(Probe.remote().reconstructed.remote(), timeout=30) is False


# -- refs of an earlier runtime ---------------------------------------------------------


def test_get_of_a_ref_from_a_previous_runtime_raises(ray):
    @ray.remote
    def f(x=None):
        return 3

    put_ref, task_ref = ray.put(5), f.remote()
    assert ray.get(task_ref, timeout=30) == 3
    ray.shutdown()
    ray.init(num_cpus=1, object_store_memory=64 << 20)
    for old in (put_ref, task_ref):
        with pytest.raises(exc.StaleObjectRefError, match="shut down") as info:
            ray.get(old)  # no timeout: its object can never appear
        assert isinstance(info.value, ValueError) and isinstance(info.value, exc.RuntimeClosedError)
        with pytest.raises(exc.StaleObjectRefError):
            ray.get([ray.put(1), old])
        with pytest.raises(exc.StaleObjectRefError):
            ray.wait([old])
        with pytest.raises(exc.StaleObjectRefError):  # as an argument: at submission
            f.remote(old)
    assert ray.get(ray.put(2), timeout=30) == 2


# -- runtime_env and the runtime context -------------------------------------------


def test_runtime_env_vars_for_tasks_and_actors():
    import os

    shoal.init(num_cpus=1, object_store_memory=64 << 20, runtime_env={"env_vars": {"SHOAL_T_JOB": "job"}})
    try:
        @shoal.remote
        def read(*names):
            return [os.environ.get(n) for n in names]

        assert shoal.get(read.remote("SHOAL_T_JOB", "SHOAL_T_TASK"), timeout=30) == ["job", None]
        task_env = read.options(runtime_env={"env_vars": {"SHOAL_T_TASK": "task", "SHOAL_T_JOB": "over"}})
        assert shoal.get(task_env.remote("SHOAL_T_JOB", "SHOAL_T_TASK"), timeout=30) == ["over", "task"]
        # the worker's environment is restored for the next task
        assert shoal.get(read.remote("SHOAL_T_JOB", "SHOAL_T_TASK"), timeout=30) == ["job", None]

        @shoal.remote
        class Env:
            def read(self, name):
                return os.environ.get(name)

        a = Env.options(runtime_env={"env_vars": {"SHOAL_T_ACTOR": "actor"}}).remote()
        assert shoal.get(a.read.remote("SHOAL_T_ACTOR"), timeout=30) == "actor"
        assert shoal.get(a.read.remote("SHOAL_T_JOB"), timeout=30) == "job"
        with pytest.raises(TypeError, match="env_vars"):
            read.options(runtime_env={"env_vars": {"X": 1}}).remote()
        with pytest.warns(UserWarning, match="pip"):
            read.options(runtime_env={"pip": ["requests"]}).remote()
    finally:
        shoal.shutdown()


def test_runtime_context_in_tasks_and_actors(ray):
    @ray.remote(num_cpus=0.5)
    def where():
        ctx = ray.get_runtime_context()
        return ctx.get_node_id(), ctx.get_assigned_resources(), sorted(ctx.get()), ctx.get_worker_id()

    node, assigned, keys, worker = ray.get(where.remote(), timeout=30)
    driver = ray.get_runtime_context()
    assert node == driver.get_node_id() != ""
    assert assigned == {"CPU": 0.5}
    assert keys == ["job_id", "namespace", "node_id", "task_id"]
    assert len(worker) == 56 and worker != driver.get_worker_id()
    assert sorted(driver.get()) == ["job_id", "namespace", "node_id"]

    @ray.remote
    class Named:
        def name(self):
            return ray.get_runtime_context().get_actor_name()

        def held(self):
            return ray.get_runtime_context().get_assigned_resources()

    a = Named.options(name="who").remote()
    b = Named.options(num_cpus=1).remote()
    assert ray.get([a.name.remote(), b.name.remote()], timeout=30) == ["who", None]
    assert ray.get([a.held.remote(), b.held.remote()], timeout=30) == [{}, {"CPU": 1.0}]
    assert driver.get_actor_name() is None


# -- submission checks and built-in actor methods ----------------------------------------


def test_wrong_arguments_raise_at_submission(ray):
    @ray.remote
    def f(a, b=1, *, c=2):
        return a + b + c

    @ray.remote
    class C:
        def __init__(self, x):
            self.x = x

        def m(self, y, *rest):
            return self.x + y + len(rest)

        @staticmethod
        def s(z):
            return z

    for call in (lambda: f.remote(), lambda: f.remote(1, 2, 3), lambda: f.remote(1, d=4),
                 lambda: C.remote(), lambda: C.remote(1, 2)):
        with pytest.raises(TypeError):
            call()
    c = C.remote(1)
    with pytest.raises(TypeError, match="C.m"):
        c.m.remote()
    assert ray.get([f.remote(1), f.remote(1, c=5), c.m.remote(1, 2, 3), c.s.remote(4)], timeout=30) == [4, 7, 4, 4]


def test_ray_ready_and_ray_call(ray):
    @ray.remote
    class Box:
        def __init__(self):
            self.v = 41

    b = Box.remote()
    assert ray.get(b.__ray_ready__.remote(), timeout=30) is True
    assert ray.get(b.__ray_call__.remote(lambda self, d: self.v + d, 1), timeout=30) == 42


def test_gpu_ids_follow_the_drivers_visible_devices(monkeypatch):
    import os

    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "5,7")
    shoal.init(num_cpus=2, object_store_memory=64 << 20)
    try:
        assert shoal.cluster_resources()["GPU"] == 2

        @shoal.remote(num_gpus=1)
        def which():
            return shoal.get_gpu_ids(), os.environ.get("CUDA_VISIBLE_DEVICES")

        got = shoal.get([which.remote() for _ in range(4)], timeout=30)
        assert {tuple(ids) for ids, _ in got} <= {(5,), (7,)}
        assert all(env == str(ids[0]) for ids, env in got)
        with pytest.raises(ValueError, match="whole number"):
            which.options(num_gpus=1.5).remote()
    finally:
        shoal.shutdown()


def test_gpu_ids_and_cuda_visible_devices(monkeypatch):
    import os

    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    shoal.init(num_cpus=2, num_gpus=2, object_store_memory=64 << 20)
    try:
        @shoal.remote(num_gpus=1)
        def which():
            return shoal.get_gpu_ids(), os.environ.get("CUDA_VISIBLE_DEVICES")

        @shoal.remote
        def cpu_only():
            return shoal.get_gpu_ids(), os.environ.get("CUDA_VISIBLE_DEVICES")

        got = shoal.get([which.remote(), which.remote()], timeout=30)
        assert all(ids in ([0], [1]) and env == str(ids[0]) for ids, env in got)

        @shoal.remote(num_gpus=1)
        def pid():
            return os.getpid()

        # as Ray: a GPU task's worker exits after it (max_calls=1 by default)
        assert len({shoal.get(pid.remote(), timeout=30) for _ in range(3)}) == 3
        assert shoal.get(cpu_only.remote(), timeout=30)[0] == []

        @shoal.remote(num_gpus=1)
        class OnGpu:
            def where(self):
                return shoal.get_gpu_ids(), os.environ.get("CUDA_VISIBLE_DEVICES")

        a, b = OnGpu.remote(), OnGpu.remote()
        (ia, ea), (ib, eb) = shoal.get([a.where.remote(), b.where.remote()], timeout=30)
        assert sorted(ia + ib) == [0, 1] and (ea, eb) == (str(ia[0]), str(ib[0]))
    finally:
        shoal.shutdown()


def test_wait_on_a_streaming_generator(ray, tmp_path):
    gate = tmp_path / "gate"

    @ray.remote
    def gated():
        yield 1
        while not gate.exists():
            time.sleep(0.01)
        yield 2

    @ray.remote
    def never():
        while not gate.exists():
            time.sleep(0.01)
        return 0

    gen, slow = gated.remote(), never.remote()
    ready, not_ready = ray.wait([slow, gen], num_returns=1, timeout=30)
    assert ready == [gen] and not_ready == [slow]  # its first item is there
    assert ray.get(next(gen), timeout=30) == 1
    ready, _ = ray.wait([gen], timeout=0.05)
    assert ready == []  # the second item waits for the gate
    gate.touch()
    ready, _ = ray.wait([gen], timeout=30)
    assert ready == [gen] and ray.get(next(gen), timeout=30) == 2
    assert ray.get(slow, timeout=30) == 0


# -- custom serializers ------------------------------------------------------------------


class _Unpicklable:
    """Holds a lock: pickling fails unless a serializer is registered."""

    def __init__(self, value):
        import threading

        self.value = value
        self.lock = threading.Lock()


def test_register_serializer_sends_unpicklable_values(ray):
    from shoal import util

    with pytest.raises(TypeError):
        ray.put(_Unpicklable(1))
    util.register_serializer(_Unpicklable, serializer=lambda o: o.value,
                             deserializer=lambda v: _Unpicklable(v))
    try:
        @ray.remote
        def read(x):
            return x.value * 2

        assert ray.get(read.remote(_Unpicklable(21)), timeout=30) == 42
        assert ray.get(ray.put(_Unpicklable(5)), timeout=30).value == 5
    finally:
        util.deregister_serializer(_Unpicklable)
    with pytest.raises(TypeError):
        ray.put(_Unpicklable(1))


def test_inspect_serializability_names_the_culprit(capsys):
    import threading

    from shoal.util import inspect_serializability

    lock = threading.Lock()
    holder = {"fine": [1, 2], "bad": {"deep": lock}, "unhashable": [lock]}
    ok, failures = inspect_serializability(holder, name="holder")
    assert not ok
    assert {f.name for f in failures} == {"'deep'", "[0]"}
    assert all(f.obj is lock for f in failures)
    assert "cannot be serialized" in capsys.readouterr().out
    assert inspect_serializability([1, "x"])[0] is True
