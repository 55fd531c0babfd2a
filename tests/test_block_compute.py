"""Block-wise mosaic writes carry border tile groups (and the input chunks read for their halo) between
blocks only where the scheduler's workers share this host's disk (a real distributed LocalCluster
here), and fall back to recomputing them elsewhere, with the same map either way; a crash mid-run
leaves no scratch files behind."""

from __future__ import annotations

import tempfile
from pathlib import Path

import dask
import numpy as np
import pytest
import torch
from inference_helpers import (
    CALLS,
    CountingNet,
    assert_matches_reference,
    make_cube,
    random_scene,
)

from cloudlulc.block_compute import carry_supported
from cloudlulc.inference import TileGrid, predict_arrays, predict_cube
from cloudlulc.mosaic import MOSAIC_VARIABLES, open_mosaic, write_mosaic

torch.set_num_threads(1)

H, W, TILE, OVERLAP, CHUNK = 64, 80, 16, 4, 16  # 4 x 5 chunks
T0 = "2024-04-19T10:06:31Z"


@pytest.fixture(scope="module")
def scene():
    return random_scene(H, W, seed=3)


def _write(scene, store: Path, name: str, **kw):
    optical, sar, cloud = scene
    cube = make_cube(optical, sar, cloud, CHUNK)
    result = predict_cube(cube, CountingNet(name, seed=5, fail_after=kw.pop("fail_after", None)),
                          tile=TILE, overlap=OVERLAP, batch_size=1, device="cpu")
    return write_mosaic(result, store, time=T0, attrs={"run": name}, chunk_size=CHUNK, **kw)


def _reference(scene):
    optical, sar, _ = scene
    return predict_arrays(optical, sar, CountingNet("reference", seed=5), tile=TILE, overlap=OVERLAP,
                          batch_size=1, device="cpu", return_probabilities=True)


def _unique_tiles() -> int:
    grid = TileGrid(TILE, OVERLAP)
    return grid.count(H) * grid.count(W)


def test_distributed_local_cluster_carries_border_tiles(tmp_path, scene):
    from distributed import Client, LocalCluster

    with LocalCluster(processes=False, n_workers=1, threads_per_worker=2, dashboard_address=":0") as cluster, \
            Client(cluster):
        assert carry_supported()
        _write(scene, tmp_path / "d.zarr", "distributed", block_chunks=2)
    assert CALLS["distributed"] == _unique_tiles()  # every tile once, although blocks share borders
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
        np.testing.assert_array_equal(open_mosaic(tmp_path / "f.zarr")[v].values,
                                      open_mosaic(tmp_path / "c.zarr")[v].values, err_msg=v)


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
    import threading
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
        result = predict_cube(counted_cube(reads), CountingNet(f"reads-{carry}", seed=5), tile=TILE,
                              overlap=OVERLAP, batch_size=1, device="cpu")
        with dask.config.set(scheduler="threads", num_workers=2):
            write_mosaic(result, tmp_path / f"{carry}.zarr", time=T0, chunk_size=CHUNK, block_chunks=2,
                         carry_border_tiles=carry)
        runs[carry] = reads
    n_chunks = (H // CHUNK) * (W // CHUNK)
    assert len(runs[True]) == 2 * n_chunks and set(runs[True].values()) == {1}  # optical and SAR, once each
    assert sum(runs[False].values()) > 2 * n_chunks  # without carrying, halo chunks are read twice
    products = {v: open_mosaic(tmp_path / "True.zarr")[v].isel(time=0).values for v in MOSAIC_VARIABLES}
    assert_matches_reference(products, _reference(scene))
