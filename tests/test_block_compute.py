"""Block-wise mosaic writes carry border tile groups (and the input chunks read for their halo) between
blocks on local schedulers, whose tasks share this host's disk, and recompute them elsewhere (a real
distributed LocalCluster here), with the same map either way; a crash mid-run leaves no scratch
files behind."""

from __future__ import annotations

import tempfile
import threading
from pathlib import Path

import dask
import numpy as np
import pytest
import torch
from inference_helpers import (
    CALLS,
    PEAK,
    ConcurrencyNet,
    CountingNet,
    assert_matches_reference,
    make_cube,
    random_scene,
)

from cloudlulc.inference import TileGrid, is_shared_work, predict_arrays, predict_cube
from cloudlulc.store import MOSAIC_VARIABLES, open_mosaic, write_mosaic
from cloudlulc.store.blocks import carry_supported

torch.set_num_threads(1)

H, W, TILE, OVERLAP, CHUNK = 64, 80, 16, 4, 16  # 4 x 5 chunks
T0 = "2024-04-19T10:06:31Z"


@pytest.fixture(scope="module")
def scene():
    return random_scene(H, W, seed=3)


def _write(scene, store: Path, name: str, **kw):
    optical, sar, cloud = scene
    cube = make_cube(optical, sar, cloud, CHUNK)
    result = predict_cube(
        cube,
        CountingNet(name, seed=5, fail_after=kw.pop("fail_after", None)),
        tile=TILE,
        overlap=OVERLAP,
        batch_size=1,
        device="cpu",
    )
    kw.setdefault("shared_work", is_shared_work)
    return write_mosaic(result, store, time=T0, attrs={"run": name}, chunk_size=CHUNK, **kw)


def _reference(scene):
    optical, sar, _ = scene
    return predict_arrays(
        optical,
        sar,
        CountingNet("reference", seed=5),
        tile=TILE,
        overlap=OVERLAP,
        batch_size=1,
        device="cpu",
        return_probabilities=True,
    )


def _unique_tiles() -> int:
    grid = TileGrid(TILE, OVERLAP)
    return grid.count(H) * grid.count(W)


def test_distributed_cluster_recomputes_border_tiles_with_the_same_map(tmp_path, scene):
    """A cluster's workers need not share this disk: its blocks recompute their borders instead."""
    from distributed import Client, LocalCluster

    with (
        LocalCluster(processes=False, n_workers=1, threads_per_worker=2, dashboard_address=":0") as cluster,
        Client(cluster),
    ):
        assert not carry_supported()
        _write(scene, tmp_path / "d.zarr", "distributed", block_chunks=2)
    assert CALLS["distributed"] > _unique_tiles()
    products = {v: open_mosaic(tmp_path / "d.zarr")[v].isel(time=0).values for v in MOSAIC_VARIABLES}
    assert_matches_reference(products, _reference(scene))


def _foreign_get(dsk, keys, **kwargs):
    """A scheduler outside dask (as a remote cluster's would be): no shared disk can be assumed."""
    return dask.threaded.get(dsk, keys, **kwargs)


def test_unknown_scheduler_recomputes_instead_of_carrying(tmp_path, scene):
    with dask.config.set(scheduler=_foreign_get):
        assert not carry_supported()
        _write(scene, tmp_path / "f.zarr", "foreign", block_chunks=2)
    with dask.config.set(scheduler="threads"):
        _write(scene, tmp_path / "c.zarr", "carried", block_chunks=2)
    assert CALLS["foreign"] > CALLS["carried"] == _unique_tiles()
    for v in MOSAIC_VARIABLES:
        np.testing.assert_array_equal(
            open_mosaic(tmp_path / "f.zarr")[v].values, open_mosaic(tmp_path / "c.zarr")[v].values, err_msg=v
        )


def test_crash_mid_run_leaves_no_scratch_and_resumes(tmp_path, scene, monkeypatch):
    scratch_root = tmp_path / "tmp"
    scratch_root.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch_root))  # where the carry scratch dirs go
    store = tmp_path / "r.zarr"
    with dask.config.set(scheduler="threads", num_workers=2):
        with pytest.raises(RuntimeError, match="simulated crash"):
            _write(scene, store, "crash", block_chunks=1, fail_after=_unique_tiles() // 2)
        assert list(scratch_root.iterdir()) == []  # the carried tile sums went with the failed run
        summary = _write(scene, store, "crash", block_chunks=1)
    assert summary.action == "resume" and summary.chunks_skipped > 0
    products = {v: open_mosaic(store)[v].isel(time=0).values for v in MOSAIC_VARIABLES}
    assert_matches_reference(products, _reference(scene))
    assert list(scratch_root.iterdir()) == []


def test_input_chunks_past_a_block_edge_are_read_once(tmp_path, scene):
    """A block reads the chunks just past its edge for its tiles' halo; they are carried to the block
    they belong to instead of being read from the source again (reads are what COG decoding costs)."""
    from collections import Counter

    import dask.array as da

    optical, sar, cloud = scene

    def counted_cube(reads: Counter):
        lock = threading.Lock()

        def load(block_info=None, *, src):
            (y0, y1), (x0, x1) = block_info[None]["array-location"][1:]
            with lock:
                reads[src.shape[0], y0, x0] += 1
            return src[:, y0:y1, x0:x1].copy()

        def lazy(src):
            chunks = ((src.shape[0],), (CHUNK,) * (H // CHUNK), (CHUNK,) * (W // CHUNK))
            return da.map_blocks(load, dtype=np.float32, chunks=chunks, src=src)

        cube = make_cube(optical, sar, cloud, CHUNK)
        return cube.assign(optical=(cube["optical"].dims, lazy(optical)), sar=(cube["sar"].dims, lazy(sar)))

    runs = {}
    for carry in (True, False):
        reads: Counter = Counter()
        result = predict_cube(
            counted_cube(reads),
            CountingNet(f"reads-{carry}", seed=5),
            tile=TILE,
            overlap=OVERLAP,
            batch_size=1,
            device="cpu",
        )
        with dask.config.set(scheduler="threads", num_workers=2):
            write_mosaic(
                result,
                tmp_path / f"{carry}.zarr",
                time=T0,
                chunk_size=CHUNK,
                block_chunks=2,
                shared_work=is_shared_work if carry else None,
            )
        runs[carry] = reads
    n_chunks = (H // CHUNK) * (W // CHUNK)
    assert len(runs[True]) == 2 * n_chunks and set(runs[True].values()) == {1}  # optical and SAR, once each
    assert sum(runs[False].values()) > 2 * n_chunks  # without carrying, halo chunks are read twice
    products = {v: open_mosaic(tmp_path / "True.zarr")[v].isel(time=0).values for v in MOSAIC_VARIABLES}
    assert_matches_reference(products, _reference(scene))


def test_a_failing_block_stops_the_next_one_and_raises_its_own_error():
    import dask.array as da

    from cloudlulc.store.blocks import compute_blocks

    target = da.zeros((1, 3, 4), chunks=(1, 1, 1))
    written = []

    def write(chunk, _value):
        if chunk == (0, 3):
            raise OSError("disk full")
        written.append(chunk)

    blocks = [[(i, j) for j in range(4)] for i in range(3)]
    with dask.config.set(scheduler="threads", num_workers=2), pytest.raises(OSError, match="disk full"):
        compute_blocks(target, blocks, lambda chunk, key: (write, chunk, key))
    assert not any(c[0] >= 1 for c in written)  # blocks run one after the other: the next never started


def test_task_resources_hold_on_a_cluster(tmp_path, scene):
    """Inference tasks annotated with a resource (the pipeline's dask_task_resources, e.g. one GPU)
    run one at a time on a worker with one unit of it, with multi-block writes too; carrying, which
    flattens the graph and would drop the annotation, is not used then."""
    from distributed import Client, LocalCluster

    optical, sar, cloud = scene
    with (
        LocalCluster(
            processes=False, n_workers=1, threads_per_worker=2, resources={"GPU": 1}, dashboard_address=":0"
        ) as cluster,
        Client(cluster),
    ):
        with dask.annotate(resources={"GPU": 1}):
            result = predict_cube(
                make_cube(optical, sar, cloud, CHUNK),
                ConcurrencyNet("gpu", seed=5),
                tile=TILE,
                overlap=OVERLAP,
                batch_size=1,
                device="cpu",
            )
        write_mosaic(result, tmp_path / "g.zarr", time=T0, chunk_size=CHUNK, block_chunks=2)
    assert CALLS["gpu"] >= _unique_tiles() and PEAK["gpu"] == 1
    products = {v: open_mosaic(tmp_path / "g.zarr")[v].isel(time=0).values for v in MOSAIC_VARIABLES}
    assert_matches_reference(products, _reference(scene))


def test_carried_results_round_trip_through_the_scratch_format(tmp_path):
    """What a carried task returns comes back with its dtypes, shapes and missing parts."""
    from cloudlulc.store.blocks import _load, _store

    acc = np.arange(2 * 3 * 4, dtype=np.float32).reshape(2, 3, 4)
    valid = np.array([[True, False], [False, True]])
    for value in (acc, (acc, valid), (None, valid), (None, None), (np.zeros((0, 5), np.uint8),)):
        path = str(tmp_path / "r.npy")
        _store(value, path)
        back = _load(path)
        if isinstance(value, np.ndarray):
            assert isinstance(back, np.ndarray)
            np.testing.assert_array_equal(back, value)
            assert back.dtype == value.dtype
            continue
        assert isinstance(back, tuple) and len(back) == len(value)
        for got, want in zip(back, value):
            if want is None:
                assert got is None
            else:
                np.testing.assert_array_equal(got, want)
                assert (got.dtype, got.shape) == (want.dtype, want.shape)
