"""Exports of one mosaic time slice: a Cloud Optimized GeoTIFF and a PNG quicklook with a legend.

The COG is what GIS users and tile servers consume (colour table with the class colours from
:mod:`cloudlulc.classes`, nodata 255, ``mode`` overviews so classes never blend); the quicklook is
for a human glance. Both read the mosaic through :mod:`cloudlulc.store.reader`, chunk by chunk
(COG) or at a bounded resolution (PNG), so memory does not grow with the AOI.
"""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
import xarray as xr
from rasterio.windows import Window

from cloudlulc.classes import CLASSES, NODATA, colour_rgb
from cloudlulc.cube.quality import OPTICAL_MISSING
from cloudlulc.store.reader import open_mosaic, select_time
from cloudlulc.store.schema import fill_value


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
    """Write ``variable`` (default ``lulc``) of the slice at ``time`` (a date ``YYYY-MM-DD`` or the
    slice's time) as a Cloud Optimized GeoTIFF.

    A tiled GeoTIFF is first written window by window from the mosaic's chunks, then translated to
    a COG (deflate, internal tiling, ``mode`` overviews for classes and flags) by rio-cogeo, which
    also validates it. ``lulc`` gets the class colour table and, beside it, the class names
    (:func:`write_category_names`). Returns ``path``.
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
    categorical = variable == "lulc"
    nodata = fill_value(variable)
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
            "nodata": nodata,
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
                        np.where(np.isnan(block), nodata, block).astype(np.uint8)
                        if block.dtype.kind == "f"
                        else block.astype(np.uint8),
                        1,
                        window=Window(x0, y0, cx, cy),
                    )
                    x0 += cx
                y0 += cy
            if categorical:
                dst.write_colormap(1, colormap())
                dst.update_tags(1, classes=";".join(f"{c.value}={c.name}" for c in CLASSES))
            dst.set_band_description(1, variable)
            dst.update_tags(time=str(ds["time"].values), product=f"CloudLULC {variable}")
        cog_translate(
            src_path,
            path,
            cog_profiles.get("deflate"),
            nodata=nodata,
            overview_resampling="mode" if categorical or variable in ("cloud", "input_quality") else "average",
            colormap=colormap() if categorical else None,
            forward_band_tags=True,
            quiet=True,
        )
    ok, errors, _warnings = cog_validate(path, quiet=True)
    if not ok:
        raise RuntimeError(f"{path} is not a valid COG: {errors}")
    if categorical:
        write_category_names(path)
    return path


def write_category_names(path: str | Path) -> Path:
    """Write ``<path>.aux.xml`` naming the classes (GDAL ``CategoryNames`` and a thematic raster
    attribute table with the class colours): GDAL's persistent auxiliary metadata, which QGIS and
    ``gdalinfo`` read beside a GeoTIFF, so the legend shows class names, not codes."""
    from xml.sax.saxutils import escape

    names = {c.value: c.name for c in CLASSES}
    categories = "".join(f"<Category>{escape(names.get(v, ''))}</Category>" for v in range(NODATA + 1))
    fields = [("Value", 0, 5), ("Class", 2, 2), ("Red", 0, 6), ("Green", 0, 7), ("Blue", 0, 8), ("Alpha", 0, 9)]
    defs = "".join(
        f'<FieldDefn index="{i}"><Name>{n}</Name><Type>{t}</Type><Usage>{u}</Usage></FieldDefn>'
        for i, (n, t, u) in enumerate(fields)
    )
    rows = "".join(
        f'<Row index="{i}"><F>{c.value}</F><F>{escape(c.name)}</F>'
        + "".join(f"<F>{v}</F>" for v in (*colour_rgb(c), 255))
        + "</Row>"
        for i, c in enumerate(CLASSES)
    )
    xml = (
        '<PAMDataset><PAMRasterBand band="1">'
        f"<CategoryNames>{categories}</CategoryNames>"
        f'<GDALRasterAttributeTable tableType="thematic">{defs}{rows}</GDALRasterAttributeTable>'
        "</PAMRasterBand></PAMDataset>\n"
    )
    aux = Path(f"{path}.aux.xml")
    aux.write_text(xml)
    return aux


def quicklook_png(
    store_or_dataset: Any, time: Any, path: str | Path, *, max_size: int = 1600, notes: Sequence[str] = ()
) -> Path:
    """A PNG of the slice's ``lulc`` with a class legend (nodata white), the grid's EPSG code and a
    scale bar, at most ``max_size`` pixels wide.

    Pixels without any optical observation (``input_quality``) are hatched: the map there rests on
    radar alone. The title says what the slice's provenance says about its trust: an optical-only
    run (no Sentinel-1), no usable optical data at all, weights trained on simulated data only;
    ``notes`` adds lines. Large AOIs are subsampled (nearest, by striding) before loading, so memory
    stays bounded.
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
    sub = {"y": slice(None, None, step), "x": slice(None, None, step)}
    arr = _as_codes(lulc.isel(sub).values, NODATA)
    masked = np.ma.masked_where((arr == NODATA) | (arr >= len(CLASSES)), arr)
    no_optical = None
    if "input_quality" in ds:
        flags = _as_codes(ds["input_quality"].isel(sub).values, 0)
        no_optical = ((flags & OPTICAL_MISSING) > 0) & ~np.ma.getmaskarray(masked)
    lines = [*trust_notes(ds, no_optical), *notes]

    cmap = ListedColormap([c.colour for c in CLASSES]).with_extremes(bad="white")
    norm = BoundaryNorm(np.arange(len(CLASSES) + 1) - 0.5, len(CLASSES))
    h, w = arr.shape
    fig_w = 8.0
    fig_h = max(3.0, fig_w * h / max(w, 1) * 0.8) + 0.25 * len(lines)
    fig, ax = plt.subplots(figsize=(fig_w, fig_h), dpi=120)
    try:
        xs, ys = lulc["x"].values, lulc["y"].values
        dx = float(xs[1] - xs[0]) if xs.size > 1 else 10.0
        dy = float(ys[1] - ys[0]) if ys.size > 1 else -10.0
        extent = (xs[0] - dx / 2, xs[-1] + dx / 2, ys[-1] + dy / 2, ys[0] - dy / 2)
        ax.imshow(masked, cmap=cmap, norm=norm, interpolation="nearest", extent=extent)
        handles = [Patch(facecolor=c.colour, edgecolor="black", label=c.name) for c in CLASSES]
        handles.append(Patch(facecolor="white", edgecolor="black", label="nodata"))
        if no_optical is not None and no_optical.any():
            ys_sub, xs_sub = ys[::step], xs[::step]
            ax.contourf(xs_sub, ys_sub, no_optical.astype(float), levels=[0.5, 1.5], colors="none", hatches=["///"])
            handles.append(Patch(facecolor="white", edgecolor="black", hatch="///", label="no optical data"))
        title = f"CloudLULC land cover {np.datetime_as_string(ds['time'].values, unit='s')} UTC"
        ax.set_title("\n".join([title, *lines]), fontsize=10)
        epsg = _epsg(ds)
        ax.set_xlabel(f"x (m, EPSG:{epsg})" if epsg else "x (m)")
        ax.set_ylabel(f"y (m, EPSG:{epsg})" if epsg else "y (m)")
        ax.ticklabel_format(style="plain", useOffset=False)
        _scale_bar(ax, extent)
        ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False, title="class")
        fig.tight_layout()
        fig.savefig(path, format="png")
    finally:
        plt.close(fig)
    return path


def _as_codes(values: np.ndarray, fill: int) -> np.ndarray:
    """uint8 codes as int32, NaN (a masked read) as ``fill``."""
    arr = np.asarray(values)
    if arr.dtype.kind == "f":
        arr = np.where(np.isnan(arr), fill, arr)
    return arr.astype(np.int32)


def trust_notes(ds: xr.Dataset, no_optical: np.ndarray | None) -> list[str]:
    """Title lines that a reader must see before trusting the map."""
    key = str(np.datetime_as_string(ds["time"].values.astype("datetime64[ms]"), unit="ms")) + "Z"
    prov: dict[str, dict[str, Any]] = ds.attrs.get("provenance", {})
    entry: dict[str, Any] = prov.get(key) or next((v for k, v in prov.items() if k[:19] == key[:19]), {})
    lines = []
    if entry.get("optical_only"):
        lines.append("OPTICAL-ONLY: no Sentinel-1 pass was paired")
    if no_optical is not None:
        share = float(no_optical.mean()) if no_optical.size else 0.0
        if share >= 0.999:
            lines.append("RADAR-ONLY: no optical data over the AOI")
        elif share > 0:
            lines.append(f"{100 * share:.0f} % of the pixels have no optical data (hatched)")
    if entry.get("weights_simulated"):
        lines.append("weights trained on SIMULATED data only: a demonstration, not a real-world map")
    return lines


def _epsg(ds: xr.Dataset) -> int | None:
    try:
        crs = ds.rio.crs
        return int(crs.to_epsg()) if crs is not None and crs.to_epsg() else None
    except Exception:
        return None


def _scale_bar(ax: Any, extent: tuple[float, float, float, float]) -> None:
    """A bar of a round length (1, 2 or 5 x 10^k m) about a fifth of the map's width, lower left."""
    x0, x1, y0, y1 = extent
    width, height = abs(x1 - x0), abs(y1 - y0)
    target = width / 5
    if target <= 0:
        return
    magnitude = 10 ** np.floor(np.log10(target))
    length = max(m * magnitude for m in (1, 2, 5) if m * magnitude <= target)
    bx, by = min(x0, x1) + width * 0.04, min(y0, y1) + height * 0.05
    ax.plot([bx, bx + length], [by, by], color="black", linewidth=3, solid_capstyle="butt")
    label = f"{length / 1000:g} km" if length >= 1000 else f"{length:g} m"
    ax.text(bx + length / 2, by + height * 0.015, label, ha="center", va="bottom", fontsize=8)
