"""COG export (valid COG, colour table, nodata, georeferencing, overviews) and the PNG quicklook."""

from __future__ import annotations

import dask.array as da
import numpy as np
import pytest
import rasterio
import rioxarray  # noqa: F401
import xarray as xr
from matplotlib import image as mpimg
from rio_cogeo.cogeo import cog_validate

from cloudlulc.classes import CLASSES, NODATA, colour_rgb
from cloudlulc.store import export_cog, quicklook_png, write_mosaic

H, W = 700, 650  # larger than one 512 COG block, so overviews are built
TIME = "2024-04-19T10:06:31Z"


def _labels(h: int, w: int) -> np.ndarray:
    """A class map with every class in bands, and a nodata corner (what a mosaic slice looks like)."""
    yy, xx = np.mgrid[0:h, 0:w]
    lulc = ((xx // 50 + yy // 70) % len(CLASSES)).astype(np.uint8)
    lulc[:100, :120] = NODATA
    return lulc


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    lulc = _labels(H, W)
    x = 600000.0 + 5 + 10 * np.arange(W)
    y = 5200000.0 - 5 - 10 * np.arange(H)
    chunks = (256, 256)
    data = {
        "lulc": da.from_array(lulc, chunks=chunks),
        "confidence": da.from_array(np.where(lulc == NODATA, NODATA, 80).astype(np.uint8), chunks=chunks),
        "optical_reliability": da.from_array(np.full((H, W), 50, np.uint8), chunks=chunks),
        "cloud": da.from_array((lulc == 2).astype(np.uint8), chunks=chunks),
    }
    result = xr.Dataset({k: (("y", "x"), v) for k, v in data.items()}, coords={"x": x, "y": y}).rio.write_crs(32632)
    path = tmp_path_factory.mktemp("export") / "m.zarr"
    write_mosaic(result, path, time=TIME, attrs={"note": "synthetic class map for export tests"}, chunk_size=256)
    return path


def test_export_cog_is_valid_with_colour_table(store, tmp_path):
    out = export_cog(store, TIME, tmp_path / "lulc.tif")
    ok, errors, _ = cog_validate(out, quiet=True)
    assert ok, errors
    with rasterio.open(out) as src:
        assert src.count == 1 and src.dtypes[0] == "uint8"
        assert src.nodata == NODATA
        assert src.crs.to_epsg() == 32632
        assert src.transform.to_gdal() == pytest.approx((600000.0, 10.0, 0.0, 5200000.0, 0.0, -10.0))
        assert src.overviews(1)  # internal overviews exist
        np.testing.assert_array_equal(src.read(1), _labels(H, W))
        cmap = src.colormap(1)
        for c in CLASSES:
            assert cmap[c.value][:3] == colour_rgb(c)
        assert cmap[NODATA][3] == 0  # nodata transparent
        # mode overviews keep class values (no blended in-between codes)
        overview = src.read(1, out_shape=(H // 2, W // 2))
        assert set(np.unique(overview)) <= {c.value for c in CLASSES} | {NODATA}


def test_export_unknown_time_is_a_clear_error(store, tmp_path):
    with pytest.raises(KeyError, match="not a completed slice"):
        export_cog(store, "2020-01-01", tmp_path / "x.tif")


def test_quicklook_png_with_legend(store, tmp_path):
    out = quicklook_png(store, TIME, tmp_path / "ql.png")
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    img = mpimg.imread(out)
    assert img.ndim == 3 and img.shape[0] > 200 and img.shape[1] > 300
    rgb = (img[..., :3] * 255).round().astype(int).reshape(-1, 3)
    present = {tuple(p) for p in np.unique(rgb, axis=0)}
    for c in CLASSES:  # every class colour appears (map and legend)
        assert colour_rgb(c) in present, c.name


def test_quicklook_accepts_a_dataset(store, tmp_path):
    from cloudlulc.store import open_mosaic

    out = quicklook_png(open_mosaic(store), TIME, tmp_path / "ql2.png", max_size=200)
    assert out.stat().st_size > 1000
