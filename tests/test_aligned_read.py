"""Reads of assets already on the cube grid skip GDAL's warper and give the warped values.

The reference is the same cube read with the warper (``CheckedRioReader.fast_aligned_reads = False``,
stackstac's own path) over the SIMULATED catalog: both processing baselines, the swath-edge nodata
wedge, the S1 pass split in two frames, and a grid reaching past the tiles on every side.
"""

from __future__ import annotations

import numpy as np
import pytest
from affine import Affine
from pyproj import Transformer
from scipy import ndimage

import cloudlulc.cube as cube_mod
from cloudlulc.aligned_read import grid_alignment
from cloudlulc.catalog import Pair, group_acquisitions, parse_aoi, select_s1
from cloudlulc.classes import S2_BANDS
from cloudlulc.cube import CheckedRioReader, Grid, build_cube, optical_cube

NATIVE_M = {"B01": 60, "B02": 10, "B03": 10, "B04": 10, "B05": 20, "B06": 20, "B07": 20, "B08": 10, "B8A": 20,
            "B09": 60, "B11": 20, "B12": 20}


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
    monkeypatch.setattr(CheckedRioReader, "fast_aligned_reads", fast)
    return make(*args, **kwargs).compute(scheduler="threads")


@pytest.fixture
def fast_reads_counter(monkeypatch):
    """Counts assets actually served without the warper (spies on the real decision)."""
    served = {"fast": 0, "warp": 0}
    real = cube_mod.aligned_dataset

    def spy(*args, **kwargs):
        out = real(*args, **kwargs)
        served["fast" if out is not None else "warp"] += 1
        return out

    monkeypatch.setattr(cube_mod, "aligned_dataset", spy)
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
            if NATIVE_M[band] == 10:
                np.testing.assert_array_equal(a, b, err_msg=band)
            else:  # upsampled: the same bilinear kernel; one DN of integer rounding at most ...
                ok = np.isnan(b) | (np.abs(a - b) <= 1.01e-4)
                # ... except in the mosaic's rim next to a tile's own nodata (the swath-edge wedge),
                # where RasterIO and the warper weigh the missing neighbours differently
                assert ok.mean() > 0.999, band
    assert fast_reads_counter["fast"] > 0 and fast_reads_counter["fast"] >= fast_reads_counter["warp"]


def test_upsampled_bands_differ_only_next_to_nodata(sim_catalog, monkeypatch):
    """Per item (no mosaic hiding anything), any difference beyond integer rounding lies within
    one source pixel of that item's nodata."""
    grid = _padded_grid(sim_catalog)
    for item in sim_catalog.items_of("sentinel-2-l2a"):
        warped = _computed(monkeypatch, False, optical_cube, [item], grid, chunksize=128)
        fast = _computed(monkeypatch, True, optical_cube, [item], grid, chunksize=128)
        for band in S2_BANDS:
            a, b = fast.sel(band=band).values, warped.sel(band=band).values
            np.testing.assert_array_equal(np.isnan(a), np.isnan(b), err_msg=f"{item['id']} {band}")
            k = NATIVE_M[band] // 10
            near_nodata = ndimage.binary_dilation(np.isnan(b), iterations=2 * k)
            far = ~near_nodata
            np.testing.assert_allclose(a[far], b[far], rtol=0, atol=1.01e-4, err_msg=f"{item['id']} {band}")


def test_misaligned_grid_keeps_the_warper(sim_catalog, monkeypatch, fast_reads_counter):
    grid = _padded_grid(sim_catalog, shift_m=5.0)  # pixel edges half a pixel off the tiles'
    pair = _pairs(sim_catalog, grid)[0]
    fast = _computed(monkeypatch, True, build_cube, pair, grid, chunksize=128)
    assert fast_reads_counter["fast"] == 0 and fast_reads_counter["warp"] > 0
    warped = _computed(monkeypatch, False, build_cube, pair, grid, chunksize=128)
    for name in ("optical", "sar", "scl"):
        np.testing.assert_array_equal(fast[name].values, warped[name].values, err_msg=name)
