"""Lazy Dask cubes of one paired acquisition on one grid (stackstac).

Every layer of a target date (Sentinel-2 reflectance, SCL / cloud mask, Sentinel-1 dB, labels) is
brought onto the same :class:`Grid`: one EPSG, 10 m pixels, bounds on 10 m multiples, so the arrays
share ``x``/``y`` exactly and the model can stack them. Assets already on that grid (the usual case
for S2 and S1 RTC in the AOI's UTM zone) are read with windowed RasterIO, everything else through
GDAL's warper (:mod:`cloudlulc.aligned_read`: same values, several times faster). Each chunk reads
all bands of an item in one task. Nothing is read
until ``.compute()``; unreadable assets fail with :class:`~cloudlulc.catalog.AssetReadError` (no
token in the message) unless ``errors_as_nodata=True``.

stackstac 0.5.1 notes (DESIGN.md "Known pitfalls"): items are passed as dicts with ``proj:epsg``
(restored by :func:`cloudlulc.catalog.normalize_item`), ``epsg``/``resolution``/``bounds`` are always
given, and integer outputs use ``rescale=False`` with an integer ``fill_value``.
"""

from __future__ import annotations

import logging
import math
import threading
import warnings
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, timedelta
from typing import Any

import dask
import dask.array as da
import numpy as np
import shapely
import stackstac
import xarray as xr
from affine import Affine
from dask.blockwise import blockwise
from dask.highlevelgraph import HighLevelGraph
from dask.layers import ArraySliceDep
from pyproj import Transformer
from rasterio import windows
from rasterio.enums import Resampling
from stackstac.nodata_reader import exception_matches, nodata_for_window
from stackstac.rio_reader import AutoParallelRioReader

from .aligned_read import AlignedWindowDataset, aligned_dataset
from .catalog import (
    AssetReadError,
    CatalogError,
    Pair,
    _search,
    item_datetime,
    items_need_resign,
    normalize_item,
    parse_aoi,
    resign_pair,
    strip_tokens,
    unsigned_href,
)
from .classes import LABEL_PRODUCTS, NODATA, S1_BANDS, S2_BANDS, SCL_CLOUD_CLASSES, SCL_NODATA, remap_labels

#: Processing baselines >= 04.00 (January 2022 on) add 1000 to every L2A DN.
logger = logging.getLogger(__name__)

BASELINE_OFFSET_FROM = (4, 0)
S2_BOA_OFFSET = 1000.0
S2_QUANTIFICATION = 10000.0
SAR_DB_RANGE = (-50.0, 10.0)


# ---------------------------------------------------------------------------------------------- grid
@dataclass(frozen=True)
class Grid:
    """A north-up raster grid: ``epsg``, outer ``bounds``, square pixel size ``resolution``.

    Bounds that span whole pixels are kept exactly (a reference raster's grid, whatever its origin);
    other bounds are snapped outward to multiples of ``resolution``, as :func:`grid_for_aoi` does for
    AOIs, so that S2 tiles (origins on the 60 m lattice) and the grid share pixel edges.
    """

    epsg: int
    bounds: tuple[float, float, float, float]
    resolution: float = 10.0

    def __post_init__(self) -> None:
        r = float(self.resolution)
        if r <= 0:
            raise ValueError(f"Grid resolution must be positive, got {self.resolution}.")
        minx, miny, maxx, maxy = (float(v) for v in self.bounds)
        nx, ny = (maxx - minx) / r, (maxy - miny) / r
        if abs(nx - round(nx)) < 1e-6 and abs(ny - round(ny)) < 1e-6:
            bounds = (minx, miny, minx + round(nx) * r, miny + round(ny) * r)
        else:
            bounds = (
                math.floor(minx / r + 1e-9) * r,
                math.floor(miny / r + 1e-9) * r,
                math.ceil(maxx / r - 1e-9) * r,
                math.ceil(maxy / r - 1e-9) * r,
            )
        if not (bounds[0] < bounds[2] and bounds[1] < bounds[3]):
            raise ValueError(f"Grid bounds {self.bounds} are empty.")
        object.__setattr__(self, "bounds", bounds)
        object.__setattr__(self, "resolution", r)
        object.__setattr__(self, "epsg", int(self.epsg))

    @property
    def shape(self) -> tuple[int, int]:
        """(height, width) in pixels."""
        minx, miny, maxx, maxy = self.bounds
        return round((maxy - miny) / self.resolution), round((maxx - minx) / self.resolution)

    @property
    def transform(self) -> Affine:
        return Affine(self.resolution, 0.0, self.bounds[0], 0.0, -self.resolution, self.bounds[3])

    @property
    def x(self) -> np.ndarray:
        """Pixel-centre x coordinates, increasing."""
        return self.bounds[0] + (np.arange(self.shape[1]) + 0.5) * self.resolution

    @property
    def y(self) -> np.ndarray:
        """Pixel-centre y coordinates, decreasing (north-up)."""
        return self.bounds[3] - (np.arange(self.shape[0]) + 0.5) * self.resolution

    @property
    def bounds_lonlat(self) -> tuple[float, float, float, float]:
        tr = Transformer.from_crs(self.epsg, 4326, always_xy=True)
        return tuple(tr.transform_bounds(*self.bounds, densify_pts=21))  # type: ignore[return-value]

    def footprint_lonlat(self) -> shapely.Geometry:
        return shapely.box(*self.bounds_lonlat)

    def window(self, row_off: int, col_off: int, height: int, width: int) -> Grid:
        """The sub-grid of a pixel window (clipped to this grid), for re-building a cube per batch."""
        h, w = self.shape
        r0, c0 = max(0, row_off), max(0, col_off)
        r1, c1 = min(h, row_off + height), min(w, col_off + width)
        if r0 >= r1 or c0 >= c1:
            raise ValueError(f"Window ({row_off}, {col_off}, {height}, {width}) is outside the {h}x{w} grid.")
        minx, maxy, r = self.bounds[0], self.bounds[3], self.resolution
        return Grid(self.epsg, (minx + c0 * r, maxy - r1 * r, minx + c1 * r, maxy - r0 * r), r)

    def windows(self, size: int) -> Iterator[tuple[tuple[int, int], Grid]]:
        """``((row_off, col_off), sub-grid)`` tiles of at most ``size`` x ``size`` pixels covering the grid."""
        h, w = self.shape
        for r in range(0, h, size):
            for c in range(0, w, size):
                yield (r, c), self.window(r, c, size, size)


def utm_epsg(lon: float, lat: float) -> int:
    """EPSG code of the WGS84 UTM zone containing (lon, lat)."""
    zone = min(60, max(1, int(math.floor((lon + 180.0) / 6.0)) + 1))
    return (32600 if lat >= 0 else 32700) + zone


def grid_for_aoi(aoi: Any, epsg: int | None = None, resolution: float = 10.0) -> Grid:
    """The grid covering ``aoi``: UTM zone of its centroid unless ``epsg`` is given, bounds snapped outward."""
    geom = aoi if isinstance(aoi, shapely.Geometry) else parse_aoi(aoi)
    if epsg is None:
        c = geom.centroid
        epsg = utm_epsg(c.x, c.y)
    tr = Transformer.from_crs(4326, epsg, always_xy=True)
    bounds = tr.transform_bounds(*geom.bounds, densify_pts=21)
    if not all(map(math.isfinite, bounds)):
        raise CatalogError(f"The AOI {geom.bounds} cannot be projected to EPSG:{epsg}; pick another epsg.")
    r = float(resolution)
    minx, miny, maxx, maxy = bounds
    snapped = (math.floor(minx / r) * r, math.floor(miny / r) * r, math.ceil(maxx / r) * r, math.ceil(maxy / r) * r)
    return Grid(int(epsg), snapped, r)


# ------------------------------------------------------------------------------------- reading
class AssetReadWarning(UserWarning):
    """An unreadable asset was mapped as nodata (``errors_as_nodata=True``)."""


class CheckedRioReader(AutoParallelRioReader):
    """stackstac's reader with errors that name the *unsigned* href and say what to do.

    stackstac's own messages and warnings embed the (signed) URL; this reader takes over the
    ``errors_as_nodata`` decision so that neither exceptions nor warnings ever carry a SAS token:
    failures raise :class:`AssetReadError`, or with ``errors_as_nodata`` log an
    :class:`AssetReadWarning` and return nodata for that window.
    """

    #: read assets already on the target grid without the warper (same values; off to compare)
    fast_aligned_reads: bool = True

    def __init__(self, *, errors_as_nodata: tuple[Exception, ...] = (), **kwargs: Any) -> None:
        super().__init__(errors_as_nodata=(), **kwargs)
        self._lenient = tuple(errors_as_nodata)

    def __getstate__(self):  # type: ignore[override]
        state = super().__getstate__()
        state["errors_as_nodata"] = self._lenient  # restored by __setstate__ -> __init__
        return state

    def _open(self):  # type: ignore[override]
        """Skip GDAL's warper for assets already on the target grid (see :mod:`cloudlulc.aligned_read`)."""
        from stackstac.rio_reader import SelfCleaningDatasetReader

        if self.fast_aligned_reads:
            with self.gdal_env.open:
                try:
                    ds = SelfCleaningDatasetReader(self.url, sharing=False)
                except Exception:
                    ds = None  # stackstac's own open reports the error
            if ds is not None:
                fast = aligned_dataset(ds, self.spec, self.resampling, self.gdal_env)
                if fast is not None:
                    return fast
                ds.close()
        return super()._open()

    def read(self, window, **kwargs) -> np.ndarray:  # type: ignore[override]
        try:
            dataset = self.dataset
            if isinstance(dataset, AlignedWindowDataset):  # stackstac's fetch passes the window only
                return dataset.read_filled(window, self.dtype, self.fill_value, self.scale_offset)
            return super().read(window, **kwargs)
        except AssetReadError:
            raise
        except Exception as e:
            cause = e.__cause__ or e
            href = unsigned_href(self.url)
            detail = strip_tokens(f"{type(cause).__name__}: {cause}")
            if self._lenient and exception_matches(cause, self._lenient):
                msg = f"Asset {href} unreadable ({detail}); mapped as nodata (errors_as_nodata=True)"
                logger.warning(msg)
                warnings.warn(msg, AssetReadWarning, stacklevel=2)
                return nodata_for_window(window, self.fill_value, self.dtype)
            raise AssetReadError(href, detail) from None


def _errors_as_nodata(flag: bool) -> tuple[Exception, ...]:
    # stackstac matches by type and by regex on the message: ".*" catches every open/read error.
    return (Exception(".*"),) if flag else ()


def _stack(
    items: Sequence[dict],
    assets: Sequence[str],
    grid: Grid,
    *,
    dtype: np.dtype,
    fill_value: Any,
    resampling: Resampling,
    chunksize: int,
    errors_as_nodata: bool,
) -> xr.DataArray:
    arr = stackstac.stack(
        [normalize_item(it) for it in items],
        assets=list(assets),
        epsg=grid.epsg,
        resolution=grid.resolution,
        bounds=grid.bounds,
        snap_bounds=False,
        resampling=resampling,
        chunksize=(-1, -1, chunksize, chunksize),  # every item and asset of a chunk in one task (_mosaic)
        dtype=np.dtype(dtype),
        fill_value=fill_value,
        rescale=False,
        sortby_date=False,
        xy_coords="center",
        properties=False,
        band_coords=False,
        errors_as_nodata=_errors_as_nodata(errors_as_nodata),
        reader=CheckedRioReader,
    )
    if arr.shape[-2:] != grid.shape:
        raise CatalogError(f"stackstac produced shape {arr.shape[-2:]}, expected the grid's {grid.shape}.")
    # Keep only x/y, set to exactly the grid's coordinates so every layer of a date shares them bit for
    # bit; the per-item time coordinate (duplicated within an acquisition, NaT for WorldCover) goes.
    # stackstac drops items whose footprint misses the grid: ``id`` says which items are left.
    arr = arr.drop_vars([c for c in arr.coords if c not in ("x", "y", "id")])
    arr = arr.assign_coords(x=grid.x, y=grid.y)
    arr.attrs = {}  # stackstac's spec/transform attrs describe its request, not our variables
    arr.name = None
    return arr


def _mosaic(
    arr: xr.DataArray,
    nodata: Any,
    convert: Callable[[np.ndarray, Any], np.ndarray] | None = None,
    params: Sequence[Any] | None = None,
    dtype: Any = None,
) -> xr.DataArray:
    """First valid value along ``time`` of a :func:`_stack` array (items ordered by preference), each
    item's values first passed through ``convert(values, params[item])`` (DN -> reflectance, linear
    -> dB); ``nodata`` is what marks a converted value invalid (NaN or a fill value).

    One task per chunk reads, converts and mosaics (:func:`_read_first_valid`): a later item is
    read only for the bands where the earlier ones left gaps in that chunk, and converted only in
    those gaps. Where the preferred item covers the chunk (everywhere but a strip along a tile edge)
    the other tiles of the acquisition are never opened: no COG decode, and for remote catalogs no
    HTTP requests, for pixels the mosaic would discard. ``stackstac.mosaic`` after an
    ``apply_ufunc`` read and converted every item in full and merged them pairwise. Same values:
    the conversions are elementwise and every read uses the chunk's own window.
    """
    n = arr.sizes["time"]
    params = list(params) if params is not None else [None] * n
    if len(params) != n:
        raise ValueError(f"{len(params)} conversion parameters for {n} items")
    out_dtype = np.dtype(dtype) if dtype is not None else arr.dtype
    data = arr.transpose("time", "band", "y", "x").data
    table = _reader_table(data)
    kwargs = {"params": params, "convert": convert, "nodata": nodata, "out_dtype": out_dtype}
    name = f"mosaic-{dask.base.tokenize(data.name, params, convert, nodata, out_dtype)}"
    layer = blockwise(
        _read_first_valid,
        name,
        "byx",
        table.name,
        "tb",
        ArraySliceDep(data.chunks[2:]),
        "yx",
        numblocks={table.name: table.numblocks},
        **kwargs,
    )
    graph = HighLevelGraph.from_collections(name, layer, [table])
    merged = da.Array(graph, name, data.chunks[1:], meta=np.ndarray((), dtype=out_dtype))
    coords = {k: v for k, v in arr.coords.items() if "time" not in v.dims and k not in ("id", "time")}
    return xr.DataArray(merged, dims=("band", "y", "x"), coords=coords)


def _reader_table(data: da.Array) -> da.Array:
    """stackstac's (item, asset) table of ``(reader, asset window)`` behind a :func:`_stack` array:
    the layer its own fetch reads from, one block (``_stack`` chunks ``time`` and ``band`` whole)."""
    (name,) = data.dask.dependencies[data.name]
    if not name.startswith("asset_table_to_reader_and_window-") or data.numblocks[:2] != (1, 1):
        raise RuntimeError(
            f"unexpected stackstac graph ({name!r}, blocks {data.numblocks[:2]}); cloudlulc.cube supports stackstac 0.5"
        )
    return da.Array(data.dask, name, data.chunks[:2], meta=np.ndarray((), dtype=object))


def _read_first_valid(
    tables: np.ndarray | list[np.ndarray],
    slices: tuple[slice, slice],
    *,
    params: Sequence[Any],
    convert: Any,
    nodata: Any,
    out_dtype: np.dtype,
) -> np.ndarray:
    """:func:`_mosaic` of one chunk: ``(band, y, x)`` from the (item, asset) reader table, reading
    item by item and band by band only what is still missing."""
    table = tables[0] if isinstance(tables, list) else tables  # the contracted item axis: one block
    window = windows.Window.from_slices(*slices)
    nan = isinstance(nodata, (float, np.floating)) and math.isnan(nodata)

    def invalid(values: np.ndarray) -> np.ndarray:
        return np.isnan(values) if nan else values == nodata

    def converted(values: np.ndarray, param: Any) -> np.ndarray:
        return np.asarray(convert(values, param), dtype=out_dtype) if convert is not None else values

    n_items, n_bands = table.shape
    out = np.full((n_bands, int(window.height), int(window.width)), nodata, dtype=out_dtype)
    gaps = np.ones(out.shape, dtype=bool)  # where ``out`` is still invalid
    missing = list(range(n_bands))  # bands with gaps
    for t in range(n_items):
        bands = [b for b in missing if table[t, b] and windows.intersect(window, table[t, b][1])]
        for b, values in zip(bands, _read_concurrently([table[t, b][0] for b in bands], window), strict=True):
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


#: this process's pool that reads the bands of a chunk of remote assets at once, shared by every
#: Dask thread, and its size (:func:`set_remote_read_threads`; None until first needed, then the
#: ``remote_read_threads`` setting, so worker processes take it from their environment)
_READ_POOL: ThreadPoolExecutor | None = None
_READ_THREADS: int | None = None
_READ_POOL_LOCK = threading.Lock()


def remote_read_threads() -> int:
    """How many bands of remote assets this process reads at once."""
    with _READ_POOL_LOCK:
        return _configured_read_threads()


def set_remote_read_threads(threads: int) -> None:
    """Size this process's remote read pool (1: read bands one after the other).

    Called where the workers start (:func:`cloudlulc.dask_cluster.dask_client`), with the
    ``remote_read_threads`` setting, before any read: a pool of another size is shut down and
    replaced.
    """
    global _READ_POOL, _READ_THREADS
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
        raise ValueError(f"remote read threads must be a positive integer, got {threads!r}")
    with _READ_POOL_LOCK:
        if _READ_POOL is not None and threads != _READ_THREADS:
            _READ_POOL.shutdown(wait=False)
            _READ_POOL = None
        _READ_THREADS = threads


def _configured_read_threads() -> int:
    """The pool size, from the settings on first use (caller holds the lock)."""
    global _READ_THREADS
    if _READ_THREADS is None:
        from .config import get_settings

        _READ_THREADS = get_settings().remote_read_threads
    return _READ_THREADS


def _read_pool() -> ThreadPoolExecutor | None:
    """The shared read pool, created on first use; None when reads run one after the other."""
    global _READ_POOL
    with _READ_POOL_LOCK:
        threads = _configured_read_threads()
        if _READ_POOL is None and threads > 1:
            _READ_POOL = ThreadPoolExecutor(threads, thread_name_prefix="cloudlulc-read")
        return _READ_POOL


def _is_remote(reader: Any) -> bool:
    """Whether the reader's asset is read over the network (a URL or a GDAL /vsi network path)."""
    url = str(getattr(reader, "url", ""))
    return ("://" in url and not url.startswith("file://")) or url.startswith("/vsi")


def _read_concurrently(readers: list[Any], window: windows.Window) -> list[np.ndarray]:
    """``reader.read(window)`` for every reader: several at once for remote assets.

    Why: a chunk task reads 12-14 bands, and over HTTP each read waits for its range requests.
    GDAL releases the GIL while it waits and decodes, so a small shared pool overlaps those waits
    without adding Dask threads, which would also run more forwards at once. Measured (tiny
    network, 2048 px AOI, 2 Dask threads, a loopback server answering each request after 20 / 50
    ms): 0.50 -> 0.83 and 0.33 -> 0.72 M px/s; four or eight Dask threads reached 0.74 at best.
    Local files are read one after the other: there the pool only added handles and CPU (about
    9 % slower).
    """
    pool = _read_pool() if len(readers) > 1 and any(_is_remote(r) for r in readers) else None
    if pool is None:
        return [r.read(window) for r in readers]
    return list(pool.map(lambda reader: reader.read(window), readers))


def baseline_offset(item: dict) -> float:
    """The DN offset of an L2A item: 1000 for ``s2:processing_baseline`` >= 04.00, else 0."""
    raw = item.get("properties", {}).get("s2:processing_baseline")
    if raw is None:
        raise CatalogError(
            f"Sentinel-2 item {item.get('id')!r} has no s2:processing_baseline; cannot tell whether its DN "
            "carry the +1000 offset (baseline >= 04.00)."
        )
    try:
        major, minor = (int(p) for p in str(raw).split(".")[:2])
    except ValueError:
        raise CatalogError(f"Unparseable s2:processing_baseline {raw!r} on {item.get('id')!r}.") from None
    return S2_BOA_OFFSET if (major, minor) >= BASELINE_OFFSET_FROM else 0.0


def harmonise_s2(dn: np.ndarray | xr.DataArray, offset: float | np.ndarray) -> Any:
    """L2A DN -> surface reflectance: (DN - offset) / 10000, DN 0 (nodata) -> NaN, as float32.

    ``offset`` broadcasts against ``dn`` (one value, or one per item along a leading axis). The
    numpy path makes one float32 array and works in place: it runs per chunk on every cube.
    """
    if isinstance(dn, xr.DataArray):
        return xr.apply_ufunc(harmonise_s2, dn, offset, dask="parallelized", output_dtypes=[np.float32])
    dn = np.asarray(dn)
    out = np.subtract(dn, np.asarray(offset, dtype=np.float32), dtype=np.float32)
    out /= np.float32(S2_QUANTIFICATION)
    with np.errstate(invalid="ignore"):
        np.copyto(out, np.float32(np.nan), where=~(dn > 0))  # DN 0 and NaN (outside the asset)
    return out


def linear_to_db(linear: np.ndarray | xr.DataArray) -> Any:
    """Sentinel-1 RTC gamma0 linear power -> dB clipped to [-50, 10]; nodata (-32768) and <= 0 -> NaN."""
    lo, hi = SAR_DB_RANGE
    if isinstance(linear, xr.DataArray):
        valid = linear.where(linear > 0)
        return (10.0 * np.log10(valid)).clip(lo, hi).astype(np.float32)
    lin = np.asarray(linear, dtype=np.float32)
    out = np.full(lin.shape, np.nan, dtype=np.float32)
    with np.errstate(invalid="ignore"):
        positive = lin > 0  # NaN compares False
    np.log10(lin, out=out, where=positive)
    out *= np.float32(10.0)
    return np.clip(out, np.float32(lo), np.float32(hi), out=out)  # NaN stays NaN


def _linear_to_db(linear: np.ndarray, _: Any) -> np.ndarray:
    return linear_to_db(linear)


def cloud_from_scl(scl: np.ndarray | xr.DataArray) -> Any:
    """SCL -> cloud mask: 1 for classes 3, 8, 9, 10 (shadow, cloud, cirrus), 0 otherwise, 255 where SCL is 0."""
    is_cloud = np.isin(scl, SCL_CLOUD_CLASSES) if not isinstance(scl, xr.DataArray) else scl.isin(SCL_CLOUD_CLASSES)
    out = xr.where(scl == SCL_NODATA, np.uint8(NODATA), is_cloud.astype(np.uint8))
    return out.astype(np.uint8)


def optical_cube(
    items: Sequence[dict],
    grid: Grid,
    *,
    chunksize: int = 1024,
    resampling: Resampling = Resampling.bilinear,
    errors_as_nodata: bool = False,
) -> xr.DataArray:
    """(band, y, x) float32 reflectance of the S2 ``items`` mosaicked in order (first valid wins)."""
    items = [normalize_item(it) for it in items]
    _require_assets(items, S2_BANDS, "Sentinel-2")
    dn = _stack(
        items,
        S2_BANDS,
        grid,
        dtype=np.dtype("float32"),
        fill_value=np.float32(np.nan),
        resampling=resampling,
        chunksize=chunksize,
        errors_as_nodata=errors_as_nodata,
    )
    by_id = {it["id"]: baseline_offset(it) for it in items}
    offsets = [by_id[i] for i in dn["id"].values]
    out = _mosaic(dn, np.nan, harmonise_s2, offsets, np.float32).assign_coords(band=list(S2_BANDS))
    out.attrs.update(units="1", long_name="surface reflectance (Sentinel-2 L2A, harmonised)")
    return out.transpose("band", "y", "x")


def scl_cube(
    items: Sequence[dict], grid: Grid, *, chunksize: int = 1024, errors_as_nodata: bool = False
) -> xr.DataArray:
    """(y, x) uint8 SCL of the S2 ``items`` (nearest resampling, 0 = nodata)."""
    items = [normalize_item(it) for it in items]
    _require_assets(items, ("SCL",), "Sentinel-2")
    arr = _stack(
        items,
        ("SCL",),
        grid,
        dtype=np.dtype("uint8"),
        fill_value=np.uint8(SCL_NODATA),
        resampling=Resampling.nearest,
        chunksize=chunksize,
        errors_as_nodata=errors_as_nodata,
    )
    out = _mosaic(arr, SCL_NODATA).isel(band=0, drop=True)
    out.attrs.update(long_name="Sentinel-2 L2A scene classification", nodata=SCL_NODATA)
    return out


def sar_cube(
    items: Sequence[dict] | None,
    grid: Grid,
    *,
    chunksize: int = 1024,
    resampling: Resampling = Resampling.bilinear,
    errors_as_nodata: bool = False,
) -> xr.DataArray:
    """(sar_band, y, x) float32 gamma0 dB (vv, vh) of one S1 pass; all NaN when ``items`` is None."""
    if not items:
        data = da.full((len(S1_BANDS), *grid.shape), np.nan, dtype=np.float32, chunks=(1, chunksize, chunksize))
        out = xr.DataArray(data, dims=("sar_band", "y", "x"), coords={"x": grid.x, "y": grid.y})
    else:
        items = [normalize_item(it) for it in items]
        _require_assets(items, S1_BANDS, "Sentinel-1 RTC")
        lin = _stack(
            items,
            S1_BANDS,
            grid,
            dtype=np.dtype("float32"),
            fill_value=np.float32(np.nan),
            resampling=resampling,
            chunksize=chunksize,
            errors_as_nodata=errors_as_nodata,
        )
        out = _mosaic(lin, np.nan, _linear_to_db, None, np.float32).rename(band="sar_band")
    out = out.assign_coords(sar_band=list(S1_BANDS))
    out.attrs.update(units="dB", long_name="Sentinel-1 RTC gamma0 backscatter")
    return out.transpose("sar_band", "y", "x")


def _require_assets(items: Sequence[dict], keys: Sequence[str], what: str) -> None:
    for it in items:
        missing = [k for k in keys if k not in it.get("assets", {})]
        if missing:
            raise CatalogError(
                f"{what} item {it.get('id')!r} lacks assets {missing} (has {sorted(it.get('assets', {}))}); "
                "is the catalog's collection the expected one?"
            )


def build_cube(
    pair: Pair,
    grid: Grid,
    chunksize: int = 1024,
    *,
    errors_as_nodata: bool = False,
    resampling: Resampling = Resampling.bilinear,
) -> xr.Dataset:
    """The lazy model-input cube of one paired acquisition on ``grid``.

    Variables: ``optical`` (band, y, x) float32 reflectance in :data:`S2_BANDS` order; ``sar``
    (sar_band, y, x) float32 dB (vv, vh; all NaN when ``pair.s1`` is None); ``scl`` (y, x) uint8 and
    ``cloud`` (y, x) uint8 (1 cloud/shadow, 0 clear, 255 no SCL). ``resampling`` applies to
    reflectance and backscatter; SCL always uses nearest. ``attrs["pairing"]`` is ``pair.as_dict()``
    (unsigned hrefs only). Reading happens only on compute; to re-sign long runs, rebuild the cube
    per batch (:func:`iter_window_cubes`).
    """
    kw = dict(chunksize=chunksize, errors_as_nodata=errors_as_nodata)
    optical = optical_cube(pair.s2.items, grid, resampling=resampling, **kw)
    scl = scl_cube(pair.s2.items, grid, **kw)
    sar = sar_cube(pair.s1.s1_items if pair.s1 is not None else None, grid, resampling=resampling, **kw)
    cloud = cloud_from_scl(scl)
    cloud.attrs.update(long_name="cloud or cloud shadow from SCL (3, 8, 9, 10)", flag_values=[0, 1], nodata=NODATA)
    ds = xr.Dataset(
        {"optical": optical, "sar": sar, "scl": scl, "cloud": cloud},
        coords={"x": grid.x, "y": grid.y, "time": pair.time},
    )
    ds = _with_crs(ds, grid)
    ds.attrs["pairing"] = pair.as_dict()
    ds.attrs["optical_only"] = int(pair.optical_only)
    return ds


def _with_crs(obj, grid: Grid):
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
    pair's tokens are checked and re-signed (:func:`cloudlulc.catalog.resign_pair`) when any expires
    within ``resign_margin``. Unsigned catalogs are never re-signed. ``kwargs`` go to :func:`build_cube`.
    """
    current = pair
    for (r, c), sub in grid.windows(size):
        items = list(current.s2.items) + (list(current.s1.s1_items) if current.s1 is not None else [])
        if items_need_resign(items, resign_margin):
            current = resign_pair(current, signer)
        yield (r, c), sub, build_cube(current, sub, chunksize=min(chunksize, size), **kwargs)


# ------------------------------------------------------------------------------------------ labels
def label_cube_from_items(
    items: Sequence[dict],
    grid: Grid,
    collection: str = "esa-worldcover",
    *,
    chunksize: int = 1024,
    errors_as_nodata: bool = False,
) -> xr.DataArray:
    """(y, x) uint8 CloudLULC classes from label-product ``items`` (newest first wins), nearest resampling."""
    if collection not in LABEL_PRODUCTS:
        raise CatalogError(f"Unknown label collection {collection!r}; known: {sorted(LABEL_PRODUCTS)}.")
    if not items:
        raise CatalogError(f"No {collection} items cover the grid {grid.bounds_lonlat} (lon/lat).")
    asset, mapping = LABEL_PRODUCTS[collection]
    items = sorted((normalize_item(it) for it in items), key=item_datetime, reverse=True)
    _require_assets(items, (asset,), collection)
    codes = _stack(
        items,
        (asset,),
        grid,
        dtype=np.dtype("uint8"),
        fill_value=np.uint8(0),
        resampling=Resampling.nearest,
        chunksize=chunksize,
        errors_as_nodata=errors_as_nodata,
    )
    codes = _mosaic(codes, 0).isel(band=0, drop=True)
    labels = xr.apply_ufunc(
        remap_labels, codes, kwargs={"mapping": mapping}, dask="parallelized", output_dtypes=[np.uint8]
    ).astype(np.uint8)
    labels.attrs.update(
        long_name=f"CloudLULC classes from {collection}",
        source_items=[it["id"] for it in items],
        source_hrefs=[unsigned_href(it["assets"][asset]["href"]) for it in items],
        nodata=NODATA,
    )
    labels.name = "labels"
    return _with_crs(labels, grid)


def build_label_cube(
    client,
    grid: Grid | Any,
    collection: str = "esa-worldcover",
    *,
    chunksize: int = 1024,
    errors_as_nodata: bool = False,
) -> xr.DataArray:
    """Search ``collection`` over the grid (or AOI) and return its labels in CloudLULC classes on the grid."""
    if not isinstance(grid, Grid):
        grid = grid_for_aoi(grid)
    from datetime import datetime

    footprint = grid.footprint_lonlat()
    items = _search(
        client,
        collection=collection,
        aoi=footprint,
        start=datetime(1970, 1, 1, tzinfo=UTC),
        end=datetime(2100, 1, 1, tzinfo=UTC),
    )
    if not items:
        raise CatalogError(
            f"No {collection} items intersect {tuple(round(v, 4) for v in footprint.bounds)} on the catalog; "
            "pick another label collection or AOI."
        )
    return label_cube_from_items(items, grid, collection, chunksize=chunksize, errors_as_nodata=errors_as_nodata)


__all__ = [
    "Grid",
    "grid_for_aoi",
    "utm_epsg",
    "build_cube",
    "build_label_cube",
    "iter_window_cubes",
    "label_cube_from_items",
    "optical_cube",
    "scl_cube",
    "sar_cube",
    "harmonise_s2",
    "linear_to_db",
    "cloud_from_scl",
    "baseline_offset",
    "CheckedRioReader",
    "AssetReadWarning",
    "strip_tokens",
]
