"""The Prefect-free pipeline: parameter validation, transient-error rules, areas, and one real run.

The end-to-end run goes through a real ``rustac serve`` STAC API over the SIMULATED catalog
(``stac_url`` fixture), real COG reads, the tiny network and a real Zarr store.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest
import xarray as xr
from pydantic import ValidationError

from cloudlulc import pipeline
from cloudlulc.config import Settings
from cloudlulc.model.io import WeightsError, load_model
from cloudlulc.params import MapParams, parse_time_window
from cloudlulc.runtime import DaskClusterError, dask_client, make_cluster
from flows.demo import demo_aoi_and_time

# ------------------------------------------------------------------------------------ parameters


def test_time_window_day_and_range():
    start, end = parse_time_window("2022-01-16")
    assert start == datetime(2022, 1, 16, tzinfo=UTC)
    assert end.date() == start.date() and end > start and (end - start).total_seconds() > 86399
    s2, e2 = parse_time_window("2022-01-06/2022-01-31")
    assert s2 == datetime(2022, 1, 6, tzinfo=UTC) and e2.date().day == 31
    s3, e3 = parse_time_window("2022-01-06T10:00:00Z/2022-01-07T00:00:00+00:00")
    assert s3.hour == 10 and e3 == datetime(2022, 1, 7, tzinfo=UTC)


@pytest.mark.parametrize(
    "changes, field, words",
    [
        ({"time": "2022-02-30"}, "time", "date"),
        ({"time": "2022-02-10/2022-01-01"}, "time", "ends before it starts"),
        ({"time": "2022-01-01/.."}, "time", "both ends"),
        ({"aoi": "1,2,3"}, "aoi", "4 numbers"),
        ({"aoi": [10, 50, 9, 51]}, "aoi", "minx < maxx"),
        ({"aoi": "no/such/file.geojson"}, "aoi", "does not exist"),
        ({"aoi": '{"type": "Point", "coordinates": [1, 2]}'}, "aoi", "no area"),
        ({"catalog_url": "ftp://x"}, "catalog_url", "http"),
        ({"device": "gpu"}, "device", "cuda"),
        ({"weights": "/nonexistent/w.safetensors"}, "weights", "do not exist"),
        ({"dask_address": "localhost"}, "dask_address", "tcp://"),
        ({"max_cloud_cover": 140}, "max_cloud_cover", "less than or equal"),
        ({"colour": "red"}, "colour", "Extra inputs"),
    ],
)
def test_bad_parameters_name_the_field(changes, field, words, tmp_path):
    values = {"aoi": "17.69,48.23,17.70,48.24", "time": "2022-01-16", "output": str(tmp_path / "m.zarr"), **changes}
    with pytest.raises(ValidationError) as info:
        MapParams.model_validate(values)
    text = str(info.value)
    assert field in text and words in text, text


def test_output_that_cannot_be_created_is_refused_before_work(tmp_path):
    blocker = tmp_path / "not-a-dir.txt"
    blocker.write_text("keep me")
    base = {"aoi": "17.69,48.23,17.70,48.24", "time": "2022-01-16"}
    for output, words in [
        (blocker, "existing file"),
        (blocker / "sub" / "m.zarr", "is a file, not a directory"),
    ]:
        with pytest.raises(ValidationError) as info:
            MapParams.model_validate({**base, "output": str(output)})
        assert "output" in str(info.value) and words in str(info.value), str(info.value)
    assert blocker.read_text() == "keep me"  # nothing already there is touched


def test_parameters_accept_the_documented_forms(tmp_path):
    geojson = (
        '{"type": "Polygon", "coordinates": [[[17.69,48.23],[17.70,48.23],[17.70,48.24],[17.69,48.24],[17.69,48.23]]]}'
    )
    vector = tmp_path / "aoi.geojson"
    vector.write_text(geojson)
    for aoi in ("17.69,48.23,17.70,48.24", [17.69, 48.23, 17.70, 48.24], geojson, str(vector)):
        p = MapParams(aoi=aoi, time="2022-01-16", output=str(tmp_path / "m.zarr"))
        assert p.window[0].year == 2022
    p = MapParams(aoi=[17.69, 48.23, 17.70, 48.24], time="2022-01-16", output="s3://bucket/m.zarr")
    assert not p.output_is_local and p.quicklook_path().name == "quicklooks"


def test_resolved_fills_unset_fields_from_settings(tmp_path):
    s = Settings(catalog_url="http://127.0.0.1:9/", max_cloud_cover=33, device="cpu")
    p = MapParams(
        aoi="17.69,48.23,17.70,48.24", time="2022-01-16", output=str(tmp_path / "m.zarr"), max_s1_gap_days=5
    ).resolved(s)
    assert (p.catalog_url, p.max_cloud_cover, p.device, p.max_s1_gap_days) == ("http://127.0.0.1:9/", 33, "cpu", 5)
    assert p.s2_collection == "sentinel-2-l2a" and p.s1_collection == "sentinel-1-rtc"


# ------------------------------------------------------------------------------- transient errors


def test_transient_errors_are_network_ones_only():
    from pystac_client.exceptions import APIError

    from cloudlulc.stac import NoSentinel1Error, StacApiError

    def api_error(status):
        e = APIError("boom")
        e.status_code = status
        return e

    assert pipeline.is_transient_error(ConnectionRefusedError())
    assert pipeline.is_transient_error(TimeoutError())
    assert pipeline.is_transient_error(api_error(503))
    assert pipeline.is_transient_error(api_error(429))
    assert pipeline.is_transient_error(StacApiError("http://x", "502 Bad Gateway"))
    assert not pipeline.is_transient_error(api_error(404))
    assert not pipeline.is_transient_error(ValueError("bad aoi"))
    assert not pipeline.is_transient_error(
        NoSentinel1Error("none", s2_time=datetime.now(UTC), max_gap_days=12, nearest=None)
    )
    try:  # a wrapped connection error counts through its cause
        try:
            raise ConnectionResetError("reset by peer")
        except ConnectionResetError as inner:
            raise RuntimeError("reading block failed") from inner
    except RuntimeError as outer:
        assert pipeline.is_transient_error(outer)


# ------------------------------------------------------------------------------------ areas


def test_class_areas_use_the_grid_resolution():
    lulc = np.full((4, 5), 255, np.uint8)
    lulc[:2, :] = 1  # 10 forest pixels
    lulc[2, :3] = 5  # 3 cropland pixels
    da = xr.DataArray(lulc, dims=("y", "x"), coords={"y": [35.0, 25.0, 15.0, 5.0], "x": [5.0, 15.0, 25.0, 35.0, 45.0]})
    areas = pipeline.class_areas_km2(da)
    assert areas["forest"] == pytest.approx(10 * 100 / 1e6)
    assert areas["cropland"] == pytest.approx(3 * 100 / 1e6)
    assert sum(areas.values()) == pytest.approx(13 * 100 / 1e6)
    coarse = da.assign_coords(x=da.x * 2, y=da.y * 2)  # 20 m pixels: four times the area
    assert pipeline.class_areas_km2(coarse)["forest"] == pytest.approx(4 * areas["forest"])


# ------------------------------------------------------------------------------------ dask


def test_dask_cluster_selection():
    import dask

    with dask_client(Settings(dask_threads_per_worker=3)) as client:  # the default: threaded scheduler
        assert client is None
        assert dask.base.get_scheduler() is dask.threaded.get and dask.config.get("num_workers") == 3
    with dask_client(Settings()):
        assert dask.config.get("num_workers") == dask.system.CPU_COUNT  # not Python's pool default
    with pytest.raises(DaskClusterError, match="threaded scheduler"):
        make_cluster(Settings())
    cluster = make_cluster(Settings(dask_cluster="local"))
    try:
        assert type(cluster).__name__ == "LocalCluster" and len(cluster.workers) == 1
    finally:
        cluster.close()
    with pytest.raises(DaskClusterError, match="dask-kubernetes|does not exist|CLOUDLULC_IMAGE is not set"):
        make_cluster(
            Settings(dask_cluster="kubernetes", dask_kubernetes_spec=Path("deploy/dask/kubernetes-cluster.yaml"))
        )
    with pytest.raises(DaskClusterError, match="cannot reach the Dask scheduler"):
        with dask_client(Settings(dask_connect_timeout="1s"), address="tcp://127.0.0.1:9"):
            pass


# ------------------------------------------------------------------------------ end to end


def test_map_aoi_library_end_to_end(sim_catalog, stac_url, tmp_path):
    """search -> pair -> cube -> infer+write -> publish on the SIMULATED catalog, no Prefect."""
    aoi, window = demo_aoi_and_time(sim_catalog, half_side_m=320)
    day = window.split("/")[0]
    out = tmp_path / "lib.zarr"
    settings = Settings(catalog_url=stac_url, device="cpu", tile=64, overlap=16, chunk_size=64)
    result = pipeline.map_aoi({"aoi": aoi, "time": day, "output": str(out)}, settings=settings)

    assert len(result.acquisitions) == 1
    acq = result.acquisitions[0]
    assert acq.time.startswith(day)
    assert acq.s2_items and set(acq.s2_items) <= {it["id"] for it in sim_catalog.items_of("sentinel-2-l2a")}
    assert acq.s1_items and set(acq.s1_items) <= {it["id"] for it in sim_catalog.items_of("sentinel-1-rtc")}
    assert 0 < acq.s1_gap_days <= 12 and not acq.optical_only

    ds = xr.open_zarr(out, decode_coords="all")
    assert ds["lulc"].rio.crs.to_epsg() == sim_catalog.epsg
    assert ds.sizes["time"] == 1
    lulc = ds["lulc"].isel(time=0).values
    mapped = int((lulc != 255).sum())
    assert mapped > 0.9 * lulc.size
    assert acq.mapped_km2 == pytest.approx(mapped * 100 / 1e6, rel=1e-6)
    assert Path(acq.quicklook).is_file() and Path(acq.quicklook).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    md = result.to_markdown()
    assert str(out) in md and acq.s2_items[0] in md and "km²" in md

    # a later run reads in chunks that divide the store's own chunks, whatever chunk_size it asks for
    from cloudlulc.store import store_chunk_size

    assert store_chunk_size(out) == 64 and store_chunk_size(tmp_path / "none.zarr") is None
    wide, _ = demo_aoi_and_time(sim_catalog, half_side_m=1280)  # 256 px: several chunks (lazy, never read)
    params = MapParams.model_validate({"aoi": wide, "time": day, "output": str(out), "chunk_size": 1024})
    params = params.resolved(settings)
    pairs, unpaired = pipeline.pair_stage(params, pipeline.search_stage(params)[0])
    assert unpaired == []
    chunks = pipeline.cube_stage(params, pairs, settings)[0]["optical"].chunks
    assert chunks[-1][0] == chunks[-2][0] == 64 and len(chunks[-1]) >= 4

    # the same request with skip_mapped finds the slice and maps nothing
    again = pipeline.map_aoi({"aoi": aoi, "time": day, "output": str(out), "skip_mapped": True}, settings=settings)
    assert again.acquisitions == [] and len(again.skipped_times) == 1


# ------------------------------------------------------------------------------------ model


def test_load_model_defaults_to_the_committed_demo_weights(tmp_path):
    from cloudlulc.model import demo_weights_path
    from cloudlulc.model.io import read_metadata, sha256_file

    demo = demo_weights_path()
    net, info = load_model(None)
    assert info.trained and info.weights_path == str(demo)
    assert info.sha256 == sha256_file(demo) and info.name == read_metadata(demo)["name"]
    assert not net.training
    _, via_json = load_model(demo.with_suffix(".json"))  # the sidecar path works too
    assert via_json.sha256 == info.sha256
    with pytest.raises(WeightsError, match="do not exist"):
        load_model(tmp_path / "missing.safetensors")


def test_library_modules_do_not_import_prefect():
    """Every module of the library imports without Prefect and without the flows (the layering)."""
    import subprocess
    import sys

    code = (
        "import importlib, pkgutil, sys, cloudlulc\n"
        "for m in pkgutil.walk_packages(cloudlulc.__path__, 'cloudlulc.'):\n"
        "    if not m.name.endswith('__main__'):\n"
        "        importlib.import_module(m.name)\n"
        "print(sorted({m.split('.')[0] for m in sys.modules} & {'prefect', 'flows'}))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "[]"


def test_read_chunk_size_divides_the_store_chunk():
    assert pipeline.read_chunk_size(1024) == 512  # several read chunks per store chunk keep workers busy
    assert pipeline.read_chunk_size(768) == 384
    assert pipeline.read_chunk_size(1000) == 500
    assert pipeline.read_chunk_size(64) == 64
    assert pipeline.read_chunk_size(1024, 256) == 256
    with pytest.raises(ValueError, match="must divide the mosaic's chunk_size=1024"):
        pipeline.read_chunk_size(1024, 300)
