"""The model-input cube of one paired acquisition: a lazy ``xarray.Dataset`` on one grid.

Variables (the cube schema, DESIGN.md "Inputs on one grid"):

* ``optical`` (band, y, x) float32 surface reflectance in :data:`~cloudlulc.classes.S2_BANDS` order,
  NaN where no Sentinel-2 item has data;
* ``sar`` (sar_band, y, x) float32 gamma0 dB (vv, vh), all NaN when the pair has no Sentinel-1;
* ``scl`` (y, x) uint8 scene classification (0 nodata) and ``cloud`` (y, x) uint8 (1 cloud or
  shadow, 0 clear, 255 no SCL);
* ``spatial_ref`` (CF grid mapping), ``time``; ``attrs["pairing"]`` is ``pair.as_dict()`` (unsigned
  hrefs only) and ``attrs["optical_only"]``.

Nothing is read until ``.compute()``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import replace
from datetime import timedelta
from typing import Any, TypeVar

import dask.array as da
import numpy as np
import xarray as xr
from rasterio.enums import Resampling

from cloudlulc.classes import NODATA, S1_BANDS, S2_BANDS, SCL_NODATA
from cloudlulc.cube.conversions import baseline_offset, cloud_from_scl, harmonise_s2, linear_to_db
from cloudlulc.cube.grid import Grid
from cloudlulc.cube.stack import ReadOptions, first_valid
from cloudlulc.stac.errors import CatalogError
from cloudlulc.stac.items import normalize_item
from cloudlulc.stac.pairs import Pair, resign_pair
from cloudlulc.stac.urls import items_need_resign

__all__ = ["build_cube", "iter_window_cubes", "optical_cube", "sar_cube", "scl_cube", "with_crs"]

T = TypeVar("T", xr.Dataset, xr.DataArray)


def require_assets(items: Sequence[dict], keys: Sequence[str], what: str) -> None:
    """Fail with the item and the assets it lacks when the catalog is not the expected one."""
    for it in items:
        missing = [k for k in keys if k not in it.get("assets", {})]
        if missing:
            raise CatalogError(
                f"{what} item {it.get('id')!r} lacks assets {missing} (has {sorted(it.get('assets', {}))}); "
                "is the catalog's collection the expected one?"
            )


def _linear_to_db(linear: np.ndarray, _: Any) -> np.ndarray:
    return linear_to_db(linear)


def optical_cube(
    items: Sequence[dict],
    grid: Grid,
    *,
    chunksize: int = 1024,
    resampling: Resampling = Resampling.bilinear,
    read: ReadOptions = ReadOptions(),
) -> xr.DataArray:
    """(band, y, x) float32 reflectance of the S2 ``items`` mosaicked in order (first valid wins)."""
    items = [normalize_item(it) for it in items]
    require_assets(items, S2_BANDS, "Sentinel-2")
    out = first_valid(
        items,
        S2_BANDS,
        grid,
        dtype=np.float32,
        nodata=np.float32(np.nan),
        resampling=resampling,
        chunksize=chunksize,
        read=read,
        convert=_harmonise,
        params=[baseline_offset(it) for it in items],
    )
    out.attrs.update(units="1", long_name="surface reflectance (Sentinel-2 L2A, harmonised)")
    return out


def _harmonise(dn: np.ndarray, offset: float) -> np.ndarray:
    return np.asarray(harmonise_s2(dn, offset))


def scl_cube(
    items: Sequence[dict], grid: Grid, *, chunksize: int = 1024, read: ReadOptions = ReadOptions()
) -> xr.DataArray:
    """(y, x) uint8 SCL of the S2 ``items`` (nearest resampling, 0 = nodata)."""
    items = [normalize_item(it) for it in items]
    require_assets(items, ("SCL",), "Sentinel-2")
    out = first_valid(
        items,
        ("SCL",),
        grid,
        dtype=np.uint8,
        nodata=np.uint8(SCL_NODATA),
        resampling=Resampling.nearest,
        chunksize=chunksize,
        read=read,
    ).isel(band=0, drop=True)
    out.attrs.update(long_name="Sentinel-2 L2A scene classification", nodata=SCL_NODATA)
    return out


def sar_cube(
    items: Sequence[dict] | None,
    grid: Grid,
    *,
    chunksize: int = 1024,
    resampling: Resampling = Resampling.bilinear,
    read: ReadOptions = ReadOptions(),
) -> xr.DataArray:
    """(sar_band, y, x) float32 gamma0 dB (vv, vh) of one S1 pass; all NaN when ``items`` is None."""
    if not items:
        data = da.full((len(S1_BANDS), *grid.shape), np.nan, dtype=np.float32, chunks=(1, chunksize, chunksize))
        out = xr.DataArray(data, dims=("sar_band", "y", "x"), coords={"x": grid.x, "y": grid.y})
    else:
        items = [normalize_item(it) for it in items]
        require_assets(items, S1_BANDS, "Sentinel-1 RTC")
        out = first_valid(
            items,
            S1_BANDS,
            grid,
            dtype=np.float32,
            nodata=np.float32(np.nan),
            resampling=resampling,
            chunksize=chunksize,
            read=read,
            convert=_linear_to_db,
        ).rename(band="sar_band")
    out = out.assign_coords(sar_band=list(S1_BANDS))
    out.attrs.update(units="dB", long_name="Sentinel-1 RTC gamma0 backscatter")
    return out.transpose("sar_band", "y", "x")


def build_cube(
    pair: Pair,
    grid: Grid,
    chunksize: int = 1024,
    *,
    resampling: Resampling = Resampling.bilinear,
    errors_as_nodata: bool = False,
    read: ReadOptions = ReadOptions(),
) -> xr.Dataset:
    """The lazy model-input cube of one paired acquisition on ``grid`` (schema: module docstring).

    ``resampling`` applies to reflectance and backscatter; SCL always uses nearest. ``read`` sets
    timeouts, retries and whether unreadable assets fail the run or are mapped as nodata. To
    re-sign long runs, rebuild the cube per batch (:func:`iter_window_cubes`). ``errors_as_nodata``
    is a shorthand for ``read.errors_as_nodata``.
    """
    if errors_as_nodata:
        read = replace(read, errors_as_nodata=True)
    kw: dict[str, Any] = {"chunksize": chunksize, "read": read}
    optical = optical_cube(pair.s2.items, grid, resampling=resampling, **kw)
    scl = scl_cube(pair.s2.items, grid, **kw)
    sar = sar_cube(pair.s1.s1_items if pair.s1 is not None else None, grid, resampling=resampling, **kw)
    cloud = cloud_from_scl(scl)
    cloud.attrs.update(long_name="cloud or cloud shadow from SCL (3, 8, 9, 10)", flag_values=[0, 1], nodata=NODATA)
    ds = xr.Dataset(
        {"optical": optical, "sar": sar, "scl": scl, "cloud": cloud},
        coords={"x": grid.x, "y": grid.y, "time": pair.time},
    )
    ds = with_crs(ds, grid)
    ds.attrs["pairing"] = pair.as_dict()
    ds.attrs["optical_only"] = int(pair.optical_only)
    return ds


def with_crs(obj: T, grid: Grid) -> T:
    """``obj`` with the grid's CRS and transform as a CF grid mapping (``spatial_ref``)."""
    import rioxarray  # noqa: F401  (registers the .rio accessor)

    obj = obj.rio.write_crs(f"EPSG:{grid.epsg}")
    return obj.rio.write_transform(grid.transform)


def iter_window_cubes(
    pair: Pair,
    grid: Grid,
    size: int,
    *,
    chunksize: int = 1024,
    resign_margin: timedelta = timedelta(minutes=15),
    signer: Callable[[str], str] | None = None,
    **kwargs: Any,
) -> Iterator[tuple[tuple[int, int], Grid, xr.Dataset]]:
    """``((row_off, col_off), sub_grid, cube)`` for windows of ``size`` pixels, re-signing as tokens expire.

    Planetary Computer SAS tokens expire within about an hour and a Dask graph keeps the hrefs it
    was built with, so a long run builds one small cube per batch of windows: before each window the
    pair's tokens are checked and re-signed (:func:`cloudlulc.stac.resign_pair`) when any expires
    within ``resign_margin``. Unsigned catalogs are never re-signed. ``kwargs`` go to :func:`build_cube`.
    """
    current = pair
    for (r, c), sub in grid.windows(size):
        items = list(current.s2.items) + (list(current.s1.s1_items) if current.s1 is not None else [])
        if items_need_resign(items, resign_margin):
            current = resign_pair(current, signer)
        yield (r, c), sub, build_cube(current, sub, chunksize=min(chunksize, size), **kwargs)
