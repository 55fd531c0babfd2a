"""Compare global LULC products and our mosaic against one reference map, on one grid and one mask.

The products (ESA WorldCover, Impact Observatory annual LULC, any collection in
:data:`cloudlulc.classes.LABEL_PRODUCTS`) are searched on a STAC API, the release valid at the
comparison date is chosen, and :func:`cloudlulc.cube.label_cube_from_items` maps it to the CloudLULC
classes (``remap_labels``) on the reference's grid; our map is a time slice of a Zarr mosaic
(:func:`cloudlulc.store.open_mosaic`).
Every method is scored on the pixels that are valid in the reference *and in every layer*, so a
product cannot look better by abstaining on hard pixels.

Cloud bins: when the mosaic's ``cloud`` layer is available, the grid is cut into square windows and
each window is one sample whose cloud fraction bins the metrics (the paper bins patches the same way).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr

from cloudlulc.classes import NODATA, NUM_CLASSES
from cloudlulc.evaluation.params import ProductComparisonSpec
from cloudlulc.evaluation.scoring import BinnedScorer

log = logging.getLogger(__name__)


class ProductComparisonError(RuntimeError):
    """The layers cannot be compared (no overlap, empty common mask, unknown collection)."""


def open_reference(path: Path | str) -> xr.DataArray:
    """A single-band reference raster of CloudLULC classes (0..5, 255 ignore) as a (y, x) DataArray."""
    import rioxarray as rxr

    da = rxr.open_rasterio(path, masked=False)
    if not isinstance(da, xr.DataArray):  # a file of several variables or subdatasets
        raise ProductComparisonError(f"reference {path} is not a single raster; expected one band of class values")
    if "band" in da.dims:
        if da.sizes["band"] != 1:
            raise ProductComparisonError(
                f"reference {path} has {da.sizes['band']} bands; expected one band of class values"
            )
        da = da.isel(band=0, drop=True)
    if da.rio.crs is None:
        raise ProductComparisonError(
            f"reference {path} has no CRS; write one (rio.write_crs) so products can be aligned"
        )
    nodata = da.rio.nodata
    values = da.values
    if nodata is not None and nodata != NODATA:
        values = np.where(values == nodata, NODATA, values)
    values = np.where((values >= 0) & (values < NUM_CLASSES), values, NODATA).astype(np.uint8)
    return da.copy(data=values).rio.write_nodata(NODATA)


def align_to(layer: xr.DataArray, reference: xr.DataArray) -> xr.DataArray:
    """``layer`` on ``reference``'s grid: as is when the coordinates match, else nearest reprojection."""
    from rasterio.enums import Resampling

    layer = layer.squeeze(drop=True)
    same = (
        layer.sizes.get("y") == reference.sizes["y"]
        and layer.sizes.get("x") == reference.sizes["x"]
        and np.allclose(layer["x"].values, reference["x"].values)
        and np.allclose(layer["y"].values, reference["y"].values)
    )
    if same:
        return layer.assign_coords(x=reference["x"], y=reference["y"])
    if layer.rio.crs is None:
        raise ProductComparisonError(f"layer {layer.name!r} is on another grid and has no CRS to reproject from")
    layer = layer.rio.write_nodata(NODATA) if layer.rio.nodata is None else layer
    return layer.rio.reproject_match(reference, resampling=Resampling.nearest)


def windows(array: np.ndarray, size: int) -> np.ndarray:
    """[N, size, size] non-overlapping windows covering ``array`` (edges padded with 255)."""
    h, w = array.shape
    ph, pw = (-h) % size, (-w) % size
    padded = np.pad(array, ((0, ph), (0, pw)), constant_values=NODATA)
    H, W = padded.shape
    return padded.reshape(H // size, size, W // size, size).swapaxes(1, 2).reshape(-1, size, size)


def compare_layers(
    reference: np.ndarray | xr.DataArray,
    layers: Mapping[str, np.ndarray | xr.DataArray],
    *,
    cloud: np.ndarray | xr.DataArray | None = None,
    window: int = 32,
) -> dict[str, dict[str, Any]]:
    """Score each layer against ``reference`` on the common valid mask; all arrays share one (y, x) grid.

    ``cloud`` (1 cloud, 0 clear, 255 unknown) adds per-window cloud bins (windows of ``window`` pixels
    without cloud information count in the totals only). Returns ``{name: metrics}`` whose
    ``total.n_pixels`` is the common mask size for every layer.
    """
    ref = np.asarray(reference).astype(np.int64)
    arrays = {name: np.asarray(layer).astype(np.int64) for name, layer in layers.items()}
    for name, arr in arrays.items():
        if arr.shape != ref.shape:
            raise ProductComparisonError(f"layer {name!r} has shape {arr.shape}, reference {ref.shape}: align it first")
    valid = (ref >= 0) & (ref < NUM_CLASSES)
    for arr in arrays.values():
        valid &= (arr >= 0) & (arr < NUM_CLASSES)
    if not valid.any():
        raise ProductComparisonError(
            "no pixel is valid in the reference and in every product: check AOI, dates and CRS"
        )
    target = np.where(valid, ref, NODATA)

    if cloud is not None:
        t_win = windows(target, window)
        c_win = windows(np.asarray(cloud).astype(np.int64), window)
        scored = t_win != NODATA
        known = (c_win <= 1) & scored
        n_known = known.reshape(len(t_win), -1).sum(1)
        frac = ((c_win == 1) & known).reshape(len(t_win), -1).sum(1) / np.maximum(n_known, 1)
        frac = np.where(n_known > 0, frac, np.nan)  # a window without cloud information is not binned
        keep = scored.reshape(len(t_win), -1).any(1)
        samples, fractions = t_win[keep], frac[keep]
    else:  # no cloud layer: the whole grid is one sample with unknown cloud
        samples, fractions, keep = target[None], None, None

    results: dict[str, dict[str, Any]] = {}
    for name, arr in arrays.items():
        pred = np.where(valid, arr, 0)
        pred_samples = windows(pred, window)[keep] if keep is not None else pred[None]
        scorer = BinnedScorer()
        scorer.update(pred_samples, samples, fractions)
        results[name] = scorer.compute()
    return results


def _mosaic_slice(store: Path, time: str | None) -> xr.Dataset:
    from cloudlulc.store import open_mosaic

    ds = open_mosaic(store)
    if "time" in ds.dims:
        if ds.sizes["time"] == 0:
            raise ProductComparisonError(f"mosaic {store} holds no completed time slice")
        if time is None:
            if ds.sizes["time"] != 1:
                raise ProductComparisonError(
                    f"mosaic {store} holds {ds.sizes['time']} times; set `mosaic_time` to one of "
                    f"{[str(t)[:19] for t in ds['time'].values]}"
                )
            ds = ds.isel(time=0)
        else:
            ds = ds.sel(time=np.datetime64(time), method="nearest")
    return ds


def _interval(item: dict[str, Any]) -> tuple[datetime, datetime]:
    from cloudlulc.stac import item_datetime
    from cloudlulc.stac.client import parse_datetime

    props = item.get("properties", {})
    start = parse_datetime(props.get("start_datetime")) or item_datetime(item)
    end = parse_datetime(props.get("end_datetime")) or item_datetime(item)
    return start, end


def select_release(items: Sequence[dict[str, Any]], date: datetime | None) -> list[dict[str, Any]]:
    """Items of the product release valid at ``date``: those whose interval holds it, else the latest
    release ending before it, else the earliest after it; all items when ``date`` is None (newest wins)."""
    if date is None or not items:
        return list(items)
    holding = [it for it in items if _interval(it)[0] <= date <= _interval(it)[1]]
    if holding:
        return holding
    before = [it for it in items if _interval(it)[1] < date]
    if before:
        last = max(_interval(it)[1] for it in before)
        return [it for it in before if _interval(it)[1] == last]
    first = min(_interval(it)[0] for it in items)
    return [it for it in items if _interval(it)[0] == first]


def product_layer(client: Any, grid: Any, collection: str, date: datetime | None) -> xr.DataArray:
    """One label product on ``grid`` in CloudLULC classes, from the release valid at ``date``."""
    import shapely
    from shapely.geometry import mapping, shape

    from cloudlulc.cube import label_cube_from_items
    from cloudlulc.stac import normalize_item

    footprint = grid.footprint_lonlat()
    search = client.search(collections=[collection], intersects=mapping(footprint), limit=100)
    # the filter is re-applied here: some servers (rustac serve) do not filter every parameter
    items = [
        normalize_item(it)
        for it in search.items_as_dicts()
        if it.get("collection", collection) == collection and shapely.intersects(shape(it["geometry"]), footprint)
    ]
    if not items:
        raise ProductComparisonError(
            f"no {collection} item intersects the reference footprint {tuple(round(v, 4) for v in footprint.bounds)}"
        )
    chosen = select_release(items, date)
    layer = label_cube_from_items(chosen, grid, collection).compute()
    layer.attrs["source_items"] = [it["id"] for it in chosen]
    return layer


def clip_reference(reference: xr.DataArray, aoi: Any) -> xr.DataArray:
    """The reference cut to the AOI's bounding box (lon/lat), for comparing over one AOI only."""
    from cloudlulc.stac import parse_aoi

    geom = parse_aoi(aoi)
    try:
        return reference.rio.clip_box(*geom.bounds, crs="EPSG:4326")
    except Exception as exc:  # rioxarray raises NoDataInBounds / OneDimensionalRaster
        raise ProductComparisonError(f"the AOI {geom.bounds} does not overlap the reference raster: {exc}") from exc


def compare_products(
    spec: ProductComparisonSpec, *, reference: xr.DataArray | None = None
) -> dict[str, dict[str, Any]]:
    """Fetch each product on the reference grid (plus the mosaic slice) and score them side by side.

    Returns ``{method name: metrics}``; each metrics dict also carries ``source`` (collection and
    item ids, or store and time).
    """
    from cloudlulc.classes import LABEL_PRODUCTS
    from cloudlulc.stac import open_catalog
    from cloudlulc.stac.client import parse_datetime

    ref = reference if reference is not None else open_reference(spec.reference)
    if spec.aoi is not None:
        ref = clip_reference(ref, spec.aoi)
    grid = grid_of(ref)
    unknown = [c for c in spec.collections if c not in LABEL_PRODUCTS]
    if unknown:
        raise ProductComparisonError(f"no class mapping for {unknown}; known label products: {sorted(LABEL_PRODUCTS)}")

    layers: dict[str, xr.DataArray] = {}
    sources: dict[str, str] = {}
    cloud = None
    date = parse_datetime(spec.date) if spec.date else None
    if spec.mosaic is not None:
        ds = _mosaic_slice(spec.mosaic, spec.mosaic_time)
        stamp = str(ds["time"].values)[:19] if "time" in ds.coords else None
        layers[spec.mosaic_name] = align_to(ds["lulc"].load(), ref)
        sources[spec.mosaic_name] = f"Zarr mosaic {spec.mosaic}, time {stamp or '-'}"
        if "cloud" in ds:
            cloud = align_to(ds["cloud"].load(), ref)
        if date is None and stamp is not None:
            date = parse_datetime(stamp + "Z")
    if spec.collections:
        client = open_catalog(spec.stac_url, sign=spec.sign)
        for collection in spec.collections:
            log.info("product comparison: reading %s", collection)
            layer = product_layer(client, grid, collection, date)
            layers[collection] = align_to(layer, ref)
            sources[collection] = f"STAC {collection}: {', '.join(layer.attrs['source_items'])}"
    if not layers:
        raise ProductComparisonError("nothing to compare: list `collections` and/or give a `mosaic`")
    results = compare_layers(ref, layers, cloud=cloud, window=spec.window)
    for name, metrics in results.items():
        metrics["source"] = sources[name]
    return results


def grid_of(reference: xr.DataArray) -> Any:
    """The :class:`cloudlulc.cube.Grid` of a reference raster (EPSG, bounds, square resolution)."""
    from cloudlulc.cube import Grid

    epsg = reference.rio.crs.to_epsg()
    if epsg is None:
        raise ProductComparisonError(f"reference CRS {reference.rio.crs} has no EPSG code; reproject it to UTM first")
    rx, ry = reference.rio.resolution()
    if not np.isclose(abs(rx), abs(ry)):
        raise ProductComparisonError(f"reference pixels are not square ({rx}, {ry}); resample it to one resolution")
    return Grid(epsg=epsg, bounds=tuple(reference.rio.bounds()), resolution=abs(rx))
