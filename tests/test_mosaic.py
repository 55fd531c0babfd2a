"""The Zarr v3 mosaic: schema, CRS for xarray and GDAL, append/replace, provenance, refusal of a
foreign grid, and resuming an interrupted write without recomputing finished chunks."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import dask
import numpy as np
import pyproj
import pytest
import torch
import xarray as xr
import zarr
from inference_helpers import CALLS, ContextNet, CountingNet, assert_matches_reference, make_cube, random_scene

from cloudlulc.classes import CLASS_NAMES, NODATA
from cloudlulc.inference import TileGrid, is_shared_work, predict_arrays, predict_cube
from cloudlulc.store import (
    MOSAIC_VARIABLES,
    MosaicError,
    MosaicGridError,
    mapped_times,
    open_mosaic,
    read_provenance,
    read_slots,
    write_mosaic,
)

torch.set_num_threads(1)

H, W, CHUNK = 96, 120, 40  # 3 x 3 store chunks, the last row/column partial
T0, T1, T2 = "2024-04-19T10:06:31.024Z", "2024-05-01T10:16:29Z", "2024-03-02T09:56:11Z"
ATTRS = {
    "pairing": {
        "s2": {
            "ids": ["S2A_MSIL2A_20240419T100031_R122_T33TUN"],
            "hrefs": [
                "https://sentinel2l2a01.blob.core.windows.net/x/B04.tif?st=2024-04-19&se=2024-04-20&sig=SECRET%3D"
            ],
        },
        "s1": {
            "ids": ["S1A_IW_GRDH_1SDV_20240418"],
            "hrefs": ["https://sentinel1euwestrtc.blob.core.windows.net/y/vv.tif?sig=X"],
        },
        "gap_days": 0.9,
    },
    "model": {"name": "context-net-test", "weights_sha256": "ab" * 32},
    "parameters": {"tile": 32, "overlap": 8},
}


@pytest.fixture(scope="module")
def scene():
    return random_scene(H, W, seed=11)


def _result(scene, model=None, chunks=CHUNK, tile=32, overlap=8, **cube_kw):
    optical, sar, cloud = scene
    cube = make_cube(optical, sar, cloud, chunks, **cube_kw)
    return predict_cube(cube, model or ContextNet(), tile=tile, overlap=overlap, batch_size=1, device="cpu")


def test_schema_fill_values_crs_and_values(tmp_path, scene):
    store = tmp_path / "m.zarr"
    result = _result(scene)
    summary = write_mosaic(result, store, time=T0, attrs=ATTRS, chunk_size=CHUNK)
    assert (summary.action, summary.chunks_total, summary.chunks_written) == ("append", 9, 9)

    root = zarr.open_group(store, mode="r", use_consolidated=False)
    assert root.metadata.zarr_format == 3
    for name in MOSAIC_VARIABLES:
        arr = root[name]
        assert arr.dtype == np.uint8 and arr.shape == (1, H, W)
        assert arr.chunks == (1, CHUNK, CHUNK)
        fill = 0 if name == "input_quality" else NODATA
        assert arr.metadata.fill_value == fill  # Zarr fill_value, not only the CF attribute
        assert arr.attrs["_FillValue"] == fill
        assert arr.attrs["grid_mapping"] == "spatial_ref"
        assert list(arr.metadata.dimension_names) == ["time", "y", "x"]
    assert root["lulc"].attrs["flag_values"] == list(range(len(CLASS_NAMES)))
    assert root["lulc"].attrs["flag_meanings"].split() == [n.replace("-", "_") for n in CLASS_NAMES]

    ds = xr.open_zarr(store, decode_coords="all")
    assert "spatial_ref" in ds.coords
    assert pyproj.CRS(ds.rio.crs.to_wkt()).to_epsg() == 32633
    assert ds["time"].values[0] == np.datetime64("2024-04-19T10:06:31.024", "ns")
    computed = result.compute()
    mosaic = open_mosaic(store)
    for name in MOSAIC_VARIABLES:
        np.testing.assert_array_equal(mosaic[name].isel(time=0).values, computed[name].values)
    np.testing.assert_array_equal(mosaic["x"].values, computed["x"].values)


def test_gdal_reads_the_store(tmp_path, scene):
    store = tmp_path / "g.zarr"
    result = _result(scene)
    write_mosaic(result, store, time=T0, attrs=ATTRS, chunk_size=CHUNK)
    name = f'ZARR:"{store}":/lulc'
    proc = subprocess.run(
        [sys.executable, str(Path(__file__).with_name("gdal_read.py")), name],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    info = json.loads(proc.stdout)
    assert (info["width"], info["height"], info["count"]) == (W, H, 1)
    x0 = float(result["x"].values[0]) - 5.0
    y0 = float(result["y"].values[0]) + 5.0
    np.testing.assert_allclose(info["geotransform"], [x0, 10.0, 0.0, y0, 0.0, -10.0])
    assert pyproj.CRS.from_wkt(info["wkt"]).to_epsg() == 32633
    assert info["nodata"] == NODATA
    np.testing.assert_array_equal(np.array(info["bands"][0], dtype=np.uint8), result["lulc"].values)


def test_append_replace_and_time_order(tmp_path, scene):
    store = tmp_path / "t.zarr"
    a = _result(scene, ContextNet(seed=5)).compute()
    b = _result(scene, ContextNet(seed=4)).compute()
    assert (a["lulc"].values != b["lulc"].values).any()
    write_mosaic(a, store, time=T0, attrs=ATTRS, chunk_size=CHUNK)
    write_mosaic(b, store, time=T1, attrs=ATTRS, chunk_size=CHUNK)
    s = write_mosaic(a, store, time=T2, attrs=ATTRS, chunk_size=CHUNK)  # earlier than both: appended
    assert (s.action, s.time_index) == ("append", 2)
    times = mapped_times(store)
    assert times == sorted(times) and len(times) == 3
    ds = open_mosaic(store)
    assert list(ds["time"].values) == times  # presented sorted, stored in append order
    stored = zarr.open_group(store, mode="r", use_consolidated=False)["time"][:]
    assert list(np.diff(stored) > 0) == [True, False]

    s = write_mosaic(b, store, time=T0, attrs={**ATTRS, "note": "reprocessed"}, chunk_size=CHUNK)
    # the replacement goes to a slot of its own and is published once complete; the old slot retires
    assert (s.action, s.time_index, s.chunks_written) == ("replace", 3, 9)
    slots = read_slots(store)
    assert slots[0]["status"] == "retired" and slots[3]["status"] == "complete"
    raw = zarr.open_group(store, mode="r", use_consolidated=False)["time"][:]
    assert raw[0] == np.iinfo(np.int64).min  # NaT: plain xarray readers see no second 2024-04-19 slice
    ds = open_mosaic(store)
    assert ds.sizes["time"] == 3
    np.testing.assert_array_equal(
        ds["lulc"].sel(time=np.datetime64("2024-04-19T10:06:31.024")).values, b["lulc"].values
    )
    np.testing.assert_array_equal(ds["lulc"].sel(time=np.datetime64("2024-03-02T09:56:11")).values, a["lulc"].values)
    np.testing.assert_array_equal(ds["lulc"].sel(time=np.datetime64("2024-05-01T10:16:29")).values, b["lulc"].values)
    assert read_provenance(store)["2024-04-19T10:06:31.024Z"]["note"] == "reprocessed"
    # the same slice again is skipped; another replacement reuses the retired slot
    assert write_mosaic(b, store, time=T0, attrs={**ATTRS, "note": "reprocessed"}, chunk_size=CHUNK).action == "skip"
    s = write_mosaic(a, store, time=T0, attrs=ATTRS, chunk_size=CHUNK)
    assert (s.action, s.time_index) == ("replace", 0)
    np.testing.assert_array_equal(
        open_mosaic(store)["lulc"].sel(time=np.datetime64("2024-04-19T10:06:31.024")).values, a["lulc"].values
    )


def test_provenance_per_time_without_tokens(tmp_path, scene):
    store = tmp_path / "p.zarr"
    result = _result(scene)
    write_mosaic(result, store, time=T0, attrs=ATTRS, chunk_size=CHUNK)
    write_mosaic(result, store, time=T1, attrs={**ATTRS, "model": {"name": "other"}}, chunk_size=CHUNK)
    prov = open_mosaic(store).attrs["provenance"]
    assert set(prov) == {"2024-04-19T10:06:31.024Z", "2024-05-01T10:16:29.000Z"}
    first = prov["2024-04-19T10:06:31.024Z"]
    assert first["model"]["name"] == "context-net-test" and prov["2024-05-01T10:16:29.000Z"]["model"]["name"] == "other"
    assert first["pairing"]["s2"]["hrefs"] == ["https://sentinel2l2a01.blob.core.windows.net/x/B04.tif"]
    assert first["pairing"]["gap_days"] == 0.9
    assert first["status"] == "complete" and first["software_version"] and first["created"]
    assert first["inference"]["tile"] == 32 and len(first["inference"]["state_dict_sha256"]) == 64
    raw = (store / "zarr.json").read_text()
    assert "sig=" not in raw and "SECRET" not in raw


def test_foreign_grid_or_crs_is_refused_and_store_kept(tmp_path, scene):
    store = tmp_path / "r.zarr"
    result = _result(scene)
    write_mosaic(result, store, time=T0, attrs=ATTRS, chunk_size=CHUNK)
    before = open_mosaic(store)["lulc"].values.copy()
    shifted = _result(scene, x0=500010.0)
    with pytest.raises(MosaicGridError, match="x coordinates differ"):
        write_mosaic(shifted, store, time=T1, attrs=ATTRS)
    other_crs = _result(scene, epsg=32634)
    with pytest.raises(MosaicGridError, match="CRS"):
        write_mosaic(other_crs, store, time=T1, attrs=ATTRS)
    smaller = result.isel(x=slice(0, 100))
    with pytest.raises(MosaicGridError, match="pixels"):
        write_mosaic(smaller, store, time=T0, attrs=ATTRS)
    wrong_dtype = result.assign(lulc=result["lulc"].astype("float32"))
    with pytest.raises(MosaicError, match="uint8"):
        write_mosaic(wrong_dtype, store, time=T0, attrs=ATTRS)
    assert mapped_times(store) == [np.datetime64("2024-04-19T10:06:31.024", "ns")]
    ds = open_mosaic(store)
    assert ds.sizes["time"] == 1
    np.testing.assert_array_equal(ds["lulc"].values, before)
    assert read_provenance(store)["2024-04-19T10:06:31.024Z"]["status"] == "complete"


def test_resume_after_crash_recomputes_only_unfinished_chunks(tmp_path, scene):
    clean_store, store = tmp_path / "clean.zarr", tmp_path / "crash.zarr"
    chunk = 16  # 6 x 8 chunks and small tiles: enough tasks for Dask to finish chunks before the crash

    def result(model):
        return _result(scene, model, chunks=chunk, tile=16, overlap=4)

    with dask.config.set(scheduler="synchronous"):  # deterministic progress before the crash
        write_mosaic(result(CountingNet("clean")), clean_store, time=T1, attrs=ATTRS, chunk_size=chunk)
        clean_calls = CALLS["clean"]

        earlier = result(ContextNet(seed=4)).compute()
        write_mosaic(earlier, store, time=T0, attrs=ATTRS, chunk_size=chunk)
        with pytest.raises(RuntimeError, match="simulated crash"):
            write_mosaic(
                result(CountingNet("crash", fail_after=int(clean_calls * 0.9))),
                store,
                time=T1,
                attrs=ATTRS,
                chunk_size=chunk,
            )

        root = zarr.open_group(store, mode="r", use_consolidated=False)
        done = root["_resume/done"][1]
        assert 0 < done.sum() < done.size  # some chunks finished, some not
        assert read_slots(store)[1] | {"fingerprint": None} == {
            "time": "2024-05-01T10:16:29.000Z",
            "status": "writing",
            "fingerprint": None,
        }
        assert "2024-05-01T10:16:29.000Z" not in read_provenance(store)  # not published
        assert mapped_times(store) == [np.datetime64("2024-04-19T10:06:31.024", "ns")]  # half slice hidden
        np.testing.assert_array_equal(open_mosaic(store)["lulc"].isel(time=0).values, earlier["lulc"].values)

        summary = write_mosaic(result(CountingNet("resume")), store, time=T1, attrs=ATTRS, chunk_size=chunk)
    assert summary.action == "resume"
    assert summary.chunks_skipped == int(done.sum())
    assert summary.chunks_written == done.size - int(done.sum())
    assert 0 < CALLS["resume"] < clean_calls  # finished chunks were not recomputed

    clean = open_mosaic(clean_store)
    resumed = open_mosaic(store)
    assert mapped_times(store) == sorted(
        [np.datetime64("2024-04-19T10:06:31.024", "ns"), np.datetime64("2024-05-01T10:16:29", "ns")]
    )
    for name in MOSAIC_VARIABLES:
        np.testing.assert_array_equal(
            resumed[name].sel(time=clean["time"].values[0]).values, clean[name].isel(time=0).values
        )
    np.testing.assert_array_equal(resumed["lulc"].isel(time=0).values, earlier["lulc"].values)  # untouched


@pytest.mark.parametrize("scheduler", ["threads", "sync"])
def test_block_wise_write_equals_one_shot_and_runs_each_tile_once(tmp_path, scene, scheduler):
    """Blocks of chunks are computed one at a time (bounded memory). Tile groups straddling a block
    border run once and are carried to the next blocks on disk; with carrying off they run in every
    block they touch. Either way the map equals one-shot inference, bit for bit across block sizes."""
    optical, sar, _ = scene
    tile, overlap, chunk = 16, 4, 16  # 6 x 8 chunks
    ref = predict_arrays(
        optical,
        sar,
        ContextNet(seed=5),
        tile=tile,
        overlap=overlap,
        batch_size=1,
        device="cpu",
        return_probabilities=True,
    )
    grid = TileGrid(tile, overlap)
    unique = grid.count(H) * grid.count(W)
    runs = [(None, True)] + [(bc, carry) for bc in (1, 2, 3, 5) for carry in (True, False)]
    maps: dict[tuple[int | None, bool], dict[str, np.ndarray]] = {}
    calls: dict[tuple[int | None, bool], int] = {}
    with dask.config.set(scheduler=scheduler, num_workers=2):
        for block_chunks, carry in runs:
            name = f"blocks-{block_chunks}-{carry}-{scheduler}"
            store = tmp_path / f"{name}.zarr"
            s = write_mosaic(
                _result(scene, CountingNet(name, seed=5), chunks=chunk, tile=tile, overlap=overlap),
                store,
                time=T0,
                attrs=ATTRS,
                chunk_size=chunk,
                block_chunks=block_chunks,
                shared_work=is_shared_work if carry else None,
            )
            assert (s.chunks_total, s.chunks_written) == (48, 48)
            slice_ = open_mosaic(store).isel(time=0)
            maps[block_chunks, carry] = {v: slice_[v].values for v in MOSAIC_VARIABLES}
            calls[block_chunks, carry] = CALLS[name]
    for key, products in maps.items():
        assert_matches_reference(products, ref)
        for v in MOSAIC_VARIABLES:  # the same tasks on the same inputs: bit-identical across block sizes
            np.testing.assert_array_equal(products[v], maps[None, True][v], err_msg=f"{v}, {key}")
    assert len(np.unique(ref["lulc"])) >= 4  # a varied map, so seams would show
    # one tile per forward (batch_size=1): carried, every grid tile runs exactly once whatever the blocks
    for block_chunks in (None, 1, 2, 3, 5):
        assert calls[block_chunks, True] == unique, block_chunks

    # not carried: each block runs exactly the tiles whose footprint touches it (its own and its
    # neighbours' border-crossing ones)
    def touching(a: int, b: int, n: int) -> int:
        return sum(1 for k in range(grid.count(n)) if max(grid.start(k), 0) < b and min(grid.start(k) + tile, n) > a)

    # block extents in chunks along (y: 6 chunks, x: 8 chunks); a remainder under half a block joins
    # the last full block (block_chunks=5: the sixth row of chunks would be a sliver block of its own)
    extents = {
        1: ([(i, i + 1) for i in range(6)], [(j, j + 1) for j in range(8)]),
        2: ([(0, 2), (2, 4), (4, 6)], [(0, 2), (2, 4), (4, 6), (6, 8)]),
        3: ([(0, 3), (3, 6)], [(0, 3), (3, 6), (6, 8)]),
        5: ([(0, 6)], [(0, 5), (5, 8)]),
    }
    for block_chunks, (rows, cols) in extents.items():
        expected = sum(
            touching(a * chunk, min(b * chunk, H), H) * touching(c * chunk, min(d * chunk, W), W)
            for a, b in rows
            for c, d in cols
        )
        assert calls[block_chunks, False] == expected, block_chunks
    assert calls[1, False] > calls[2, False] >= calls[3, False] >= calls[5, False] > unique
    with pytest.raises(MosaicError, match="block_chunks"):
        write_mosaic(_result(scene), tmp_path / "refused.zarr", time=T0, block_chunks=0)


def test_different_run_restarts_an_interrupted_slice(tmp_path, scene):
    store = tmp_path / "d.zarr"
    with dask.config.set(scheduler="synchronous"):
        with pytest.raises(RuntimeError):
            write_mosaic(
                _result(scene, CountingNet("crash2", fail_after=3), chunks=24, tile=16, overlap=4),
                store,
                time=T0,
                attrs=ATTRS,
                chunk_size=24,
            )
        assert mapped_times(store) == []
        s = write_mosaic(
            _result(scene, chunks=24, tile=16, overlap=4), store, time=T0, attrs={**ATTRS, "parameters": {"tile": 64}}
        )
    assert (s.action, s.chunks_written) == ("replace", 20)
    assert len(mapped_times(store)) == 1


def test_store_creation_interrupted_is_created_again_and_foreign_stores_are_kept(tmp_path, scene, monkeypatch):
    store = tmp_path / "c.zarr"
    result = _result(scene).compute()
    original = zarr.Group.create_array

    def dies_on_confidence(self, name, *a, **k):
        if name == "confidence":
            raise KeyboardInterrupt("simulated kill while creating the store")
        return original(self, name, *a, **k)

    # what a process killed while creating the store leaves: coordinates and lulc, no other product
    monkeypatch.setattr(zarr.Group, "create_array", dies_on_confidence)
    with pytest.raises(KeyboardInterrupt):
        write_mosaic(result, store, time=T0, attrs=ATTRS, chunk_size=CHUNK)
    monkeypatch.setattr(zarr.Group, "create_array", original)
    root = zarr.open_group(store, mode="r", use_consolidated=False)
    assert "lulc" in root and "confidence" not in root
    s = write_mosaic(result, store, time=T0, attrs=ATTRS, chunk_size=CHUNK)
    assert (s.action, s.chunks_written) == ("append", 9)
    np.testing.assert_array_equal(open_mosaic(store)["lulc"].isel(time=0).values, result["lulc"].values)

    # a Zarr store that is not a half-made mosaic of ours is refused and left as it was
    other = tmp_path / "other.zarr"
    xr.Dataset({"lulc": (("y", "x"), np.ones((4, 4), np.uint8))}).to_zarr(other, zarr_format=3, consolidated=False)
    before = sorted((p.relative_to(other), p.read_bytes()) for p in other.rglob("*") if p.is_file())
    with pytest.raises(MosaicError, match="not a CloudLULC"):
        write_mosaic(result, other, time=T0, attrs=ATTRS, chunk_size=CHUNK)
    assert sorted((p.relative_to(other), p.read_bytes()) for p in other.rglob("*") if p.is_file()) == before


def test_append_interrupted_between_resizes_is_healed(tmp_path, scene):
    store = tmp_path / "h.zarr"
    result = _result(scene).compute()
    write_mosaic(result, store, time=T0, attrs=ATTRS, chunk_size=CHUNK)
    # what a process killed inside an append leaves: ``time`` grown, the data arrays not yet
    root = zarr.open_group(store, mode="r+", use_consolidated=False)
    root["time"].resize((2,))
    root["time"][1] = np.datetime64("2024-05-01T10:16:29", "ms").astype(np.int64)
    ds = open_mosaic(store)  # heals the lengths, hides the empty slice
    assert ds.sizes["time"] == 1
    assert open_mosaic(store, complete_only=False).sizes["time"] == 2
    s = write_mosaic(result, store, time=T1, attrs=ATTRS)
    assert s.time_index == 1 and s.chunks_written == 9
    assert len(mapped_times(store)) == 2


def test_simulated_catalog_end_to_end(sim_catalog, tmp_path):
    """SIMULATED catalog COGs -> catalog pairing -> build_cube -> CloudLULC-Net tiny -> mosaic -> COG."""
    from rio_cogeo.cogeo import cog_validate

    from cloudlulc.cube import build_cube, grid_for_aoi
    from cloudlulc.model import build_model
    from cloudlulc.stac import Pair, group_acquisitions, parse_aoi, select_s1
    from cloudlulc.store import export_cog

    aoi = parse_aoi(list(sim_catalog.aoi_bbox_lonlat))
    acq = group_acquisitions(sim_catalog.items_of("sentinel-2-l2a"), aoi)[0]
    pair = Pair(acq, select_s1(acq, sim_catalog.items_of("sentinel-1-rtc"), aoi, 12), aoi)
    cube = build_cube(pair, grid_for_aoi(aoi), chunksize=128)
    torch.manual_seed(0)
    result = predict_cube(cube, build_model("cloudlulc-net-tiny"), tile=64, overlap=16, device="cpu")
    store = tmp_path / "sim.zarr"
    summary = write_mosaic(
        result, store, time=pair.time, attrs={"model": {"name": "cloudlulc-net-tiny"}}, chunk_size=128
    )
    assert summary.chunks_written == summary.chunks_total

    ds = open_mosaic(store)
    inputs = cube[["optical", "sar", "cloud"]].compute()
    nodata = inputs["optical"].isnull().all("band") & inputs["sar"].isnull().all("sar_band")
    lulc = ds["lulc"].isel(time=0).values
    assert (lulc[nodata.values] == NODATA).all() and (lulc[~nodata.values] < NODATA).all()
    np.testing.assert_array_equal(ds["cloud"].isel(time=0).values, inputs["cloud"].values)
    assert pyproj.CRS(ds.rio.crs.to_wkt()).to_epsg() == cube.rio.crs.to_epsg()
    prov = read_provenance(store)[summary.time.astype(str) + "Z"]
    assert prov["pairing"]["s2"]["item_ids"] == [it["id"] for it in acq.items]  # from cube.attrs["pairing"]
    assert prov["pairing"]["s1"]["s1_item_ids"] == [it["id"] for it in pair.s1.s1_items]
    assert prov["pairing"]["s1"]["gap_days"] == round(pair.s1.gap_days, 3)  # S1-S2 gap recorded
    assert "?" not in json.dumps(prov)  # no query strings, so no SAS tokens
    cog = export_cog(store, pair.time, tmp_path / "sim.tif")
    assert cog_validate(cog, quiet=True)[0]
