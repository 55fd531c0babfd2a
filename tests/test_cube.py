"""cloudlulc.cube: grids, lazy cubes from real PC metadata, and pixel checks on the simulated catalog.

Part (a) builds cubes from the real Planetary Computer items in ../shared/fixtures/pc-items. Their
assets cannot be fetched here, so those tests check the Dask graph (grid, bands, dtypes, chunks)
and that building it reads nothing. Part (b) uses the simulated catalog (SIMULATED DATA, written by
cloudlulc.simulate): search / pair / cube through the rustac STAC server, and the cube's pixels
against the same COGs read independently with plain rasterio.
"""

from __future__ import annotations

import copy
import json
from datetime import UTC

import numpy as np
import pytest
import rasterio
import shapely
from cube_checks import reflectance_at
from pc_fixtures import PC_FIXTURES
from pyproj import Transformer
from rasterio.warp import Resampling, reproject
from scipy import ndimage

from cloudlulc import stac as cat
from cloudlulc.classes import LABEL_PRODUCTS, NODATA, S1_BANDS, S2_BANDS, remap_labels
from cloudlulc.cube import (
    AssetReadWarning,
    Grid,
    baseline_offset,
    build_cube,
    cloud_from_scl,
    grid_for_aoi,
    harmonise_s2,
    label_cube_from_items,
    linear_to_db,
    utm_epsg,
)
from cloudlulc.stac import AssetReadError, NoSentinel1Error, Pair, group_acquisitions, parse_aoi, select_s1
from cloudlulc.testing.assets import serve_assets
from cloudlulc.times import parse_datetime

FIXTURES = PC_FIXTURES
# stackstac 0.5.1 multiplies affine transforms with `*` (deprecated in affine 3).
pytestmark = pytest.mark.filterwarnings("ignore:Use `@` matmul:PendingDeprecationWarning")
FAKE_TOKEN = "st=2030-01-01T00%3A00%3A00Z&se=2030-01-01T01%3A00%3A00Z&sp=rl&sv=2021-06-08&sr=c&sig=SECRETSIGNATURE"


def load(name: str) -> list[dict]:
    data = json.loads((FIXTURES / name).read_text())
    return data["features"] if data.get("type") == "FeatureCollection" else [data]


# ------------------------------------------------------------------------------------------- grid
def test_grid_snaps_outward_and_exposes_pixel_centres():
    g = Grid(32633, (500003.7, 3429601.2, 500096.1, 3429689.9))
    assert g.bounds == (500000.0, 3429600.0, 500100.0, 3429690.0)
    assert g.shape == (9, 10)
    assert g.x[0] == 500005.0 and g.y[0] == 3429685.0 and np.all(np.diff(g.y) < 0)
    assert g.transform.c == 500000.0 and g.transform.f == 3429690.0
    sub = g.window(2, 3, 4, 100)  # clipped to the grid
    assert sub.shape == (4, 7)
    np.testing.assert_array_equal(sub.x, g.x[3:])
    np.testing.assert_array_equal(sub.y, g.y[2:6])
    tiles = list(g.windows(4))
    assert sum(t.shape[0] * t.shape[1] for _, t in tiles) == 90
    # Whole-pixel bounds off the 10 m lattice (a reference raster's grid) are kept, not shifted.
    ref = Grid(32633, (500005.0, 3429605.0, 500305.0, 3429905.0), 30)
    assert ref.bounds == (500005.0, 3429605.0, 500305.0, 3429905.0) and ref.shape == (10, 10)


def test_grid_for_aoi_uses_the_utm_zone_of_the_centroid():
    assert utm_epsg(15.05, 31.55) == 32633 and utm_epsg(-147.5, 60.8) == 32606 and utm_epsg(20.0, -10.0) == 32734
    g = grid_for_aoi((15.0, 31.5, 15.1, 31.6))
    assert g.epsg == 32633
    assert all(v % 10 == 0 for v in g.bounds)
    tr = Transformer.from_crs(4326, 32633, always_xy=True)
    x0, y0 = tr.transform(15.0, 31.5)
    assert g.bounds[0] <= x0 and g.bounds[1] <= y0  # covers the AOI
    assert grid_for_aoi((15.0, 31.5, 15.1, 31.6), epsg=32634).epsg == 32634


# --------------------------------------------------------------------------------- pure conversions
def test_harmonisation_by_processing_baseline_and_sar_db():
    new = load("sentinel-2-l2a.json")[0]
    old = load("sentinel-2-l2a.json")[3]
    assert baseline_offset(new) == 1000.0 and baseline_offset(old) == 0.0
    dn = np.array([0, 1000, 1500, 11000], np.uint16)
    np.testing.assert_allclose(harmonise_s2(dn, 1000.0), [np.nan, 0.0, 0.05, 1.0], equal_nan=True)
    np.testing.assert_allclose(harmonise_s2(dn, 0.0), [np.nan, 0.1, 0.15, 1.1], equal_nan=True)
    lin = np.array([-32768, 0, 1e-9, 0.01, 1.0, 100.0], np.float32)
    np.testing.assert_allclose(linear_to_db(lin), [np.nan, np.nan, -50, -20, 0, 10], equal_nan=True, atol=1e-5)
    scl = np.array([0, 3, 4, 8, 9, 10, 11])
    np.testing.assert_array_equal(cloud_from_scl(scl), [255, 1, 0, 1, 1, 1, 0])


def _stackstac_reference(dn: np.ndarray, convert, params, nodata) -> np.ndarray:
    """The mosaic as the cube built it before: every item converted in full, then stackstac.mosaic."""
    import stackstac
    import xarray as xr

    layers = np.stack([convert(d, p) if convert else d for d, p in zip(dn, params)])
    arr = xr.DataArray(layers, dims=("time", "band", "y", "x"))
    return stackstac.mosaic(arr, dim="time", nodata=nodata, reverse=True).values


class _LayerReader:
    """stackstac's Reader protocol over one in-memory (y, x) layer on the output grid; logs its reads."""

    def __init__(self, values: np.ndarray, key: tuple[int, int], log: list) -> None:
        self.values, self.key, self.log = values, key, log

    def read(self, window):
        self.log.append((self.key, window.row_off, window.col_off))
        return self.values[window.toslices()].copy()


def test_first_valid_mosaic_equals_convert_then_stackstac_mosaic_and_reads_only_gaps():
    """First valid wins per element (band and pixel), each item converted with its own parameter;
    a later item is read only for the bands the earlier ones left gaps in, an item whose asset lies
    outside a chunk is not read there, and a chunk no item covers is all nodata."""
    from rasterio.windows import Window

    from cloudlulc.cube.build import _linear_to_db
    from cloudlulc.cube.stack import ReaderTable, _first_valid_chunk

    rng = np.random.default_rng(3)
    dn = rng.integers(1, 4000, (3, 2, 8, 12)).astype(np.float32)
    dn[0, :, :, :6] = np.nan  # item 0's asset covers the right half only
    dn[0, 1, 2:4, 8:] = 0  # and has DN-0 nodata in one band only
    dn[1, :, :4] = np.nan  # item 1 covers the bottom half
    dn[2, :, :, 8:] = np.nan  # item 2 the left two thirds
    dn[1:, :, 4:, 8:] = np.nan
    dn[0, :, 4:, 8:] = np.nan  # ... so that nobody covers the bottom-right chunk
    assets = [Window(6, 0, 6, 8), Window(0, 4, 12, 4), Window(0, 0, 8, 8)]
    offsets = [1000.0, 0.0, 1000.0]
    lin = rng.uniform(-0.01, 0.2, dn.shape).astype(np.float32)
    lin[np.isnan(dn)] = np.nan
    scl = np.where(np.nan_to_num(dn, nan=0) > 0, np.nan_to_num(dn, nan=0) % 11 + 1, 0).astype(np.uint8)  # 0: nodata
    # (lin: backscatter <= 0 converts to NaN, more gaps than the footprints make: values only)
    cases = [
        (dn, harmonise_s2, offsets, np.nan, np.float32, True),
        (lin, _linear_to_db, [None] * 3, np.nan, np.float32, False),
        (scl, None, [None] * 3, 0, np.uint8, True),
    ]
    for values, convert, params, nodata, dtype, check_reads in cases:
        log: list = []
        readers = [[_LayerReader(values[t, b], (t, b), log) for b in range(2)] for t in range(3)]
        table = ReaderTable(readers, [[assets[t]] * 2 for t in range(3)], read_threads=1)  # type: ignore[arg-type]
        got = np.empty(values.shape[1:], dtype=dtype)
        for y in (0, 4):
            for x in (0, 4, 8):
                chunk = (slice(y, y + 4), slice(x, x + 4))
                got[(slice(None), *chunk)] = _first_valid_chunk(
                    table, (y, y + 4, x, x + 4), params, convert, nodata, np.dtype(dtype)
                )
        np.testing.assert_array_equal(got, _stackstac_reference(values, convert, params, nodata))
        reads = {(t, b, y, x) for (t, b), y, x in log}
        assert len(reads) == len(log), "every window of an asset is read at most once"
        if not check_reads:
            continue
        # top-right: item 0 fills band 0 there, so only band 1 (its DN-0 strip) comes from items 1/2;
        # item 1's asset does not reach the top row, item 2's does not reach x >= 8
        assert {r for r in reads if r[2:] == (0, 8)} == {(0, 0, 0, 8), (0, 1, 0, 8)}
        # top-middle: item 0 covers x 6-8, item 2 fills the rest (both bands), item 1 is outside
        assert {r for r in reads if r[2:] == (0, 4)} == {(0, 0, 0, 4), (0, 1, 0, 4), (2, 0, 0, 4), (2, 1, 0, 4)}
        # bottom-left: outside item 0's asset; item 1 covers it fully, so item 2 is never opened there
        assert {r for r in reads if r[2:] == (4, 0)} == {(1, 0, 4, 0), (1, 1, 4, 0)}
        assert np.isnan(got[:, 4:, 8:]).all() if np.isnan(nodata) else (got[:, 4:, 8:] == nodata).all()


# ---------------------------------------------------------------------- (a) real PC metadata graphs
def _arctic_pair() -> tuple[Pair, Grid]:
    """The three 2024-04-19 tiles (two UTM zones, baseline 05.10) and an AOI across the 47XML/46XES overlap."""
    aoi = parse_aoi((95.5, 81.84, 95.9, 81.9))
    acq = group_acquisitions(load("sentinel-2-l2a.json")[:3], aoi)[0]
    return Pair(s2=acq, s1=None, aoi=aoi, s1_missing_reason="test: optical only"), grid_for_aoi(aoi)


def test_cube_graph_from_real_s2_items_without_reading():
    pair, grid = _arctic_pair()
    assert len(pair.s2.items) == 3
    cube = build_cube(pair, grid, chunksize=128)  # the hrefs are unreachable here: any read would fail
    assert cube["optical"].dims == ("band", "y", "x")
    assert list(cube["optical"].band.values) == list(S2_BANDS)
    assert cube["optical"].dtype == np.float32 and cube["sar"].dtype == np.float32
    assert cube["scl"].dtype == np.uint8 and cube["cloud"].dtype == np.uint8
    assert cube["sar"].dims == ("sar_band", "y", "x") and list(cube["sar"].sar_band.values) == list(S1_BANDS)
    assert cube.sizes["y"] == grid.shape[0] and cube.sizes["x"] == grid.shape[1]
    np.testing.assert_array_equal(cube.x.values, grid.x)
    np.testing.assert_array_equal(cube.y.values, grid.y)
    for name in ("optical", "sar", "scl", "cloud"):
        assert cube[name].chunks is not None
        assert max(cube[name].chunks[-1]) <= 128
    # Lon 95.7 is in UTM zone 46: tiles from zones 46 and 47 are warped onto one grid.
    assert cube.rio.crs.to_epsg() == grid.epsg == 32646
    assert {it["properties"]["proj:epsg"] for it in pair.s2.items} == {32646, 32647}
    assert cube["time"].values == np.datetime64("2024-04-19T09:55:49.024")
    assert cube.attrs["pairing"]["optical_only"] is True
    assert cube.attrs["pairing"]["s2"]["processing_baselines"] == ["05.10"]
    assert "SECRET" not in json.dumps(cube.attrs["pairing"])
    # The SAR of an optical-only pair is all NaN without any file behind it.
    assert np.isnan(cube["sar"].isel(x=slice(0, 4), y=slice(0, 4)).values).all()


def test_cube_graph_old_baseline_and_s1_nine_number_transform():
    old = load("sentinel-2-l2a.json")[3]  # baseline 02.12, Alaska, EPSG:32606
    aoi_s2 = parse_aoi((-148.0, 60.8, -147.9, 60.85))
    acq = group_acquisitions([old], aoi_s2)[0]
    cube = build_cube(Pair(acq, None, aoi_s2), grid_for_aoi(aoi_s2), chunksize=256)
    assert cube.rio.crs.to_epsg() == 32606 and cube["optical"].shape[0] == 12

    s1 = load("sentinel-1-rtc.json")
    assert len(s1[0]["properties"]["proj:transform"]) == 9
    aoi = parse_aoi((15.0, 30.7, 15.1, 30.8))  # across two frames of the pass
    s2_time = parse_datetime("2024-04-20T09:40:00Z")
    fake_acq = cat.Acquisition(s2_time, "Sentinel-2A", 79, [old], 1.0, 1.0, ("02.12",))
    pairing = select_s1(fake_acq, s1, aoi, 12)
    from cloudlulc.cube import sar_cube

    grid = grid_for_aoi(aoi)
    sar = sar_cube(pairing.s1_items, grid, chunksize=256)
    assert sar.dims == ("sar_band", "y", "x") and sar.shape == (2, *grid.shape) and sar.dtype == np.float32
    np.testing.assert_array_equal(sar.x.values, grid.x)


def test_label_cubes_from_worldcover_null_datetime_and_io_lulc_antimeridian():
    wc = load("esa-worldcover.json")
    aoi = parse_aoi((7.0, 1.0, 7.05, 1.05))
    grid = grid_for_aoi(aoi)
    labels = label_cube_from_items(wc, grid, "esa-worldcover", chunksize=256)
    assert labels.dtype == np.uint8 and labels.shape == grid.shape and labels.rio.crs.to_epsg() == 32632
    io = load("io-lulc-annual-v02.json")
    assert io[0]["bbox"][0] == -180.0 and io[0]["bbox"][2] == 180.0
    aoi_am = parse_aoi((179.5, 65.0, 179.8, 65.1))  # in tile 60W, which crosses the antimeridian
    grid_am = grid_for_aoi(aoi_am)
    assert grid_am.epsg == 32660
    hits = [it for it in io if shapely.geometry.shape(it["geometry"]).intersects(aoi_am)]
    assert [it["id"] for it in hits] == ["60W-2023"]
    lab = label_cube_from_items(hits, grid_am, "io-lulc-annual-v02", chunksize=256)
    assert lab.shape == grid_am.shape and lab.dtype == np.uint8


def test_unreadable_assets_fail_clearly_without_tokens():
    pair, grid = _arctic_pair()
    signed = cat.resign_pair(pair, signer=lambda h: f"{h}?{FAKE_TOKEN}" if "blob.core" in h else h)
    small = grid.window(0, 0, 8, 8)
    cube = build_cube(signed, small, chunksize=8)
    assert "SECRET" not in json.dumps(cube.attrs["pairing"])
    with pytest.raises(AssetReadError) as err:
        cube["optical"].sel(band="B04").compute()
    msg = str(err.value)
    assert "blob.core.windows.net" in msg and "SECRET" not in msg and "sig=" not in msg
    assert "errors_as_nodata" in msg


# ------------------------------------------------------------------------- (b) simulated catalog
@pytest.fixture(scope="module")
def sim(request, tmp_path_factory):
    """The session's simulated catalog (conftest ``sim_catalog``), or a small one written here."""
    try:
        return request.getfixturevalue("sim_catalog")
    except pytest.FixtureLookupError:
        from cloudlulc.simulate import write_demo_catalog

        return write_demo_catalog(tmp_path_factory.mktemp("sim-b"), seed=0, tile_size=120, overlap=12, margin=6)


@pytest.fixture(scope="module")
def sim_aoi(sim):
    """A small AOI across the two S2 tiles' overlap, deliberately not aligned to the 10 m grid."""
    xa0, _, xa1, _ = sim.tiles["33UXP"]
    xb0, yb0, _, yb1 = sim.tiles["33UYP"]
    cx, cy = (xb0 + xa1) / 2, (yb0 + yb1) / 2
    half_w, half_h = 30 * 10 + 3.7, 22 * 10 + 1.3
    tr = Transformer.from_crs(sim.epsg, 4326, always_xy=True)
    lon0, lat0 = tr.transform(cx - half_w, cy - half_h)
    lon1, lat1 = tr.transform(cx + half_w, cy + half_h)
    return parse_aoi((lon0, lat0, lon1, lat1))


@pytest.fixture(scope="module")
def stac(request, sim):
    """The rustac STAC API serving the simulated catalog (conftest ``stac_url`` or started here)."""
    try:
        yield request.getfixturevalue("stac_url")
    except pytest.FixtureLookupError:
        from cloudlulc.testing.stac_server import serve_stac

        with serve_stac(sim) as url:
            yield url


def reference(items: list[dict], asset: str, grid: Grid, resampling: Resampling, dtype, nodata) -> np.ndarray:
    """Independent expectation: each item's COG warped onto ``grid`` by plain rasterio, first valid wins."""
    out = np.full(grid.shape, nodata, dtype=dtype)
    filled = np.zeros(grid.shape, bool)
    for it in items:
        dst = np.full(grid.shape, nodata, dtype=dtype)
        with rasterio.open(it["assets"][asset]["href"]) as src:
            reproject(
                rasterio.band(src, 1),
                dst,
                src_nodata=src.nodata,
                dst_transform=grid.transform,
                dst_crs=f"EPSG:{grid.epsg}",
                dst_nodata=nodata,
                resampling=resampling,
            )
        valid = ~filled & ((dst != nodata) if not np.isnan(nodata) else ~np.isnan(dst))
        out[valid] = dst[valid]
        filled |= valid
    return out


def _first_valid(layers: list[np.ndarray]) -> np.ndarray:
    out = np.full(layers[0].shape, np.nan, np.float32)
    for layer in layers:
        take = np.isnan(out) & ~np.isnan(layer)
        out[take] = layer[take]
    return out


def test_search_pair_cube_through_rustac_matches_rasterio(sim, sim_aoi, stac):
    client = cat.open_catalog(stac)
    start, end = min(sim.s2_dates).date(), max(sim.s2_dates).date()
    acqs = cat.search_s2(client, sim_aoi, start, end, max_cloud_cover=100)
    assert [a.date for a in acqs] == sorted(d.date() for d in sim.s2_dates)
    assert all(len(a.items) == 2 for a in acqs), "the AOI crosses both tiles on every date"
    # Acquisitions are kept or dropped whole by their cloud over the AOI, filtered client-side.
    clouds = [a.cloud_cover for a in acqs]
    limit = sorted(clouds)[1] + 1e-6
    kept = cat.search_s2(client, sim_aoi, start, end, max_cloud_cover=limit)
    expected_ids = {it["id"] for a in acqs if a.cloud_cover <= limit for it in a.items}
    assert {i for a in kept for i in a.item_ids} == expected_ids and 0 < len(kept) < len(acqs)

    pairs = cat.find_pairs(client, sim_aoi, start, end, max_gap_days=12)
    assert len(pairs) == len(acqs)
    grid = grid_for_aoi(sim_aoi)
    assert grid.epsg == sim.epsg
    baselines = {p.s2.processing_baselines for p in pairs}
    assert {("03.01",), ("04.00",)} <= baselines, "both processing baselines are exercised"
    for pair in pairs:
        assert pair.s1 is not None and pair.s1.gap_days <= 12
        assert abs((pair.s1.s1_time - pair.s2.time).total_seconds()) / 86400 == pytest.approx(pair.s1.gap_days)
        cube = build_cube(pair, grid, chunksize=64).compute()
        items = pair.s2.items
        for band, native in (("B04", 10), ("B08", 10), ("B11", 20), ("B05", 20), ("B01", 60)):
            layers = []
            for it in items:
                dn = reference([it], band, grid, Resampling.bilinear, np.uint16, 0)
                layers.append(harmonise_s2(dn, baseline_offset(it)))
            expected = _first_valid(layers)
            got = cube["optical"].sel(band=band).values
            if native == 10:  # aligned 10 m pixels: the cube holds the COG's values exactly
                np.testing.assert_array_equal(got, expected, err_msg=band)
                continue
            # Up-sampled bands: GDAL's warped-VRT and reproject() treat source edges differently, so
            # compare where the preferred tile is valid with a kernel's margin (the vast majority).
            inner, blocked, m = np.zeros(grid.shape, bool), np.zeros(grid.shape, bool), native // 10 + 1
            for layer in layers:
                valid = ~np.isnan(layer)
                inner |= ndimage.binary_erosion(valid, iterations=m, border_value=1) & ~blocked
                blocked |= ndimage.binary_dilation(valid, iterations=m)
            assert inner.mean() > 0.5
            np.testing.assert_allclose(got[inner], expected[inner], rtol=0, atol=1.01e-4, err_msg=band)
        assert not np.isnan(cube["optical"].sel(band="B04").values).any(), "two tiles mosaic without holes"
        scl = reference(items, "SCL", grid, Resampling.nearest, np.uint8, 0)
        np.testing.assert_array_equal(cube["scl"].values, scl)
        np.testing.assert_array_equal(cube["cloud"].values, cloud_from_scl(scl))
        for b in S1_BANDS:
            layers = [
                linear_to_db(reference([it], b, grid, Resampling.bilinear, np.float32, np.float32(np.nan)))
                for it in pair.s1.s1_items
            ]
            np.testing.assert_allclose(
                cube["sar"].sel(sar_band=b).values, _first_valid(layers), atol=1e-4, equal_nan=True
            )


def test_cube_pixels_equal_cog_pixels_at_the_same_location(sim, sim_aoi):
    """Point check with no warping at all: 10 m DN at (x, y) from each tile's COG, harmonised."""
    grid = grid_for_aoi(sim_aoi)
    aoi = sim_aoi
    s2 = group_acquisitions(sim.items_of("sentinel-2-l2a"), aoi)
    s1 = sim.items_of("sentinel-1-rtc")
    rng = np.random.default_rng(0)
    for acq in s2:
        pair = Pair(acq, select_s1(acq, s1, aoi, 12), aoi)
        cube = build_cube(pair, grid, chunksize=256)
        ys, xs = rng.integers(0, grid.shape[0], 6), rng.integers(0, grid.shape[1], 6)
        for r, c in zip(ys, xs, strict=True):
            x, y = grid.x[c], grid.y[r]
            got = float(cube["optical"].sel(band="B03").isel(y=r, x=c).values)
            expected = reflectance_at(acq.items, "B03", x, y)  # items least cloudy first, as the mosaic
            assert got == pytest.approx(expected, abs=1e-7, nan_ok=True)


def test_nothing_is_read_before_compute_and_http_range_reads_after(sim, sim_aoi):
    grid = grid_for_aoi(sim_aoi)
    with serve_assets(sim.root) as server:
        items = sim.with_href_base(server.url)
        s2 = [it for it in items if it["collection"] == "sentinel-2-l2a"]
        s1 = [it for it in items if it["collection"] == "sentinel-1-rtc"]
        acq = group_acquisitions(s2, sim_aoi)[1]
        pair = Pair(acq, select_s1(acq, s1, sim_aoi, 12), sim_aoi)
        cube = build_cube(pair, grid, chunksize=64)
        assert server.requests == 0, "building the cube must not touch the assets"
        local = build_cube(
            Pair(
                group_acquisitions(sim.items_of("sentinel-2-l2a"), sim_aoi)[1],
                select_s1(acq, sim.items_of("sentinel-1-rtc"), sim_aoi, 12),
                sim_aoi,
            ),
            grid,
            chunksize=64,
        )
        remote = cube[["optical", "sar", "scl"]].compute()
        assert server.requests > 0 and server.range_requests > 0
        np.testing.assert_array_equal(remote["optical"].values, local["optical"].values)
        np.testing.assert_array_equal(remote["sar"].values, local["sar"].values)
        np.testing.assert_array_equal(remote["scl"].values, local["scl"].values)

        # Signed hrefs (a fake SAS token: this server ignores query strings) read the same and never
        # leak the token into attrs; re-signing rebuilds a cube for a window of the grid.
        signed = cat.resign_pair(pair, signer=lambda h: f"{h}?{FAKE_TOKEN}")
        window = grid.window(5, 7, 20, 30)
        part = build_cube(signed, window, chunksize=64)
        assert "SECRET" not in json.dumps(part.attrs["pairing"])
        # Up-sampled 20/60 m bands may differ by 1 DN where GDAL's bilinear rounds on another window.
        np.testing.assert_allclose(
            part["optical"].values, remote["optical"].values[:, 5:25, 7:37], atol=1.01e-4, rtol=0
        )

        # A long run: one cube per window, re-signed only when tokens are about to expire.
        from datetime import datetime, timedelta

        from cloudlulc.cube import iter_window_cubes

        calls = []

        def counting_signer(href: str) -> str:
            calls.append(href)
            return f"{href}?{FAKE_TOKEN}"

        list(iter_window_cubes(signed, grid, 32, chunksize=32, signer=counting_signer))
        assert calls == [], "tokens valid until 2030: nothing to re-sign"
        soon = (datetime.now(UTC) + timedelta(minutes=2)).strftime("%Y-%m-%dT%H%%3A%M%%3A%SZ")
        expiring = cat.resign_pair(pair, signer=lambda h: f"{h}?se={soon}&sig=OLD")
        tiles = list(iter_window_cubes(expiring, grid, 32, chunksize=32, signer=counting_signer))
        n_hrefs = sum(len(it["assets"]) for it in pair.s2.items + pair.s1.s1_items)
        assert len(calls) == n_hrefs, "re-signed once, then valid for the remaining windows"
        assert sum(t.shape[0] * t.shape[1] for _, t, _ in tiles) == grid.shape[0] * grid.shape[1]
        (r, c), sub, first = tiles[-1]
        np.testing.assert_array_equal(
            first["optical"].sel(band="B04").values,
            remote["optical"].sel(band="B04").values[r : r + sub.shape[0], c : c + sub.shape[1]],
        )

        # A missing asset (404) fails with a clear error naming the unsigned href, or maps as nodata.
        broken = copy.deepcopy(signed)
        victim = broken.s2.items[0]["assets"]["B04"]
        victim["href"] = victim["href"].replace("B04", "B04-missing")
        with pytest.raises(AssetReadError) as err:
            build_cube(broken, window, chunksize=64)["optical"].sel(band="B04").compute()
        assert "B04-missing" in str(err.value) and "SECRET" not in str(err.value)
        with pytest.warns(AssetReadWarning) as record:
            lenient = (
                build_cube(broken, window, chunksize=64, errors_as_nodata=True)["optical"].sel(band="B04").compute()
            )
        assert all("SECRET" not in str(w.message) for w in record)
        assert any("B04-missing" in str(w.message) for w in record)
        # The broken tile's B04 is nodata: exactly what the other tile alone gives.
        from dataclasses import replace

        without = replace(signed, s2=replace(signed.s2, items=signed.s2.items[1:]))
        other_only = build_cube(without, window, chunksize=64)["optical"].sel(band="B04").values
        np.testing.assert_array_equal(lenient.values, other_only)
        assert lenient.shape == window.shape


def test_a_tile_hidden_under_the_preferred_one_is_never_opened(sim, sim_aoi):
    """Where the preferred tile of an acquisition covers a chunk, the other tile is not read there:
    its assets may even be missing. Where the mosaic needs it, a missing asset fails as usual."""
    from dataclasses import replace

    acq = group_acquisitions(sim.items_of("sentinel-2-l2a"), sim_aoi)[-1]
    assert len(acq.items) == 2
    first, second = acq.items
    x0 = max(sim.tiles[t][0] for t in sim.tiles)  # the overlap strip: inside both tiles
    x1 = min(sim.tiles[t][2] for t in sim.tiles)
    _, y0, _, y1 = sim.tiles["33UXP"]
    cy = (y0 + y1) / 2
    inside = Grid(sim.epsg, (x0 + 60.0, cy - 200.0, x1 - 60.0, cy + 200.0))
    assert x1 - x0 > 200.0 and inside.shape[1] > 0
    broken = copy.deepcopy(second)
    for asset in broken["assets"].values():
        asset["href"] = asset["href"].replace(".tif", "-missing.tif")
    hidden = replace(acq, items=[first, broken])
    got = build_cube(Pair(hidden, None, sim_aoi), inside, chunksize=16)[["optical", "scl"]].compute()
    alone = build_cube(Pair(replace(acq, items=[first]), None, sim_aoi), inside, chunksize=16)[
        ["optical", "scl"]
    ].compute()
    assert not np.isnan(alone["optical"].values).any() and (alone["scl"].values > 0).all(), "the first tile covers it"
    np.testing.assert_array_equal(got["optical"].values, alone["optical"].values)
    np.testing.assert_array_equal(got["scl"].values, alone["scl"].values)

    # across the first tile's edge the second one fills the rest: then its missing asset is an error
    far = max(sim.tiles[it["properties"]["s2:mgrs_tile"]][2] for it in acq.items)
    near = min(sim.tiles[it["properties"]["s2:mgrs_tile"]][0] for it in acq.items)
    across = Grid(sim.epsg, (near + 60.0, cy - 100.0, far - 60.0, cy + 100.0))
    with pytest.raises(AssetReadError, match="-missing.tif"):
        build_cube(Pair(hidden, None, sim_aoi), across, chunksize=64)["optical"].compute()


def test_label_cube_matches_worldcover_and_truth(sim, sim_aoi, stac):
    grid = grid_for_aoi(sim_aoi)
    client = cat.open_catalog(stac)
    from cloudlulc.cube import build_label_cube

    labels = build_label_cube(client, grid, "esa-worldcover", chunksize=128)
    assert labels.dtype == np.uint8 and labels.shape == grid.shape
    np.testing.assert_array_equal(labels.x.values, grid.x)
    got = labels.values
    wc_items = sim.items_of("esa-worldcover")
    codes = reference(wc_items, "map", grid, Resampling.nearest, np.uint8, 0)
    np.testing.assert_array_equal(got, remap_labels(codes, LABEL_PRODUCTS["esa-worldcover"][1]))
    truth = reference(
        [{"assets": {"t": {"href": str(sim.truth_path)}}}], "t", grid, Resampling.nearest, np.uint8, NODATA
    )
    valid = (truth != NODATA) & (got != NODATA)
    assert valid.mean() > 0.95 and (got[valid] == truth[valid]).mean() > 0.9


def test_no_sentinel2_errors_explain_why(sim, sim_aoi, stac):
    client = cat.open_catalog(stac)
    with pytest.raises(cat.NoSentinel2Error, match="widen the date range"):
        cat.search_s2(client, sim_aoi, "2021-06-01", "2021-06-30")
    d = min(sim.s2_dates).date()
    with pytest.raises(cat.NoSentinel2Error, match="least cloudy"):
        cat.search_s2(client, sim_aoi, d, d, max_cloud_cover=0.0)


def test_no_sentinel1_within_gap_and_optical_only(sim, sim_aoi, stac):
    client = cat.open_catalog(stac)
    d = min(sim.s2_dates).date()
    with pytest.raises(NoSentinel1Error) as err:
        cat.find_pairs(client, sim_aoi, d, d, max_gap_days=0.5)
    assert err.value.nearest is not None and err.value.nearest_gap_days > 0.5
    assert str(err.value.nearest_date) in str(err.value)
    pairs = cat.find_pairs(client, sim_aoi, d, d, max_gap_days=0.5, allow_optical_only=True)
    assert len(pairs) == 1 and pairs[0].s1 is None and pairs[0].optical_only
    record = pairs[0].as_dict()
    assert record["optical_only"] is True and "nearest pass found" in record["s1_missing_reason"]
    cube = build_cube(pairs[0], grid_for_aoi(sim_aoi).window(0, 0, 16, 16), chunksize=16).compute()
    assert np.isnan(cube["sar"].values).all() and not np.isnan(cube["optical"].values).all()
    # A catalog without the S1 collection (like Earth Search) says so.
    with pytest.raises(cat.MissingCollectionError, match="sentinel-1-rtc-nope"):
        cat.pair_s1(client, pairs[0].s2, sim_aoi, 12, collection="sentinel-1-rtc-nope")


def test_asset_server_latency_delays_every_answer(tmp_path):
    """The benchmark's remote-catalog stand-in: each answer waits ``delay_ms``, range reads still work."""
    import time
    import urllib.request

    (tmp_path / "x.bin").write_bytes(bytes(range(256)))
    with serve_assets(tmp_path, delay_ms=150) as server:
        started = time.perf_counter()
        request = urllib.request.Request(server.href(tmp_path / "x.bin"), headers={"Range": "bytes=10-19"})
        with urllib.request.urlopen(request, timeout=10) as answer:
            body, status = answer.read(), answer.status
        elapsed = time.perf_counter() - started
    assert status == 206 and body == bytes(range(10, 20))
    assert elapsed >= 0.15
