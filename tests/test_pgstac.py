"""Search -> pair -> cube through stac-fastapi-pgstac on a real PostgreSQL + PostGIS (the PC's engine).

The simulated catalog (SIMULATED DATA) is loaded with pypgstac; its COGs are served over HTTP with
range requests (cloudlulc.testing.assets) and read by GDAL through /vsicurl, as in production. Skips
only when the Debian packages postgresql-15 / postgresql-15-postgis-3 are not installed.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from cube_checks import reflectance_at
from pgstac_server import missing_requirements, serve_pgstac

from cloudlulc import stac as cat
from cloudlulc.classes import S2_BANDS
from cloudlulc.cube import build_cube, build_label_cube, grid_for_aoi
from cloudlulc.stac.client import conforms
from cloudlulc.testing.assets import serve_assets
from cloudlulc.times import parse_datetime

pytestmark = [
    pytest.mark.pgstac,
    pytest.mark.filterwarnings("ignore:Use `@` matmul:PendingDeprecationWarning"),
]

_WHY = missing_requirements()
if _WHY:
    print(f"test_pgstac skipped: {_WHY}")
    pytest.skip(_WHY, allow_module_level=True)


def _pc_fixture_items(pc_fixtures_dir) -> list[dict]:
    """The real PC S2 and S1 RTC items (metadata only), loaded next to the simulated ones."""
    out = []
    for cid in ("sentinel-2-l2a", "sentinel-1-rtc"):
        out += json.loads((pc_fixtures_dir / f"{cid}.json").read_text())["features"]
    return out


@pytest.fixture(scope="module")
def pgstac_env(sim_catalog, pc_fixtures_dir):
    with serve_assets(sim_catalog.root) as assets:
        items = sim_catalog.with_href_base(assets.url)
        with serve_pgstac(sim_catalog.collections, items + _pc_fixture_items(pc_fixtures_dir)) as server:
            yield server, assets, items


def test_pgstac_search_pair_cube_over_http(sim_catalog, pgstac_env):
    server, assets, items = pgstac_env
    client = cat.open_catalog(server.api_url)
    # pgstac implements query and sort, so the server filters too (rustac does not).
    assert conforms(client, "QUERY") and conforms(client, "SORT")
    aoi = cat.parse_aoi(sim_catalog.aoi_bbox_lonlat)
    start, end = min(sim_catalog.s2_dates).date(), max(sim_catalog.s2_dates).date()
    s2_all = [it for it in items if it["collection"] == "sentinel-2-l2a"]
    limit = sorted(it["properties"]["eo:cloud_cover"] for it in s2_all)[len(s2_all) // 2]
    server_side = list(
        client.search(
            collections=["sentinel-2-l2a"],
            intersects=aoi.__geo_interface__,
            query={"eo:cloud_cover": {"lte": limit}},
        ).items_as_dicts()
    )
    expected = {it["id"] for it in s2_all if it["properties"]["eo:cloud_cover"] <= limit}
    assert {it["id"] for it in server_side} == expected
    # search_s2 keeps or drops acquisitions whole, by their cloud over the AOI (never tile by tile)
    every = cat.search_s2(client, aoi, start, end)
    acqs = cat.search_s2(client, aoi, start, end, max_cloud_cover=limit)
    assert {i for a in acqs for i in a.item_ids} == {i for a in every if a.cloud_cover <= limit for i in a.item_ids}
    assert all(len(a.items) == 2 for a in acqs) and 0 < len(acqs) < len(every)
    assert [a.time for a in acqs] == sorted(a.time for a in acqs)

    pairs = cat.find_pairs(client, aoi, start, end, max_cloud_cover=100, max_gap_days=12)
    assert len(pairs) == len(sim_catalog.s2_dates)
    assert all(p.s1 is not None and p.s1.gap_days <= 12 for p in pairs)
    assert {p.s1.orbit_state for p in pairs} == {"ascending", "descending"}
    assert any(len(p.s1.s1_items) == 2 for p in pairs), "the two-frame pass is mosaicked"

    grid = grid_for_aoi(aoi).window(0, 0, 48, 64)
    assets.reset_counters()
    pair = pairs[0]
    cube = build_cube(pair, grid, chunksize=64)
    assert assets.requests == 0
    cube = cube.compute()
    assert assets.range_requests > 0, "GDAL read the COGs over HTTP with range requests"
    assert "sig=" not in json.dumps(cube.attrs["pairing"])
    assert list(cube["optical"].band.values) == list(S2_BANDS)
    assert np.isfinite(cube["sar"].values).mean() > 0.99
    # Pixel check: the 10 m B02 DN at each sampled location, read with rasterio over HTTP, harmonised.
    rng = np.random.default_rng(1)
    for r, c in zip(rng.integers(0, grid.shape[0], 5), rng.integers(0, grid.shape[1], 5), strict=True):
        x, y = grid.x[c], grid.y[r]
        expected_value = reflectance_at(pair.s2.items, "B02", x, y)
        got = float(cube["optical"].sel(band="B02").values[r, c])
        assert got == pytest.approx(expected_value, abs=1e-7, nan_ok=True)

    labels = build_label_cube(client, grid, "esa-worldcover", chunksize=64).compute()
    assert labels.dtype == np.uint8 and (labels.values != 255).mean() > 0.95


def test_pgstac_serves_real_pc_items_the_catalog_accepts(pgstac_env):
    """Real PC metadata (space-separated S1 datetimes, 9-number transforms) through pgstac."""
    server, _, _ = pgstac_env
    client = cat.open_catalog(server.api_url)
    acqs = cat.search_s2(client, (92.0, 80.0, 98.0, 83.0), "2024-04-01", "2024-04-30", max_cloud_cover=0.5)
    assert acqs[0].item_ids[0] == "S2B_MSIL2A_20240419T095549_R122_T47XML_20240419T123458"  # least cloudy first
    assert len(acqs) == 1 and len(acqs[0].items) == 3  # 0.49 % cloud over the AOI: kept whole
    assert acqs[0].items[0]["properties"]["proj:epsg"] == 32647
    fake = cat.Acquisition(
        parse_datetime("2024-04-21T09:00:00Z"), "Sentinel-2A", 1, acqs[0].items, 0.2, 1.0, ("05.10",)
    )
    pairing = cat.pair_s1(client, fake, (15.0, 30.7, 15.1, 30.8), 12)
    assert len(pairing.s1_items) == 2 and pairing.orbit_state == "descending"
    assert 2.1 < pairing.gap_days < 2.2


def test_map_items_are_published_to_a_transactional_stac_api(sim_catalog, pgstac_env, tmp_path):
    """The STAC Item of a mapped slice POSTed to stac-fastapi-pgstac (transaction extension), then
    found by a search like any other item; publishing again updates it."""
    from cloudlulc import pipeline
    from cloudlulc.config import Settings
    from cloudlulc.store.stac_items import publish_stac
    from flows.demo import demo_aoi_and_time

    server, _, _ = pgstac_env
    aoi, _ = demo_aoi_and_time(sim_catalog, half_side_m=200)
    store = tmp_path / "published.zarr"
    settings = Settings(catalog_url=server.api_url, device="cpu", tile=64, overlap=16, chunk_size=64)
    pipeline.map_aoi({"aoi": aoi, "time": "2022-01-16", "output": str(store), "quicklook": False}, settings=settings)
    assert publish_stac(store, server.api_url, catalog_url=server.api_url) == 1
    assert publish_stac(store, server.api_url, catalog_url=server.api_url) == 1  # idempotent: an update
    client = cat.open_catalog(server.api_url)
    found = list(client.search(collections=["cloudlulc-published"], intersects=cat.parse_aoi(aoi)).items_as_dicts())
    assert len(found) == 1 and found[0]["properties"]["datetime"].startswith("2022-01-16")
    assert found[0]["assets"]["data"]["href"] == store.resolve().as_uri()
    assert any(ln["rel"] == "derived_from" for ln in found[0]["links"])
