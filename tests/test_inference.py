"""Chunked inference: seam-free blending, nodata handling, output schema, chunk-wise execution."""

from __future__ import annotations

import threading

import dask.array as da
import numpy as np
import pytest
import torch
import xarray as xr
from inference_helpers import CALLS, ContextNet, CountingNet, PointwiseNet, make_cube, random_scene

from cloudlulc.classes import NODATA, NUM_CLASSES
from cloudlulc.inference import TileGrid, blend_window, predict_arrays, predict_cube

torch.set_num_threads(1)

H, W = 150, 170  # deliberately not multiples of the tile, step or chunk sizes


@pytest.fixture(scope="module")
def scene():
    return random_scene(H, W, seed=3)


@pytest.fixture(scope="module")
def reference(scene):
    optical, sar, _ = scene
    return predict_arrays(
        optical, sar, ContextNet(), tile=32, overlap=8, batch_size=4, device="cpu", return_probabilities=True
    )


def _assert_matches_reference(result: xr.Dataset, ref: dict[str, np.ndarray]) -> None:
    """Chunked output equals one-shot output up to float summation order of the blending."""
    probs = ref["probabilities"]
    top2 = np.sort(probs, axis=0)[-2:]
    decisive = (top2[1] - top2[0]) > 1e-4  # pixels whose class is not a float-rounding tie
    lulc = result["lulc"].values
    assert np.array_equal(lulc[decisive], ref["lulc"][decisive])
    assert (lulc != ref["lulc"]).sum() <= (~decisive).sum()
    for name in ("confidence", "optical_reliability"):
        diff = np.abs(result[name].values.astype(int) - ref[name].astype(int))
        assert diff.max() <= 1, name  # rounding of 100 * p can flip by one at x.5


@pytest.mark.parametrize("chunks", [(H, W), (64, 64), (40, 50), (23, 37)])
def test_chunked_equals_one_shot(scene, reference, chunks):
    optical, sar, cloud = scene
    cube = make_cube(optical, sar, cloud, chunks)
    result = predict_cube(cube, ContextNet(), tile=32, overlap=8, batch_size=4, device="cpu")
    assert result["lulc"].chunks == cube["optical"].chunks[1:]
    _assert_matches_reference(result.compute(scheduler="threads"), reference)
    assert len(np.unique(reference["lulc"])) >= 4  # a varied map, so seams would show


def test_tile_rounded_to_stride_and_batch_size_do_not_change_the_map(scene):
    optical, sar, cloud = scene
    model = ContextNet()
    ref = predict_arrays(optical, sar, model, tile=30, overlap=8, device="cpu", return_probabilities=True)
    cube = make_cube(optical, sar, cloud, (48, 56))
    result = predict_cube(cube, model, tile=30, overlap=8, batch_size=3, device="cpu")
    assert result.attrs["inference"]["tile"] == 32  # 30 rounded up to the model stride (4)
    _assert_matches_reference(result.compute(), ref)


def test_pointwise_model_tiled_equals_single_forward(scene):
    """For a 1x1-conv model tiling is irrelevant: the blended mosaic must equal one plain forward."""
    optical, sar, cloud = scene
    model = PointwiseNet()
    with torch.no_grad():
        out = model(torch.from_numpy(optical)[None], torch.from_numpy(sar)[None])
    probs = torch.softmax(out.logits, 1)[0].numpy()
    cube = make_cube(optical, sar, cloud, (40, 64))
    result = predict_cube(cube, model, tile=32, overlap=12, device="cpu").compute()
    top2 = np.sort(probs, axis=0)[-2:]
    decisive = (top2[1] - top2[0]) > 1e-4
    assert np.array_equal(result["lulc"].values[decisive], probs.argmax(0)[decisive])
    conf = np.rint(probs.max(0) * 100)
    assert np.abs(result["confidence"].values - conf).max() <= 1
    rel = np.rint(out.reliability[0, 0].numpy() * 100)
    assert np.abs(result["optical_reliability"].values - rel).max() <= 1


def test_blend_window_is_a_partition_of_unity():
    tile, overlap = 32, 8
    w = blend_window(tile, overlap)
    assert (w > 0).all() and w.max() == 1
    step = tile - overlap
    total = np.zeros(step * 5 + tile)
    for k in range(6):
        total[k * step : k * step + tile] += w
    inner = total[tile : step * 5]  # away from the ends, neighbouring ramps sum to one
    np.testing.assert_allclose(inner, 1.0, atol=1e-6)


def test_tile_grid_covers_every_pixel_once_owned():
    grid = TileGrid(32, 8)
    for n in (1, 5, 31, 32, 33, 150, 1000):
        k = grid.count(n)
        assert grid.start(0) <= 0 and grid.start(k - 1) + grid.tile >= n
        owned = [kk for a in range(0, n, 17) for kk in grid.owned(a, min(a + 17, n), n)]
        assert sorted(owned) == list(range(k))  # each tile owned by exactly one chunk


def test_output_schema_and_passthrough(scene):
    optical, sar, cloud = scene
    cube = make_cube(optical, sar, cloud, (64, 64))
    result = predict_cube(cube, ContextNet(), tile=32, overlap=8, device="cpu")
    for name in ("lulc", "confidence", "optical_reliability", "cloud"):
        assert result[name].dtype == np.uint8
        assert result[name].dims == ("y", "x")
        assert isinstance(result[name].data, da.Array)  # lazy
    assert result.rio.crs == cube.rio.crs
    np.testing.assert_array_equal(result["x"].values, cube["x"].values)
    np.testing.assert_array_equal(result["y"].values, cube["y"].values)
    assert result["lulc"].attrs["flag_values"] == list(range(NUM_CLASSES))
    computed = result.compute()
    np.testing.assert_array_equal(computed["cloud"].values, cloud)
    assert computed["lulc"].values.max() < NUM_CLASSES
    assert computed["confidence"].values.max() <= 100
    assert computed["optical_reliability"].values.max() <= 100


def test_nodata_and_missing_optical(scene):
    optical, sar, cloud = (a.copy() for a in scene)
    optical[:, 10:40, 20:70] = np.nan  # no optical (e.g. masked cloud) ...
    sar[:, 10:25, 20:45] = np.nan  # ... and no SAR in part of it: nodata there only
    optical[3, 100:120, 100:140] = np.nan  # one band missing
    cube = make_cube(optical, sar, cloud, (48, 48))
    # ContextNet raises on any non-finite input, so a successful run proves NaN were filled
    result = predict_cube(cube, ContextNet(), tile=32, overlap=8, device="cpu").compute()
    nodata = np.zeros((H, W), bool)
    nodata[10:25, 20:45] = True
    for name in ("lulc", "confidence", "optical_reliability"):
        values = result[name].values
        assert (values[nodata] == NODATA).all(), name
        assert (values[~nodata] != NODATA).all(), name
    assert (result["lulc"].values[25:40, 20:70] < NUM_CLASSES).all()  # SAR-only pixels are classified


def test_pixels_without_optical_have_zero_reliability_and_their_own_temperature(scene):
    """Calibration divides the logits by a temperature per pixel: the optical-missing one where no
    optical band has a value. Confidence drops; reliability is 0 wherever there is nothing optical
    to rely on."""
    from cloudlulc.model.calibration import Calibration

    optical, sar, cloud = (a.copy() for a in scene)
    optical[:, 10:90, 20:110] = np.nan  # no optical at all here (wider than a tile: some tiles see only this)
    cube = make_cube(optical, sar, cloud, (48, 48))
    runs = {}
    for name, cal in {"raw": None, "t2": Calibration(2.0, 6.0), "t6": Calibration(6.0)}.items():
        model = ContextNet()
        if cal is not None:
            model.calibration = cal
        runs[name] = predict_cube(cube, model, tile=32, overlap=8, device="cpu").compute()
    missing = np.zeros((H, W), bool)
    missing[10:90, 20:110] = True
    raw, t2, t6 = runs["raw"], runs["t2"], runs["t6"]
    assert (t2["optical_reliability"].values[missing] == 0).all()
    assert (raw["optical_reliability"].values[missing] == 0).all()
    assert (t2["optical_reliability"].values[~missing] == raw["optical_reliability"].values[~missing]).all()
    # a temperature never changes a tile's argmax; only where overlapping tiles disagree can the
    # blend of their softened probabilities pick another class
    assert (t2["lulc"].values != raw["lulc"].values).mean() < 0.03
    assert t2["confidence"].values[~missing].mean() < raw["confidence"].values[~missing].mean() - 5
    # deep inside the optical gap every tile sees no optical: T=6 there, as a run calibrated with 6 everywhere
    inner = (slice(45, 55), slice(60, 70))
    np.testing.assert_array_equal(t2["confidence"].values[inner], t6["confidence"].values[inner])
    assert (t2["confidence"].values[inner] < raw["confidence"].values[inner]).all()


def test_optical_only_cube_without_sar_variable(scene):
    optical, sar, cloud = scene
    cube = make_cube(optical, sar, cloud, (64, 64)).drop_vars(["sar"])
    result = predict_cube(cube, ContextNet(), tile=32, overlap=8, device="cpu").compute()
    assert (result["lulc"].values < NUM_CLASSES).all()
    # without radar every pixel takes the SAR-missing temperature: as a run calibrated with it everywhere
    from cloudlulc.model.calibration import Calibration

    confidence = {}
    for name, cal in {"sar_missing": Calibration(1.0, 1.0, 5.0), "t5": Calibration(5.0)}.items():
        model = ContextNet()
        model.calibration = cal
        confidence[name] = predict_cube(cube, model, tile=32, overlap=8, device="cpu").compute()["confidence"].values
    np.testing.assert_array_equal(confidence["sar_missing"], confidence["t5"])
    assert confidence["sar_missing"].mean() < result["confidence"].values.mean() - 5


def test_bad_parameters_are_refused(scene):
    optical, sar, cloud = scene
    cube = make_cube(optical, sar, cloud, 64)
    with pytest.raises(ValueError, match="halo"):
        predict_cube(cube, ContextNet(), tile=32, overlap=8, halo=16)
    with pytest.raises(ValueError, match="overlap"):
        predict_cube(cube, ContextNet(), tile=32, overlap=20)
    with pytest.raises(ValueError, match="bands"):
        predict_cube(cube.isel(band=slice(0, 10)), ContextNet(), tile=32, overlap=8)


def test_graph_executes_chunk_wise():
    """Computing one output chunk reads only the input chunks its tiles need, runs only its tiles."""
    h, w, c = 256, 256, 64
    loaded: list[tuple[int, int]] = []
    lock = threading.Lock()
    rng_optical, rng_sar, _ = random_scene(c, c, seed=1)

    def load(block_info=None, *, bands):
        (y0, _), (x0, _) = block_info[None]["array-location"][1:]
        with lock:
            loaded.append((y0 // c, x0 // c))
        return (rng_optical if bands == 12 else rng_sar).copy()

    optical = da.map_blocks(load, dtype=np.float32, chunks=((12,), (c,) * (h // c), (c,) * (w // c)), bands=12)
    sar = da.map_blocks(load, dtype=np.float32, chunks=((2,), (c,) * (h // c), (c,) * (w // c)), bands=2)
    cube = xr.Dataset(
        {"optical": (("band", "y", "x"), optical), "sar": (("sar_band", "y", "x"), sar)},
        coords={"x": 10.0 * np.arange(w), "y": -10.0 * np.arange(h)},
    )
    name = "chunkwise"
    result = predict_cube(cube, CountingNet(name), tile=32, overlap=8, batch_size=1, device="cpu")
    assert not loaded  # building the graph reads nothing
    block = result["lulc"].data.blocks[1, 1].compute(scheduler="synchronous")
    assert block.shape == (c, c)
    inputs = set(loaded)
    assert inputs <= {(i, j) for i in range(0, 3) for j in range(0, 3)}  # the chunk and its neighbours
    assert len(inputs) < (h // c) * (w // c)
    # tiles run: those owned by the chunks whose tile footprints reach chunk (1, 1), far fewer than all
    total_tiles = TileGrid(32, 8).count(h) * TileGrid(32, 8).count(w)
    assert 0 < CALLS[name] < total_tiles / 2


def test_cloudlulc_net_tiny_chunked_equals_one_shot():
    """The project's tiny CloudLULC-Net (stride 16) through the same seam-free machinery."""
    from cloudlulc.model import build_model

    torch.manual_seed(0)
    model = build_model("cloudlulc-net-tiny").eval()
    h, w = 80, 100
    optical, sar, cloud = random_scene(h, w, seed=7)
    optical[:, :20, :30] = np.nan  # cloud-masked optical: the SAR path must still classify it
    ref = predict_arrays(optical, sar, model, tile=64, overlap=16, device="cpu", return_probabilities=True)
    cube = make_cube(optical, sar, cloud, (40, 48))
    result = predict_cube(cube, model, tile=64, overlap=16, device="cpu").compute()
    _assert_matches_reference(result, ref)
    assert (result["lulc"].values < NUM_CLASSES).all()
    assert (result["optical_reliability"].values <= 100).all()  # CloudLULC-Net has an ORM output


def test_tiles_over_nodata_only_are_skipped(scene):
    """An AOI partly outside the swath: no model calls there, 255 there, and still seam-free."""
    optical, sar, cloud = (a.copy() for a in scene)
    optical[:, :, :90] = np.nan
    sar[:, :, :90] = np.nan
    model = CountingNet("skip", seed=5)
    ref = predict_arrays(optical, sar, model, tile=32, overlap=8, batch_size=1, device="cpu", return_probabilities=True)
    calls_with_nodata = CALLS["skip"]
    full = CountingNet("full", seed=5)
    predict_arrays(*scene[:2], full, tile=32, overlap=8, batch_size=1, device="cpu")
    assert calls_with_nodata < 0.7 * CALLS["full"]
    cube = make_cube(optical, sar, cloud, (40, 40))  # whole chunks lie in the nodata part
    result = predict_cube(cube, ContextNet(seed=5), tile=32, overlap=8, device="cpu").compute()
    assert (result["lulc"].values[:, :90] == NODATA).all()
    assert (result["lulc"].values[:, 90:] < NUM_CLASSES).all()
    _assert_matches_reference(result, ref)


def test_neighbour_chunks_are_read_through_halo_strips(scene):
    """Tiles reaching into the next chunk depend on a copy of its first ``tile`` rows or columns, not
    on the whole chunk: a block-wise write frees the chunks just past its edge as soon as they are read
    (memory bounded by the block, not by the block plus a ring of neighbour chunks)."""
    from dask.core import get_dependencies

    from cloudlulc.inference.graph import TILE_GROUP_PREFIX

    optical, sar, cloud = (a[..., :128, :128] for a in scene)  # chunks of 64: four tiles deep
    cube = make_cube(optical, sar, cloud, (64, 64))
    result = predict_cube(cube, ContextNet(), tile=16, overlap=4, device="cpu")
    graph = dict(result["lulc"].data.__dask_graph__())
    strips = 0
    for key in graph:
        if not (isinstance(key, tuple) and str(key[0]).startswith(TILE_GROUP_PREFIX)):
            continue
        _, i, j, _ = key
        for dep in get_dependencies(graph, key):
            if isinstance(dep, tuple) and str(dep[0]).startswith("cloudlulc-halo-"):
                _, bi, bj, rows, cols = dep
                assert (bi, bj) != (i, j) and (bi >= i and bj >= j)
                assert rows == 16 or cols == 16  # a strip as deep as the tile, never a whole chunk
                strips += 1
            elif isinstance(dep, tuple) and len(dep) == 4:  # a whole input chunk (name, 0, row, col)
                assert dep[2:] == (i, j), (key, dep)  # only the group's own chunk
    assert strips > 0
    _assert_matches_reference(
        result.compute(),
        predict_arrays(optical, sar, ContextNet(), tile=16, overlap=4, device="cpu", return_probabilities=True),
    )


def test_amp_dtype_keeps_the_demo_weights_predictions():
    """CUDA forwards run under ``torch.autocast(dtype=AMP_DTYPE)``. With no GPU here, CPU autocast
    at the same dtype stands in for its numerics: it casts the same op families (convolutions,
    matmuls, linear layers) to AMP_DTYPE, so an overflow in the fused high-order interactions or the
    latent would show up as non-finite logits or flipped classes. The committed demo weights on a
    simulated cloudy scene (clouds as bright reflectance, no gaps: finite, as the network always gets)."""
    from cloudlulc.inference import AMP_DTYPE
    from cloudlulc.model import demo_weights_path, from_pretrained
    from cloudlulc.simulate.scene import simulate_scene

    model = from_pretrained(demo_weights_path()).eval()
    sim = simulate_scene(3, (128, 128), cloud_cover=0.5)
    assert np.isfinite(sim.optical).all() and np.isfinite(sim.sar).all()
    o = torch.from_numpy(sim.optical.astype(np.float32))[None]
    s = torch.from_numpy(sim.sar.astype(np.float32))[None]
    with torch.inference_mode():
        full = model(o, s)
        with torch.autocast("cpu", dtype=AMP_DTYPE):
            amp = model(o, s)
    assert amp.logits.dtype == AMP_DTYPE  # autocast did run the head in AMP_DTYPE
    assert torch.isfinite(amp.logits).all()
    p_full = torch.softmax(full.logits, 1)
    p_amp = torch.softmax(amp.logits.float(), 1)
    assert float((p_amp - p_full).abs().max()) < 0.02
    assert float((p_amp.argmax(1) == p_full.argmax(1)).float().mean()) >= 0.995
    assert float((amp.reliability.float() - full.reliability).abs().max()) < 0.02


@pytest.fixture
def torch_threads():
    """Restore torch's process-wide intra-op thread count after a test that changes it."""
    before = torch.get_num_threads()
    yield before
    torch.set_num_threads(before)


def test_cpu_forwards_share_the_cores_between_dask_threads(scene, torch_threads):
    import dask
    from dask.system import CPU_COUNT
    from distributed import Client, LocalCluster

    from cloudlulc.inference.predict import share_cores_between_forwards

    optical, sar, cloud = scene
    cube = make_cube(optical, sar, cloud, (64, 64))
    torch.set_num_threads(CPU_COUNT)
    with dask.config.set(scheduler="threads", num_workers=CPU_COUNT):
        result = predict_cube(cube, ContextNet(), tile=32, overlap=8, device="cpu")
        assert torch.get_num_threads() == 1  # set when the graph is built, before any forward runs
        result.compute()
    torch.set_num_threads(CPU_COUNT)
    with dask.config.set(scheduler="threads", num_workers=1):  # one forward at a time: all cores
        assert share_cores_between_forwards("cpu") == torch.get_num_threads() == CPU_COUNT
    torch.set_num_threads(1)
    with dask.config.set(scheduler="threads", num_workers=1):  # never raised above what is set
        assert share_cores_between_forwards("cpu") == torch.get_num_threads() == 1
    torch.set_num_threads(CPU_COUNT)
    with dask.config.set(scheduler="synchronous"):  # one thread runs everything
        assert share_cores_between_forwards("cpu") is None and torch.get_num_threads() == CPU_COUNT
    with (
        LocalCluster(processes=False, n_workers=1, threads_per_worker=1, dashboard_address=None) as cluster,
        Client(cluster),
    ):  # workers size their own threads
        assert share_cores_between_forwards("cpu") is None and torch.get_num_threads() == CPU_COUNT
        # the workers' device, not this process's: a CPU-only flow process may drive GPU workers
        assert share_cores_between_forwards("cuda:7") is None
