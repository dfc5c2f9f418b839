"""Exit paths: shutdown(), a normal exit without it, an exception, Ctrl-C,
and SIGKILL of the driver all leave no process and no /dev/shm entry."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap

import psutil
import pytest

from ._child import Child, shm_entries, wait_until

pytestmark = pytest.mark.timeout(120)

PROGRAM = """
import os, sys, time
import shoal as ray
ray.init(num_cpus=2, object_store_memory=64 << 20)

@ray.remote
def f(x):
    time.sleep(x)
    return os.getpid()

pids = ray.get([f.remote(0.01) for _ in range(4)])
print("workers", " ".join(map(str, sorted(set(pids)))), flush=True)
"""


def descendants_gone(pids: list[int]) -> bool:
    for pid in pids:
        try:
            p = psutil.Process(pid)
            if p.status() != psutil.STATUS_ZOMBIE:
                return False
        except psutil.NoSuchProcess:
            pass
    return True


def control_sockets(pid: int | None = None) -> list[str]:
    """The control endpoint sockets of the runtime of process pid (None:
    of every runtime of this user)."""
    from shoal import config

    folder = config.runtime_dir()
    names = os.listdir(folder) if os.path.isdir(folder) else []
    prefix = "" if pid is None else f"{pid}-"
    return [os.path.join(folder, n) for n in names if n.startswith(prefix) and n.endswith(".sock")]


def run_program(tail: str) -> tuple[subprocess.CompletedProcess, list[int]]:
    src = textwrap.dedent(PROGRAM) + textwrap.dedent(tail)
    proc = subprocess.run([sys.executable, "-c", src], capture_output=True, text=True, timeout=60)
    line = next((l for l in proc.stdout.splitlines() if l.startswith("workers")), "workers")
    return proc, [int(p) for p in line.split()[1:]]


@pytest.mark.parametrize(
    "tail, code",
    [
        ("ray.shutdown()\n", 0),
        ("", 0),  # exits without shutdown()
        ("raise RuntimeError('boom')\n", 1),
        ("os._exit(0)\n", 0),  # no atexit at all: the fork server sees the driver go
    ],
    ids=["shutdown", "no-shutdown", "exception", "os-exit"],
)
def test_driver_exit_paths_leave_nothing(tail, code):
    before = shm_entries()
    sockets_before = set(control_sockets())
    proc, workers = run_program(tail)
    assert proc.returncode == code, proc.stderr
    assert workers, proc.stdout + proc.stderr
    wait_until(lambda: descendants_gone(workers), timeout=20, what="workers to exit")
    assert shm_entries() == before
    assert set(control_sockets()) <= sockets_before  # its own went with it
    if code == 0:
        assert "Traceback" not in proc.stderr, proc.stderr


def test_sigkill_of_the_driver_leaves_nothing():
    before = shm_entries()
    c = Child(PROGRAM + "\nsay('ready'); hear()\n")
    line = c.expect(timeout=60)
    workers = [int(p) for p in line.split()[1:]]
    assert c.expect(timeout=30) == "ready"
    everyone = [p.pid for p in psutil.Process(c.pid).children(recursive=True)]
    assert set(workers) <= set(everyone)
    sockets = control_sockets(c.pid)
    assert len(sockets) == 1, sockets  # (its control endpoint, which `shoal status` finds)
    c.kill()
    wait_until(lambda: descendants_gone(everyone), timeout=20, what="the fork server and workers to exit")
    assert shm_entries() == before
    assert not os.path.exists(sockets[0])  # removed by the fork server, not left for the next `shoal status`


def test_ctrl_c_in_the_driver():
    """Ctrl-C while get() waits: a plain KeyboardInterrupt traceback, with
    no internal exception chained before it."""
    c = Child(PROGRAM + """
@ray.remote
def forever():
    time.sleep(3600)
ref = forever.remote()

def entered_the_wait(frame, event, arg):
    if event == "call" and frame.f_code.co_name == "_wait_get":
        sys.setprofile(None)
        say("waiting")

sys.setprofile(entered_the_wait)
ray.get(ref)
""")
    line = c.expect(timeout=60)
    workers = [int(p) for p in line.split()[1:]]
    assert c.expect(timeout=30) == "waiting"
    everyone = [p.pid for p in psutil.Process(c.pid).children(recursive=True)]
    os.kill(c.pid, signal.SIGINT)
    assert c.wait(timeout=30) != 0
    err = c.stderr()
    assert err.rstrip().endswith("KeyboardInterrupt") and "in get" in err, err
    assert "ObjectNotFoundError" not in err and "During handling" not in err, err
    wait_until(lambda: descendants_gone(everyone + workers), timeout=20, what="workers to exit")


def test_shutdown_then_init_again_in_one_process():
    proc, _ = run_program("""
ray.shutdown()
ray.init(num_cpus=1, object_store_memory=64 << 20)
print("again", ray.get(f.remote(0)) > 0)
ray.shutdown()
""")
    assert proc.returncode == 0, proc.stderr
    assert "again True" in proc.stdout


def test_refs_of_a_closed_runtime_raise(ray):
    ref = ray.put(1)
    ray.shutdown()
    from shoal import exceptions as exc

    with pytest.raises(exc.RuntimeClosedError):
        ref.future()
    ray.init(num_cpus=1, object_store_memory=64 << 20)
    assert ray.get(ray.put(2)) == 2


def test_leak_checks_ignore_other_programs_shared_memory():
    """Another program's /dev/shm entry (multiprocessing.shared_memory makes
    psm_*) appearing during a test is not a leak of shoal's."""
    before = shm_entries()
    name = f"psm_{os.getpid():x}_edge"
    fd = os.open(f"/dev/shm/{name}", os.O_CREAT | os.O_EXCL | os.O_RDWR, 0o600)
    try:
        assert name in os.listdir("/dev/shm")
        assert shm_entries() == before
    finally:
        os.close(fd)
        os.unlink(f"/dev/shm/{name}")


@pytest.mark.parametrize("ending", ["shutdown", "sigkill"])
def test_the_runtime_folder_goes_with_the_last_runtime(tmp_path, ending):
    """The per-user folder of control sockets is made by the first runtime
    and removed with the last one's socket, whether it shut down or was
    killed (then by its fork server)."""
    folder = tmp_path / "runtimes"
    tail = "ray.shutdown()\nsay('done'); hear()\n" if ending == "shutdown" else "say('ready'); hear()\n"
    c = Child(PROGRAM + "\n" + tail, env={"SHOAL_RUNTIME_DIR": str(folder)})
    c.expect(timeout=60)  # the workers' line: the runtime ran
    everyone = [p.pid for p in psutil.Process(c.pid).children(recursive=True)]
    if ending == "sigkill":
        assert c.expect(timeout=30) == "ready"
        assert len(list(folder.iterdir())) == 1  # its socket
        c.kill()
        wait_until(lambda: descendants_gone(everyone), timeout=20, what="the fork server and workers to exit")
    else:
        assert c.expect(timeout=30) == "done"
        c.kill()
    assert not folder.exists()
