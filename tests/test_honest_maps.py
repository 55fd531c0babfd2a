"""Never present missing or unreliable input as a confident map: acquisitions are kept or dropped
whole, every pixel says what it rests on (``input_quality``), pixels without optical data have no
optical reliability, optical-only runs are marked, and class probabilities can be stored. Real
rustac STAC API over the SIMULATED catalog; real Zarr stores; no mocks."""

from __future__ import annotations

import numpy as np
import pytest
import xarray as xr
from inference_helpers import ContextNet, make_cube, random_scene

from cloudlulc import pipeline
from cloudlulc import stac as cat
from cloudlulc.classes import NODATA
from cloudlulc.config import Settings
from cloudlulc.cube.quality import (
    OPTICAL_CLEAR,
    OPTICAL_CLOUDY,
    OPTICAL_MISSING,
    SAR_MISSING,
    SAR_OBSERVED,
    input_fractions,
    quality_flags,
)
from cloudlulc.inference import predict_cube
from cloudlulc.simulate import DEFAULT_S1, DEFAULT_S2, write_demo_catalog
from cloudlulc.store import open_mosaic, read_provenance, write_mosaic
from cloudlulc.store.export import trust_notes
from cloudlulc.testing.stac_server import serve_stac
from flows.demo import demo_aoi_and_time

FAST = {"device": "cpu", "tile": 64, "overlap": 16, "chunk_size": 64}


def test_quality_flags_say_which_inputs_each_pixel_had():
    optical = np.ones((12, 2, 3), np.float32)
    sar = np.ones((2, 2, 3), np.float32)
    optical[:, 0, 0] = np.nan  # no optical
    optical[3, 0, 1] = np.nan  # one band missing: still observed
    sar[:, 1, :] = np.nan  # no radar on the second row
    cloud = np.array([[0, 1, 255], [0, 1, 0]], np.uint8)  # 255: SCL nodata
    flags = quality_flags(optical, sar, cloud)
    assert flags[0, 0] == OPTICAL_MISSING | SAR_OBSERVED
    assert flags[0, 1] == OPTICAL_CLOUDY | SAR_OBSERVED
    assert flags[0, 2] == SAR_OBSERVED  # optical value, cloud state unknown: neither clear nor cloudy
    assert flags[1, 0] == OPTICAL_CLEAR | SAR_MISSING
    assert flags[1, 1] == OPTICAL_CLOUDY | SAR_MISSING
    shares = input_fractions(flags)
    assert shares == {
        "optical_clear": 0.3333,
        "optical_cloud_or_shadow": 0.3333,
        "optical_missing": 0.1667,
        "sar_missing": 0.5,
    }


def test_pixels_without_optical_are_flagged_with_zero_reliability_in_the_store(tmp_path):
    optical, sar, cloud = random_scene(96, 120, seed=4)
    optical[:, 20:70, 30:90] = np.nan  # a dropped tile, say: no optical value at all here
    cube = make_cube(optical, sar, cloud, (48, 48))
    result = predict_cube(cube, ContextNet(), tile=32, overlap=8, device="cpu")
    store = tmp_path / "m.zarr"
    write_mosaic(result, store, time="2024-04-19T10:06:31Z", attrs={"test": True}, chunk_size=48)
    ds = open_mosaic(store).isel(time=0)
    flags = ds["input_quality"].values.astype(np.uint8)
    missing = np.zeros(flags.shape, bool)
    missing[20:70, 30:90] = True
    assert ((flags[missing] & OPTICAL_MISSING) > 0).all() and ((flags[~missing] & OPTICAL_MISSING) == 0).all()
    assert (ds["optical_reliability"].values[missing] == 0).all()
    assert (ds["lulc"].values[missing] != NODATA).all()  # mapped from radar, and flagged so
    assert (ds["optical_reliability"].values[~missing] > 0).mean() > 0.9


@pytest.fixture(scope="module")
def served(sim_catalog):
    with serve_stac(sim_catalog) as url:
        yield url


def test_an_acquisition_is_kept_or_dropped_whole(sim_catalog, served):
    """2022-01-31: one tile is much cloudier than the other. A limit between the two never drops
    it alone: part of the AOI would lose its optical data, a worse input than the cloud the radar
    maps under."""
    client = cat.open_catalog(served)
    aoi = cat.parse_aoi(sim_catalog.aoi_bbox_lonlat)
    every = cat.search_s2(client, aoi, "2022-01-01", "2022-02-28")  # default: 100, nothing dropped
    by_day = {a.date.isoformat(): a for a in every}
    jan31 = by_day["2022-01-31"]
    clouds = sorted(it["properties"]["eo:cloud_cover"] for it in jan31.items)
    assert len(jan31.items) == 2 and clouds[1] - clouds[0] > 5
    assert clouds[0] <= jan31.cloud_cover <= clouds[1]
    for limit in ((clouds[0] + clouds[1]) / 2, jan31.cloud_cover + 0.5, jan31.cloud_cover - 0.5):
        try:
            kept = cat.search_s2(client, aoi, "2022-01-31", "2022-01-31", max_cloud_cover=limit)
        except cat.NoSentinel2Error as err:
            assert limit < jan31.cloud_cover and "cloud over it" in str(err)
            continue
        assert limit >= jan31.cloud_cover
        assert [sorted(a.item_ids) for a in kept] == [sorted(jan31.item_ids)]


@pytest.fixture(scope="module")
def no_s1_catalog(tmp_path_factory):
    return write_demo_catalog(
        tmp_path_factory.mktemp("no-s1"),
        s2_acquisitions=DEFAULT_S2[1:2],
        s1_passes=DEFAULT_S1[3:4],
        seed=0,
        tile_size=300,
        overlap=30,
        margin=12,
    )


def test_an_optical_only_run_is_marked_in_the_store_the_result_and_the_quicklook(no_s1_catalog, tmp_path):
    aoi, _ = demo_aoi_and_time(no_s1_catalog, half_side_m=200)
    with serve_stac(no_s1_catalog) as url:
        settings = Settings(catalog_url=url, **FAST)
        store = tmp_path / "optical-only.zarr"
        params = {"aoi": aoi, "time": "2022-01-16", "output": str(store), "allow_optical_only": True}
        result = pipeline.map_aoi(params, settings=settings)
    (a,) = result.acquisitions
    assert a.optical_only and a.mode == "optical-only" and a.s1_items == []
    assert a.inputs["sar_missing"] == 1.0 and a.inputs["optical_missing"] == 0.0
    assert "OPTICAL-ONLY" in result.to_markdown()
    (entry,) = read_provenance(store).values()
    assert entry["optical_only"] is True and entry["mode"] == "optical-only"
    assert entry["inputs"]["sar_missing"] == 1.0 and entry["weights_simulated"] is True
    ds = open_mosaic(store)
    notes = trust_notes(ds.isel(time=0), None)
    assert any("OPTICAL-ONLY" in n for n in notes) and any("SIMULATED" in n for n in notes)
    assert a.quicklook is not None and a.quicklook.endswith(".png")
    flags = ds["input_quality"].isel(time=0).values.astype(np.uint8)
    assert ((flags & SAR_MISSING) > 0).all()


def test_probabilities_are_stored_on_request_and_sum_to_100(sim_catalog, served, tmp_path):
    aoi, _ = demo_aoi_and_time(sim_catalog, half_side_m=200)
    settings = Settings(catalog_url=served, **FAST)
    store = tmp_path / "p.zarr"
    base = {"aoi": aoi, "output": str(store), "quicklook": False}
    pipeline.map_aoi({**base, "time": "2022-01-16", "probabilities": True}, settings=settings)
    pipeline.map_aoi({**base, "time": "2022-01-31"}, settings=settings)  # not asked: 255
    ds = xr.open_zarr(store, mask_and_scale=False)
    assert ds["probabilities"].dims == ("time", "class", "y", "x") and ds["probabilities"].dtype == np.uint8
    assert list(ds["class"].values) == list(range(6))
    mosaic = open_mosaic(store)
    first = mosaic.sel(time="2022-01-16").isel(time=0)
    probs = first["probabilities"].values.astype(int)
    mapped = first["lulc"].values != NODATA
    total = probs.sum(axis=0)[mapped]
    assert mapped.all() and np.abs(total - 100).max() <= 3  # each class rounded to a whole percent
    agree = (probs.argmax(axis=0) == first["lulc"].values)[mapped].mean()
    assert agree > 0.99  # the class map is the most probable class (ties aside)
    np.testing.assert_array_equal(probs.max(axis=0)[mapped], first["confidence"].values[mapped])
    second = mosaic.sel(time="2022-01-31").isel(time=0)
    assert (second["probabilities"].values == 255).all()
