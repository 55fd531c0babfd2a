"""Exports of one mosaic time slice: a Cloud Optimized GeoTIFF and a PNG quicklook with a legend.

The COG is what GIS users and tile servers consume (colour table with the class colours from
:mod:`cloudlulc.classes`, nodata 255, ``mode`` overviews so classes never blend); the quicklook is
for a human glance. Both read the mosaic through :mod:`cloudlulc.store.reader`, chunk by chunk
(COG) or at a bounded resolution (PNG), so memory does not grow with the AOI.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
import xarray as xr
from rasterio.windows import Window

from cloudlulc.classes import CLASSES, NODATA, colour_rgb
from cloudlulc.store.reader import open_mosaic, select_time


def colormap() -> dict[int, tuple[int, int, int, int]]:
    """GDAL colour table: one RGBA entry per class, nodata transparent."""
    cmap = {c.value: (*colour_rgb(c), 255) for c in CLASSES}
    cmap[NODATA] = (0, 0, 0, 0)
    return cmap


def _as_dataset(store_or_dataset: Any) -> xr.Dataset:
    if isinstance(store_or_dataset, xr.Dataset):
        return store_or_dataset
    return open_mosaic(store_or_dataset, complete_only=True)


def export_cog(store: Any, time: Any, path: str | Path, *, variable: str = "lulc") -> Path:
    """Write ``variable`` (default ``lulc``) of the slice at ``time`` as a Cloud Optimized GeoTIFF.

    A tiled GeoTIFF is first written window by window from the mosaic's chunks, then translated to
    a COG (deflate, ``mode`` overviews, internal tiling) by rio-cogeo, which also validates it.
    Returns ``path``.
    """
    import rioxarray  # noqa: F401
    from rio_cogeo.cogeo import cog_translate, cog_validate
    from rio_cogeo.profiles import cog_profiles

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    ds = select_time(_as_dataset(store), time)
    da_ = ds[variable]
    if "spatial_ref" in ds.coords:
        da_ = da_.rio.write_crs(ds.rio.crs)
    crs = da_.rio.crs
    if crs is None:
        raise ValueError("the mosaic has no CRS (spatial_ref); it cannot be exported as a GeoTIFF")
    transform = da_.rio.transform(recalc=True)
    ny, nx = da_.sizes["y"], da_.sizes["x"]
    data = da_.data
    chunks_y = data.chunks[0] if hasattr(data, "chunks") and data.chunks else (ny,)
    chunks_x = data.chunks[1] if hasattr(data, "chunks") and data.chunks else (nx,)

    with tempfile.TemporaryDirectory(dir=path.parent) as tmp:
        src_path = Path(tmp) / "src.tif"
        profile = {
            "driver": "GTiff",
            "width": nx,
            "height": ny,
            "count": 1,
            "dtype": "uint8",
            "crs": crs,
            "transform": transform,
            "nodata": NODATA,
            "tiled": True,
            "blockxsize": 256,
            "blockysize": 256,
            "compress": "deflate",
        }
        with rasterio.open(src_path, "w", **profile) as dst:
            y0 = 0
            for cy in chunks_y:
                x0 = 0
                for cx in chunks_x:
                    block = np.asarray(da_.isel(y=slice(y0, y0 + cy), x=slice(x0, x0 + cx)).values)
                    dst.write(
                        np.where(np.isnan(block), NODATA, block).astype(np.uint8)
                        if block.dtype.kind == "f"
                        else block.astype(np.uint8),
                        1,
                        window=Window(x0, y0, cx, cy),
                    )
                    x0 += cx
                y0 += cy
            dst.write_colormap(1, colormap())
            dst.update_tags(1, classes=";".join(f"{c.value}={c.name}" for c in CLASSES))
            dst.update_tags(time=str(ds["time"].values), product=f"CloudLULC {variable}")
        cog_translate(
            src_path,
            path,
            cog_profiles.get("deflate"),
            nodata=NODATA,
            overview_resampling="mode",
            colormap=colormap(),
            forward_band_tags=True,
            quiet=True,
        )
    ok, errors, _warnings = cog_validate(path, quiet=True)
    if not ok:
        raise RuntimeError(f"{path} is not a valid COG: {errors}")
    return path


def quicklook_png(store_or_dataset: Any, time: Any, path: str | Path, *, max_size: int = 1600) -> Path:
    """A PNG of the slice's ``lulc`` with a class legend (nodata white), at most ``max_size`` pixels wide.

    Large AOIs are subsampled (nearest, by striding) before loading, so memory stays bounded.
    """
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt
    from matplotlib.colors import BoundaryNorm, ListedColormap
    from matplotlib.patches import Patch

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    ds = select_time(_as_dataset(store_or_dataset), time)
    lulc = ds["lulc"]
    step = max(1, int(np.ceil(max(lulc.sizes["y"], lulc.sizes["x"]) / max_size)))
    arr = np.asarray(lulc.isel(y=slice(None, None, step), x=slice(None, None, step)).values)
    if arr.dtype.kind == "f":
        arr = np.where(np.isnan(arr), NODATA, arr)
    arr = arr.astype(np.int32)
    masked = np.ma.masked_where((arr == NODATA) | (arr >= len(CLASSES)), arr)

    cmap = ListedColormap([c.colour for c in CLASSES]).with_extremes(bad="white")
    norm = BoundaryNorm(np.arange(len(CLASSES) + 1) - 0.5, len(CLASSES))
    h, w = arr.shape
    fig_w = 8.0
    fig_h = max(3.0, fig_w * h / max(w, 1) * 0.8)
    fig, ax = plt.subplots(figsize=(fig_w, fig_h), dpi=120)
    try:
        xs, ys = lulc["x"].values, lulc["y"].values
        dx = float(xs[1] - xs[0]) if xs.size > 1 else 10.0
        dy = float(ys[1] - ys[0]) if ys.size > 1 else -10.0
        extent = (xs[0] - dx / 2, xs[-1] + dx / 2, ys[-1] + dy / 2, ys[0] - dy / 2)
        ax.imshow(masked, cmap=cmap, norm=norm, interpolation="nearest", extent=extent)
        ax.set_title(f"CloudLULC land cover {np.datetime_as_string(ds['time'].values, unit='s')} UTC")
        ax.set_xlabel("x (m)")
        ax.set_ylabel("y (m)")
        ax.ticklabel_format(style="plain", useOffset=False)
        handles = [Patch(facecolor=c.colour, edgecolor="black", label=c.name) for c in CLASSES]
        handles.append(Patch(facecolor="white", edgecolor="black", label="nodata"))
        ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False, title="class")
        fig.tight_layout()
        fig.savefig(path, format="png")
    finally:
        plt.close(fig)
    return path
