"""The memory monitor: its decisions with made-up readings, the scheduler's
retry of a task it killed, and, end to end, a task that takes more memory
than a threshold set just above what the machine uses now."""

from __future__ import annotations

import itertools
import os
import pickle
import signal
import threading

import pytest

from shoal import config
from shoal import exceptions as exc
from shoal.scheduler import memory_monitor as M
from shoal.scheduler.state import Dispatch, FailTask, RetryLater, Scheduler, Task, make_shape
from tests._child import gate_actor, wait_until

pytestmark = pytest.mark.timeout(120)

GiB = 1 << 30


def cand(wid, owner=None, retriable=True, started=0.0, seq=None, actor=False, rss=1 << 20):
    return M.Candidate(wid, 1000 + wid, f"task{wid}", owner, retriable, seq if seq is not None else wid,
                       actor, started, rss)


# -- the pure core -------------------------------------------------------------------


def test_limit_is_the_larger_of_threshold_and_min_free():
    assert M.limit_bytes(100 * GiB, 0.95) == int(95 * GiB)
    assert M.limit_bytes(100 * GiB, 0.5, min_free_bytes=10 * GiB) == 90 * GiB
    assert M.limit_bytes(100 * GiB, 0.95, min_free_bytes=10 * GiB) == int(95 * GiB)


def test_nothing_is_killed_below_the_threshold():
    core = M.MonitorCore(0.95)
    assert core.decide(M.MemoryReading(94 * GiB, 100 * GiB), [cand(1)]) is None
    assert core.decide(M.MemoryReading(96 * GiB, 100 * GiB), []) is None


def test_the_latest_started_retriable_task_of_the_largest_owner_dies_and_is_retried():
    core = M.MonitorCore(0.9)
    cands = [cand(1, owner=None, started=1.0), cand(2, owner=None, started=3.0), cand(3, owner=b"x", started=5.0),
             cand(4, retriable=False, started=9.0), cand(5, actor=True, retriable=False, started=10.0)]
    kill = core.decide(M.MemoryReading(95, 100), cands)
    assert kill.victim.wid == 2 and kill.retry
    assert "most recently started" in kill.why
    # One at a time: nothing more until the victim is gone.
    assert core.decide(M.MemoryReading(99, 100), cands) is None
    rest = [c for c in cands if c.wid != 2]
    kill = core.decide(M.MemoryReading(95, 100), rest)
    # Groups of one now: the one whose oldest task started last goes, not retried.
    assert kill.victim.wid == 3 and not kill.retry


def test_equal_groups_lose_the_one_that_started_last():
    cands = [cand(1, owner=b"a", started=1.0), cand(2, owner=b"a", started=2.0),
             cand(3, owner=b"b", started=4.0), cand(4, owner=b"b", started=5.0)]
    victim, retry, _ = M.choose_victim(cands)
    assert victim.wid == 4 and retry


def test_work_that_cannot_be_retried_goes_last_and_fails():
    cands = [cand(1, retriable=False, started=1.0), cand(2, actor=True, retriable=False, started=2.0)]
    victim, retry, why = M.choose_victim(cands)
    assert victim.wid == 2 and not retry and victim.is_actor
    victim, retry, why = M.choose_victim(cands[:1])
    assert victim.wid == 1 and not retry and "max_retries=0" in why
    # A retriable task is preferred to both, even if it started first.
    victim, _, _ = M.choose_victim(cands + [cand(3, started=0.5)])
    assert victim.wid == 3


def test_retry_delay_doubles_up_to_a_minute():
    assert [M.retry_delay(1.0, k) for k in (1, 2, 3, 7, 8, 100)] == [1, 2, 4, 60, 60, 60]
    assert M.retry_delay(1.0, 0) == 0


def test_kernel_oom_evidence():
    none = M.OomCounters(None, None)
    calm = M.MemoryReading(GiB, 24 * GiB)
    assert M.kernel_oom_evidence(none, none, calm, 5) is None
    assert M.kernel_oom_evidence(M.OomCounters(3, None), M.OomCounters(3, None), calm, 5) is None
    text = M.kernel_oom_evidence(M.OomCounters(3, 0), M.OomCounters(4, 1), calm, 2 * GiB)
    assert "likely killed for memory" in text and "from 3 to 4" in text and "2.00 GiB" in text
    assert "container" in text
    text = M.kernel_oom_evidence(none, none, M.MemoryReading(23 * GiB, 24 * GiB), None)
    assert "96%" in text


def test_readings_come_from_proc():
    r = M.read_meminfo()
    assert 0 < r.used_bytes < r.total_bytes
    assert M.read_memory().total_bytes > 0
    assert M.read_private_rss(os.getpid()) > 0
    assert M.read_private_rss(2 ** 22 + 12345) is None  # no such process
    counters = M.read_oom_counters()
    assert counters.machine is None or counters.machine >= 0


def test_cgroup_readings(tmp_path):
    (tmp_path / "memory.max").write_text("1000\n")
    (tmp_path / "memory.current").write_text("900\n")
    (tmp_path / "memory.stat").write_text("anon 700\ninactive_file 100\n")
    (tmp_path / "memory.events").write_text("low 0\noom 2\noom_kill 2\n")
    assert M.read_cgroup(str(tmp_path)) == M.MemoryReading(800, 1000)
    assert M.read_oom_counters(str(tmp_path)).cgroup == 2
    (tmp_path / "memory.max").write_text("max\n")
    assert M.read_cgroup(str(tmp_path)) is None


def test_thread_tick_with_fake_readings():
    killed = []
    me = os.getpid()
    t = M.MonitorThread(0.5, 0.0, lambda: [M.Candidate(1, me, "t", None, True, 7)], killed.append)
    t.read_memory = lambda: M.MemoryReading(40, 100)
    assert t.tick() is None and t.last_rss[me] > 0
    t.read_memory = lambda: M.MemoryReading(60, 100)
    kill = t.tick()
    assert killed == [kill] and kill.victim.pid == me and kill.victim.rss_bytes > 0 and not kill.retry


def test_settings_from_system_config_and_environment(monkeypatch):
    assert config.memory_monitor_config() == config.MemoryMonitorConfig()
    c = config.memory_monitor_config({"memory_usage_threshold": 0.5, "memory_monitor_refresh_ms": 0})
    assert c.threshold == 0.5 and not c.enabled
    monkeypatch.setenv("RAY_memory_usage_threshold", "0.8")
    monkeypatch.setenv("SHOAL_MEMORY_MONITOR_REFRESH_MS", "100")
    c = config.memory_monitor_config()
    assert c.threshold == 0.8 and c.refresh_s == 0.1
    with pytest.raises(ValueError, match="memory_usage_threshold"):
        config.memory_monitor_config({"memory_usage_threshold": 1.5})


def test_out_of_memory_error_says_what_and_what_to_do_and_pickles():
    e = exc.OutOfMemoryError("", "big_task", 42, 3 * GiB, 23 * GiB, 24 * GiB, 0.95, "It was chosen because x.")
    text = str(e)
    for part in ("big_task", "3.00 GiB", "23.00 GiB", "0.95", "pid 42", "memory_usage_threshold"):
        assert part in text
    back = pickle.loads(pickle.dumps(e))
    assert str(back) == text and back.rss_bytes == 3 * GiB
    assert str(exc.OutOfMemoryError("plain")) == "plain"  # Ray's signature


# -- the scheduler's side ---------------------------------------------------------------


def _one_task_running(max_retries=3):
    s = Scheduler({"CPU": 1}, target_workers=1)
    s.start()
    s.worker_started(1)
    t = Task(1, b"t" * 16, b"f", make_shape({"CPU": 1}), max_retries, None, "hog")
    actions = s.submit(t)
    assert any(type(a) is Dispatch for a in actions)
    return s, t


def test_a_task_killed_for_memory_is_retried_later_without_spending_max_retries():
    s, t = _one_task_running(max_retries=1)
    actions = s.worker_died(1, True, oom="retry", retry_delay=2.0)
    assert [a for a in actions if type(a) is RetryLater] == [RetryLater(1, 2.0)]
    assert t.state == "backoff" and t.attempts == 0 and t.oom_kills == 1
    s.check()
    s.worker_started(2) if 2 in s.workers else None
    actions = s.retry_now(1)
    assert t.state in ("ready", "assigned")
    s.check()
    assert s.retry_now(1) == []  # once only


def test_a_task_killed_for_memory_without_retry_fails_and_a_cancel_in_backoff_works():
    s, t = _one_task_running()
    actions = s.worker_died(1, True, oom="fail")
    assert [a.kind for a in actions if type(a) is FailTask] == ["oom"]
    s, t = _one_task_running()
    s.worker_died(1, True, oom="retry", retry_delay=60.0)
    actions = s.cancel(1)
    assert [a.kind for a in actions if type(a) is FailTask] == ["cancelled"]
    assert s.retry_now(1) == []


# -- end to end ----------------------------------------------------------------------------


def _threshold_above_now(margin_bytes: int) -> float:
    r = M.read_memory()
    return min(0.99, (r.used_bytes + margin_bytes) / r.total_bytes)


@pytest.fixture
def low_threshold():
    """A runtime whose memory monitor kills once ~600 MB more than now are in use."""
    import shoal

    os.environ["SHOAL_VALIDATE"] = "1"
    try:
        shoal.init(num_cpus=1, object_store_memory=128 << 20, _system_config={
            "memory_usage_threshold": _threshold_above_now(600 << 20), "memory_monitor_refresh_ms": 50,
            "task_oom_retry_delay_base_ms": 10})
    finally:
        os.environ.pop("SHOAL_VALIDATE", None)
    try:
        yield shoal
    finally:
        shoal.shutdown()


def test_a_task_that_takes_too_much_memory_gets_out_of_memory_error(low_threshold, capfd):
    ray = low_threshold

    @ray.remote(max_retries=2)
    def hog():
        block = b"x" * (2 << 30)  # written: 2 GiB resident, of the 24 the machine has
        threading.Event().wait(100)  # killed long before
        return len(block)

    with pytest.raises(exc.OutOfMemoryError) as info:
        ray.get(hog.remote(), timeout=90)
    e = info.value
    assert e.task_name.endswith("hog") and e.rss_bytes > 100 << 20 and e.used_bytes > 0 and 0 < e.threshold < 1
    assert "hog" in str(e) and "memory_usage_threshold" in str(e) and "only one running" in str(e)
    assert "memory is low" in capfd.readouterr().err
    # The runtime goes on.
    assert ray.get(ray.remote(lambda: 7).remote(), timeout=60) == 7


@pytest.fixture
def two_tasks_threshold():
    """A runtime whose monitor kills once ~2.5 GB more than now are in use:
    one task holding 1.5 GB fits, two do not."""
    import shoal

    shoal.init(num_cpus=2, object_store_memory=128 << 20, _system_config={
        "memory_usage_threshold": _threshold_above_now(2500 << 20), "memory_monitor_refresh_ms": 50,
        "task_oom_retry_delay_base_ms": 10})
    try:
        yield shoal
    finally:
        shoal.shutdown()


def test_a_task_killed_while_its_owner_has_others_running_is_retried(two_tasks_threshold, tmp_path, capfd):
    ray = two_tasks_threshold
    log = tmp_path / "starts"

    @ray.remote(max_retries=1)  # retriable; the retries for memory do not count against it
    def hold(name, gate, path):
        with open(path, "a") as f:
            f.write(name + "\n")
        block = b"x" * (1536 << 20)
        ray.get(gate.wait.remote())
        return name, len(block)

    gate = gate_actor(ray)
    refs = [hold.remote(n, gate, str(log)) for n in ("a", "b")]
    wait_until(lambda: log.exists() and len(log.read_text().split()) >= 4, 90, "a task killed twice and started again")
    ray.get(gate.open.remote())
    assert sorted(ray.get(refs, timeout=90)) == [("a", 1536 << 20), ("b", 1536 << 20)]
    err = capfd.readouterr().err
    assert "memory is low" in err and "will be retried" in err


def test_an_actor_killed_for_memory_dies_with_the_reason(low_threshold):
    ray = low_threshold

    @ray.remote
    class Hog:
        def take(self):
            self.block = b"x" * (2 << 30)
            threading.Event().wait(100)

    h = Hog.remote()
    with pytest.raises(exc.ActorDiedError, match="memory monitor killed it"):
        ray.get(h.take.remote(), timeout=90)
    assert ray.get(ray.remote(lambda: 8).remote(), timeout=60) == 8


def test_a_sigkill_under_memory_pressure_is_explained(ray, tmp_path):
    started = tmp_path / "started"

    @ray.remote(max_retries=0)
    def victim(path):
        with open(path + ".tmp", "w") as f:
            f.write(str(os.getpid()))
        os.rename(path + ".tmp", path)
        threading.Event().wait(100)

    from shoal import objectref

    monitor = objectref.current().shell.monitor
    ref = victim.remote(str(started))
    wait_until(started.exists, 60, "the task running")
    kills = itertools.count(1000)  # the kernel's count rises between any two readings
    monitor.read_counters = lambda: M.OomCounters(next(kills), None)
    monitor._history.clear()
    os.kill(int(started.read_text()), signal.SIGKILL)
    with pytest.raises(exc.WorkerCrashedError) as info:
        ray.get(ref, timeout=60)
    text = str(info.value)
    assert "victim" in text and "SIGKILL" in text and "likely killed for memory" in text and "oom_kill" in text
    assert ray.get(ray.remote(lambda: 9).remote(), timeout=60) == 9


def test_a_plain_sigkill_does_not_blame_memory(ray, tmp_path):
    started = tmp_path / "started"

    @ray.remote(max_retries=0)
    def victim(path):
        open(path, "w").close()
        threading.Event().wait(100)

    from shoal import objectref

    ref = victim.remote(str(started))
    wait_until(started.exists, 60, "the task running")
    for pid in objectref.current().shell.worker_pids():
        os.kill(pid, signal.SIGKILL)
    with pytest.raises(exc.WorkerCrashedError) as info:
        ray.get(ref, timeout=60)
    assert "likely killed for memory" not in str(info.value)
