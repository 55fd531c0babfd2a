"""stackstac stacks of STAC items on one grid, and their first-valid mosaic.

:func:`stack_items` is ``stackstac.stack`` with this project's reader and settings: items stay in
preference order, every (item, band) chunk is its own read task, and the GDAL options travel with
the readers. :func:`first_valid` mosaics a stack along its items: per pixel, the first item (in
preference order) with a valid value wins. Each output chunk reads only the items it needs: an item
is skipped for a chunk that the footprints of the items before it cover (shrunk by
:data:`FOOTPRINT_MARGIN_M`), so a tile hidden under the preferred one is never opened there.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import dask
import dask.array as da
import numpy as np
import shapely
import shapely.geometry
import stackstac
import xarray as xr
from dask.highlevelgraph import HighLevelGraph
from pyproj import Transformer
from rasterio.enums import Resampling

from cloudlulc.cube.gdal import HttpOptions, gdal_env
from cloudlulc.cube.grid import Grid
from cloudlulc.cube.reader import AssetReader, ReadRetry
from cloudlulc.stac.errors import CatalogError
from cloudlulc.stac.items import normalize_item

__all__ = ["FOOTPRINT_MARGIN_M", "ReadOptions", "first_valid", "items_per_chunk", "stack_items"]

#: an item's footprint counts as covering a chunk only this far (metres) inside its edge: STAC
#: footprints are traced from the data at limited precision
FOOTPRINT_MARGIN_M = 100.0


@dataclass(frozen=True)
class ReadOptions:
    """How pixels are read: GDAL's HTTP behaviour and the reader's own retries."""

    http: HttpOptions = field(default_factory=HttpOptions)
    retry: ReadRetry = field(default_factory=ReadRetry)
    #: map unreadable assets as nodata (with a warning) instead of failing
    errors_as_nodata: bool = False


def stack_items(
    items: Sequence[dict],
    assets: Sequence[str],
    grid: Grid,
    *,
    dtype: np.dtype,
    fill_value: Any,
    resampling: Resampling,
    chunksize: int,
    read: ReadOptions = ReadOptions(),
) -> xr.DataArray:
    """(item, band, y, x) lazy stack of ``assets`` of ``items`` on ``grid``, items in the given order.

    Items whose footprint misses the grid are dropped by stackstac: the ``id`` coordinate says which
    are left. Only ``x``/``y`` (exactly the grid's) and ``id`` coordinates are kept.
    """
    arr = stackstac.stack(
        [normalize_item(it) for it in items],
        assets=list(assets),
        epsg=grid.epsg,
        resolution=grid.resolution,
        bounds=grid.bounds,
        snap_bounds=False,
        resampling=resampling,
        chunksize=(1, 1, chunksize, chunksize),
        dtype=np.dtype(dtype),
        fill_value=fill_value,
        rescale=False,
        sortby_date=False,
        xy_coords="center",
        properties=False,
        band_coords=False,
        # stackstac matches by type and by regex on the message: ".*" catches every open/read error
        errors_as_nodata=(Exception(".*"),) if read.errors_as_nodata else (),
        reader=functools.partial(AssetReader, retry=read.retry),  # type: ignore[arg-type]
        gdal_env=gdal_env(read.http),
    )
    if arr.shape[-2:] != grid.shape:
        raise CatalogError(f"stackstac produced shape {arr.shape[-2:]}, expected the grid's {grid.shape}.")
    arr = arr.drop_vars([c for c in arr.coords if c not in ("x", "y", "id")])
    arr = arr.assign_coords(x=grid.x, y=grid.y)
    arr.attrs = {}
    arr.name = None
    return arr


def footprint_on_grid(item: dict, grid: Grid) -> shapely.Geometry | None:
    """The item's footprint in the grid's CRS, or None when it cannot be trusted there (no geometry,
    one that crosses the antimeridian, or one that does not project cleanly)."""
    geom = item.get("geometry")
    if not geom:
        return None
    shape = shapely.geometry.shape(geom)
    minx, _, maxx, _ = shape.bounds
    if maxx - minx > 180:  # split or wrapped around the antimeridian: lon/lat bounds mean nothing here
        return None
    tr = Transformer.from_crs(4326, grid.epsg, always_xy=True)
    projected = shapely.transform(shape, lambda xy: np.column_stack(tr.transform(xy[:, 0], xy[:, 1])))
    if not np.isfinite(shapely.get_coordinates(projected)).all():
        return None
    return shapely.make_valid(projected)


def items_per_chunk(
    footprints: Sequence[shapely.Geometry | None],
    grid: Grid,
    chunks: tuple[tuple[int, ...], tuple[int, ...]],
    margin: float = FOOTPRINT_MARGIN_M,
) -> list[list[list[int]]]:
    """For each chunk ``[i][j]``, the indices of the items a first-valid mosaic must read there.

    ``footprints`` are in preference order, in the grid's CRS (None: unknown). Item ``t`` is skipped
    for a chunk inside the union of the footprints before it, shrunk by ``margin``; an unknown
    footprint never covers anything.
    """
    covered: list[shapely.Geometry | None] = []  # what items 0..t-1 cover, shrunk by the margin
    union: shapely.Geometry | None = shapely.Polygon()
    for fp in footprints:
        covered.append(None if union is None or union.is_empty else union.buffer(-margin))
        union = None if union is None or fp is None else shapely.union(union, fp)
    for c in covered:
        if c is not None:
            shapely.prepare(c)
    minx, _, _, maxy = grid.bounds
    r = grid.resolution
    y_edges = np.concatenate([[0], np.cumsum(chunks[0])])
    x_edges = np.concatenate([[0], np.cumsum(chunks[1])])
    out = []
    for i in range(len(chunks[0])):
        row = []
        for j in range(len(chunks[1])):
            x0, x1 = minx + x_edges[j] * r, minx + x_edges[j + 1] * r
            box = shapely.box(x0, maxy - y_edges[i + 1] * r, x1, maxy - y_edges[i] * r)
            row.append([t for t, c in enumerate(covered) if c is None or not c.contains(box)])
        out.append(row)
    return out


def first_valid(
    arr: xr.DataArray,
    items: Sequence[dict],
    grid: Grid,
    nodata: Any,
    convert: Callable[[np.ndarray, Any], np.ndarray] | None = None,
    params: Sequence[Any] | None = None,
    dtype: Any = None,
) -> xr.DataArray:
    """(band, y, x) first valid value along the items of a :func:`stack_items` array.

    Each item's values first pass through ``convert(values, params[item])`` (DN -> reflectance,
    linear -> dB); ``nodata`` marks a converted value invalid (NaN or a fill value). ``items`` are
    the stacked items (their footprints decide what each chunk reads, see :func:`items_per_chunk`);
    ``params`` is given per item of ``items``.
    """
    by_id = {it["id"]: k for k, it in enumerate(items)}
    order = [by_id[i] for i in arr["id"].values]  # the items stackstac kept, in order
    params = [None] * len(items) if params is None else list(params)
    if len(params) != len(items):
        raise ValueError(f"{len(params)} conversion parameters for {len(items)} items")
    out_dtype = np.dtype(dtype) if dtype is not None else arr.dtype
    data = arr.transpose("time", "band", "y", "x").data
    nb = data.shape[1]
    ychunks, xchunks = data.chunks[2], data.chunks[3]
    needed = items_per_chunk([footprint_on_grid(items[k], grid) for k in order], grid, (ychunks, xchunks))
    keys = data.__dask_keys__()
    kept_params = [params[k] for k in order]
    name = f"first-valid-{dask.base.tokenize(data.name, kept_params, convert, nodata, out_dtype)}"
    dsk: dict[Any, Any] = {}
    for i, h in enumerate(ychunks):
        for j, w in enumerate(xchunks):
            ts = needed[i][j]
            inputs = [[keys[t][b][i][j] for b in range(nb)] for t in ts]
            dsk[(name, 0, i, j)] = (
                _first_valid_chunk,
                inputs,
                [kept_params[t] for t in ts],
                convert,
                nodata,
                out_dtype,
                (nb, h, w),
            )
    graph = HighLevelGraph.from_collections(name, dsk, dependencies=[data])
    merged = da.Array(graph, name, ((nb,), ychunks, xchunks), meta=np.ndarray((), dtype=out_dtype))
    coords = {k: v for k, v in arr.coords.items() if "time" not in v.dims and k not in ("id", "time")}
    return xr.DataArray(merged, dims=("band", "y", "x"), coords=coords)


def _first_valid_chunk(
    item_bands: list[list[np.ndarray]],
    params: list[Any],
    convert: Callable[[np.ndarray, Any], np.ndarray] | None,
    nodata: Any,
    out_dtype: np.dtype,
    shape: tuple[int, int, int],
) -> np.ndarray:
    """One chunk of :func:`first_valid`: items in order, each filling only the remaining gaps."""
    nan = isinstance(nodata, (float, np.floating)) and math.isnan(nodata)

    def invalid(values: np.ndarray) -> np.ndarray:
        return np.isnan(values) if nan else values == nodata

    def converted(values: np.ndarray, param: Any) -> np.ndarray:
        return np.asarray(convert(values, param), dtype=out_dtype) if convert is not None else values

    out = np.full(shape, nodata, dtype=out_dtype)
    gaps = np.ones(shape, dtype=bool)
    for bands, param in zip(item_bands, params):
        for b, block in enumerate(bands):
            values = block.reshape(block.shape[-2:])
            if gaps[b].all():
                out[b] = converted(values, param)
                gaps[b] = invalid(out[b])
            elif gaps[b].any():
                filled = converted(values[gaps[b]], param)
                out[b][gaps[b]] = filled
                gaps[b][gaps[b]] = invalid(filled)
    return out
