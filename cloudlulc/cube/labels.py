"""Label cubes: a land-cover product (ESA WorldCover, Impact Observatory) in CloudLULC classes on a grid."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import numpy as np
import xarray as xr
from rasterio.enums import Resampling

from cloudlulc.classes import LABEL_PRODUCTS, NODATA, remap_labels
from cloudlulc.cube.build import require_assets, with_crs
from cloudlulc.cube.grid import Grid, grid_for_aoi
from cloudlulc.cube.stack import ReadOptions, first_valid
from cloudlulc.stac.aoi import aoi_coverage
from cloudlulc.stac.client import search_items
from cloudlulc.stac.errors import CatalogError
from cloudlulc.stac.items import item_datetime, normalize_item
from cloudlulc.stac.urls import redact_url

if TYPE_CHECKING:
    from pystac_client import Client

__all__ = ["build_label_cube", "label_cube_from_items", "label_version", "select_label_version"]


def label_version(item: dict) -> str:
    """The release a label item belongs to: WorldCover's ``product_version`` (1.0.0 for 2020, 2.0.0
    for 2021), else the year the item's validity starts (Impact Observatory's annual maps)."""
    props = item.get("properties", {})
    version = props.get("esa_worldcover:product_version")
    if version:
        return str(version)
    return f"{item_datetime(item).year}"


def select_label_version(items: Sequence[dict], grid: Grid, version: str | None = None) -> tuple[str, list[dict]]:
    """One release of a label product: ``version`` if given, else the newest release whose items
    cover the grid (else the newest one). Releases are never mixed: a map of 2021 filled with 2020
    where 2021 has nodata would be a map of neither year."""
    by_version: dict[str, list[dict]] = {}
    for it in items:
        by_version.setdefault(label_version(it), []).append(it)
    if version is not None:
        if version not in by_version:
            raise CatalogError(f"No label items of version {version!r} over the grid; found {sorted(by_version)}.")
        return version, by_version[version]
    footprint = grid.footprint_lonlat()
    newest_first = sorted(by_version, key=lambda v: max(item_datetime(it) for it in by_version[v]), reverse=True)
    for v in newest_first:
        if aoi_coverage(footprint, [it.get("geometry") for it in by_version[v]]) >= 0.999:
            return v, by_version[v]
    return newest_first[0], by_version[newest_first[0]]


def label_cube_from_items(
    items: Sequence[dict],
    grid: Grid,
    collection: str = "esa-worldcover",
    *,
    chunksize: int = 1024,
    errors_as_nodata: bool = False,
    read: ReadOptions = ReadOptions(),
) -> xr.DataArray:
    """(y, x) uint8 CloudLULC classes from label-product ``items`` of one release (newest first wins
    where they overlap), nearest resampling."""
    if collection not in LABEL_PRODUCTS:
        raise CatalogError(f"Unknown label collection {collection!r}; known: {sorted(LABEL_PRODUCTS)}.")
    if not items:
        raise CatalogError(f"No {collection} items cover the grid {grid.bounds_lonlat} (lon/lat).")
    asset, mapping = LABEL_PRODUCTS[collection]
    items = sorted((normalize_item(it) for it in items), key=item_datetime, reverse=True)
    require_assets(items, (asset,), collection)
    if errors_as_nodata:
        read = replace(read, errors_as_nodata=True)
    codes = first_valid(
        items,
        (asset,),
        grid,
        dtype=np.uint8,
        nodata=np.uint8(0),
        resampling=Resampling.nearest,
        chunksize=chunksize,
        read=read,
    ).isel(band=0, drop=True)
    labels = xr.apply_ufunc(
        remap_labels, codes, kwargs={"mapping": mapping}, dask="parallelized", output_dtypes=[np.uint8]
    ).astype(np.uint8)
    labels.attrs.update(
        long_name=f"CloudLULC classes from {collection}",
        source_items=[it["id"] for it in items],
        source_hrefs=[redact_url(it["assets"][asset]["href"]) for it in items],
        nodata=NODATA,
    )
    labels.name = "labels"
    return with_crs(labels, grid)


def build_label_cube(
    client: Client,
    grid: Grid | Any,
    collection: str = "esa-worldcover",
    *,
    chunksize: int = 1024,
    errors_as_nodata: bool = False,
    version: str | None = None,
) -> xr.DataArray:
    """Search ``collection`` over the grid (or AOI) and return its labels in CloudLULC classes on the
    grid, from one release only (:func:`select_label_version`; ``attrs["version"]`` says which)."""
    if not isinstance(grid, Grid):
        grid = grid_for_aoi(grid)
    footprint = grid.footprint_lonlat()
    items = search_items(
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
    chosen, items = select_label_version(items, grid, version)
    labels = label_cube_from_items(items, grid, collection, chunksize=chunksize, errors_as_nodata=errors_as_nodata)
    labels.attrs["version"] = chosen
    return labels
