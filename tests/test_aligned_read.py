"""Reads of assets already on the cube grid skip GDAL's warper and give the warped values.

The reference is the same read with the warper (``AssetReader.aligned_reads = False``, a
``WarpedVRT`` as stackstac's own reader reads): over the SIMULATED catalog (both processing
baselines, the swath-edge nodata
wedge, the S1 pass split in two frames, and a grid reaching past the tiles on every side), and over
small synthetic rasters with nodata holes, edges and every window phase for the dtypes and
nodata conventions the fast path accepts.
"""

from __future__ import annotations

import numpy as np
import pytest
import rasterio
from affine import Affine
from pyproj import Transformer
from rasterio.enums import Resampling
from rasterio.windows import Window
from stackstac.raster_spec import RasterSpec

import cloudlulc.cube.reader as reader_mod
from cloudlulc.classes import S2_BANDS
from cloudlulc.cube import AssetReader, Grid, build_cube, optical_cube
from cloudlulc.cube.aligned import grid_alignment, upsample
from cloudlulc.stac import Pair, group_acquisitions, parse_aoi, select_s1

NATIVE_M = {
    "B01": 60,
    "B02": 10,
    "B03": 10,
    "B04": 10,
    "B05": 20,
    "B06": 20,
    "B07": 20,
    "B08": 10,
    "B8A": 20,
    "B09": 60,
    "B11": 20,
    "B12": 20,
}


# ------------------------------------------------------------------------------------------ geometry
T10 = Affine(10, 0, 600000, 0, -10, 5000000)


@pytest.mark.parametrize(
    ("transform", "expected"),
    [
        (Affine(10, 0, 600100, 0, -10, 4999900), (10, 10, 1, 1)),  # 10 m, 10 px right and down
        (Affine(20, 0, 599980, 0, -20, 5000040), (-4, -2, 2, 2)),  # 20 m, starting outside the grid
        (Affine(60, 0, 600600, 0, -60, 5000000), (0, 60, 6, 6)),  # 60 m
    ],
)
def test_grid_alignment_of_aligned_assets(transform, expected):
    al = grid_alignment(32633, transform, (100, 50), 32633, T10)
    assert al is not None
    assert (al.row0, al.col0, al.ky, al.kx) == expected
    assert (al.height, al.width) == (100 * al.ky, 50 * al.kx)


@pytest.mark.parametrize(
    ("epsg", "transform", "why"),
    [
        (32634, Affine(10, 0, 600100, 0, -10, 4999900), "another CRS"),
        (32633, Affine(10, 0, 600105, 0, -10, 4999900), "half-pixel offset"),
        (32633, Affine(15, 0, 600000, 0, -15, 5000000), "non-integer factor"),
        (32633, Affine(5, 0, 600000, 0, -5, 5000000), "finer than the grid (downsampling)"),
        (32633, Affine(10, 1, 600000, 0, -10, 5000000), "rotated"),
        (32633, Affine(10, 0, 600000, 0, 10, 4990000), "south-up"),
        (None, Affine(10, 0, 600000, 0, -10, 5000000), "no CRS"),
    ],
)
def test_grid_alignment_refuses_what_needs_a_warp(epsg, transform, why):
    assert grid_alignment(epsg, transform, (100, 100), 32633, T10) is None, why


# ------------------------------------------------------------------------------------------ values
def _padded_grid(sim, pad_m: float = 240.0, shift_m: float = 0.0) -> Grid:
    """A grid over both S2 tiles plus ``pad_m`` beyond them (areas outside every asset)."""
    to_utm = Transformer.from_crs(4326, sim.epsg, always_xy=True)
    boxes = [to_utm.transform_bounds(*it["bbox"]) for it in sim.items_of("sentinel-2-l2a")]
    minx, miny = min(b[0] for b in boxes) - pad_m, min(b[1] for b in boxes) - pad_m
    maxx, maxy = max(b[2] for b in boxes) + pad_m, max(b[3] for b in boxes) + pad_m
    minx, miny, maxx, maxy = (round(v / 10) * 10 for v in (minx, miny, maxx, maxy))
    return Grid(sim.epsg, (minx + shift_m, miny + shift_m, maxx + shift_m, maxy + shift_m), 10.0)


def _pairs(sim, grid: Grid) -> list[Pair]:
    aoi = parse_aoi(list(grid.bounds_lonlat))
    pairs = []
    for acq in group_acquisitions(sim.items_of("sentinel-2-l2a"), aoi):
        s1 = select_s1(acq, sim.items_of("sentinel-1-rtc"), aoi, min_coverage=0.5)  # the grid reaches past S1 too
        pairs.append(Pair(s2=acq, s1=s1, aoi=aoi))
    return pairs


def _computed(monkeypatch, fast: bool, make, *args, **kwargs):
    """``make(*args, **kwargs)`` computed with aligned reads on (``fast``) or every asset warped."""
    monkeypatch.setattr(AssetReader, "aligned_reads", fast)
    return make(*args, **kwargs).compute(scheduler="threads")


@pytest.fixture
def fast_reads_counter(monkeypatch):
    """Counts assets actually served without the warper (spies on the real decision)."""
    served = {"fast": 0, "warp": 0}
    real = reader_mod.aligned_source

    def spy(*args, **kwargs):
        out = real(*args, **kwargs)
        served["fast" if out is not None else "warp"] += 1
        return out

    monkeypatch.setattr(reader_mod, "aligned_source", spy)
    return served


def test_aligned_reads_equal_warped_reads_on_the_simulated_catalog(sim_catalog, monkeypatch, fast_reads_counter):
    grid = _padded_grid(sim_catalog)
    pairs = _pairs(sim_catalog, grid)
    assert len(pairs) == 4 and any(p.s1 is not None and len(p.s1.s1_items) == 2 for p in pairs)
    for pair in pairs:
        warped = _computed(monkeypatch, False, build_cube, pair, grid, chunksize=128)
        fast = _computed(monkeypatch, True, build_cube, pair, grid, chunksize=128)
        assert np.isnan(warped["optical"].values).any(), "the padded grid reaches outside the tiles"
        for name in ("sar", "scl", "cloud"):  # native 10 m / nearest: bit for bit
            np.testing.assert_array_equal(fast[name].values, warped[name].values, err_msg=name)
        np.testing.assert_array_equal(np.isnan(fast["optical"].values), np.isnan(warped["optical"].values))
        for band in S2_BANDS:
            a, b = fast["optical"].sel(band=band).values, warped["optical"].sel(band=band).values
            _assert_like_warper(a, b, NATIVE_M[band] // 10, band)
    assert fast_reads_counter["fast"] > 0 and fast_reads_counter["fast"] >= fast_reads_counter["warp"]


def test_upsampled_bands_equal_warped_next_to_nodata(sim_catalog, monkeypatch):
    """Per item (no mosaic hiding anything): the swath-edge wedge's rim, where a neighbour of an
    upsampled pixel is nodata, follows the warper's rule too (nodata neighbours left out)."""
    grid = _padded_grid(sim_catalog)
    for item in sim_catalog.items_of("sentinel-2-l2a"):
        warped = _computed(monkeypatch, False, optical_cube, [item], grid, chunksize=128)
        fast = _computed(monkeypatch, True, optical_cube, [item], grid, chunksize=128)
        for band in S2_BANDS:
            a, b = fast.sel(band=band).values, warped.sel(band=band).values
            np.testing.assert_array_equal(np.isnan(a), np.isnan(b), err_msg=f"{item['id']} {band}")
            _assert_like_warper(a, b, NATIVE_M[band] // 10, f"{item['id']} {band}")


def _assert_like_warper(fast: np.ndarray, warped: np.ndarray, k: int, what: str, dn: float = 1e-4) -> None:
    """Equal for native and 2x upsampled integer bands; within one DN (``dn`` in the array's units)
    at larger factors, whose weights are not binary fractions (the warper's pixel positions carry
    float error, so a value on a rounding tie may go either way)."""
    if k <= 2:
        np.testing.assert_array_equal(fast, warped, err_msg=what)
    else:
        np.testing.assert_allclose(fast, warped, rtol=0, atol=1.01 * dn, err_msg=what)


# ------------------------------------------------------------------------------------------ synthetic rasters
def _holey_raster(path, k: int, dtype: str, nodata: float | None, seed: int = 0) -> np.ndarray:
    """A 47 x 53 px raster at ``k`` x 10 m with nodata holes (a block, single pixels, a corner),
    aligned with the 10 m grid of :func:`_reads`."""
    rng = np.random.default_rng(seed)
    a = rng.uniform(1, 9000, size=(47, 53)).astype(dtype)
    if nodata is not None:
        a[20:24, 30:37] = nodata
        a[5, 5] = a[46, 52] = a[0, 17] = nodata
        a[:3, :4] = nodata
    with rasterio.open(
        path,
        "w",
        driver="GTiff",
        width=53,
        height=47,
        count=1,
        dtype=dtype,
        nodata=nodata,
        crs="EPSG:32633",
        transform=Affine(10.0 * k, 0, 600000, 0, -10.0 * k, 5000000),
        tiled=True,
        blockxsize=32,
        blockysize=32,
    ) as ds:
        ds.write(a, 1)
    return a


def _reads(path, k: int, resampling: Resampling, fast: bool, monkeypatch, window: int = 37) -> np.ndarray:
    """The 10 m grid over the raster plus 25 px on every side, read window by window (odd-sized
    windows: every phase of the upsampling, windows across the raster's edges and fully outside)."""
    monkeypatch.setattr(AssetReader, "aligned_reads", fast)
    h, w = 47 * k + 50, 53 * k + 50
    spec = RasterSpec(
        32633, (600000 - 250.0, 5000000 - 470.0 * k - 250, 600000 + 530.0 * k + 250, 5000000 + 250.0), (10.0, 10.0)
    )
    reader = AssetReader(
        url=str(path),
        spec=spec,
        resampling=resampling,
        dtype=np.dtype("float32"),
        fill_value=np.nan,
        scale_offset=(1.0, 0.0),
    )
    out = np.full((h, w), -1.0, np.float32)
    for r in range(0, h, window):
        for c in range(0, w, window):
            win = Window(c, r, min(window, w - c), min(window, h - r))
            out[r : r + win.height, c : c + win.width] = reader.read(win)
    assert reader.aligned == fast
    reader.close()
    return out


@pytest.mark.parametrize("k", [2, 3, 6])
@pytest.mark.parametrize(
    ("dtype", "nodata"),
    [("uint16", 0), ("uint16", None), ("float32", float("nan")), ("float32", -9999.0)],
)
def test_upsampled_windows_equal_the_warper(tmp_path, monkeypatch, k, dtype, nodata):
    path = tmp_path / "band.tif"
    _holey_raster(path, k, dtype, nodata)
    warped = _reads(path, k, Resampling.bilinear, False, monkeypatch)
    fast = _reads(path, k, Resampling.bilinear, True, monkeypatch)
    np.testing.assert_array_equal(np.isnan(fast), np.isnan(warped))
    assert np.isnan(warped).sum() > 50 * (53 * k + 50)  # the margin outside the raster is nodata
    if dtype == "uint16":
        _assert_like_warper(fast, warped, k, f"{dtype} x{k}", dn=1.0)
    else:  # float sources: the warper sums in double, the fast path in float32
        np.testing.assert_allclose(fast, warped, rtol=2e-6, err_msg=f"{dtype} x{k}")


@pytest.mark.parametrize("k", [2, 6])
def test_nearest_upsampling_equals_the_warper(tmp_path, monkeypatch, k):
    path = tmp_path / "scl.tif"
    _holey_raster(path, k, "uint16", 0)
    np.testing.assert_array_equal(
        _reads(path, k, Resampling.nearest, True, monkeypatch), _reads(path, k, Resampling.nearest, False, monkeypatch)
    )


def test_upsample_renormalises_over_valid_neighbours():
    """A pixel next to a gap takes its value from its valid neighbours only (not pulled to 0)."""
    native = np.array([[10, 10, 10, 10], [10, 10, 0, 10], [10, 10, 10, 10]], np.uint16)
    padded = np.pad(native, 1, mode="edge")
    up = upsample(padded, 2, 2, Resampling.bilinear, valid=padded != 0)
    assert up.shape == (6, 8)
    np.testing.assert_array_equal(up[np.repeat(np.repeat(native != 0, 2, 0), 2, 1)], 10)
    gap = np.zeros((5, 5), np.uint16)  # no valid neighbour anywhere: 0, for the caller to mask
    np.testing.assert_array_equal(upsample(gap, 2, 2, Resampling.bilinear, valid=gap != 0), 0)
    with pytest.raises(ValueError, match="cubic"):
        upsample(padded, 2, 2, Resampling.cubic)


def test_misaligned_grid_keeps_the_warper(sim_catalog, monkeypatch, fast_reads_counter):
    grid = _padded_grid(sim_catalog, shift_m=5.0)  # pixel edges half a pixel off the tiles'
    pair = _pairs(sim_catalog, grid)[0]
    fast = _computed(monkeypatch, True, build_cube, pair, grid, chunksize=128)
    assert fast_reads_counter["fast"] == 0 and fast_reads_counter["warp"] > 0
    warped = _computed(monkeypatch, False, build_cube, pair, grid, chunksize=128)
    for name in ("optical", "sar", "scl"):
        np.testing.assert_array_equal(fast[name].values, warped[name].values, err_msg=name)
