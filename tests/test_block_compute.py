"""Block-wise mosaic writes carry border tile groups between blocks only where the scheduler's workers
share this host's disk (a real distributed LocalCluster here), and fall back to recomputing them
elsewhere, with the same map either way; a crash mid-run leaves no scratch files behind."""

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
