"""shoal.timeline(): Chrome trace events of the tasks that ended, recorded always."""

from __future__ import annotations

import json
import os

import pytest

from tests._child import wait_until

pytestmark = pytest.mark.timeout(60)


def test_timeline_has_one_complete_event_per_task_and_a_row_per_process(ray, tmp_path):
    @ray.remote
    def square(x):
        return x * x

    @ray.remote
    def size(b):
        return len(b)

    @ray.remote
    class Echo:
        def echo(self, x):
            return x

    echo = Echo.remote()
    assert ray.get([square.remote(i) for i in range(20)], timeout=30) == [i * i for i in range(20)]
    blob = ray.put(b"z" * 200_000)
    assert ray.get(size.remote(blob), timeout=30) == 200_000
    assert ray.get(echo.echo.remote(b"e" * 1000), timeout=30) == b"e" * 1000

    def complete():
        return [e for e in ray.timeline() if e["ph"] == "X"]

    wait_until(lambda: len(complete()) == 22, what="22 tasks in the timeline")  # DONE follows the result
    path = tmp_path / "trace.json"
    assert ray.timeline(str(path)) is None
    events = json.loads(path.read_text())  # what chrome://tracing and Perfetto load
    tasks = [e for e in events if e["ph"] == "X"]
    assert sorted(e["name"] for e in tasks) == ["Echo.echo"] + ["size"] + ["square"] * 20
    assert len({e["args"]["task_id"] for e in tasks}) == 22
    for e in tasks:
        assert e["dur"] >= 0 and e["ts"] >= e["args"]["submitted_us"] - 1  # started after it was submitted
        assert e["args"]["state"] == "FINISHED"
    (sized,) = [e for e in tasks if e["name"] == "size"]
    assert sized["args"]["arg_bytes"] >= 200_000  # the ref's object counts
    (echoed,) = [e for e in tasks if e["name"] == "Echo.echo"]
    assert echoed["args"]["result_bytes"] >= 1000 and echoed["cat"] == "actor_task"
    rows = {e["pid"]: e["args"]["name"] for e in events if e["name"] == "process_name"}
    assert rows[os.getpid()].startswith("driver")
    assert {e["pid"] for e in tasks} <= set(rows)
    assert any(name.startswith("actor Echo") for name in rows.values())
    assert sum(1 for name in rows.values() if name.startswith("worker")) >= 1


def test_a_failed_task_is_in_the_timeline_and_in_the_failures(ray):
    @ray.remote
    def broken():
        raise KeyError("missing 7")

    with pytest.raises(KeyError):
        ray.get(broken.remote(), timeout=30)
    from shoal import objectref
    from shoal.control.answers import Answers

    answers = Answers(objectref.current())
    wait_until(lambda: answers.failures(), what="the failure recorded")
    (failure,) = answers.failures()
    assert failure["name"] == "broken" and "KeyError: 'missing 7'" in failure["error"]
    (event,) = [e for e in ray.timeline() if e["ph"] == "X"]
    assert event["args"]["state"] == "FAILED" and event["cname"] == "terrible"


def test_the_buffer_is_bounded_and_recording_can_be_off(monkeypatch):
    import shoal
    from shoal.util import state

    monkeypatch.setenv("SHOAL_TASK_EVENTS", "5")
    shoal.init(num_cpus=1, object_store_memory=64 << 20)
    try:
        @shoal.remote
        def one():
            return 1

        shoal.get([one.remote() for _ in range(12)], timeout=30)
        wait_until(lambda: state.summarize_tasks().get("one") == {"FINISHED": 5},
                   what="the last 5 tasks kept")
        assert len([e for e in shoal.timeline() if e["ph"] == "X"]) == 5
    finally:
        shoal.shutdown()
    monkeypatch.setenv("SHOAL_TASK_EVENTS", "0")
    shoal.init(num_cpus=1, object_store_memory=64 << 20)
    try:
        assert shoal.get(one.remote(), timeout=30) == 1
        assert shoal.timeline() == [e for e in shoal.timeline() if e["ph"] == "M"]
        from shoal import objectref

        assert objectref.current().shell.events is None
    finally:
        shoal.shutdown()
