"""Dask on shoal through Dask's own API: dask.compute and dask.config with
dask.array, dask.dataframe and dask.delayed graphs."""

from __future__ import annotations

import os

import numpy as np
import pytest

dask = pytest.importorskip("dask")
import dask.array as da  # noqa: E402

pytestmark = pytest.mark.timeout(180)


@pytest.fixture
def on_shoal(ray):
    from shoal.util.dask import shoal_dask_get

    return ray, shoal_dask_get


def test_array_job_matches_numpy(on_shoal):
    _, get = on_shoal
    x = da.random.RandomState(0).random_sample((400, 400), chunks=(100, 100))
    expected = (x + x.T).mean(axis=0).compute(scheduler="sync")
    got = dask.compute((x + x.T).mean(axis=0), scheduler=get)[0]
    assert np.allclose(got, expected)
    # Several collections and nested results, as dask.compute returns them.
    total, parts = dask.compute(x.sum(), [x[0, 0], x[-1, -1]], scheduler=get)
    assert np.isclose(total, float(x.sum().compute(scheduler="sync")))
    assert len(parts) == 2


def test_config_set_and_enable_disable(on_shoal):
    from shoal.util.dask import disable_dask_on_shoal, enable_dask_on_shoal

    ray, get = on_shoal
    with dask.config.set(scheduler=get):
        assert int(da.ones(1000, chunks=100).sum().compute()) == 1000
    enable_dask_on_shoal()
    try:
        assert dask.base.get_scheduler() is get
        assert int(da.arange(10, chunks=3).sum().compute()) == 45
    finally:
        disable_dask_on_shoal()
    assert dask.base.get_scheduler() is not get


def chunk_facts(block):
    return np.array([[block.flags.writeable, os.getpid()]])


def test_chunks_reach_tasks_zero_copy_in_worker_processes(on_shoal):
    _, get = on_shoal
    x = da.from_array(np.arange(40_000, dtype=np.float64).reshape(200, 200), chunks=(100, 200))
    facts = x.map_blocks(chunk_facts, chunks=(1, 2), dtype=np.int64).compute(scheduler=get)
    assert not facts[:, 0].any(), "chunks arrive as read-only views of the store"
    assert os.getpid() not in set(facts[:, 1])


def test_delayed_and_a_graph_of_more_than_10000_tasks(on_shoal):
    _, get = on_shoal
    from dask import delayed

    @delayed
    def inc(i):
        return i + 1

    @delayed
    def total(values):
        return sum(values)

    parts = [inc(i) for i in range(10_500)]
    # A tree of sums over the parts (about 10,600 tasks in all).
    while len(parts) > 1:
        parts = [total(parts[i:i + 100]) for i in range(0, len(parts), 100)]
    assert parts[0].compute(scheduler=get) == sum(range(1, 10_501))


def test_dataframe_groupby_and_shuffle(on_shoal):
    pd = pytest.importorskip("pandas")
    dd = pytest.importorskip("dask.dataframe")
    from shoal.util.dask import disable_dask_on_shoal, enable_dask_on_shoal

    _, get = on_shoal
    df = pd.DataFrame({"k": np.arange(2000) % 7, "v": np.arange(2000, dtype=np.float64)})
    ddf = dd.from_pandas(df, npartitions=8)
    got = ddf.groupby("k").v.sum().compute(scheduler=get).sort_index()
    assert got.equals(df.groupby("k").v.sum().sort_index())
    enable_dask_on_shoal()
    try:
        shuffled = ddf.shuffle("k").map_partitions(lambda p: p.k.nunique()).compute()
        assert shuffled.sum() == 7  # each key in exactly one partition
    finally:
        disable_dask_on_shoal()


def test_persist_keeps_results_as_refs_in_the_store(on_shoal):
    ray, get = on_shoal
    x = da.random.RandomState(1).random_sample((300, 300), chunks=(100, 100)) * 2
    from shoal.util.dask.scheduler import Persisted

    kept = x.persist(scheduler=get)
    graph = dict(kept.__dask_graph__())
    values = [getattr(node, "value", node) for node in graph.values()]
    assert len(values) == 9 and all(isinstance(v, Persisted) and isinstance(v.ref, ray.ObjectRef) for v in values)
    assert np.allclose(kept.sum().compute(scheduler=get), x.sum().compute(scheduler="sync"))
    (again,) = dask.persist(x + 1, scheduler=get)
    assert np.allclose((again - 1).compute(scheduler=get), x.compute(scheduler="sync"))


def assigned(_):
    import shoal

    return shoal.get_runtime_context().get_assigned_resources()


def test_annotations_map_to_task_options(on_shoal):
    _, get = on_shoal
    from dask import delayed

    with dask.annotate(resources={"CPU": 2}):
        two = delayed(assigned)(0)
    with dask.annotate(num_cpus=0.5):
        half = delayed(assigned)(1)
    with dask.annotate(ray_remote_args={"num_cpus": 0.25}):
        quarter = delayed(assigned)(2)
    got = dask.compute(two, half, quarter, scheduler=get, optimize_graph=False)
    assert [g.get("CPU") for g in got] == [2.0, 0.5, 0.25]


def flaky(marker):
    if not os.path.exists(marker):
        open(marker, "w").close()
        raise ConnectionError("first try fails")
    return "second try"


def test_retries_annotation_and_errors_with_their_own_type(on_shoal, tmp_path):
    _, get = on_shoal
    from dask import delayed

    with dask.annotate(retries=1):
        retried = delayed(flaky)(str(tmp_path / "marker"))
    assert retried.compute(scheduler=get, optimize_graph=False) == "second try"
    bad = delayed(flaky)(str(tmp_path / "other"))
    with pytest.raises(ConnectionError, match="first try fails"):
        (bad + "!").compute(scheduler=get)
