"""Read the items of one acquisition onto a grid and mosaic them, first valid wins, chunk by chunk.

One task per output chunk reads and mosaics the items through :class:`~cloudlulc.cube.reader.AssetReader`
(stackstac's ``Reader`` protocol): items in preference order, each read only for the bands and
only where the items before it left gaps, so a tile hidden under the preferred one is never opened
there (no decode, no HTTP requests). The bands of a remote item are read concurrently
(``remote_read_threads`` per process), so their HTTP waits overlap; local files are read one
after the other.
``stackstac.stack`` reads every asset overlapping a chunk, one after the other: over HTTP that made
the cube 2.8x slower (``docs/performance.md``). The readers of a cube form one :class:`ReaderTable`,
a single key of the Dask graph: a distributed worker receives it once and keeps its handles open
across tasks.
"""

from __future__ import annotations

import functools
import math
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import dask
import dask.array as da
import numpy as np
import xarray as xr
from dask.highlevelgraph import HighLevelGraph
from pyproj import Transformer
from rasterio import windows
from rasterio.enums import Resampling
from rasterio.windows import Window
from stackstac.raster_spec import RasterSpec

from cloudlulc.cube.gdal import HttpOptions, gdal_env
from cloudlulc.cube.grid import Grid
from cloudlulc.cube.reader import AssetReader, ReadRetry, is_remote
from cloudlulc.stac.errors import CatalogError
from cloudlulc.stac.items import normalize_item

__all__ = ["ReadOptions", "ReaderTable", "first_valid", "reader_table"]


@dataclass(frozen=True)
class ReadOptions:
    """How pixels are read: GDAL's HTTP behaviour, the reader's own retries, read concurrency."""

    http: HttpOptions = field(default_factory=HttpOptions)
    retry: ReadRetry = field(default_factory=ReadRetry)
    #: map unreadable assets as nodata (with a warning) instead of failing
    errors_as_nodata: bool = False
    #: bands of a remote item read at once within a chunk (local files: one after the other)
    remote_read_threads: int = 8

    def __post_init__(self) -> None:
        if self.remote_read_threads < 1:
            raise ValueError(f"remote_read_threads must be >= 1, got {self.remote_read_threads}")


class ReaderTable:
    """The readers of (item, asset) pairs on one grid, each asset's window on it, and how many bands
    of a remote item to read at once."""

    def __init__(
        self, readers: list[list[AssetReader | None]], asset_windows: list[list[Window | None]], read_threads: int
    ) -> None:
        self.readers = readers
        self.asset_windows = asset_windows
        self.read_threads = read_threads
        self.remote = any(r is not None and is_remote(getattr(r, "url", "")) for row in readers for r in row)

    @property
    def shape(self) -> tuple[int, int]:
        return len(self.readers), len(self.readers[0]) if self.readers else 0

    def overlaps(self, t: int, b: int, window: Window) -> bool:
        """Whether asset ``(t, b)`` exists and may hold pixels of ``window`` (unknown extent: yes)."""
        if self.readers[t][b] is None:
            return False
        extent = self.asset_windows[t][b]
        return extent is None or windows.intersect(window, extent)

    def read(self, t: int, bands: Sequence[int], window: Window) -> list[np.ndarray]:
        """The ``window`` of item ``t``'s ``bands``, in order; concurrently for remote assets."""
        readers = [r for r in (self.readers[t][b] for b in bands) if r is not None]
        if len(readers) < 2 or not self.remote or self.read_threads < 2:
            return [r.read(window) for r in readers]
        return list(_read_pool(self.read_threads).map(lambda r: r.read(window), readers))


#: this process's read pools by size, shared by every task and cube: the bands of remote assets are
#: read at most ``remote_read_threads`` at a time per process, however many cubes are in flight
_POOLS: dict[int, ThreadPoolExecutor] = {}
_POOLS_LOCK = threading.Lock()


def _read_pool(threads: int) -> ThreadPoolExecutor:
    with _POOLS_LOCK:
        pool = _POOLS.get(threads)
        if pool is None:
            pool = _POOLS[threads] = ThreadPoolExecutor(threads, thread_name_prefix="cloudlulc-read")
        return pool


def _asset_window(item: dict, key: str, grid: Grid) -> Window | None:
    """Where asset ``key`` of ``item`` lies on the grid (its ``proj:`` extent), None when unknown."""
    asset = item.get("assets", {}).get(key, {})
    props = item.get("properties", {})

    def pick(name: str) -> Any:
        return asset.get(name, props.get(name))

    epsg = pick("proj:epsg")
    bbox = pick("proj:bbox")
    transform, shape = pick("proj:transform"), pick("proj:shape")
    if bbox is None and transform is not None and shape is not None:
        a, _, c, _, e, f = transform[:6]
        h, w = shape
        xs, ys = (c, c + a * w), (f, f + e * h)
        bbox = (min(xs), min(ys), max(xs), max(ys))
    if epsg is None or bbox is None:
        return None
    try:
        if int(epsg) != grid.epsg:
            tr = Transformer.from_crs(int(epsg), grid.epsg, always_xy=True)
            bbox = tr.transform_bounds(*bbox, densify_pts=21)  # type: ignore[misc]
        if not all(map(math.isfinite, bbox)):
            return None
        return windows.from_bounds(*bbox, transform=grid.transform)
    except Exception:
        return None


def reader_table(
    items: Sequence[dict],
    assets: Sequence[str],
    grid: Grid,
    *,
    dtype: Any,
    fill_value: Any,
    resampling: Resampling,
    read: ReadOptions = ReadOptions(),
) -> ReaderTable:
    """Readers of every (item, asset) on ``grid``; an item without the asset gets None."""
    spec = RasterSpec(grid.epsg, grid.bounds, (grid.resolution, grid.resolution))
    env = gdal_env(read.http)
    errors = (Exception(".*"),) if read.errors_as_nodata else ()
    make = functools.partial(
        AssetReader,
        spec=spec,
        resampling=resampling,
        dtype=np.dtype(dtype),
        fill_value=fill_value,
        scale_offset=(1, 0),
        gdal_env=env,
        errors_as_nodata=errors,
        retry=read.retry,
    )
    readers: list[list[AssetReader | None]] = []
    extents: list[list[Window | None]] = []
    for item in items:
        item_assets = item.get("assets", {})
        readers.append([make(url=item_assets[k]["href"]) if k in item_assets else None for k in assets])
        extents.append([_asset_window(item, k, grid) for k in assets])
    return ReaderTable(readers, extents, read.remote_read_threads)


def first_valid(
    items: Sequence[dict],
    assets: Sequence[str],
    grid: Grid,
    *,
    dtype: Any,
    nodata: Any,
    resampling: Resampling,
    chunksize: int,
    read: ReadOptions = ReadOptions(),
    convert: Callable[[np.ndarray, Any], np.ndarray] | None = None,
    params: Sequence[Any] | None = None,
    out_dtype: Any = None,
) -> xr.DataArray:
    """(band, y, x) lazy mosaic of ``assets`` of ``items`` on ``grid``: per pixel and band, the first
    item (in the given order) with a valid value wins.

    Each item's values first pass through ``convert(values, params[item])`` (DN -> reflectance,
    linear -> dB); ``nodata`` (NaN or a fill value, read as ``dtype``) marks invalid values, before
    and after conversion. Raises :class:`CatalogError` when no item's assets overlap the grid.
    """
    items = [normalize_item(it) for it in items]
    params = [None] * len(items) if params is None else list(params)
    if len(params) != len(items):
        raise ValueError(f"{len(params)} conversion parameters for {len(items)} items")
    result_dtype = np.dtype(out_dtype if out_dtype is not None else dtype)
    table = reader_table(items, assets, grid, dtype=dtype, fill_value=nodata, resampling=resampling, read=read)
    h, w = grid.shape
    whole = Window(0, 0, w, h)
    if not any(table.overlaps(t, b, whole) for t in range(len(items)) for b in range(len(assets))):
        raise CatalogError(
            f"None of the items {[it.get('id') for it in items]} has {list(assets)} assets overlapping the grid "
            f"{grid.bounds_lonlat} (lon/lat)."
        )
    ychunks = tuple(min(chunksize, h - y) for y in range(0, h, chunksize))
    xchunks = tuple(min(chunksize, w - x) for x in range(0, w, chunksize))
    hrefs = [[it["assets"][k]["href"] for k in assets if k in it.get("assets", {})] for it in items]
    token = dask.base.tokenize(
        hrefs, list(assets), grid, str(dtype), nodata, resampling, read, convert, params, chunksize
    )
    name, table_key = f"first-valid-{token}", f"first-valid-readers-{token}"
    dsk: dict[Any, Any] = {table_key: table}
    y0 = 0
    for i, ch in enumerate(ychunks):
        x0 = 0
        for j, cw in enumerate(xchunks):
            window = (y0, y0 + ch, x0, x0 + cw)
            dsk[(name, 0, i, j)] = (_first_valid_chunk, table_key, window, params, convert, nodata, result_dtype)
            x0 += cw
        y0 += ch
    graph = HighLevelGraph.from_collections(name, dsk, dependencies=[])
    data = da.Array(graph, name, ((len(assets),), ychunks, xchunks), meta=np.ndarray((), dtype=result_dtype))
    return xr.DataArray(data, dims=("band", "y", "x"), coords={"band": list(assets), "x": grid.x, "y": grid.y})


def _first_valid_chunk(
    table: ReaderTable,
    bounds: tuple[int, int, int, int],
    params: Sequence[Any],
    convert: Callable[[np.ndarray, Any], np.ndarray] | None,
    nodata: Any,
    out_dtype: np.dtype,
) -> np.ndarray:
    """One chunk of :func:`first_valid`: items in order, each read only for the bands that still have
    gaps, and converted only in those gaps."""
    r0, r1, c0, c1 = bounds
    window = Window(c0, r0, c1 - c0, r1 - r0)
    nan = isinstance(nodata, (float, np.floating)) and math.isnan(nodata)

    def invalid(values: np.ndarray) -> np.ndarray:
        return np.isnan(values) if nan else values == nodata

    def converted(values: np.ndarray, param: Any) -> np.ndarray:
        return np.asarray(convert(values, param), dtype=out_dtype) if convert is not None else values

    n_items, n_bands = table.shape
    out = np.full((n_bands, r1 - r0, c1 - c0), nodata, dtype=out_dtype)
    gaps = np.ones(out.shape, dtype=bool)
    missing = list(range(n_bands))
    for t in range(n_items):
        bands = [b for b in missing if table.overlaps(t, b, window)]
        for b, values in zip(bands, table.read(t, bands, window)):
            if gaps[b].all():
                out[b] = converted(values, params[t])
                gaps[b] = invalid(out[b])
            else:
                filled = converted(values[gaps[b]], params[t])
                out[b][gaps[b]] = filled
                gaps[b][gaps[b]] = invalid(filled)
        missing = [b for b in missing if gaps[b].any()]
        if not missing:
            break
    return out
