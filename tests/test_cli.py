"""The `shoal` command against a runtime with running, finished and failed
tasks and an actor; with no runtime; with two; and the control endpoint's
privacy."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys

import pytest

from shoal import cli
from shoal.control import endpoint
from tests._child import Child, wait_until

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def rundir(tmp_path, monkeypatch):
    """A runtime folder of this test's own (other runtimes on the machine stay out)."""
    folder = tmp_path / "run"
    monkeypatch.setenv("SHOAL_RUNTIME_DIR", str(folder))
    return folder


@pytest.fixture
def busy(rundir, ray, tmp_path):
    """A runtime with a running task, finished ones, a failed one, a named
    actor and a 3 MB object; yields (shoal, gate file that ends the running task)."""
    import time

    gate = tmp_path / "gate"

    @ray.remote
    def blocked_here():
        while not gate.exists():
            time.sleep(0.005)
        return 1

    @ray.remote
    def finished_here(n):
        return b"x" * n

    @ray.remote
    def failed_here():
        raise ValueError("bad input 42")

    @ray.remote
    class Tally:
        def add(self, x):
            return x

    tally = Tally.options(name="tally").remote()
    assert ray.get(tally.add.remote(1), timeout=30) == 1
    assert ray.get([finished_here.remote(100) for _ in range(5)], timeout=30)[0] == b"x" * 100
    with pytest.raises(ValueError):
        ray.get(failed_here.remote(), timeout=30)
    running = blocked_here.remote()
    big = ray.put(b"y" * 3_000_000)
    from shoal.util import state

    def listed(name, st):
        return any(t["state"] == st for t in state.list_tasks(filters=[("name", "=", name)]))

    wait_until(lambda: listed("blocked_here", "RUNNING") and listed("failed_here", "FAILED"),
               timeout=30, what="a running and a failed task listed")
    try:
        yield ray, gate
    finally:
        gate.touch()
        assert ray.get(running, timeout=30) == 1
        del big, tally


def run(capsys, *argv) -> tuple[int, str, str]:
    code = cli.main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


def table_rows(text: str) -> list[list[str]]:
    """The body rows of a rich table, as lists of cells."""
    rows = []
    for line in text.splitlines():
        if line.startswith("│"):
            rows.append([c.strip() for c in line.strip("│").split("│")])
    return rows


def test_status(busy, capsys):
    code, out, _ = run(capsys, "status", "--format", "json")
    assert code == 0
    s = json.loads(out)
    assert s["pid"] == os.getpid()
    assert s["tasks"]["RUNNING"] == 1 and s["tasks"]["FAILED"] == 1 and s["tasks"]["FINISHED"] >= 6
    assert s["actors"] == {"ALIVE": 1}
    assert s["store"]["used_bytes"] >= 3_000_000 and s["store"]["capacity_bytes"] == 256 << 20
    assert s["resources"]["CPU"]["total"] == 2.0 and s["resources"]["CPU"]["used"] >= 1.0  # the running task
    code, out, _ = run(capsys, "status")
    assert code == 0
    cells = dict((r[0], r[1]) for r in table_rows(out))
    assert "RUNNING 1" in cells["tasks"] and "FAILED 1" in cells["tasks"]
    assert "ALIVE 1" in cells["actors"] and "of 256.0 MiB used" in cells["store"]


def test_list_tasks_as_json_and_table(busy, capsys):
    code, out, _ = run(capsys, "list", "tasks", "--format", "json", "--limit", "1000")
    assert code == 0
    rows = json.loads(out)
    by_state = {}
    for r in rows:
        by_state.setdefault((r["name"], r["state"]), []).append(r)
    assert len(by_state["blocked_here", "RUNNING"]) == 1
    assert len(by_state["finished_here", "FINISHED"]) == 5
    (failed,) = by_state["failed_here", "FAILED"]
    assert failed["worker_pid"] and failed["duration_s"] >= 0
    (call,) = by_state["Tally.add", "FINISHED"]
    assert call["type"] == "ACTOR_TASK" and call["actor_id"]
    assert all(r["result_bytes"] > 100 for r in by_state["finished_here", "FINISHED"])
    code, out, _ = run(capsys, "list", "tasks", "--filter", "state=FAILED")
    assert code == 0
    rows = table_rows(out)
    assert len(rows) == 1 and rows[0][1:3] == ["failed_here", "FAILED"]
    code, out, _ = run(capsys, "list", "tasks", "--filter", "state!=FINISHED", "--limit", "1", "--format", "json")
    assert len(json.loads(out)) == 1


def test_list_actors_workers_objects(busy, capsys):
    code, out, _ = run(capsys, "list", "actors", "--format", "json")
    (actor,) = json.loads(out)
    assert actor["class_name"] == "Tally" and actor["name"] == "tally" and actor["state"] == "ALIVE"
    code, out, _ = run(capsys, "list", "actors")
    assert [r[1:4] for r in table_rows(out)] == [["Tally", "tally", "ALIVE"]]
    code, out, _ = run(capsys, "list", "workers", "--format", "json")
    workers = json.loads(out)
    assert actor["pid"] in {w["pid"] for w in workers}
    (runner,) = [w for w in workers if w["current_task"] == "blocked_here"]
    assert runner["running_s"] >= 0 and runner["rss_bytes"] > 1 << 20 and runner["cpu_percent"] is not None
    code, out, _ = run(capsys, "list", "workers")
    assert any("blocked_here" in r for r in table_rows(out))
    code, out, _ = run(capsys, "list", "objects", "--format", "json", "--limit", "1")
    (largest,) = json.loads(out)
    assert largest["size"] >= 3_000_000 and largest["kind"] == "bytes"
    assert ["LOCAL_REFERENCE", f"driver (pid {os.getpid()})"] in largest["references"]
    code, out, _ = run(capsys, "list", "objects", "--limit", "1")
    assert table_rows(out)[0][0] == largest["object_id"]


def test_summary_memory_timeline_stack(busy, capsys, tmp_path):
    code, out, _ = run(capsys, "summary", "tasks", "--format", "json")
    summary = json.loads(out)
    assert summary["finished_here"] == {"FINISHED": 5} and summary["failed_here"] == {"FAILED": 1}
    assert summary["blocked_here"] == {"RUNNING": 1}
    code, out, _ = run(capsys, "summary", "tasks")
    rows = {r[0]: r for r in table_rows(out)}
    assert rows["finished_here"][1] == "5"
    code, out, _ = run(capsys, "memory")
    assert code == 0 and "Object references status" in out and f"driver (pid {os.getpid()})" in out
    trace = tmp_path / "trace.json"
    code, out, _ = run(capsys, "timeline", "-o", str(trace))
    assert code == 0 and str(trace) in out
    events = json.loads(trace.read_text())
    tasks = [e for e in events if e["ph"] == "X"]
    assert sorted(e["name"] for e in tasks if e["name"] != "Tally.add") == ["failed_here"] + ["finished_here"] * 5
    rows = {e["pid"]: e["args"]["name"] for e in events if e["name"] == "process_name"}
    assert {e["pid"] for e in tasks} <= set(rows) and os.getpid() in rows
    code, out, _ = run(capsys, "stack")
    assert code == 0 and f"=== driver (pid {os.getpid()}) ===" in out
    assert "in blocked_here" in out  # the worker running it, caught in its loop


def test_no_runtime_says_so_in_one_line(rundir, capsys):
    code, out, err = run(capsys, "status")
    assert code == cli.EXIT_NO_RUNTIME and out == ""
    assert err.count("\n") == 1 and "no shoal runtime is running" in err


def test_two_runtimes_are_listed_and_pid_chooses(rundir, ray, capsys):
    other = Child("""
        import shoal
        shoal.init(num_cpus=1, object_store_memory=64 << 20)
        say("READY", os.getpid())
        hear()
        shoal.shutdown()
    """, env={"SHOAL_RUNTIME_DIR": str(rundir)})
    try:
        assert other.expect(60) == f"READY {other.pid}"
        code, out, err = run(capsys, "status")
        assert code == cli.EXIT_CHOOSE and "--pid" in err
        assert str(other.pid) in err and str(os.getpid()) in err
        code, out, _ = run(capsys, "status", "--pid", str(other.pid), "--format", "json")
        assert code == 0 and json.loads(out)["pid"] == other.pid
        code, out, err = run(capsys, "status", "--pid", "1")
        assert code == cli.EXIT_NO_RUNTIME and "no shoal runtime with driver pid 1" in err
    finally:
        other.send("")
        assert other.wait(30) == 0, other.stderr()


def test_the_console_script_is_installed(rundir, ray):
    exe = shutil.which("shoal", path=os.path.dirname(sys.executable))
    assert exe, "the shoal console script is not installed next to this Python"
    out = subprocess.run([exe, "list", "workers", "--format", "json"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert len(json.loads(out.stdout)) >= 1


def test_endpoint_folder_and_socket_are_private(rundir, ray):
    (info,) = endpoint.runtimes()
    assert os.stat(rundir).st_mode & 0o777 == 0o700
    assert os.stat(info.path).st_mode & 0o777 == 0o600


@pytest.mark.skipif(os.getuid() != 0, reason="switching to another uid needs root")
def test_another_user_cannot_open_the_endpoint(rundir, ray):
    (info,) = endpoint.runtimes()
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: become nobody, try to connect, report
        try:
            os.setgid(65534)
            os.setuid(65534)
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                s.connect(info.path)
                s.sendall(b'{"q": "status"}\n')
                answer = s.recv(100)
                os.write(w, b"answered" if answer else b"closed")
            except PermissionError:
                os.write(w, b"refused")
        finally:
            os._exit(0)
    os.close(w)
    try:
        with os.fdopen(r, "rb") as f:
            assert f.read() == b"refused"
    finally:
        os.waitpid(pid, 0)


def test_a_client_of_another_uid_is_hung_up_on(rundir, ray, monkeypatch):
    """Past the folder (were its mode changed), the peer's uid is checked."""
    from shoal import objectref

    monkeypatch.setattr(objectref.current().control, "uid", 12345)  # as if it ran as uid 12345
    (info,) = endpoint.runtimes()
    with pytest.raises(endpoint.ControlError, match="closed the connection|did not answer"):
        with endpoint.Client(info, timeout=10) as c:
            c.ask("status")


def test_a_bad_request_is_answered_with_its_error(rundir, ray):
    (info,) = endpoint.runtimes()
    with endpoint.Client(info) as c:
        with pytest.raises(endpoint.ControlError, match="unknown question 'nonsense'"):
            c.ask("nonsense")
        with pytest.raises(endpoint.ControlError, match="predicate"):
            c.ask("tasks", filters=[["state", ">", "x"]])
        assert c.ask("status")["pid"] == os.getpid()  # the connection goes on


def test_dashboard_command_serves_the_page_for_a_running_runtime(rundir, ray):
    pytest.importorskip("aiohttp")
    import urllib.request

    proc = subprocess.Popen([sys.executable, "-m", "shoal.cli", "dashboard", "--port", "0"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "SHOAL_RUNTIME_DIR": str(rundir)})
    try:
        line = proc.stdout.readline()
        urls = [w for w in line.split() if w.startswith("http://127.0.0.1:")]
        assert urls, f"no URL in {line!r}"
        with urllib.request.urlopen(urls[0] + "/api/dashboard", timeout=30) as r:
            answer = json.loads(r.read())
        assert answer["status"]["pid"] == os.getpid() and answer["workers"]
    finally:
        proc.kill()
        proc.wait(30)
        proc.stdout.close()
        proc.stderr.close()
