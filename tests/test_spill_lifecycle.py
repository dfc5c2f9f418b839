"""Spill files leave with their runtime, whatever ends it; a full disk loses
no object; spilling is configured as in Ray."""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import subprocess

import numpy as np
import psutil
import pytest

from shoal import exceptions as exc

from ._child import Child, process_gone, wait_until

pytestmark = pytest.mark.timeout(120)

MiB = 1 << 20

SPILLING_DRIVER = """
import numpy as np
import shoal as ray
ray.init(num_cpus=1, object_store_memory=16 << 20, object_spilling_directory=sys.argv[1])
refs = [ray.put(np.full(1 << 18, k)) for k in range(40)]  # 80 MiB through a 16 MiB store
rt = ray.objectref.current()
assert rt.store.statistics().num_spilled > 0
say("spilled", rt.shell.pool.proc.pid)
"""


def spill_entries(directory) -> list[str]:
    return [n for n in os.listdir(directory) if "shoal-spill" in n]


@pytest.mark.parametrize("tail", ["ray.shutdown()", "", "raise SystemExit(3)"],
                         ids=["shutdown", "exit-without-shutdown", "exception"])
def test_spill_files_go_when_the_driver_exits(tmp_path, tail):
    c = Child(SPILLING_DRIVER + tail + "\n", args=(tmp_path,))
    assert c.expect(timeout=60).startswith("spilled")
    assert spill_entries(tmp_path), "the driver spilled into its folder"
    c.wait(timeout=60)
    assert spill_entries(tmp_path) == []


def test_sigkill_of_the_driver_leaves_no_spill_file(tmp_path):
    c = Child(SPILLING_DRIVER + "hear()\n", args=(tmp_path,))
    _, server = c.expect(timeout=60).split()
    folder = os.path.join(tmp_path, spill_entries(tmp_path)[0])
    assert any(n.endswith((".obj", ".fused")) for n in os.listdir(folder))
    c.kill()
    # The fork server removes the folder, then exits: wait for its exit.
    # (It takes a few ms on a quiet machine; timings are not asserted here.)
    if not process_gone(int(server)):
        psutil.Process(int(server)).wait(timeout=30)
    assert not os.path.exists(folder)


def test_a_new_runtime_removes_what_dead_runtimes_left(tmp_path):
    import shoal

    dead = tmp_path / "shoal-spill-deadbeef"
    dead.mkdir()
    (dead / "lock").touch()
    (dead / "7.obj").write_bytes(b"x" * 1000)
    alive = tmp_path / "shoal-spill-0a0a0a0a"  # a folder whose lock a live process holds
    alive.mkdir()
    fd = os.open(alive / "lock", os.O_CREAT | os.O_RDWR)
    fcntl.flock(fd, fcntl.LOCK_EX)
    try:
        shoal.init(num_cpus=1, object_store_memory=16 * MiB, object_spilling_directory=str(tmp_path))
        try:
            assert not dead.exists()
            assert alive.exists()
            mine = shoal.objectref.current().spill_folders.paths[0]
            assert oct(os.stat(mine).st_mode & 0o777) == "0o700"
        finally:
            shoal.shutdown()
    finally:
        os.close(fd)
        shutil.rmtree(alive)


def tiny_disk(path) -> bool:
    """Mount a 24 MiB tmpfs at path (root only): a disk that fills up."""
    if os.geteuid() != 0:
        return False
    os.makedirs(path, exist_ok=True)
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=24m,mode=0700", "tmpfs", str(path)],
                          capture_output=True)
    return done.returncode == 0


@pytest.fixture
def full_disk(tmp_path):
    disk = tmp_path / "disk"
    if not tiny_disk(disk):
        pytest.skip("mounting a small tmpfs needs root, to make a disk that fills up")
    try:
        yield disk
    finally:
        subprocess.run(["umount", "-l", str(disk)], check=False)


def test_a_full_disk_loses_nothing(full_disk):
    """Spilling to a 24 MiB disk: once it is full, the put that needed room
    gets OutOfDiskError, and every object stored before is intact."""
    import shoal as ray

    ray.init(num_cpus=1, object_store_memory=16 * MiB, object_spilling_directory=str(full_disk))
    try:
        kept = []
        with pytest.raises(exc.OutOfDiskError) as info:
            for k in range(40):  # 80 MiB: more than the store and the disk together
                kept.append((k, ray.put(np.full(MiB // 4, float(k)))))
        text = str(info.value)
        assert "No space left on device" in text and "object_spilling_directory" in text
        assert "largest holders" in text.lower()
        assert 8 <= len(kept) < 40
        for k, ref in kept:
            a = ray.get(ref)
            assert a[0] == k and a[-1] == k
        spiller = ray.objectref.current().spiller
        assert "No space left" in spiller.stats.last_error
        ray.objectref.current().store.raw.validate()
        del kept, a
        assert ray.get(ray.put(np.ones(MiB // 8))).sum() == MiB // 8  # it goes on
    finally:
        ray.shutdown()
    assert [n for n in os.listdir(full_disk) if n.startswith("shoal")] == []


def test_spilling_off_means_a_clear_full_error(tmp_path):
    import shoal as ray

    ray.init(num_cpus=1, object_store_memory=16 * MiB, object_spilling_directory=None)
    try:
        keep = [ray.put(np.zeros(MiB // 2)) for _ in range(3)]
        with pytest.raises(exc.ObjectStoreFullError) as info:
            keep += [ray.put(np.zeros(MiB // 2)) for _ in range(10)]
        text = str(info.value)
        assert "The largest holders of store memory: driver" in text
        assert "memory_summary()" in text
        assert ray.objectref.current().spill_folders is None

        @ray.remote
        def too_much():
            return np.ones(MiB)  # 8 MiB: more than the room left

        with pytest.raises(exc.ObjectStoreFullError) as info:  # in a worker: the store's own view
            ray.get(too_much.remote())
        assert "The largest objects in the store:" in str(info.value)
        assert "not read now: kept by references" in str(info.value)
        del keep
    finally:
        ray.shutdown()


def test_ray_system_config_and_environment(tmp_path, monkeypatch):
    import shoal as ray

    a, b = tmp_path / "a", tmp_path / "b"
    cfg = {"type": "filesystem", "params": {"directory_path": [str(a), str(b)]}}
    ray.init(num_cpus=1, object_store_memory=16 * MiB,
             _system_config={"object_spilling_config": json.dumps(cfg), "object_spilling_threshold": 0.6})
    try:
        rt = ray.objectref.current()
        assert [os.path.dirname(p) for p in rt.spill_folders.paths] == [str(a), str(b)]
        assert rt.store.statistics().spill_watermark == int(16 * MiB * 0.6)
        refs = [ray.put(np.full(MiB // 8 * 4, k)) for k in range(12)]  # 48 MiB
        used = {os.path.basename(os.path.dirname(f)) for f in rt.spill_folders.paths if os.listdir(f) != ["lock"]}
        assert used == {"a", "b"}  # files go round the directories
        assert [ray.get(r)[0] for r in refs] == list(range(12))
    finally:
        ray.shutdown()
    monkeypatch.setenv("SHOAL_OBJECT_SPILLING_DIRECTORY", str(tmp_path / "env"))
    ray.init(num_cpus=1, object_store_memory=16 * MiB)
    try:
        assert ray.objectref.current().spill_folders.paths[0].startswith(str(tmp_path / "env"))
    finally:
        ray.shutdown()
    with pytest.raises(ValueError, match="filesystem"):
        ray.init(_system_config={"object_spilling_config": json.dumps({"type": "smart_open", "params": {}})})
    with pytest.raises(ValueError, match="threshold"):
        ray.init(_system_config={"object_spilling_threshold": 1.5})
    assert not ray.is_initialized()


def test_default_folder_is_in_the_temp_dir():
    import tempfile

    import shoal as ray

    ray.init(num_cpus=1, object_store_memory=16 * MiB)
    try:
        folder = ray.objectref.current().spill_folders.paths[0]
        assert os.path.dirname(folder) == tempfile.gettempdir()
        assert oct(os.stat(folder).st_mode & 0o777) == "0o700"
    finally:
        ray.shutdown()
    assert not os.path.exists(folder)


def test_a_reader_killed_while_reading_changes_nothing_for_others(tmp_path):
    import shoal as ray

    ray.init(num_cpus=2, object_store_memory=16 * MiB, object_spilling_directory=str(tmp_path))
    try:
        refs = [ray.put(np.full(MiB // 8 * 2, k)) for k in range(24)]  # 48 MiB
        assert ray.objectref.current().store.statistics().num_spilled > 0

        @ray.remote(max_retries=0)
        def read_then_die(refs):
            arrays = ray.get(refs)  # spilled ones are mapped from their files
            os._exit(1)

        @ray.remote
        def first_items(refs):
            return [int(a[0]) for a in ray.get(refs)]

        with pytest.raises(exc.WorkerCrashedError):
            ray.get(read_then_die.remote(refs))
        assert ray.get(first_items.remote(refs)) == list(range(24))
        assert [int(ray.get(r)[-1]) for r in refs] == list(range(24))
        ray.objectref.current().store.raw.validate()
    finally:
        ray.shutdown()
