"""What an operator relies on: acquisitions without Sentinel-1 never stall near-real-time mapping,
credentials and SAS tokens never reach the store or the logs, and settings from the environment are
checked as strictly as parameters, before any store is touched. Real rustac and asset servers over
the SIMULATED catalog; no mocks."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import numpy as np
import pytest
from pydantic import ValidationError

from cloudlulc import pipeline
from cloudlulc.config import Settings
from cloudlulc.inference import DeviceError
from cloudlulc.simulate import DEFAULT_S1, DEFAULT_S2, write_demo_catalog
from cloudlulc.store import mapped_times, read_provenance, read_unpaired
from cloudlulc.testing.assets import serve_assets
from cloudlulc.testing.stac_server import serve_stac
from flows.demo import demo_aoi_and_time

SMALL = {"seed": 0, "tile_size": 300, "overlap": 30, "margin": 12}
FAST = {"device": "cpu", "tile": 64, "overlap": 16, "chunk_size": 64}


def _store_bytes(store: Path) -> dict[str, bytes]:
    return {str(p.relative_to(store)): p.read_bytes() for p in store.rglob("*") if p.is_file()}


@pytest.fixture(scope="module")
def gap_catalog(tmp_path_factory):
    """Two acquisitions; the S1 pass of the first is missing (the nearest is 13 days off)."""
    return write_demo_catalog(
        tmp_path_factory.mktemp("gap"), s2_acquisitions=DEFAULT_S2[:2], s1_passes=DEFAULT_S1[1:2], **SMALL
    )


def test_nrt_waits_for_sentinel1_then_maps_optical_only_or_gives_up(gap_catalog, tmp_path):
    aoi, _ = demo_aoi_and_time(gap_catalog, half_side_m=200)
    window = "2022-01-01/2022-01-18"
    with serve_stac(gap_catalog) as url:
        settings = Settings(catalog_url=url, **FAST)
        store = tmp_path / "nrt.zarr"
        params = {"aoi": aoi, "time": window, "output": str(store), "skip_mapped": True}
        # Jan 18: a pass for Jan 6 may still be published (until Jan 21): it waits, Jan 16 is mapped
        first = pipeline.map_aoi({**params, "now": "2022-01-18"}, settings=settings)
        assert [a.time[:10] for a in first.acquisitions] == ["2022-01-16"]
        assert [(u["time"][:10], u["status"]) for u in first.unpaired] == [("2022-01-06", "waiting")]
        waiting = read_unpaired(store)
        assert len(waiting) == 1 and next(iter(waiting.values()))["retry_until"].startswith("2022-01-21")
        # Jan 25: too late for a pass; the default maps it optical-only, marked so in the store
        later = pipeline.map_aoi({**params, "now": "2022-01-25"}, settings=settings)
        assert [a.time[:10] for a in later.acquisitions] == ["2022-01-06"] and later.acquisitions[0].optical_only
        assert [str(t)[:10] for t in mapped_times(store)] == ["2022-01-06", "2022-01-16"]
        assert read_unpaired(store) == {}
        jan6 = [p for k, p in read_provenance(store).items() if k.startswith("2022-01-06")][0]
        assert jan6["optical_only"] is True
        # ... or gives it up without mapping it, per setting
        other = tmp_path / "skip.zarr"
        given_up = pipeline.map_aoi(
            {**params, "output": str(other), "now": "2022-01-25"},
            settings=Settings(catalog_url=url, nrt_without_s1="skip", **FAST),
        )
        assert [a.time[:10] for a in given_up.acquisitions] == ["2022-01-16"]
        assert [(u["time"][:10], u["status"]) for u in given_up.unpaired] == [("2022-01-06", "given up")]
        # a one-off run still refuses to map without Sentinel-1 unless asked to
        with pytest.raises(pipeline.PipelineError, match="allow_optical_only"):
            pipeline.map_aoi({"aoi": aoi, "time": "2022-01-06", "output": str(tmp_path / "x.zarr")}, settings=settings)


def _signed_catalog(sim_catalog, root: Path, asset_url: str, token: str) -> Path:
    """The simulated catalog's STAC JSON with asset hrefs on ``asset_url`` carrying a SAS-like token."""
    out = root / "signed"
    (out / "api").mkdir(parents=True)
    for path in sim_catalog.collection_paths:
        shutil.copy(path, out / "api" / Path(path).name)
    for path in sim_catalog.item_collection_paths:
        doc = json.loads(Path(path).read_text())
        for item in doc["features"]:
            for asset in item["assets"].values():
                rel = Path(asset["href"]).resolve().relative_to(sim_catalog.root)
                asset["href"] = f"{asset_url}/{rel.as_posix()}?{token}"
        (out / "api" / Path(path).name).write_text(json.dumps(doc))
    return out


def test_credentials_and_tokens_never_reach_the_store_the_result_or_the_logs(sim_catalog, tmp_path, caplog):
    token = "st=2026-01-01&se=2099-01-01T00%3A00%3A00Z&sp=rl&sv=2021-06-08&sr=c&sig=T0KENSIGNATURE"
    aoi, window = demo_aoi_and_time(sim_catalog, half_side_m=200)
    caplog.set_level(logging.DEBUG)
    with serve_assets(sim_catalog.root) as assets:
        signed = _signed_catalog(sim_catalog, tmp_path, assets.url, token)
        with serve_stac(signed) as url:
            secret_url = url.replace("http://", "http://mapper:pa55word@")
            store = tmp_path / "s.zarr"
            result = pipeline.map_aoi(
                {"aoi": aoi, "time": window.split("/")[0], "output": str(store), "catalog_url": secret_url},
                settings=Settings(**FAST),
            )
    assert len(result.acquisitions) == 1
    stored = b"".join(_store_bytes(store).values())
    shown = json.dumps(result.as_dict()) + caplog.text
    for secret in ("pa55word", "T0KENSIGNATURE", "sig="):
        assert secret.encode() not in stored, secret
        assert secret not in shown, secret
    prov = next(iter(read_provenance(store).values()))
    assert prov["parameters"]["catalog_url"] == url  # the URL is kept, without its credentials
    assert all("?" not in h for hrefs in prov["pairing"]["s2"]["hrefs"].values() for h in hrefs.values())


def test_settings_from_the_environment_are_checked_before_any_store_is_touched(
    sim_catalog, stac_url, tmp_path, monkeypatch
):
    aoi, window = demo_aoi_and_time(sim_catalog, half_side_m=200)
    store = tmp_path / "v.zarr"
    params = {"aoi": aoi, "time": window.split("/")[0], "output": str(store)}
    pipeline.map_aoi(params, settings=Settings(catalog_url=stac_url, **FAST))
    before = _store_bytes(store)
    assert len(mapped_times(store)) == 1

    with pytest.raises(DeviceError, match="cuda:9"):
        pipeline.map_aoi({**params, "device": "cuda:9"}, settings=Settings(catalog_url=stac_url, **FAST))
    for name, value, words in [
        ("CLOUDLULC_DEVICE", "tpu", "device"),
        ("CLOUDLULC_DASK_ADDRESS", "localhost", "tcp://"),
        ("CLOUDLULC_CATALOG_URL", "ftp://catalog.example", "http"),
        ("CLOUDLULC_MAX_CLOUD_COVER", "140", "max_cloud_cover"),
    ]:
        monkeypatch.setenv(name, value)
        with pytest.raises(ValidationError, match=words):
            pipeline.map_aoi(params)
        monkeypatch.delenv(name)
    assert _store_bytes(store) == before  # nothing was written, the slice stays published
    np.testing.assert_array_equal(mapped_times(store), mapped_times(store))
